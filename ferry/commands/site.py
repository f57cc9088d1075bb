"""``ferry site``: the site's identity as a KubeStellar WEC (name, labels, its cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _show(doc: dict, json_out: bool) -> None:
    from ferry.ui import UI

    ui = UI(json_mode=json_out)
    if json_out:
        ui.emit(doc)
        return
    labels = ", ".join(f"{k}={v}" for k, v in doc["labels"].items()) or "none"
    ui.out.print(f"site {doc['name']}" + ("" if doc["wec"] else " (no WEC identity: sets are applied whole)"))
    ui.out.print(f"labels: {labels}")
    if doc["kubeconfig"]:
        ui.out.print(f"cluster: kubeconfig {doc['kubeconfig']}, context {doc['context']}")
    from manifests.variants import Resources

    r = doc["resources"]
    res = Resources(r["memory"], r["accelerator"], (r["link"]["bytes"], r["link"]["per"]) if r["link"] else None)
    ui.out.print(f"resources: {res.describe()}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    site = typer.Typer(help="The site's identity as a KubeStellar WEC: name, labels, cluster.",
                       no_args_is_help=True)
    app.add_typer(site, name="site")

    @site.command("set", epilog="Example: ferry site set --state /var/lib/ferry --name wec-12 "
                                "--label location-group=edge --label zone=north")
    def set_cmd(
        state: Path = typer.Option(..., "--state", help="The edge state folder."),
        name: Optional[str] = typer.Option(None, "--name", help="The WEC's name (a Binding's clusterId); "
                                           "default: the --context, else unchanged."),
        label: Optional[list[str]] = typer.Option(None, "--label", help="KEY=VALUE, repeatable: the WEC's labels "
                                                  "that BindingPolicy clusterSelectors match (replaces them all)."),
        kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Kubeconfig of the WEC's API server."),
        context: Optional[str] = typer.Option(None, "--context", help="The WEC's context in --kubeconfig."),
        memory: Optional[str] = typer.Option(None, "--memory", help="Memory a model may use, e.g. 16GiB or 16GB "
                                             "(import refuses a variant that needs more)."),
        accelerator: Optional[str] = typer.Option(None, "--accelerator", help="none, or the accelerator kind "
                                                  "(gpu, nvidia-l4 ...) variants name."),
        link: Optional[str] = typer.Option(None, "--link", help="What the link carries, e.g. 10GB/month "
                                           "(per day, week or month), for the hub's profile."),
        note: Optional[str] = typer.Option(None, "--note", help="Free text for the audit entry."),
        json_out: bool = typer.Option(False, "--json", help="Print the new identity as JSON."),
    ) -> None:
        """Make this site a KubeStellar WEC, and/or record its resources (memory, accelerator, link).

        With a name, labels or a kubeconfig, imports apply only what the sets' BindingPolicies select
        for it. With --memory, --accelerator, --link, imports refuse a model variant it cannot run
        (giving only these does not make it a WEC).

        The change is recorded in the audit trail. Exit 2 for a bad label, name, kubeconfig, context or size."""
        from importer.site import set_site

        before, after = set_site(state, name=name, labels=label, kubeconfig=kubeconfig, context=context, note=note,
                                 memory=memory, accelerator=accelerator, link=link)
        if not json_out and before == after:
            typer.echo("site identity unchanged", err=True)
        _show(after.to_json(), json_out)

    @site.command("show", epilog="Example: ferry site show --state /var/lib/ferry --json")
    def show_cmd(
        state: Path = typer.Option(..., "--state", help="The edge state folder."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    ) -> None:
        """Show the site's name, labels and cluster."""
        from importer.site import read_site
        from importer.state import EdgeState
        from manifests.errors import UsageError

        opened = EdgeState.open_readonly(state)
        if opened is None:
            raise UsageError(f"--state {state}: no ferry edge state here (run `ferry site set` or an import first)")
        with opened:
            _show(read_site(opened).to_json(), json_out)
