"""``ferry keys``: make Ed25519 signing keys and print key ids."""

from __future__ import annotations

from pathlib import Path

import typer

from manifests import keys as keyfiles

keys_app = typer.Typer(help="Make signing keys and print key ids.", no_args_is_help=True)


@keys_app.command("generate", epilog="Example: ferry keys generate hub-a --out ~/.ferry/keys")
def generate(
    name: str = typer.Argument(..., help="Key name; files are NAME.key and NAME.pub."),
    out: Path = typer.Option(..., "--out", help="Folder to write the key pair into."),
) -> None:
    """Write a new Ed25519 key pair (NAME.key, mode 0600, encrypted if FERRY_KEY_PASSPHRASE is set)."""
    key_path, pub_path, kid = keyfiles.generate(name, out)
    typer.echo(f"{key_path}\n{pub_path}\nkey id {kid}")


@keys_app.command("id", epilog="Example: ferry keys id hub-a.pub")
def show_id(file: Path = typer.Argument(..., help="A .pub or .key file.")) -> None:
    """Print the key id (hex sha256 of the public key) of a key file."""
    typer.echo(keyfiles.key_id(keyfiles.load_any_public(file)))


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
