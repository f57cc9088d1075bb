"""``ferry profile``: the site profiles the hub keeps (memory, accelerator, link) for ``export --site``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    profile = typer.Typer(help="Site profiles at the hub: what each site can run and carry (export --site).",
                          no_args_is_help=True)
    app.add_typer(profile, name="profile")

    @profile.command("add", epilog="Example: ferry profile add clinic-7.yaml --state /srv/ferry-hub")
    def add_cmd(
        file: Path = typer.Argument(..., help="A site profile (YAML/JSON: apiVersion ferry/v1, kind SiteProfile)."),
        state: Path = typer.Option(None, "--state", help="Hub state folder (default ~/.local/share/ferry)."),
        json_out: bool = typer.Option(False, "--json", help="Print the profile kept as JSON."),
    ) -> None:
        """Keep a site's profile in the hub state (replacing its earlier one); given by hand, it wins over what the site's return bundles report. Exit 2 for a bad profile."""
        from bundler.hubstate import default_state_dir
        from bundler.profiles import add_profile
        from ferry.ui import UI

        ui = UI(json_mode=json_out)
        name, res = add_profile(state or default_state_dir(), file)
        if json_out:
            ui.emit({"site": name, **res.to_json()})
        else:
            ui.out.print(f"profile of site {name} kept: {res.describe()}", markup=False, highlight=False)

    @profile.command("list", epilog="Example: ferry profile list --state /srv/ferry-hub")
    def list_cmd(
        state: Path = typer.Option(None, "--state", help="Hub state folder (default ~/.local/share/ferry)."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    ) -> None:
        """List the site profiles the hub state keeps, and where each came from (by hand, or from the site's return bundles)."""
        from bundler.hubstate import default_state_dir
        from bundler.profiles import SOURCE_HAND, list_profiles, profile_source
        from ferry.ui import UI

        ui = UI(json_mode=json_out)
        from bundler.hubstate import existing_hub_state

        hub = existing_hub_state(state, "--state") if state is not None else default_state_dir()
        kept = [(n, r, profile_source(hub, n) or SOURCE_HAND) for n, r in list_profiles(hub)]
        if json_out:
            ui.emit([{"site": n, **r.to_json(), "source": src} for n, r, src in kept])
            return
        for n, r, src in kept:
            how = "given by hand" if src == SOURCE_HAND else "from its return bundles"
            ui.out.print(f"{n}: {r.describe()} ({how})", markup=False, highlight=False)
        if not kept:
            ui.out.print("no site profiles kept (ferry profile add FILE)")
