"""``ferry serve``: a read-only OCI registry over the edge's embedded layout ``EDGE/oci``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve", epilog="Example: ferry serve --state /var/lib/ferry --listen 0.0.0.0:5000 "
                                 "--tls-cert site.crt --tls-key site.key --basic-auth-file pullers.txt")
    def serve_cmd(
        state: Path = typer.Option(..., "--state", help="The edge state folder; EDGE/oci is served."),
        listen: str = typer.Option("127.0.0.1:5000", "--listen",
                                   help="HOST:PORT or [IPV6]:PORT to listen on (port 0 picks a free one)."),
        tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="PEM certificate (chain) for HTTPS."),
        tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert."),
        plain_http: bool = typer.Option(False, "--plain-http",
                                        help="Allow plain HTTP on an address beyond loopback (unencrypted)."),
        token_file: Optional[Path] = typer.Option(None, "--token-file",
                                                  help="Demand 'Authorization: Bearer TOKEN'; the file's first line is TOKEN."),
        basic_auth_file: Optional[Path] = typer.Option(None, "--basic-auth-file",
                                                       help="Demand HTTP Basic auth; the file holds USER:PASSWORD lines."),
        access_log: bool = typer.Option(False, "--access-log", help="Log every request on stderr."),
    ) -> None:
        """Serve the images and models in EDGE/oci as a read-only OCI registry (pull only).

        Answers the pull side of the OCI distribution API (/v2/, manifests and blobs by tag
        and digest, HEAD, Range, tags list, referrers), so that nodes of a site without a
        registry pull what ferry imported. Loopback and plain HTTP by default. Stops on
        Ctrl-C or SIGTERM.
        """
        from importer.serve import bind, check_transport, load_auth, parse_listen, serve
        from importer.state import OCI_DIR

        where = parse_listen(listen)
        check_transport(where, tls_cert, tls_key, plain_http)
        auth = load_auth(token_file, basic_auth_file)
        layout = state / OCI_DIR
        sock = bind(where)
        bound = sock.getsockname()
        actual = type(where)(where.host, bound[1])

        def ready() -> None:
            typer.echo(f"serving {layout} at {actual.url(tls_cert is not None)} (read-only"
                       f"{', authentication required' if auth.required else ''})")

        serve(layout, sock, auth=auth, tls_cert=tls_cert, tls_key=tls_key, access_log=access_log,
              on_ready=ready)
