"""``ferry inspect``: show what a bundle holds, without any key (and so without verifying it)."""

from __future__ import annotations

from functools import partial

from pathlib import Path
from typing import Any

import typer

UNVERIFIED = "unverified: read without checking signatures; use `ferry verify` before trusting it"


def describe(bundle: Any) -> dict[str, Any]:
    """A JSON-able summary of one bundle found on the medium (see importer.medium.find_bundles)."""
    from manifests.bundle import PACKS_DIR
    from manifests.model import Manifest
    from manifests.signing import SignatureFile

    m = Manifest.from_bytes(bundle.manifest_bytes)
    try:
        signers = [s.keyid for s in SignatureFile.from_bytes(bundle.signature_bytes).signatures]
    except Exception as exc:  # noqa: BLE001 - a broken signature file is shown, not fatal here
        signers = [f"(unreadable signature file: {exc})"]
    present = set()
    for vol in bundle.volume_dirs:
        for i, p in enumerate(m.packs):
            if (vol / PACKS_DIR / p.name).is_file():
                present.add(i)
    from manifests.bundle import VOLUME_PREFIX

    named = {int(v.name[len(VOLUME_PREFIX):]) for v in bundle.volume_dirs
             if v.name.startswith(VOLUME_PREFIX) and v.name[len(VOLUME_PREFIX):].isdigit()}
    volumes_found = sorted(named or {m.packs[i].volume for i in present} or {1})
    return {
        "verified": False,
        "note": UNVERIFIED,
        "digest": bundle.digest,
        "paths": [str(v) for v in bundle.volume_dirs],
        "bundle": m.bundle.to_dict(),
        "formatVersion": m.format_version,
        "artifacts": [{
            "kind": a.kind, "name": a.name, "version": a.version, "size": a.size,
            "entries": len(a.entries), "chunks": sum(len(e.chunks) for e in a.entries),
            **({"image": f"{a.image.repository}:{a.image.tag}@{a.image.manifest}"} if a.image else {}),
            **({"images": list(a.images)} if a.images else {}),
            **({"variant": a.variant.to_dict()} if a.variant else {}),
        } for a in m.artifacts],
        "chunks": len(m.chunks),
        "carriedChunks": sum(1 for c in m.chunks if c.carried),
        "rawBytes": sum(c.size for c in m.chunks),
        "storedBytes": sum(c.stored or 0 for c in m.chunks if c.carried),
        "packs": len(m.packs),
        "packsPresent": len(present),
        "volumes": m.volumes,
        "volumesPresent": volumes_found,
        "signers": signers,
        "base": m.base.to_dict() if m.base else None,
    }


def _from_registry(text: str, insecure: frozenset[str]) -> dict[str, Any]:
    """:func:`describe` for ``oci://HOST/REPO:TAG``: the manifest and signature file only."""
    from importer.link import FetchStats, signed_files
    from importer.medium import BundleOnMedium
    from manifests.link import parse_oci_ref
    from transport.registry import RegistryClient

    ref = parse_oci_ref(text)
    client = RegistryClient(ref.host, insecure_registries=insecure)
    try:
        stats = FetchStats(str(ref))
        art, mbytes, sbytes, _ = signed_files(client, ref, stats)
    finally:
        client.close()
    doc = describe(BundleOnMedium(mbytes, sbytes, stats.manifest_digest))
    doc["paths"] = [f"{ref}@{stats.artifact_digest}"]
    from manifests.model import Manifest

    doc["packsPresent"] = sum(1 for p in Manifest.from_bytes(mbytes).packs if p.name in art.packs)
    doc["volumesPresent"] = list(range(1, int(doc["volumes"]) + 1))
    return doc


def register(app: typer.Typer) -> None:
    @app.command("inspect", epilog="Example: ferry inspect /media/usb/edge-ai")
    def inspect_cmd(
        paths: list[str] = typer.Argument(..., help="A bundle folder, a volume (vol-001), or a folder of volumes; or "
                                          "oci://HOST/REPO:TAG (only the manifest and signatures are read)."),
        insecure_registry: list[str] = typer.Option([], "--insecure-registry", help="Registry host to reach with "
                                                    "HTTPS without certificate checks, else plain HTTP (repeatable)."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        """Show what a bundle holds (artifacts, sizes, packs, volumes, signers) without any key."""
        from importer.medium import find_bundles
        from ferry.ui import UI
        from manifests.link import is_oci_ref
        from manifests.progress import human_bytes

        ui = UI(json_mode=json_out)
        folders = [Path(p) for p in paths if not is_oci_ref(p)]
        docs = [describe(b) for b in find_bundles(folders)] if folders else []
        docs += [_from_registry(p, frozenset(insecure_registry)) for p in paths if is_oci_ref(p)]
        if json_out:
            ui.emit({"bundles": docs})
            return
        out = ui.out
        # manifest text is data, never markup: a path or producer holding "[/]" crashed rich
        say = partial(out.print, markup=False, highlight=False)
        for d in docs:
            b = d["bundle"]
            say(f"bundle {b['name']} sequence {b['sequence']} on channel {b['channel']}  (id {b['id']})")
            out.print(f"  [yellow]{UNVERIFIED}[/]")
            say(f"  manifest {d['digest']}, format {d['formatVersion']}, created {b['created']} "
                      f"by {b['producer']}" + (f", expires {b['expires']}" if b.get("expires") else ""))
            for a in d["artifacts"]:
                extra = f"  {a['image']}" if "image" in a else ""
                say(f"  {a['kind']:<9} {a['name']} {a['version']}: {human_bytes(a['size'])}, "
                          f"{a['entries']} {'blob' if a['kind'] == 'image' else 'file'}(s), "
                          f"{a['chunks']} chunk ref(s){extra}")
                for ref in a.get("images", []):
                    say(f"            uses image {ref}")
                if "variant" in a:
                    from manifests.variants import Variant

                    say(f"            variant {Variant.from_dict(a['variant'], 'variant').describe()}")
            say(f"  chunks: {d['chunks']} ({d['carriedChunks']} carried), {human_bytes(d['rawBytes'])} raw, "
                      f"{human_bytes(d['storedBytes'])} stored")
            say(f"  packs: {d['packs']} ({d['packsPresent']} present here); volumes: {d['volumes']} "
                      f"(present here: {', '.join(map(str, d['volumesPresent'])) or 'none'})")
            say(f"  signed by {len(d['signers'])} key id(s): {', '.join(d['signers']) or 'none'}")
            if d["base"]:
                base = d["base"]
                say(f"  delta bundle against the receipt of site {base['site']} ({base['created']}), "
                          f"{base['receipt']}")
            else:
                say("  full bundle (not a delta)")
            for p in d["paths"]:
                say(f"  at {p}")
