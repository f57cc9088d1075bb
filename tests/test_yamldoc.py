"""The alias bound on ferry's own YAML documents (manifests.yamldoc): counted as expanded,
refused when over the bound or self-containing, on the real commands too (hunting found that a
site profile with a YAML alias bomb hung `ferry profile add` while its error message was made)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, strategies as st

from manifests.errors import LimitError
from manifests.yamldoc import check_expanded
from tests.support.common import KeyPair, assert_clean_failure, run_ferry

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=5),
                           max_leaves=40)


def expanded(value: object) -> int:
    """The values JSON would write, counted the slow way (an independent count)."""
    if isinstance(value, list):
        return 1 + sum(expanded(v) for v in value)
    if isinstance(value, dict):
        return 1 + len(value) + sum(expanded(v) for v in value.values())
    return 1


@given(json_values, st.integers(1, 200))
def test_a_document_passes_exactly_when_its_expanded_size_is_within_the_bound(doc: object, limit: int) -> None:
    if expanded(doc) <= limit or not isinstance(doc, (list, dict)):
        check_expanded(doc, "d.yaml", limit)
    else:
        with pytest.raises(LimitError, match="d.yaml: more than"):
            check_expanded(doc, "d.yaml", limit)


def bomb(levels: int = 8) -> str:
    parts = ["&a0 [x,x,x,x,x,x,x,x,x,x]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]"
                                            for i in range(1, levels + 1)]
    return "[" + ",".join(parts) + "]"


def test_shared_values_are_counted_each_time_and_cycles_refused() -> None:
    with pytest.raises(LimitError, match="more than 100000 values"):
        check_expanded(yaml.safe_load(f"x: {bomb()}"), "b.yaml")
    check_expanded(yaml.safe_load(f"x: {bomb(3)}"), "b.yaml")  # 11,111 values: a real document's size
    with pytest.raises(LimitError, match="contains it"):
        check_expanded(yaml.safe_load("a: &a [1, *a]"), "c.yaml")


def test_alias_bombs_in_each_document_are_refused_in_one_line(tmp_path: Path, hub_keys: KeyPair) -> None:
    b = bomb()
    profile = tmp_path / "p.yaml"
    profile.write_text(f"apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {{name: a}}\n"
                       f"spec: {{memory: {b}, accelerator: none}}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"apiVersion: ferry/v1\nkind: Bundle\nmetadata: {{name: b}}\nspec: {{models: [{{name: m, "
                    f"version: {b}, path: m}}]}}\n")
    policy = tmp_path / "trust.yaml"
    policy.write_text(json.dumps({"kind": "TrustPolicy"})[:-1] + f', "keys": {b}}}\n')
    for args, where in ((("profile", "add", profile, "--state", tmp_path / "hub"), profile),
                        (("export", spec, "--out", tmp_path / "o", "--key", hub_keys.key, "--state", tmp_path / "hub"),
                         spec),
                        (("export", ROOT_SPEC, "--out", tmp_path / "o", "--key", hub_keys.key, "--state",
                          tmp_path / "hub", "--profile", profile), profile),
                        (("verify", tmp_path, "--trust", policy), policy)):
        result = run_ferry(*args, timeout=120)
        assert_clean_failure(result, code=2, contains=f"{where}: more than 100000 values once YAML aliases are expanded")
    assert not (tmp_path / "o").exists()


ROOT_SPEC = Path(__file__).resolve().parent.parent / "samples" / "bundle.yaml"
