"""Applying a manifest set to a KubeStellar WEC: placement, createOnly, pruning, status back.

Used instead of :func:`importer.apply.kube.apply_manifests` when the site has a WEC identity
(``ferry site set``, :mod:`importer.site`). For one set, the whole plan is made before the
first change:

1. the set's objects are read and checked as the hub did (``load_objects``);
2. :func:`manifests.placement.evaluate` decides, per object, selected or not and by which
   policy and clause, and transforms the selected ones (KubeStellar's removals, the set's
   CustomTransforms); a set without BindingPolicy or Binding is applied whole, as before;
3. images are pinned and ``ferry.io/*`` annotations added (``prepare``, as for a WDS);
4. in a cluster: each ``createOnly`` object is read (one that exists is left as it is), and
   each object the set's inventory holds but the new version does not apply is read, and
   :func:`importer.pruning.plan_prune` decides what to delete (refusing one ferry does not own);
5. then the selected objects are applied (``apply_to_cluster``: server-side apply, the newer
   version rule), the prune plan carried out (DELETE with uid and resourceVersion
   preconditions, reverse apply order), and each applied object's ``.status`` read back;
6. the inventory (``kube_applied``) and the statuses (``kube_status``) are recorded in the edge
   state, for the next prune and the return path.

Into a GitOps folder, only the selected objects are written (so the folder's whole replacement
is the prune); a ``createOnly`` object carries Flux's ``kustomize.toolkit.fluxcd.io/ssa:
IfNotPresent`` annotation (create if absent, never update).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifests.kube import KubeObject
from manifests.errors import FerryError
from manifests.model import NAME_RE, Artifact, Entry
from manifests.placement import Decision, Placement, evaluate, has_policies

from .apply import kube
from .pruning import AppliedObject, ObjectKey, PrunePlan, plan_prune
from .site import Site
from manifests.model import utc_now

from .state import EdgeState

#: Flux's per-object "create if absent, never update" (kustomize-controller, ssa annotation).
FLUX_SSA_ANNOTATION = "kustomize.toolkit.fluxcd.io/ssa"


@dataclass
class WecResult:
    """What applying one set to the WEC did. Object ids read like ``Deployment.apps nginx/web``."""

    set_name: str
    placement: Placement | None
    applied: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (object id, why)
    prune: PrunePlan | None = None
    pruned: list[str] = field(default_factory=list)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)  # object id -> .status
    #: object id -> its StatusCollector results (manifests.statuscollect.collect)
    collected: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    written: Path | None = None
    #: createOnly objects found on the WEC while planning (object ids): left as they are
    exists: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Lines to warn about (a BindingPolicy that selects no object of the set)."""
        return list(self.placement.warnings) if self.placement is not None else []

    def summary(self) -> str:
        """A clause for the artifact's reason: what placement and pruning did."""
        parts = []
        if self.placement is not None:
            work = [d for d in self.placement.decisions if d.role == "workload"]
            parts.append(f"placement at WEC {self.placement.site}: {len(self.placement.selected)} of {len(work)} "
                         "workload objects selected")
        if self.skipped:
            parts.append("left alone: " + ", ".join(f"{o} ({why})" for o, why in self.skipped))
        if self.pruned:
            parts.append("pruned: " + ", ".join(self.pruned))
        if self.prune and self.prune.kept:
            parts.append("not pruned: " + ", ".join(o.id for o, _ in self.prune.kept))
        return "".join(f"; {p}" for p in parts)

    def plan_lines(self) -> list[str]:
        """The plan, made before the first change: per object of the set (set order) ``apply``,
        ``keep`` (createOnly, already on the WEC) or ``skip``, by which policy and clause; then
        per object of the previous version what pruning does (:meth:`PrunePlan.lines`).
        ``import --dry-run``, ``verify --state`` and the import itself print these lines."""
        lines = [f"warning: {w}" for w in self.warnings]
        if self.placement is not None:
            for d in self.placement.decisions:
                flag = " (createOnly)" if d.create_only else ""
                if d.selected and d.ref.id in self.exists:
                    lines.append(f"keep  {d.ref.id}{flag}: {d.why}; it exists on the WEC, not updated")
                else:
                    lines.append(f"{'apply' if d.selected else 'skip '} {d.ref.id}{flag}: {d.why}")
        return lines + (self.prune.lines() if self.prune else [])

    def to_json(self) -> dict[str, Any]:
        """The plan as ``--json`` shows it: ``placement`` (:meth:`manifests.placement.Placement.to_json`,
        null for a set without BindingPolicy or Binding), ``existsOnWec`` (createOnly objects left
        as they are), ``prune`` (:meth:`PrunePlan.to_json`) and ``lines`` (:meth:`plan_lines`)."""
        return {"set": self.set_name, "placement": self.placement.to_json() if self.placement else None,
                "existsOnWec": list(self.exists), "warnings": self.warnings, "prune": self.prune.to_json() if self.prune else None,
                "lines": self.plan_lines()}


# --------------------------------------------------------------------------- the edge state


def _key(obj: KubeObject, default_namespace: str, namespaced: bool) -> ObjectKey:
    return (obj.group, obj.kind, (obj.namespace or default_namespace) if namespaced else "", obj.name)


def read_inventory(state: EdgeState, set_name: str) -> list[AppliedObject]:
    """What ferry applied to the WEC for ``set_name`` last time, in apply order ([] for none)."""
    try:
        rows = state.db.execute("SELECT api_version, kind, namespace, name, position, version FROM kube_applied "
                                "WHERE set_name=? ORDER BY position", (set_name,)).fetchall()
    except sqlite3.OperationalError:  # a state written before this table existed
        return []
    return [AppliedObject(*r) for r in rows]


#: per object id: (object, namespace, .status, StatusCollector names, their results)
Statuses = dict[str, tuple[KubeObject, str, dict[str, Any], list[str], list[dict[str, Any]]]]


def record(state: EdgeState, set_name: str, version: str, inventory: list[tuple[KubeObject, str, bool]],
           statuses: Statuses | None) -> None:
    """Replace the set's inventory (object, namespace, createOnly, in apply order) and, unless
    ``statuses`` is None, its stored statuses and StatusCollector results."""
    at = utc_now()
    with state.transaction() as db:
        db.execute("DELETE FROM kube_applied WHERE set_name=?", (set_name,))
        for position, (obj, namespace, create_only) in enumerate(inventory, start=1):
            db.execute("INSERT INTO kube_applied VALUES (?,?,?,?,?,?,?,?,?)",
                       (set_name, position, obj.api_version, obj.kind, namespace, obj.name, version,
                        int(create_only), at))
        if statuses is None:
            return
        db.execute("DELETE FROM kube_status WHERE set_name=?", (set_name,))
        db.execute("DELETE FROM kube_collected WHERE set_name=?", (set_name,))
        for obj, namespace, status, collectors, collected in statuses.values():
            db.execute("INSERT INTO kube_status VALUES (?,?,?,?,?,?,?,?)",
                       (set_name, obj.api_version, obj.kind, namespace, obj.name,
                        json.dumps(status, sort_keys=True), json.dumps(collectors), at))
            for result in collected:
                db.execute("INSERT INTO kube_collected VALUES (?,?,?,?,?,?,?,?)",
                           (set_name, obj.api_version, obj.kind, namespace, obj.name, result["name"],
                            json.dumps(result, sort_keys=True), at))


def summarize_status(status: dict[str, Any]) -> str:
    """One line for a person: the conditions (``Available=True``), else the scalar fields."""
    conditions = status.get("conditions")
    if isinstance(conditions, list) and conditions:
        return ", ".join(f"{c.get('type')}={c.get('status')}" for c in conditions if isinstance(c, dict))
    scalars = [f"{k}={v}" for k, v in sorted(status.items()) if isinstance(v, (str, int, float, bool))]
    return ", ".join(scalars[:6]) or "(no scalar fields)"


def read_object_status(state: EdgeState) -> list[dict[str, Any]]:
    """Every stored ``.status``, per set and object (what ``ferry status`` shows; [] for none)."""
    try:
        rows = state.db.execute("SELECT set_name, api_version, kind, namespace, name, status, collectors, at "
                                "FROM kube_status ORDER BY set_name, kind, namespace, name").fetchall()
    except sqlite3.OperationalError:
        return []
    collected: dict[tuple[str, str, str, str, str], list[dict[str, Any]]] = {}
    try:
        for *key, result in state.db.execute("SELECT set_name, api_version, kind, namespace, name, result "
                                             "FROM kube_collected ORDER BY collector"):
            collected.setdefault(tuple(key), []).append(json.loads(result))
    except sqlite3.OperationalError:  # a state written before this table existed
        pass
    out = []
    for set_name, api_version, kind, namespace, name, status, collectors, at in rows:
        obj = AppliedObject(api_version, kind, namespace, name, 0)
        parsed = json.loads(status)
        out.append({"set": set_name, "object": obj.id, "apiVersion": api_version, "kind": kind,
                    "namespace": namespace or None, "name": name, "status": parsed,
                    "statusCollectors": json.loads(collectors), "at": at, "summary": summarize_status(parsed),
                    "collected": collected.get((set_name, api_version, kind, namespace, name), [])})
    return out


def collected_line(result: dict[str, Any]) -> str:
    """One StatusCollector result for a person: ``count-wecs: count=1`` (rows joined by ``; ``)."""
    def shown(v: dict[str, Any]) -> str:
        field = {"String": "string", "Number": "float", "Bool": "bool", "Object": "object", "Array": "array"}
        raw = v.get(field.get(v.get("type", ""), ""), "null")
        return raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)

    rows = ["; ".join(", ".join(f"{c}={shown(v)}" for c, v in zip(result["columnNames"], row["columns"]))
                      for row in result.get("rows", []))]
    text = f"{result['name']}: {rows[0] or '(no rows)'}"
    return text + (f" ({len(result['errors'])} expression error(s): {result['errors'][0]})"
                   if result.get("errors") else "")


# --------------------------------------------------------------------------- placement


def place(objects: list[KubeObject], site: Site, default_namespace: str) -> tuple[Placement | None, list[KubeObject]]:
    """The objects to apply at ``site``: the selected ones, transformed, in set order; every object
    when the set holds no BindingPolicy or Binding (then the placement is None)."""
    if not has_policies(objects):
        return None, objects
    placement = evaluate(objects, site.name, site.labels, default_namespace=default_namespace)
    chosen = []
    for obj, decision in zip(objects, placement.decisions):
        if decision.selected:
            chosen.append(KubeObject(body=placement.bodies[decision.ref.key], file=obj.file, index=obj.index,
                                      item=obj.item))
    return placement, chosen


def _inventory_object(row: AppliedObject) -> KubeObject:
    meta: dict[str, Any] = {"name": row.name}
    if row.namespace:
        meta["namespace"] = row.namespace
    return KubeObject(body={"apiVersion": row.api_version, "kind": row.kind, "metadata": meta}, file="", index=0)


# --------------------------------------------------------------------------- entry point


def apply_placed(artifact: Artifact, read_entry: Callable[[Entry], Iterator[bytes]], target: kube.ManifestTarget,
                 *, state: EdgeState, site: Site, image_refs: dict[str, str], origin: dict[str, str],
                 registry: str | None = None, allow_downgrade: bool = False, no_prune: bool = False,
                 dry_run: bool = False) -> WecResult:
    """Apply one manifest set to the site's WEC (see the module docstring).

    Args:
        artifact, read_entry, image_refs, origin, registry, allow_downgrade: as for
            :func:`importer.apply.kube.apply_manifests` (every image is proved pinned,
            :func:`importer.apply.kube.check_pinned`, before anything is applied or written).
        target: the cluster or GitOps folder; without a kubeconfig, the WEC's recorded
            kubeconfig and context (``ferry site set --kubeconfig --context``) are used.
        state: the open edge state (the inventory is read from it and, unless ``dry_run``, written).
        site: the site's identity (:func:`importer.site.read_site`), ``site.wec`` True.
        no_prune: keep objects the new version no longer selects (``--no-prune``).
        dry_run: make the whole plan (reads only: GETs against a cluster) and change nothing.
    Returns:
        A :class:`WecResult`; ``plan_lines()`` lists each object selected or not, and why.
    Raises:
        PlacementError: the set's control objects are malformed or select nothing.
        PolicyError: pruning would delete an object ferry does not own.
        FerryError: the cluster or folder failed; objects applied before it stay applied.
    """
    if not NAME_RE.match(artifact.name):
        raise FerryError(f"manifest set name {artifact.name!r} is not allowed")
    if target.kubeconfig is None and site.kubeconfig:
        target = kube.ManifestTarget(gitops_dir=None, kubeconfig=Path(site.kubeconfig), context=site.context)
    if target.gitops_dir is None and target.kubeconfig is None:
        raise FerryError(f"manifest set {artifact.name!r}: no target (give a kubeconfig or a manifests folder)")
    objects = kube.load_objects(artifact, read_entry)
    previous = read_inventory(state, artifact.name)
    if target.kubeconfig is None:
        return _to_folder(artifact, objects, target, state, site, previous, image_refs, origin, no_prune, dry_run,
                          registry)
    cluster = kube._Cluster(target)
    try:
        placement, chosen = place(objects, site, cluster.default_namespace)
        originals = ({d.ref.key: o.body for o, d in zip(objects, placement.decisions)} if placement else {})
        objects = kube.prepare(chosen, image_refs, kube.annotations_for(artifact, origin), registry=registry)
        result = WecResult(artifact.name, placement)
        decisions = {d.ref.key: d for d in placement.decisions} if placement else {}
        keys = []
        for obj in objects:
            resource = cluster.resource(obj) if not _is_new_kind(obj, objects) else None
            namespaced = resource.namespaced if resource is not None else bool(obj.namespace)
            keys.append(_key(obj, cluster.default_namespace, namespaced))
        create_only = {k for k in keys if k in decisions and decisions[k].create_only}
        to_apply = []
        for obj, key in zip(objects, keys):
            if key in create_only and cluster.get(obj) is not None:
                result.exists.append(decisions[key].ref.id)
                result.skipped.append((obj.id, "createOnly: it exists on the WEC, not updated"))
            else:
                to_apply.append(obj)
        candidates = [row for row in previous if row.key not in set(keys)]
        live = {}
        if not no_prune:
            for row in candidates:
                current = cluster.get(_inventory_object(row))
                live[row.key] = (current or {}).get("metadata") if current else None
        result.prune = plan_prune(artifact.name, previous, set(keys), live, no_prune=no_prune)
        if dry_run:
            return result
        # Before the first change, the inventory also names what this run may apply: should it
        # fail half way, the next run can still prune what it had applied.
        new_keys = set(keys)
        record(state, artifact.name, artifact.version,
               [(obj, key[2], key in create_only) for obj, key in zip(objects, keys)]
               + [(_inventory_object(row), row.namespace, False) for row in previous if row.key not in new_keys],
               None)
        result.applied, newer = kube.apply_to_cluster(target, artifact.name, artifact.version, to_apply,
                                                      allow_downgrade=allow_downgrade)
        result.skipped += newer
        for deletion in result.prune.delete:
            if _delete(cluster, deletion.obj, deletion.uid, deletion.resource_version):
                result.pruned.append(deletion.obj.id)
        statuses: Statuses = {}
        for obj, key in zip(objects, keys):
            current = cluster.get(obj)
            status = (current or {}).get("status")
            if isinstance(status, dict) and status:
                d = decisions.get(key)
                collectors = list(d.status_collectors) + (["singleton"] if d and d.singleton_status else []) if d else []
                collected = _collect(placement, d, originals.get(key, obj.body), status, site.name,
                                     ((current or {}).get("metadata") or {}).get("generation"))
                statuses[obj.id] = (obj, key[2], status, collectors, collected)
                result.statuses[obj.id] = status
                result.collected[obj.id] = collected
    finally:
        cluster.close()
    inventory = [(obj, key[2], key in create_only) for obj, key in zip(objects, keys)]
    kept = {row.key for row, _ in result.prune.kept}  # --no-prune, Namespaces, CRDs: still ferry's
    inventory += [(_inventory_object(row), row.namespace, False) for row in previous if row.key in kept]
    record(state, artifact.name, artifact.version, inventory, statuses)
    return result


def _collect(placement: Placement | None, decision: Decision | None, obj: dict[str, Any], status: dict[str, Any],
             wec: str, generation: object) -> list[dict[str, Any]]:
    """The results of the StatusCollectors the object's clauses name, over this WEC's row
    (:func:`manifests.statuscollect.collect`); [] when none, or none is in the set."""
    if placement is None or decision is None:
        return []
    named = [placement.collectors[n] for n in decision.status_collectors if n in placement.collectors]
    if not named:
        return []
    from manifests.statuscollect import activation, collect

    row = activation(wec=wec, obj=obj, status=status, at=utc_now(),
                     generation=generation if isinstance(generation, int) and not isinstance(generation, bool) else 0)
    return [collect(c, [row]) for c in named]


def _is_new_kind(obj: KubeObject, objects: list[KubeObject]) -> bool:
    """Whether ``obj``'s kind is defined by a CRD of the same set (not served before it is applied)."""
    return any(o.kind == "CustomResourceDefinition" and o.group == "apiextensions.k8s.io"
               and (o.body.get("spec") or {}).get("group") == obj.group
               and ((o.body.get("spec") or {}).get("names") or {}).get("kind") == obj.kind for o in objects)


def _delete(cluster: Any, row: AppliedObject, uid: str | None, resource_version: str | None) -> bool:
    """DELETE one object with preconditions; False when it was already gone."""
    from kubernetes.dynamic.exceptions import NotFoundError

    obj = _inventory_object(row)
    resource = cluster.resource(obj)
    preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
    body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
            **({"preconditions": preconditions} if preconditions else {})}

    def delete() -> bool:
        try:
            resource.delete(name=obj.name, namespace=cluster.namespace(resource, obj), body=body,
                            _request_timeout=kube.REQUEST_TIMEOUT)
        except NotFoundError:
            return False
        return True

    return bool(cluster._call(delete, f"pruning {row.id}"))


def _to_folder(artifact: Artifact, objects: list[KubeObject], target: kube.ManifestTarget, state: EdgeState,
               site: Site, previous: list[AppliedObject], image_refs: dict[str, str], origin: dict[str, str],
               no_prune: bool, dry_run: bool, registry: str | None) -> WecResult:
    placement, chosen = place(objects, site, "default")
    objects = kube.prepare(chosen, image_refs, kube.annotations_for(artifact, origin), registry=registry)
    decisions = {d.ref.key: d for d in placement.decisions} if placement else {}
    result = WecResult(artifact.name, placement)
    keys = [_key(obj, "default", bool(obj.namespace)) for obj in objects]
    for obj, key in zip(objects, keys):
        if key in decisions and decisions[key].create_only:
            obj.body["metadata"]["annotations"][FLUX_SSA_ANNOTATION] = "IfNotPresent"
    # The folder is replaced whole: what the new version does not write is gone from it.
    result.prune = plan_prune(artifact.name, previous, set(keys), None, no_prune=False)
    if dry_run:
        return result
    assert target.gitops_dir is not None
    try:
        result.written = kube.write_gitops(Path(target.gitops_dir), artifact.name, objects)
    except OSError as err:
        raise FerryError(f"manifest set {artifact.name!r}: cannot write to {target.gitops_dir}: "
                         f"{err.strerror or err}") from None
    result.applied = [obj.id for obj in objects]
    result.pruned = [d.obj.id for d in result.prune.delete]
    record(state, artifact.name, artifact.version,
           [(obj, key[2], bool(decisions.get(key) and decisions[key].create_only)) for obj, key in zip(objects, keys)],
           {})
    return result
