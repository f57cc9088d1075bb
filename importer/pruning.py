"""Pruning as a pure plan: which objects that ferry applied before must go now. No I/O.

When a newer version of a manifest set no longer selects an object that an earlier version
applied to the WEC (dropped from the set, or no longer selected by its BindingPolicies), the
object is deleted, in reverse apply order, but only when ferry owns it: the object on the WEC
carries the ``ferry.io/set`` annotation of this set (importer.apply.kube writes it on every
object it applies). The rules:

- candidates: the set's inventory (what ferry applied last time, importer.wec) minus the
  objects the new version applies;
- an object no longer on the WEC is *gone* (nothing to do);
- an object whose ``ferry.io/set`` names another set was taken over by that set: *handed over*,
  never deleted;
- an object without ``ferry.io/set`` is not ferry's (someone replaced it, or removed the
  annotation): the plan is refused (:class:`~manifests.errors.PolicyError`) before anything is
  applied, naming it; ``--no-prune`` keeps everything instead;
- Namespaces and CustomResourceDefinitions are *kept*: deleting one deletes every object in it
  (or of its kind), including objects ferry does not own; the plan says to delete them by hand;
- a deletion carries the uid and resourceVersion read when the plan was made, as DELETE
  preconditions, so an object replaced in between is not deleted (the server answers 409).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from manifests.errors import PolicyError

SET_ANNOTATION = "ferry.io/set"
#: Kinds never pruned: deleting them cascades to objects ferry may not own.
NEVER_PRUNED = frozenset({("", "Namespace"), ("apiextensions.k8s.io", "CustomResourceDefinition")})

ObjectKey = tuple[str, str, str, str]  # (group, kind, namespace, name); namespace "" when cluster-scoped


@dataclass(frozen=True)
class AppliedObject:
    """One row of a set's inventory: an object ferry applied, and where in the apply order."""

    api_version: str
    kind: str
    namespace: str
    name: str
    position: int  # 1-based apply order of the import that applied it
    version: str = ""  # the set version that applied it

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def key(self) -> ObjectKey:
        return (self.group, self.kind, self.namespace, self.name)

    @property
    def id(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"


@dataclass(frozen=True)
class Deletion:
    """Delete ``obj`` if it is still the object read when planning (DELETE preconditions)."""

    obj: AppliedObject
    uid: str | None
    resource_version: str | None


@dataclass
class PrunePlan:
    """What pruning does for one set. ``delete`` is in reverse apply order."""

    set_name: str
    delete: list[Deletion] = field(default_factory=list)
    gone: list[AppliedObject] = field(default_factory=list)
    handed_over: list[tuple[AppliedObject, str]] = field(default_factory=list)  # (object, the set owning it)
    kept: list[tuple[AppliedObject, str]] = field(default_factory=list)  # (object, why)

    def lines(self) -> list[str]:
        """One line per object, for the plan a dry run shows."""
        out = [f"prune {d.obj.id}" for d in self.delete]
        out += [f"already gone {o.id}" for o in self.gone]
        out += [f"keep {o.id}: now applied by set {owner!r}" for o, owner in self.handed_over]
        out += [f"keep {o.id}: {why}" for o, why in self.kept]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set_name, "delete": [d.obj.id for d in self.delete], "gone": [o.id for o in self.gone],
                "handedOver": [{"object": o.id, "set": s} for o, s in self.handed_over],
                "kept": [{"object": o.id, "why": w} for o, w in self.kept]}


def plan_prune(set_name: str, previous: Collection[AppliedObject], keep: Collection[ObjectKey],
               live: Mapping[ObjectKey, Mapping[str, Any] | None] | None, *, no_prune: bool = False) -> PrunePlan:
    """The prune plan for one set (see the module docstring for the rules).

    Args:
        set_name: the manifest set's name (what ``ferry.io/set`` must say).
        previous: the set's inventory from the last import that applied it.
        keep: keys of the objects the new version applies (they are never pruned).
        live: for each candidate, its ``metadata`` as the WEC holds it now (None: not there);
            None as a whole for a GitOps folder, which is replaced whole (no live check).
        no_prune: keep every candidate (``--no-prune``).
    Returns:
        The plan; nothing has been deleted.
    Raises:
        PolicyError: a candidate on the WEC that ferry does not own (no ``ferry.io/set``).
    """
    plan = PrunePlan(set_name)
    keep = set(keep)
    for obj in sorted(previous, key=lambda o: o.position, reverse=True):
        if obj.key in keep:
            continue
        if no_prune:
            plan.kept.append((obj, "--no-prune"))
            continue
        if (obj.group, obj.kind) in NEVER_PRUNED:
            plan.kept.append((obj, f"a {obj.kind} is never pruned (deleting it deletes what it holds); "
                                   "delete it by hand if nothing else uses it"))
            continue
        if live is None:
            plan.delete.append(Deletion(obj, None, None))
            continue
        meta = live.get(obj.key)
        if meta is None:
            plan.gone.append(obj)
            continue
        owner = (meta.get("annotations") or {}).get(SET_ANNOTATION)
        if owner is None:
            raise PolicyError(f"manifest set {set_name!r} would prune {obj.id}, which ferry does not own on the WEC "
                              f"(no {SET_ANNOTATION} annotation: someone else replaced it); nothing was applied: "
                              "delete it by hand, or import with --no-prune")
        if owner != set_name:
            plan.handed_over.append((obj, owner))
            continue
        plan.delete.append(Deletion(obj, meta.get("uid"), meta.get("resourceVersion")))
    return plan
