"""The site's identity as a KubeStellar WEC: its name and labels, kept in the edge state.

``ferry site set --name wec-12 --label location-group=edge`` makes the site a *WEC*
(workload execution cluster): from then on the import evaluates the BindingPolicy and Binding
objects of each manifest set against this name and these labels (:mod:`manifests.placement`)
and applies only what they select. A site that never ran ``site set`` stays what it was: a
KubeStellar WDS, or a GitOps folder, that receives whole sets.

The identity lives in the ``meta`` table of ``EDGE/state.db`` (keys ``site`` for the name, which
receipts carry too, ``site.wec``, ``site.labels``, ``site.kubeconfig``, ``site.context``);
every change is recorded in the audit trail (decision ``site-changed``). The WEC may be given as
a kubeconfig context: ``--kubeconfig FILE --context NAME`` records where the WEC's API server
is, and names the site after the context unless ``--name`` says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifests.errors import PlaceError, UsageError
from manifests.model import NAME_RE
from manifests.placement import label_key_problem, label_value_problem
from manifests.units import parse_link, parse_size
from manifests.variants import Resources, parse_accelerator

from .state import EdgeState


@dataclass(frozen=True)
class Site:
    """The site's identity. ``wec`` is False until ``ferry site set`` ran (then placement applies)."""

    name: str
    wec: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    kubeconfig: str | None = None
    context: str | None = None
    resources: Resources = field(default_factory=Resources)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "wec": self.wec, "labels": dict(sorted(self.labels.items())),
                "kubeconfig": self.kubeconfig, "context": self.context, "resources": self.resources.to_json()}

    def describe(self) -> str:
        """``wec-12 {location-group=edge, zone=north} (kubeconfig ~/wec.yaml, context wec-12)``."""
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        where = ""
        if self.kubeconfig:
            where = f" (kubeconfig {self.kubeconfig}" + (f", context {self.context})" if self.context else ")")
        return f"{self.name} {{{labels}}}{where}"


def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` from ``--label`` into a mapping.

    Raises:
        UsageError: no ``=``, a key or value Kubernetes would refuse (apimachinery
            ``IsQualifiedName`` / ``IsValidLabelValue``), or a key given twice.
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise UsageError(f"--label {pair!r}: write KEY=VALUE, e.g. location-group=edge")
        problem = label_key_problem(key) or None
        if problem:
            raise UsageError(f"--label {pair!r}: the key {problem}")
        problem = label_value_problem(value)
        if problem:
            raise UsageError(f"--label {pair!r}: the value {problem}")
        if key in labels:
            raise UsageError(f"--label {key} is given twice")
        labels[key] = value
    return labels


def read_site(state: EdgeState) -> Site:
    """The identity recorded in an open edge state (read-only opens work too)."""
    meta = dict(state.db.execute("SELECT key, value FROM meta WHERE key = 'site' OR key LIKE 'site.%'"))
    labels = json.loads(meta["site.labels"]) if "site.labels" in meta else {}
    link = meta.get("site.link")
    per, _, size = (link or "").partition(":")
    resources = Resources(memory=int(meta["site.memory"]) if "site.memory" in meta else None,
                          accelerator=meta.get("site.accelerator"),
                          link=(int(size), per) if link else None)
    return Site(name=meta.get("site", "edge"), wec=meta.get("site.wec") == "1", labels=labels,
                kubeconfig=meta.get("site.kubeconfig"), context=meta.get("site.context"), resources=resources)


def set_site(state_dir: Path, *, name: str | None, labels: Sequence[str] | None, kubeconfig: Path | None,
             context: str | None, note: str | None = None, memory: str | None = None,
             accelerator: str | None = None, link: str | None = None) -> tuple[Site, Site]:
    """Record the site's WEC identity and resources under the import lock, and audit the change.

    The resources (docs/edge-state.md, *Site resources*) are what the import checks a model
    variant against (:func:`manifests.variants.fit_problem`); giving only resources does not
    make the site a WEC.

    Args:
        state_dir: the edge state folder (created when missing).
        name: the WEC's name (a Binding's ``clusterId``); None keeps the current one, or takes
            ``context`` when given.
        labels: ``KEY=VALUE`` strings that *replace* the site's labels; None keeps them.
        kubeconfig, context: where the WEC's API server is (both, or neither).
        note: free text for the audit entry.
        memory: ``16GiB`` (IEC or SI units, :func:`manifests.units.parse_size`); None keeps it.
        accelerator: ``none`` or the accelerator kind; None keeps it.
        link: ``10GB/month`` (:func:`manifests.units.parse_link`); None keeps it.
    Returns:
        (before, after).
    Raises:
        UsageError: a bad name, label, kubeconfig, context, memory, accelerator or link (nothing changes).
        FerryError: the state is locked by an import, or the audit trail is not whole.
    """
    new_labels = parse_labels(labels) if labels is not None else None
    new_memory = parse_size(memory, what="--memory") if memory is not None else None
    new_accelerator = parse_accelerator(accelerator) if accelerator is not None else None
    new_link = parse_link(link) if link is not None else None
    # giving only resources does not make the site a WEC (placement would start to apply)
    only_resources = (memory, accelerator, link) != (None, None, None) and \
        (name, labels, kubeconfig) == (None, None, None)
    if context and kubeconfig is None:
        raise UsageError("--context needs --kubeconfig")
    if kubeconfig is not None:
        kubeconfig = Path(kubeconfig).absolute()
        from .apply.kube import read_kubeconfig

        config = read_kubeconfig(kubeconfig)
        if context is None:
            raise UsageError(f"--kubeconfig {kubeconfig}: also name the WEC's --context "
                             f"(one of: {', '.join(config.contexts)})")
        config.choose(context)  # the context must be one of them
    name = name if name is not None else context
    if name is not None and not NAME_RE.match(name):
        raise UsageError(f"--name {name!r}: a site name is letters, digits, '.', '_', '-' (at most 128)")
    from .audit import AuditTrail

    audit = AuditTrail(Path(state_dir))
    with EdgeState.open(Path(state_dir)) as state:
        check = audit.verify()
        if not check.ok:
            raise UsageError(f"audit trail under {state_dir} is not whole ({check.summary}); the site identity "
                             "was not changed: run `ferry audit verify --state`")
        before = read_site(state)
        old = before.resources
        resources = Resources(memory=new_memory if new_memory is not None else old.memory,
                              accelerator=new_accelerator if new_accelerator is not None else old.accelerator,
                              link=new_link if new_link is not None else old.link)
        after = Site(name=name or before.name, wec=before.wec or not only_resources,
                     labels=new_labels if new_labels is not None else before.labels,
                     kubeconfig=str(kubeconfig) if kubeconfig is not None else before.kubeconfig,
                     context=context if kubeconfig is not None else before.context, resources=resources)
        if after == before:
            return before, after
        with state.transaction() as db:
            rows = {"site": after.name, "site.wec": "1" if after.wec else "0",
                    "site.labels": json.dumps(after.labels, sort_keys=True)}
            res = after.resources
            for key, value in (("site.memory", str(res.memory) if res.memory is not None else None),
                               ("site.accelerator", res.accelerator),
                               ("site.link", f"{res.link[1]}:{res.link[0]}" if res.link else None)):
                if value is not None:
                    rows[key] = value
            for key, value in (("site.kubeconfig", after.kubeconfig), ("site.context", after.context)):
                if value is None:
                    db.execute("DELETE FROM meta WHERE key=?", (key,))
                else:
                    rows[key] = value
            for key, value in rows.items():
                db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           (key, value))
        audit.append("site-changed", f"site identity: {before.describe() if before.wec else before.name + ' (no WEC identity)'}"
                                     f" -> {after.describe() if after.wec else after.name + ' (no WEC identity)'}"
                                     + (f"; resources: {before.resources.describe()} -> {after.resources.describe()}"
                                        if after.resources != before.resources else ""), bundle=None, manifest_digest=None, signers=[],
                     artifact=None, version_before=None, version_after=None, note=note)
    return before, after
