"""``ferry sign``: add signatures to a bundle already written (co-signing by a second holder)."""

from __future__ import annotations

from pathlib import Path

import typer

from ferry.keyopts import KEY_HELP


def register(app: typer.Typer) -> None:
    @app.command("sign", epilog="Example: ferry sign /media/usb/edge-ai --key holder-b.key:env=B_PASS --trust policy.yaml")
    def sign_cmd(
        path: Path = typer.Argument(..., help="The bundle folder, a volume, or the folder of volumes (every volume is signed)."),
        key: list[str] = typer.Option(..., "--key", metavar="KEY[:env=VAR|:fd=N|:file=PATH]", help=KEY_HELP),
        trust: list[Path] = typer.Option([], "--trust", metavar="FILE",
                                         help="Public keys or trust policy to check the signatures already there; repeatable."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        """Add a signature to a bundle already on the medium (a second key holder).

        The manifest never changes, every volume's signature file is replaced atomically, and
        the signatures already there must verify (under --trust) first."""
        from importer.cosign import sign_bundle
        from ferry.keyopts import ask_terminal, key_refs
        from ferry.ui import UI
        from manifests.trust import load_trust

        ui = UI(json_mode=json_out)
        result = sign_bundle(path, key_refs(key), load_trust(trust) if trust else None, ask=ask_terminal)
        if json_out:
            ui.emit({"manifestDigest": result.digest, "volumes": [str(v) for v in result.volumes],
                     "added": result.added, "signers": result.signers})
            return
        say = ui.out.print
        if result.added:
            say(f"added {len(result.added)} signature(s) to {result.digest} in {len(result.volumes)} volume(s): "
                + ", ".join(result.added), markup=False, highlight=False)
        else:
            say(f"nothing to add: every key already signed {result.digest}", markup=False, highlight=False)
        say(f"signed by {len(result.signers)} key(s): " + ", ".join(result.signers), markup=False, highlight=False)
