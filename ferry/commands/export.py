"""``ferry export``: write a signed, chunked, resumable bundle from a bundle spec (hub side)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer

from ferry.keyopts import KEY_HELP


def register(app: typer.Typer) -> None:
    @app.command("export", epilog="Example: ferry export bundle.yaml --out /media/usb/edge-ai --key hub.key")
    def export_cmd(
        spec: Path = typer.Argument(..., help="The bundle spec (apiVersion ferry/v1, kind Bundle)."),
        out: Path = typer.Option(..., "--out", help="Folder to write the bundle into (new or empty; "
                                 "or the folder of an unfinished export, to resume it). Locked while exporting."),
        key: list[str] = typer.Option(..., "--key", metavar="KEY[:env=VAR|:fd=N|:file=PATH]", help=KEY_HELP),
        state: Path = typer.Option(None, "--state", help="Hub state folder (sequence numbers, chunk cache); "
                                   "default ~/.local/share/ferry (a warning says so). Locked while exporting."),
        max_volume_size: str = typer.Option(None, "--max-volume-size",
                                            help="Split into OUT/vol-001, vol-002, ... of at most this size "
                                                 "(e.g. 32GiB, 64GB)."),
        since: Path = typer.Option(None, "--since", help="The edge's receipt: leave out what the site holds (chunks, OCI blobs by digest, installed sets)."),
        since_site: str = typer.Option(None, "--since-site", metavar="SITE",
                                       help="Like --since, with the receipt of SITE's last return bundle recorded in "
                                            "the hub inventory (--state; ferry return import)."),
        platform: str = typer.Option(None, "--platform", help="Image platform to pick from an index, "
                                     "e.g. linux/amd64."),
        insecure_registry: list[str] = typer.Option([], "--insecure-registry",
                                                    help="Registry HOST[:PORT] to reach with HTTPS without certificate checks, else plain HTTP; repeatable."),
        self_install: bool = typer.Option(False, "--self-install", help="Also carry ferry itself: its wheels and its "
                                          "dependencies' for the edge (pip, from this hub's index), signed in the "
                                          "bundle and as OUT/self-install with install.sh and SHA256SUMS."),
        self_install_python: str = typer.Option(None, "--self-install-python",
                                                help="The edge's Python version for --self-install, e.g. 3.11 "
                                                     "(default: this hub's)."),
        self_install_platform: str = typer.Option(None, "--self-install-platform",
                                                  help="The edge's pip platform tag for --self-install, e.g. "
                                                       "manylinux2014_x86_64 (default: this hub's)."),
        expires: str = typer.Option(None, "--expires", metavar="DURATION",
                                    help="Sign an expiry into the bundle (e.g. 30d, 12h): edges refuse it after that."),
        push: str = typer.Option(None, "--push", metavar="oci://HOST/REPO[:TAG]",
                                 help="Then push the bundle to this registry, under TAG or, for a channel repository "
                                      "without a tag, under its sequence number (what `ferry watch` polls for)."),
        memory_budget: str = typer.Option(None, "--memory-budget", metavar="SIZE",
                                          help="Keep buffers and threads within this much memory (default 256MiB, "
                                               "at least 192MiB), e.g. 200MiB on a small hub."),
        site: str = typer.Option(None, "--site", help="Choose each model's variant for this site, by the profile "
                                 "the hub state keeps for it (ferry profile add)."),
        profile: Path = typer.Option(None, "--profile", help="Choose each model's variant for the site this profile "
                                     "file describes (YAML/JSON, kind SiteProfile)."),
        max_bytes: str = typer.Option(None, "--max-bytes", help="Byte budget of the bundle's raw bytes (e.g. 2GiB): each "
                                      "model's variant is chosen to fit; default: the profile's link budget."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Write a signed, chunked, resumable bundle from a bundle spec (hub side)."""
        from bundler.export import ExportOptions, export
        from bundler.hubstate import default_state_dir
        from bundler.selfinstall import Target
        from bundler.spec import parse_size
        from manifests.errors import UsageError
        from ferry.ui import UI
        from manifests.progress import human_bytes

        from manifests.link import parse_oci_ref

        push_ref = parse_oci_ref(push, need_tag=False) if push else None  # a bad reference before any work
        if not self_install and (self_install_python or self_install_platform):
            raise UsageError("--self-install-python and --self-install-platform go with --self-install")
        target = Target(self_install_python, self_install_platform).check() if self_install else None
        from ferry.keyopts import ask_terminal, key_refs
        from importer.policy import parse_max_age
        ui = UI(json_mode=json_out)
        hub_state = state or default_state_dir()
        if state is None:  # sequence numbers live there: another hub state restarts them at 1
            ui.warn(f"no --state given: using the default hub state {hub_state}; give the same --state "
                    "to every export of a channel, or the edge refuses its sequence numbers as stale")
        if since_site is not None:
            if since is not None:
                raise UsageError("give --since or --since-site, not both")
            from bundler.inventory import Inventory

            since = Inventory(hub_state).receipt_file(since_site)
        if site and profile:
            raise UsageError("give --site or --profile, not both")
        resources = None
        if profile is not None:
            from bundler.profiles import load_profile

            site, resources = load_profile(profile)
        elif site is not None:
            from bundler.profiles import stored_profile

            resources = stored_profile(hub_state, site)
        budget = parse_size(max_bytes, what="--max-bytes") if max_bytes else None
        if budget is None and resources is not None and resources.link is not None:
            budget = resources.link[0]
        opts = ExportOptions(
            site=resources, site_name=site, max_bytes=budget,
            expires=parse_max_age(expires, option="--expires") if expires else None,
            spec=spec, out=out, keys=tuple(key_refs(key)), ask=ask_terminal, state=hub_state,
            max_volume_size=parse_size(max_volume_size, what="--max-volume-size") if max_volume_size else None,
            since=since, platform=platform, insecure_registries=frozenset(insecure_registry),
            self_install=target,
            **({"memory_budget": parse_size(memory_budget, what="--memory-budget")} if memory_budget else {}),
        )
        result = export(opts, ui)
        pushed = None
        if push_ref is not None:
            from dataclasses import replace

            from ferry.commands.push import push_to

            if push_ref.tag is None and push_ref.digest is None:
                push_ref = replace(push_ref, tag=str(result.manifest.bundle.sequence))
            pushed = push_to(out, str(push_ref), insecure_registry)
        if json_out:
            ui.emit({**result.to_json(), **({"pushed": pushed.to_json()} if pushed else {})})
            return
        m = result.manifest
        where = ", ".join(str(v) for v in result.volume_dirs)
        carried = sum(1 for c in m.chunks if c.carried)
        say = partial(ui.out.print, markup=False, highlight=False)  # paths and names are data
        say(f"bundle {m.bundle.name} #{m.bundle.sequence} ({m.bundle.channel}) written to {where}")
        say(f"  {len(m.artifacts)} artifact(s), {human_bytes(result.raw_bytes)} raw, "
            f"{human_bytes(result.stored_bytes)} stored in {len(m.packs)} pack(s); "
            f"{carried} of {len(m.chunks)} chunk(s) carried"
            + (f", delta against receipt of {m.base.site}" if m.base else ""))
        for gone in result.left_out:
            say(f"  {gone.describe()}")
        for c in result.choices:
            say(f"  {c.describe()}")
        for line in result.variant_deltas:
            say(f"  delta: {line}")
        say(f"  manifest {result.digest}")
        say(f"  hub state {result.state}" + (" (the default)" if state is None else ""))
        if pushed is not None:
            say(f"  pushed to {pushed.reference}@{pushed.digest}: {pushed.uploaded} blob(s) uploaded "
                f"({human_bytes(pushed.bytes_uploaded)}), {pushed.skipped} already there")
        if result.self_install:
            si = result.self_install
            say(f"  self-install: {si['wheels']} wheel(s) for {si['target']} in {si['folder']}")
            say(f"  self-install: SHA256SUMS sha256 {si['sha256sums']} (carry this with the change record)")
            say(f"  at the edge: sh {si['folder']}/install.sh /opt/ferry")
