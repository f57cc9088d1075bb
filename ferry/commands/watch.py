"""``ferry watch``: import bundles by itself from a drop folder or a registry channel (edge side)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("watch", epilog="Example: ferry watch /srv/diode/in --trust hub.pub --state /var/lib/ferry  |  "
                 "ferry watch oci://registry.hub:5000/ferry/edge-ai --trust hub.pub --state /var/lib/ferry --once")
    def watch_cmd(
        source: str = typer.Argument(..., metavar="FOLDER|oci://HOST/REPO",
                                     help="A drop folder (each bundle folder in it), or a registry channel: the "
                                          "repository `ferry export --push` publishes sequence-numbered tags to."),
        trust: list[Path] = typer.Option([], "--trust", help="Hub public key or trust policy (repeatable); not with "
                                         "a policy pinned by `ferry trust init`."),
        state: Path = typer.Option(..., "--state", help="The edge state folder."),
        interval: float = typer.Option(60.0, "--interval", metavar="SECONDS", help="Seconds between polls (a failing "
                                       "registry is polled with exponential backoff, up to an hour)."),
        settle: float = typer.Option(5.0, "--settle", metavar="SECONDS", help="A drop-folder bundle is imported only "
                                     "when no file under it changed for this long (and it is complete)."),
        once: bool = typer.Option(False, "--once", help="Poll once (a drop folder: twice, --settle apart) and exit: "
                                  "for cron and tests."),
        registry: Optional[str] = typer.Option(None, "--registry", help="Push images to HOST[:PORT] (default: OCI layout EDGE/oci)."),
        insecure_registry: list[str] = typer.Option([], "--insecure-registry", help="Registry host to reach with "
                                                    "HTTPS without certificate checks, else plain HTTP (repeatable)."),
        manifests_dir: Optional[Path] = typer.Option(None, "--manifests-dir", help="Write manifest sets to DIR/<set>/."),
        kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Server-side apply manifest sets into this cluster."),
        context: Optional[str] = typer.Option(None, "--context", help="Kubeconfig context (default: its "
                                              "current-context; needed when it has none)."),
        limit_rate: Optional[str] = typer.Option(None, "--limit-rate", metavar="RATE", help="Cap the bandwidth used "
                                                 "to read oci:// bundles, bytes per second (500K, 10M, 1G)."),
        note: Optional[str] = typer.Option(None, "--note", help="Recorded with every audit entry."),
    ) -> None:
        """Import bundles as they arrive, one at a time, each exactly once; runs until SIGTERM.

        A drop folder's bundle is imported only when complete (every volume's signature
        verifies, every pack at its signed size) and no file under it still changes. A channel's
        new tags are imported in sequence order, fetching only what the site lacks. Decisions go
        to the audit trail; `ferry status` shows the last result. Exit 0 on SIGTERM or after
        --once; with --once, the import's exit status when it failed."""
        from ferry.ui import UI
        from importer.link import parse_rate
        from importer.run import ImportOptions
        from importer.trust_store import trust_for_import
        from importer.watch import Watcher
        from manifests.errors import UsageError
        from manifests.link import is_oci_ref, parse_oci_ref
        from manifests.oci import check_registry_host

        week = 7 * 86400.0  # NaN and inf fail these too: a wait of inf overflowed the clock (exit 70)
        if not (0 < interval <= week and 0 <= settle <= week):
            raise UsageError("--interval must be above 0 and --settle at least 0 seconds, each at most a week "
                             "(604800)")
        for host in ([registry] if registry else []) + insecure_registry:
            check_registry_host(host)
        src: Any = parse_oci_ref(source, need_tag=False) if is_oci_ref(source) else Path(source)
        if not is_oci_ref(source) and not Path(source).is_dir():
            from manifests.bundle import not_found
            from manifests.errors import PlaceError

            if Path(source).exists():
                raise PlaceError("source", source, f"drop folder {source}: not a folder")
            raise PlaceError("source", source, not_found("drop folder", source))
        if is_oci_ref(source) and (src.tag or src.digest):
            raise UsageError(f"{source}: watch a channel repository (oci://HOST/REPO), not one tag")
        if state.exists() and not state.is_dir():
            raise UsageError(f"--state {state}: not a folder")
        from importer.apply.kube import check_target

        if context and not kubeconfig:
            raise UsageError("--context needs --kubeconfig")
        check_target(kubeconfig, context, manifests_dir)  # a bad kubeconfig: refused now, not at the first bundle
        trust_for_import(list(trust), state, [], dry_run=True)  # a bad --trust: refused before anything is written
        state.mkdir(parents=True, exist_ok=True)  # the audit trail records waiting before the first import
        ui = UI(json_mode=False)  # its decisions are its log: printed on a terminal, to cron and to a pod log alike
        opts = ImportOptions(paths=[], trust=trust, state=state, registry=registry,
                             insecure_registries=frozenset(insecure_registry), manifests_dir=manifests_dir,
                             kubeconfig=kubeconfig, context=context, note=note, limit_rate=parse_rate(limit_rate) if limit_rate else None)
        watcher = Watcher(src, opts, ui, lambda: trust_for_import(list(trust), state, [], dry_run=True),
                          interval=interval, settle=settle)

        def on_term(signum: int, frame: object) -> None:
            watcher.stop.set()

        signal.signal(signal.SIGTERM, on_term)
        watcher.run(once=once)
        ui.out.print("watch: stopped" if not once else "watch: done", markup=False)
