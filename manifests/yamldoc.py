"""The bound on ferry's own YAML documents once their aliases are expanded.

The bundle spec, site profiles, return specs and trust policies are small YAML documents an
operator writes. YAML's anchors and aliases let a few hundred bytes name a tree of billions
of values ("billion laughs"): loading shares the subtrees, but anything that then walks or
prints the value (an error message quoting it) runs for ever. :func:`check_expanded` counts
the values as they would be expanded, in time linear in the *distinct* values, and refuses a
document over :data:`MAX_VALUES` or one that contains itself. (Kubernetes manifests have their
own bound, :data:`manifests.limits.MAX_KUBE_NODES`, in :mod:`manifests.kube`.)

Pure: works on the loaded value it is given.
"""

from __future__ import annotations

from typing import Any

from .errors import LimitError

#: Most values (scalars, mappings, sequences, mapping keys) in one of ferry's own documents once
#: aliases are expanded; a large bundle spec holds a few thousand.
MAX_VALUES = 100_000


def check_expanded(doc: Any, where: str, limit: int = MAX_VALUES) -> None:
    """Refuse a loaded YAML document that expands to more than ``limit`` values or contains itself.

    Args:
        doc: what ``yaml.safe_load`` (or a SafeLoader subclass) returned.
        where: names the document in the error (its file).
        limit: most values, counted as JSON would write them out.
    Raises:
        LimitError: over ``limit`` (an alias bomb), or a sequence or mapping that contains itself.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:
        value, finished = stack.pop()
        if not isinstance(value, (list, dict)):
            continue
        key = id(value)
        children = list(value.values()) if isinstance(value, dict) else value
        if finished:
            open_.discard(key)
            total = 1 + (len(value) if isinstance(value, dict) else 0) + sum(
                sizes.get(id(c), 1) if isinstance(c, (list, dict)) else 1 for c in children)
            if total > limit:
                raise LimitError(f"{where}: more than {limit} values once YAML aliases are expanded")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_:
            raise LimitError(f"{where}: a YAML alias refers to a value that contains it")
        open_.add(key)
        stack.append((value, True))
        stack.extend((c, False) for c in children if isinstance(c, (list, dict)) and id(c) not in sizes)
