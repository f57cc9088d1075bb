"""KubeStellar StatusCollectors evaluated at a WEC fed by media (issue 16, "status back").

Inputs are KubeStellar's documented examples, kubestellar/kubestellar
``docs/content/direct/combined-status.md`` (v0.30.0; "Examples of using the general
technique"), written here with their headings; the rules are ``api/control/v1alpha1/types.go``
``StatusCollectorSpec``, ``NamedAggregator``, ``ExpressionContext``, ``Value``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.apply.kube import ManifestTarget
from importer.state import EdgeState
from importer.wec import apply_placed, collected_line, read_object_status
from manifests.errors import PlacementError
from manifests.kube import parse_documents
from manifests.placement import evaluate
from manifests.statuscollect import activation, collect, parse_collector, value
from tests.support.fakekube import FakeKube
from tests.test_kube_apply import ORIGIN
from tests.test_wec_apply import EDGE, make_set


def collector(spec: str, name: str = "c") -> Any:
    body = {"apiVersion": "control.kubestellar.io/v1alpha1", "kind": "StatusCollector",
            "metadata": {"name": name}, "spec": yaml.safe_load(spec)}
    return parse_collector(body, f"StatusCollector {name}")


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
              "spec": {"replicas": 3}}


def row(status: dict[str, Any], wec: str = "wec-1", obj: dict[str, Any] = DEPLOYMENT) -> dict[str, Any]:
    return activation(wec=wec, obj=obj, status=status, at="2026-12-01T00:00:00Z")


def cells(result: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [r["columns"] for r in result["rows"]]


# --------------------------------------------------------------------------- the documented examples


def test_number_of_wecs() -> None:
    """combined-status.md, "Number of WECs": one column, one row, the number of WECs."""
    c = collector("combinedFields:\n   - name: count\n     type: COUNT\n")
    result = collect(c, [row({"availableReplicas": 3})])
    assert result == {"name": "c", "columnNames": ["count"], "rows": [{"columns": [{"type": "Number", "float": "1"}]}],
                      "errors": []}
    # Over the rows of three sites (what the hub will combine, issue 17), the same rule counts them.
    assert cells(collect(c, [row({}), row({}), row({})])) == [[{"type": "Number", "float": "3"}]]


def test_histogram_of_pod_phase() -> None:
    """combined-status.md, "Histogram of Pod phase": one row per phase value seen, with its count."""
    c = collector("groupBy:\n   - name: phase\n     def: returned.status.phase\n"
                  "combinedFields:\n   - name: count\n     type: COUNT\n")
    result = collect(c, [row({"phase": "Running"}), row({"phase": "Pending"}), row({"phase": "Running"})])
    assert result["columnNames"] == ["phase", "count"]
    assert cells(result) == [[{"type": "String", "string": "Running"}, {"type": "Number", "float": "2"}],
                             [{"type": "String", "string": "Pending"}, {"type": "Number", "float": "1"}]]


def test_histogram_of_available_replicas() -> None:
    """combined-status.md, "Histogram of number of available replicas of a Deployment"."""
    c = collector("groupBy:\n   - name: numAvailable\n     def: returned.status.availableReplicas\n"
                  "combinedFields:\n   - name: count\n     type: COUNT\n")
    assert cells(collect(c, [row({"availableReplicas": 2})])) == [[{"type": "Number", "float": "2"},
                                                                    {"type": "Number", "float": "1"}]]


def test_list_of_wecs_where_the_deployment_is_not_as_available_as_desired() -> None:
    """combined-status.md: filter "obj.spec.replicas != returned.status.availableReplicas", select inventory.name."""
    c = collector('filter: "obj.spec.replicas != returned.status.availableReplicas"\n'
                  "select:\n   - name: wec\n     def: inventory.name\n")
    assert cells(collect(c, [row({"availableReplicas": 1}, "wec-12")])) == [[{"type": "String", "string": "wec-12"}]]
    assert collect(c, [row({"availableReplicas": 3}, "wec-12")])["rows"] == []  # as desired: filtered out


def test_full_status_from_each_wec_with_information_retrieval_time() -> None:
    """combined-status.md, "Full status from each WEC with information retrieval time"."""
    c = collector("select:\n   - name: wec\n     def: inventory.name\n   - name: status\n     def: returned.status\n"
                  "   - name: retrievalTime\n     def: propagation.lastReturnedUpdateTimestamp\n")
    status = {"availableReplicas": 3, "conditions": [{"type": "Available", "status": "True"}]}
    assert cells(collect(c, [row(status)])) == [[{"type": "String", "string": "wec-1"},
                                                 {"type": "Object", "object": status},
                                                 {"type": "String", "string": "2026-12-01T00:00:00Z"}]]


# --------------------------------------------------------------------------- the rules of types.go


def test_aggregators_and_their_values_over_no_rows() -> None:
    """NamedAggregator: "The AVG of no values is NaN; for the other types the aggregation of no
    values is the identity element of the combining operation in float64"."""
    spec = ("filter: \"returned.status.availableReplicas > 0\"\ncombinedFields:\n"
            + "".join(f"  - {{name: {t.lower()}, type: {t}, subject: returned.status.availableReplicas}}\n"
                      for t in ("SUM", "AVG", "MIN", "MAX")) + "  - {name: count, type: COUNT}\n")
    c = collector(spec)
    result = collect(c, [row({"availableReplicas": 2}), row({"availableReplicas": 4}), row({"availableReplicas": 0})])
    assert [v["float"] for v in cells(result)[0]] == ["6", "3", "2", "4", "2"]
    empty = collect(c, [row({"availableReplicas": 0})])
    assert [v["float"] for v in cells(empty)[0]] == ["0", "NaN", "+Inf", "-Inf", "0"]


def test_limit_bounds_the_rows_and_defaults_to_20() -> None:
    c = collector("groupBy: [{name: n, def: returned.status.n}]\ncombinedFields: [{name: count, type: COUNT}]\n"
                  "limit: 2\n")
    assert len(collect(c, [row({"n": i}) for i in range(5)])["rows"]) == 2
    assert collector("select: [{name: n, def: returned.status.n}]").limit == 20
    assert collect(collector("select: [{name: n, def: '1'}]\nlimit: 0"), [row({})])["rows"] == []


def test_an_expression_failing_at_this_wec_gives_null_and_is_named() -> None:
    c = collector("select: [{name: phase, def: returned.status.phase}]")
    result = collect(c, [row({"availableReplicas": 1})])
    assert cells(result) == [[{"type": "Null"}]]
    assert result["errors"] == ["'returned.status.phase': no such member in mapping: 'phase'"]
    assert collected_line(result).startswith("c: phase=null (1 expression error(s): 'returned.status.phase'")
    wrong = collect(collector('filter: "returned.status"\nselect: [{name: a, def: "1"}]'), [row({"a": 1})])
    assert wrong["rows"] == [] and "not a boolean or null" in wrong["errors"][0]


@pytest.mark.parametrize("spec, message", [
    ("select: [{name: a, def: 'returned.status.'}]", "spec.select[1]: def: 'returned.status.' is not a CEL expression"),
    ("filter: '1 +'\nselect: [{name: a, def: '1'}]", "spec.filter: '1 +' is not a CEL expression"),
    ("combinedFields: [{name: s, type: SUM}]", "spec.combinedFields[1]: a SUM needs a subject expression"),
    ("combinedFields: [{name: s, type: MEDIAN, subject: x}]", "type 'MEDIAN' is not one of COUNT, SUM, AVG, MIN, MAX"),
    ("combinedFields: [{name: c, type: COUNT}]\nselect: [{name: a, def: '1'}]",
     "select must be empty when combinedFields is not"),
    ("groupBy: [{name: g, def: '1'}]\nselect: [{name: a, def: '1'}]", "groupBy must be empty when combinedFields is"),
    ("limit: -1\nselect: [{name: a, def: '1'}]", "spec.limit must be a whole number, 0 or more"),
    ("select: [{name: a, def: '1'}, {name: a, def: '2'}]", "the name 'a' is used twice"),
    ("selects: []", "unknown spec field 'selects'"),
    ("{}", "has neither select nor combinedFields"),
])
def test_malformed_collectors_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(PlacementError, match="^StatusCollector c: .*" + message.replace("(", r"\(").replace(
            ")", r"\)").replace("[", r"\[").replace("]", r"\]").replace("+", r"\+").replace(".", r"\.")):
        collector(spec)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8)
                           | st.floats(allow_nan=False, allow_infinity=False),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=8)


@given(json_values)
def test_value_is_the_union_kubestellar_defines(v: Any) -> None:
    """Value: exactly one field beside ``type``, the one the type names; a Number is JSON text."""
    out = value(v)
    field = {"String": "string", "Number": "float", "Bool": "bool", "Object": "object", "Array": "array"}
    assert set(out) == ({"type"} if out["type"] == "Null" else {"type", field[out["type"]]})
    if out["type"] == "Number":
        assert math.isclose(float(json.loads(out["float"])), float(v), rel_tol=1e-12, abs_tol=0)
    json.dumps(out, allow_nan=False)  # always carried as JSON


@settings(max_examples=60)
@given(st.dictionaries(st.sampled_from(["filter", "groupBy", "combinedFields", "select", "limit", "x"]),
                       json_values | st.sampled_from(["1 +", "returned.status", "inventory.name", "a.b(", "''"]),
                       max_size=4))
def test_arbitrary_specs_are_accepted_or_refused_with_one_line(spec: dict[str, Any]) -> None:
    body = {"apiVersion": "control.kubestellar.io/v1alpha1", "kind": "StatusCollector", "metadata": {"name": "c"},
            "spec": spec}
    try:
        c = parse_collector(body, "StatusCollector c")
    except PlacementError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("StatusCollector c: ")
        return
    collect(c, [row({"a": 1})])  # never raises


# --------------------------------------------------------------------------- at the WEC, after apply

SET = b"""apiVersion: control.kubestellar.io/v1alpha1
kind: StatusCollector
metadata: {name: not-available}
spec:
  filter: "obj.spec.replicas != returned.status.availableReplicas"
  select:
  - {name: wec, def: inventory.name}
  - {name: available, def: returned.status.availableReplicas}
---
apiVersion: control.kubestellar.io/v1alpha1
kind: StatusCollector
metadata: {name: count-wecs}
spec:
  combinedFields: [{name: count, type: COUNT}]
---
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata: {name: edge}
spec:
  clusterSelectors: [{matchLabels: {location-group: edge}}]
  downsync:
  - objectSelectors: [{matchLabels: {app: a}}]
    statusCollectors: [not-available, count-wecs, elsewhere]
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {app: a}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: a}}
spec:
  replicas: 3
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec: {containers: [{name: web, image: "registry.example:5000/team/web:1.0"}]}
"""


#: the set's workload image, pinned as the edge pins an image it holds (the edge refuses an unpinned one)
PINNED = {"registry.example:5000/team/web:1.0": "registry.example:5000/team/web@sha256:" + "ab" * 32}


def test_collectors_are_evaluated_after_apply_and_kept_in_the_edge_state(fakekube: FakeKube, tmp_path: Path) -> None:
    target = ManifestTarget(None, fakekube.kubeconfig(tmp_path / "k", context="wec-1"), "wec-1")
    with EdgeState.open(tmp_path / "edge") as state:
        art, read = make_set({"s.yaml": SET}, name="app")
        apply_placed(art, read, target, state=state, site=EDGE, image_refs=PINNED, origin=ORIGIN)
        fakekube.set_status("apps/v1", "Deployment", "web", "shop", {"availableReplicas": 1, "replicas": 3})
        art, read = make_set({"s.yaml": SET}, name="app", version="1.3.0")
        result = apply_placed(art, read, target, state=state, site=EDGE, image_refs=PINNED, origin=ORIGIN)
        assert result.warnings == ["statusCollectors elsewhere: not in the set, so not evaluated at this WEC "
                                   "(the whole .status is kept)"]
        [web] = read_object_status(state)
    assert web["statusCollectors"] == ["count-wecs", "elsewhere", "not-available"]
    by_name = {r["name"]: r for r in web["collected"]}
    assert by_name["not-available"]["columnNames"] == ["wec", "available"]
    assert cells(by_name["not-available"]) == [[{"type": "String", "string": "wec-1"},
                                                {"type": "Number", "float": "1"}]]
    assert cells(by_name["count-wecs"]) == [[{"type": "Number", "float": "1"}]]
    assert collected_line(by_name["not-available"]) == "not-available: wec=wec-1, available=1"


def test_a_malformed_collector_refuses_the_set_before_any_request(fakekube: FakeKube, tmp_path: Path) -> None:
    bad = SET.replace(b'filter: "obj.spec.replicas != returned.status.availableReplicas"', b'filter: "obj.spec.("')
    objects = parse_documents(bad, "s.yaml")
    with pytest.raises(PlacementError, match=r"StatusCollector not-available \(s.yaml document 1\): spec.filter: "
                                             r"'obj.spec.\(' is not a CEL expression"):
        evaluate(objects, "wec-1", {"location-group": "edge"})
    target = ManifestTarget(None, fakekube.kubeconfig(tmp_path / "k", context="wec-1"), "wec-1")
    fakekube.requests.clear()
    with EdgeState.open(tmp_path / "edge") as state:
        art, read = make_set({"s.yaml": bad}, name="app")
        with pytest.raises(PlacementError):
            apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN)
    assert fakekube.applies() == []
