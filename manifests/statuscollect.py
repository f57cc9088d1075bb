"""KubeStellar ``StatusCollector`` objects, parsed and evaluated for one WEC. Pure.

A BindingPolicy clause (or Binding entry) names StatusCollectors in ``statusCollectors``; each
says, in CEL, how to reduce the status the WECs return for a workload object to a small table
(a ``NamedStatusCombination`` of a ``CombinedStatus``). KubeStellar evaluates them in its core
over one row per WEC; a disconnected WEC fed by ferry evaluates them over *its own row* after
apply, and the edge state keeps the result for the return path (issue #17 combines the rows of
many sites at the hub).

The rules follow KubeStellar **v0.30.0** (``api/control/v1alpha1/types.go``,
``docs/content/direct/combined-status.md``; unchanged at ``main`` 1c28a8a1):

- ``spec.filter`` (optional) is applied first; it must give a boolean or null (null: false).
- ``spec.select`` (named expressions) gives one column each; or ``spec.combinedFields``
  (named aggregators ``COUNT``, ``SUM``, ``AVG``, ``MIN``, ``MAX``; all but COUNT need a
  ``subject`` expression) with optional ``spec.groupBy`` (named expressions; they come first
  in the columns). ``select`` must be empty when ``combinedFields`` is not; ``groupBy`` must be
  empty when ``combinedFields`` is.
- ``spec.limit`` (default 20) bounds the number of rows.
- The expressions see ``inventory.name`` (the WEC's name), ``obj`` (the workload object as the
  set holds it, without ``status``), ``returned.status`` (what the WEC reported) and
  ``propagation`` (``lastReturnedUpdateTimestamp``, ``lastGeneration``,
  ``lastGenerationIsApplied``, ``lastCurrencyUpdateTime``).
- Aggregating no rows (the filter said no) gives the identity of the operation in float64:
  COUNT 0, SUM 0, MIN ``+Inf``, MAX ``-Inf``, AVG ``NaN``; with ``groupBy``, no rows at all.
- A value is ``{type: String|Number|Bool|Null|Object|Array, <field>: ...}`` (``Value``; a
  Number is its JSON text in the field ``float``, Go's ``+Inf``, ``-Inf``, ``NaN`` for those).

CEL itself is cel-python's (``celpy``, a pure Python implementation of the CEL specification).
Unlike KubeStellar, expressions are not type-checked against the object's OpenAPI schema
(cel-python has no such checker): a syntax error refuses the set before anything is applied
(:class:`~manifests.errors.PlacementError`), while an expression that fails at evaluation (a
field the status lacks, a division by zero) gives ``Null`` and is named in the result's
``errors`` (KubeStellar posts such problems to the Binding's status, which a disconnected WEC
cannot reach).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from manifests.errors import PlacementError

AGGREGATORS = ("COUNT", "SUM", "AVG", "MIN", "MAX")
DEFAULT_LIMIT = 20
_SPEC_FIELDS = {"filter", "groupBy", "combinedFields", "select", "limit"}


@dataclass(frozen=True)
class Expression:
    """One CEL expression, compiled (``program`` is cel-python's ``Runner``)."""

    text: str
    program: Any

    def evaluate(self, activation: Mapping[str, Any]) -> tuple[Any, str | None]:
        """(the value as JSON-like Python, None) or (None, why it could not be evaluated)."""
        import celpy
        import celpy.adapter

        try:
            value = self.program.evaluate(activation)
        except Exception as exc:  # cel-python raises or returns CELEvalError for the same problems
            return None, f"{self.text!r}: {_eval_error(exc)}"
        if isinstance(value, celpy.CELEvalError):
            return None, f"{self.text!r}: {_eval_error(value)}"
        return json.loads(json.dumps(value, cls=celpy.adapter.CELJSONEncoder)), None


def _eval_error(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


@dataclass(frozen=True)
class Named:
    """A named expression (``groupBy``, ``select``) or aggregator (``combinedFields``)."""

    name: str
    expression: Expression | None
    aggregator: str = ""  # COUNT, SUM, AVG, MIN, MAX for combinedFields


@dataclass(frozen=True)
class Collector:
    """A parsed ``StatusCollector``."""

    name: str
    filter: Expression | None
    group_by: tuple[Named, ...]
    combined: tuple[Named, ...]
    select: tuple[Named, ...]
    limit: int

    @property
    def columns(self) -> list[str]:
        """The result's ``columnNames``: groupBy then combinedFields, or select."""
        return [n.name for n in (*self.group_by, *self.combined, *self.select)]


def compile_expression(text: object, where: str) -> Expression:
    """A CEL expression from a StatusCollector; PlacementError naming ``where`` when it is not one."""
    import celpy

    if not isinstance(text, str) or not text.strip():
        raise PlacementError(f"{where}: must be a CEL expression (a non-empty string)")
    env = celpy.Environment()
    try:
        ast = env.compile(text)
    except celpy.CELParseError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise PlacementError(f"{where}: {text!r} is not a CEL expression ({first.strip()})") from None
    return Expression(text, env.program(ast))


def _named(raw: object, where: str, *, aggregate: bool) -> tuple[Named, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PlacementError(f"{where} must be a list")
    out: list[Named] = []
    seen: set[str] = set()
    for i, item in enumerate(raw, start=1):
        at = f"{where}[{i}]"
        allowed = {"name", "type", "subject"} if aggregate else {"name", "def"}
        if not isinstance(item, dict) or set(item) - allowed:
            raise PlacementError(f"{at} must be a mapping of {', '.join(sorted(allowed))}")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise PlacementError(f"{at}: needs a name")
        if name in seen:
            raise PlacementError(f"{at}: the name {name!r} is used twice")
        seen.add(name)
        if not aggregate:
            out.append(Named(name, compile_expression(item.get("def"), f"{at}: def")))
            continue
        kind = item.get("type")
        if kind not in AGGREGATORS:
            raise PlacementError(f"{at}: type {kind!r} is not one of {', '.join(AGGREGATORS)}")
        subject = item.get("subject")
        if kind != "COUNT" and subject is None:
            raise PlacementError(f"{at}: a {kind} needs a subject expression")
        out.append(Named(name, compile_expression(subject, f"{at}: subject") if subject is not None else None,
                         kind))
    return tuple(out)


def parse_collector(body: Mapping[str, Any], where: str) -> Collector:
    """A ``StatusCollector`` object (its body); PlacementError naming ``where`` when malformed.

    Args:
        body: the object as parsed from the set (``apiVersion``, ``kind``, ``metadata``, ``spec``).
        where: what to name in errors (``StatusCollector count (f.yaml document 2)``).
    Returns:
        The collector, its expressions compiled.
    Raises:
        PlacementError: unknown fields, a CEL syntax error, an unknown aggregator, a non-COUNT
            aggregator without subject, ``select`` with ``combinedFields``, ``groupBy`` without
            ``combinedFields``, a bad ``limit`` (types.go ``StatusCollectorSpec``).
    """
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise PlacementError(f"{where}: has no spec")
    unknown = set(spec) - _SPEC_FIELDS
    if unknown:
        raise PlacementError(f"{where}: unknown spec field {sorted(unknown)[0]!r}")
    limit = spec.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise PlacementError(f"{where}: spec.limit must be a whole number, 0 or more")
    raw_filter = spec.get("filter")
    collector = Collector(
        name=str(body["metadata"]["name"]),
        filter=compile_expression(raw_filter, f"{where}: spec.filter") if raw_filter is not None else None,
        group_by=_named(spec.get("groupBy"), f"{where}: spec.groupBy", aggregate=False),
        combined=_named(spec.get("combinedFields"), f"{where}: spec.combinedFields", aggregate=True),
        select=_named(spec.get("select"), f"{where}: spec.select", aggregate=False),
        limit=limit)
    if collector.select and collector.combined:
        raise PlacementError(f"{where}: select must be empty when combinedFields is not")
    if collector.group_by and not collector.combined:
        raise PlacementError(f"{where}: groupBy must be empty when combinedFields is")
    if not collector.select and not collector.combined:
        raise PlacementError(f"{where}: has neither select nor combinedFields, so it collects nothing")
    return collector


# --------------------------------------------------------------------------- evaluating


def value(v: Any) -> dict[str, Any]:
    """KubeStellar's ``Value`` union for one JSON-like value."""
    if v is None:
        return {"type": "Null"}
    if isinstance(v, bool):
        return {"type": "Bool", "bool": v}
    if isinstance(v, (int, float)):
        return {"type": "Number", "float": _number(v)}
    if isinstance(v, str):
        return {"type": "String", "string": v}
    if isinstance(v, list):
        return {"type": "Array", "array": v}
    return {"type": "Object", "object": v}


def _number(v: float) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        if v.is_integer() and abs(v) < 2 ** 53:
            return str(int(v))
    return json.dumps(v)


def activation(*, wec: str, obj: Mapping[str, Any], status: Mapping[str, Any], at: str,
               generation: int = 0) -> dict[str, Any]:
    """What the expressions see for this WEC's row (types.go ``ExpressionContext``).

    Args:
        wec: the WEC's name (``inventory.name``).
        obj: the workload object as the set holds it (its ``status``, if any, is left out).
        status: the ``.status`` the WEC reported after apply (``returned.status``).
        at: when it was read, RFC 3339 UTC (``propagation.lastReturnedUpdateTimestamp`` and
            ``lastCurrencyUpdateTime``; strings, as cel-python has no schema to make them timestamps).
        generation: ``metadata.generation`` the WEC reported, 0 when none (``propagation.lastGeneration``).
    """
    import celpy

    body = {k: v for k, v in obj.items() if k != "status"}
    return {"inventory": celpy.json_to_cel({"name": wec}), "obj": celpy.json_to_cel(body),
            "returned": celpy.json_to_cel({"status": dict(status)}),
            "propagation": celpy.json_to_cel({"lastReturnedUpdateTimestamp": at, "lastGeneration": generation,
                                              "lastGenerationIsApplied": True, "lastCurrencyUpdateTime": at})}


def collect(collector: Collector, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Evaluate ``collector`` over ``rows`` (one :func:`activation` per WEC; at a site, its own).

    Returns:
        KubeStellar's ``NamedStatusCombination``: ``{"name", "columnNames", "rows": [{"columns":
        [Value, ...]}]}``, plus ``"errors"``: one line per expression that could not be evaluated
        (its value is Null). Raises nothing.
    """
    errors: list[str] = []

    def run(expr: Expression | None, act: Mapping[str, Any]) -> Any:
        if expr is None:
            return None
        got, problem = expr.evaluate(act)
        if problem is not None:
            errors.append(problem)
        return got

    kept = []
    for act in rows:
        if collector.filter is None:
            kept.append(act)
            continue
        verdict = run(collector.filter, act)
        if verdict is not None and not isinstance(verdict, bool):
            errors.append(f"filter {collector.filter.text!r} gave {verdict!r}, not a boolean or null: row left out")
        elif verdict:
            kept.append(act)
    out_rows: list[list[Any]] = []
    if collector.select:
        out_rows = [[run(n.expression, act) for n in collector.select] for act in kept]
    else:
        groups: dict[str, tuple[list[Any], list[Mapping[str, Any]]]] = {}
        for act in kept:
            key = [run(n.expression, act) for n in collector.group_by]
            groups.setdefault(json.dumps(key, sort_keys=True), (key, []))[1].append(act)
        if not collector.group_by and not groups:
            groups[""] = ([], [])
        for key, members in groups.values():
            out_rows.append(key + [_aggregate(n, members, run, errors) for n in collector.combined])
    return {"name": collector.name, "columnNames": collector.columns,
            "rows": [{"columns": [value(v) for v in row]} for row in out_rows[:collector.limit]],
            "errors": errors}


def _aggregate(n: Named, members: list[Mapping[str, Any]], run: Any, errors: list[str]) -> Any:
    if n.aggregator == "COUNT":
        return len(members)
    numbers: list[float] = []
    for act in members:
        got = run(n.expression, act)
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            if got is not None:
                errors.append(f"{n.name}: {n.aggregator} subject gave {got!r}, not a number: left out")
            continue
        numbers.append(got)
    if n.aggregator == "SUM":
        return sum(numbers) if numbers else 0
    if n.aggregator == "MIN":
        return min(numbers) if numbers else math.inf
    if n.aggregator == "MAX":
        return max(numbers) if numbers else -math.inf
    return sum(numbers) / len(numbers) if numbers else math.nan
