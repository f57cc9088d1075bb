"""``ferry status``: what the edge has installed, its channels, and its chunk store."""

from __future__ import annotations

from pathlib import Path

import typer


def status_document(state_dir: Path) -> dict:
    """Everything ``ferry status`` shows, read without the import lock."""
    from importer.site import read_site
    from importer.state import EdgeState
    from importer.store import ChunkStore
    from importer.watch import read_last
    from importer.wec import read_object_status
    from manifests.errors import FerryError, PlaceError

    state = EdgeState.open_readonly(state_dir)
    if state is None:
        raise PlaceError("state", str(state_dir), f"--state {state_dir}: no ferry edge state here (nothing imported yet)")
    try:
        rows = state.installed_rows()
        kept = {(r.kind, r.name): sorted(state.kept_versions(r.kind, r.name)) for r in rows if r.kind == "model"}
        return {
            "state": str(state.root),
            "site": state.site,
            "siteIdentity": read_site(state).to_json(),
            "objectStatus": read_object_status(state),
            "installed": [{"kind": r.kind, "name": r.name, "version": r.version, "content": r.content,
                           "bundleId": r.bundle_id, "manifestDigest": r.manifest, "installedAt": r.at,
                           "ref": r.ref, "versionsOnDisk": kept.get((r.kind, r.name), []),
                           "variant": r.variant} for r in rows],
            "published": [{"name": p.name, "version": p.version, "place": p.place or "EDGE/oci",
                           "repository": p.repository, "tag": p.tag, "digest": p.digest,
                           "modelcarTag": p.modelcar_tag, "modelcarDigest": p.modelcar_digest, "publishedAt": p.at}
                          for p in state.published()],
            "channels": state.channels(),
            "newestBundleCreated": state.newest_created(),
            "bundles": state.bundles(),
            "waiting": [b for b in state.bundles() if b["status"] == "partial"],
            "store": ChunkStore(state).stats(),
            "ociLayoutBytes": _tree_bytes(state.root / "oci"),
            "watch": read_last(state.root),
        }
    finally:
        state.close()


def _tree_bytes(folder: Path) -> int | None:
    """Bytes of the regular files under ``folder`` (None when it does not exist); links are not followed."""
    import os

    if not folder.is_dir():
        return None
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            total += st.st_size if not os.path.islink(os.path.join(root, name)) else 0
    return total


def _on_disk(a: dict, doc: dict) -> str:
    """The ``on disk`` cell: a model's kept versions; an image kept in EDGE/oci, the layout's size."""
    from manifests.progress import human_bytes

    if a["versionsOnDisk"]:
        return ", ".join(a["versionsOnDisk"])
    if a["kind"] == "image" and doc.get("ociLayoutBytes") is not None:
        return f"EDGE/oci ({human_bytes(doc['ociLayoutBytes'])})"
    return "-"


def _age(created: str) -> str:
    from datetime import datetime, timezone

    from manifests.text import parse_utc_or_none

    made = parse_utc_or_none(created)  # a stored value never breaks a read-only command
    if made is None:
        return "date unreadable"
    days = (datetime.now(timezone.utc) - made).days
    return "today" if days <= 0 else f"{days} day(s) ago"


def register(app: typer.Typer) -> None:
    @app.command("status", epilog="Example: ferry status --state /var/lib/ferry")
    def status_cmd(
        state: Path = typer.Option(..., "--state", help="The edge state folder."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
        wide: bool = typer.Option(False, "--wide", help="One line per artifact however wide (ids and refs are "
                                  "never cut; without --wide they wrap to the terminal)."),
    ) -> None:
        """Show what the edge has installed: artifacts and versions, channels, chunk store size."""
        from rich.table import Table

        from ferry.ui import UI
        from manifests.progress import human_bytes

        doc = status_document(state)
        ui = UI(json_mode=json_out)
        if wide:
            from rich.console import Console

            ui.out = Console(highlight=False, soft_wrap=True, width=100_000)
        if json_out:
            ui.emit(doc)
            return
        out = ui.out
        out.print(f"edge state {doc['state']} (site {doc['site']})")
        ident = doc["siteIdentity"]
        if ident["wec"]:
            labels = ", ".join(f"{k}={v}" for k, v in ident["labels"].items()) or "none"
            where = f"; cluster {ident['kubeconfig']}, context {ident['context']}" if ident["kubeconfig"] else ""
            out.print(f"KubeStellar WEC {ident['name']}: labels {labels}{where}")
        res = ident["resources"]
        if any(res.values()):
            from manifests.variants import Resources

            link = (res["link"]["bytes"], res["link"]["per"]) if res["link"] else None
            out.print(f"site resources: {Resources(res['memory'], res['accelerator'], link).describe()}",
                      markup=False, highlight=False)
        table = Table(show_edge=False, pad_edge=False)
        for col in ("kind", "name", "version", "on disk", "bundle", "installed at", "ref"):
            table.add_column(col, overflow="fold")  # wrap, never cut with an ellipsis
        for a in doc["installed"]:
            version = f"{a['version']} (variant {a['variant']})" if a["variant"] else a["version"]
            table.add_row(a["kind"], a["name"], version, _on_disk(a, doc),
                          a["bundleId"], a["installedAt"], a["ref"] or "-")
        out.print(table if doc["installed"] else "nothing installed yet")
        for p in doc["published"]:
            car = f" and :{p['modelcarTag']} {p['modelcarDigest']}" if p["modelcarDigest"] else ""
            out.print(f"model {p['name']} {p['version']} published in {p['place']}: "
                      f"{p['repository']}:{p['tag']} {p['digest']}{car}")
        for channel, seq in doc["channels"].items():
            created = doc["newestBundleCreated"].get(channel)
            age = f", newest bundle created {created} ({_age(created)})" if created else ""
            out.print(f"channel {channel}: last sequence {seq}{age}")
        for b in doc["waiting"]:
            out.print(f"waiting for volumes: bundle {b['name']} {b['id']} (sequence {b['sequence']}); "
                      "import the missing volume to finish")
        if doc["watch"]:
            w = doc["watch"]
            out.print(f"watch: last result at {w['at']}: {w['outcome']}", markup=False, highlight=False)
        for o in doc["objectStatus"]:
            out.print(f"status of {o['object']} (set {o['set']}, read {o['at']}): {o['summary']}")
            from importer.wec import collected_line

            for result in o.get("collected", []):  # StatusCollectors over this WEC's row
                out.print(f"  collected {collected_line(result)}", markup=False)
        s = doc["store"]
        out.print(f"chunk store: {s['chunks']} chunks, {human_bytes(s['indexedBytes'])} in installed files, "
                  f"{human_bytes(s['spillBytes'])} in the spill store ({s['spillChunks']} chunks)")
