"""The bundle spec: what operators write, and the one-line refusals they see for mistakes."""

from __future__ import annotations

import os

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler.spec import parse_size, parse_spec
from manifests.errors import FerryError
from tests.support.common import assert_clean_failure, run_ferry
from tests.support.export import make_model, write_spec

GOOD = """\
apiVersion: ferry/v1
kind: Bundle
metadata:
  name: edge-ai
  channel: stable
spec:
  models:
    - name: sentiment
      version: 1.2.0
      path: models/sentiment
  images:
    - ref: registry.example:5000/team/sentiment:1.2.0
    - ref: team/tokenizer:0.4.1
      layout: images/tokenizer
      version: 0.4.1
  manifests:
    - name: sentiment-app
      version: 1.2.0
      path: kube
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "models/sentiment").mkdir(parents=True)
    (tmp_path / "models/sentiment/w.bin").write_bytes(b"x")
    (tmp_path / "images/tokenizer").mkdir(parents=True)
    (tmp_path / "kube").mkdir()
    return tmp_path


def test_parses_the_documented_example(tree: Path) -> None:
    spec = parse_spec(GOOD, tree / "bundle.yaml")
    assert (spec.name, spec.channel) == ("edge-ai", "stable")
    assert spec.models[0].path == tree / "models/sentiment"
    assert spec.images[0].layout is None and spec.images[1].layout == tree / "images/tokenizer"
    assert spec.images[1].version == "0.4.1"
    assert spec.manifests[0].name == "sentiment-app"


def test_channel_defaults_to_stable(tree: Path) -> None:
    spec = parse_spec(GOOD.replace("  channel: stable\n", ""), tree / "b.yaml")
    assert spec.channel == "stable"


@pytest.mark.parametrize("change, message", [
    (("apiVersion: ferry/v1", "apiVersion: ferry/v2"), "apiVersion"),
    (("kind: Bundle", "kind: Thing"), "kind"),
    (("version: 1.2.0\n      path: models", "version: 1.2\n      path: models"), "spec.models[0].version"),
    (("version: 1.2.0\n      path: models", "version: v1.2.0\n      path: models"), "semantic version"),
    (("path: models/sentiment", "path: models/missing"), "spec.models[0].path"),
    (("  channel: stable", "  channel: stable\n  colour: blue"), "metadata.colour"),
    (("      path: kube", "      path: kube\n      extra: 1"), "spec.manifests[0].extra"),
    (("name: sentiment-app", "name: sentiment-app\n      name: again"), "duplicate key"),
    (("name: edge-ai", "name: 'edge ai'"), "metadata.name"),
    (("layout: images/tokenizer", "layout: images/nothere"), "spec.images[1].layout"),
])
def test_mistakes_name_the_field(tree: Path, change: tuple[str, str], message: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(FerryError) as err:
        parse_spec(text, tree / "bundle.yaml")
    assert message in str(err.value) and str(tree / "bundle.yaml") in str(err.value)
    assert "\n" not in str(err.value)


def test_duplicate_names_are_refused(tree: Path) -> None:
    text = GOOD.replace("  images:", "    - name: sentiment\n      version: 2.0.0\n      path: models/sentiment\n"
                                     "  images:")
    with pytest.raises(FerryError, match=r"spec.models\[1\].name 'sentiment' is listed twice"):
        parse_spec(text, tree / "b.yaml")


def test_malformed_yaml_names_line(tree: Path) -> None:
    with pytest.raises(FerryError, match="not valid YAML at line"):
        parse_spec("apiVersion: ferry/v1\nkind: [Bundle\n", tree / "b.yaml")


def test_empty_spec_is_refused(tree: Path) -> None:
    with pytest.raises(FerryError, match="lists nothing"):
        parse_spec(GOOD.split("spec:")[0] + "spec: {}\n", tree / "b.yaml")


@pytest.mark.parametrize("text, value", [
    ("32GiB", 32 << 30), ("64GB", 64 * 10**9), ("500MB", 500 * 10**6), ("1.5GiB", 3 << 29),
    ("4096", 4096), ("10 MiB", 10 << 20), ("2KiB", 2048), ("7kb", 7000),
])
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "GiB", "-1GiB", "3 parsecs", "0", "1e9"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(FerryError, match="size"):
        parse_size(text)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["KiB", "MiB", "GiB", "KB", "MB", "GB", ""]))
def test_size_units_multiply(n: int, unit: str) -> None:
    scale = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "": 1}[unit]
    assert parse_size(f"{n}{unit}") == n * scale


@given(st.text(max_size=30))
def test_size_parser_never_crashes(text: str) -> None:
    try:
        assert parse_size(text) > 0
    except FerryError:
        pass


# ---- through the real CLI: one line, non-zero exit, nothing that looks finished


def _export(tmp_path: Path, spec: Path, hub_keys) -> tuple[object, Path]:  # noqa: ANN001
    out = tmp_path / "out"
    return run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "state"), out


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: x\n"), "not valid YAML"),
    (lambda p: p.write_text(p.read_text().replace("path: m", "path: gone")), "no such file"),
    (lambda p: p.write_text(p.read_text().replace("1.0.0", "1.0")), "semantic version"),
    (lambda p: p.write_text(p.read_text() + "    - name: a\n      version: 2.0.0\n      path: m\n"), "listed twice"),
    (lambda p: p.write_text(p.read_text() + "  colours: [red]\n"), "not a known field"),
])
def test_cli_bad_spec(tmp_path: Path, hub_keys, mutate, message: str) -> None:  # noqa: ANN001
    make_model(tmp_path / "m", count=2, size=4096)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    mutate(spec)
    result, out = _export(tmp_path, spec, hub_keys)
    assert_clean_failure(result, code=2, contains=message)
    assert not list(tmp_path.rglob("manifest.json"))


def test_cli_symlink_leaving_model_folder(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "m", count=2, size=4096)
    (tmp_path / "secret").write_text("hub secret")
    (tmp_path / "m" / "leak.txt").symlink_to(tmp_path / "secret")
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    result, out = _export(tmp_path, spec, hub_keys)
    assert_clean_failure(result, code=2, contains="leaves the model folder")
    assert not out.exists()


def test_cli_missing_spec_and_key(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    result, _ = _export(tmp_path, tmp_path / "nope.yaml", hub_keys)
    assert_clean_failure(result, code=2, contains=f"spec file {tmp_path / 'nope.yaml'}: not found")
    os.mkfifo(tmp_path / "fifo.yaml")  # a named pipe must be refused, not hang the export
    result, _ = _export(tmp_path, tmp_path / "fifo.yaml", hub_keys)
    assert_clean_failure(result, code=2, contains="not a regular file")
    make_model(tmp_path / "m", count=1, size=4096)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    result = run_ferry("export", spec, "--out", tmp_path / "o", "--key", tmp_path / "none.key",
                       "--state", tmp_path / "st")
    assert_clean_failure(result, code=2, contains=f"key file {tmp_path / 'none.key'}: not found")
    assert not (tmp_path / "o").exists()


@given(st.text(max_size=200))
def test_spec_parser_never_crashes(text: str) -> None:
    try:
        parse_spec(text, Path("/nonexistent/bundle.yaml"))
    except FerryError as exc:
        assert "\n" not in str(exc)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12))
def test_spec_parser_refuses_any_shape_cleanly(doc: object) -> None:
    import yaml

    try:
        parse_spec(yaml.safe_dump({"apiVersion": "ferry/v1", "kind": "Bundle", "metadata": {"name": "x"},
                                   "spec": doc}), Path("/nonexistent/bundle.yaml"))
    except FerryError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("body, files, message", [
    ("  manifests:\n    - name: app\n      version: 1.0.0\n      path: kube\n", {"kube/a.yaml": "foo: bar\n"},
     "not a Kubernetes object"),
    ("  images:\n    - ref: 127.0.0.1:1/team/app:1.0.0\n", {}, "unreachable"),
])
def test_cli_bad_sources_refused_before_writing(tmp_path: Path, hub_keys, body: str, files: dict[str, str],
                                                message: str) -> None:  # noqa: ANN001
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    spec = tmp_path / "bundle.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata:\n  name: x\nspec:\n" + body)
    result, out = _export(tmp_path, spec, hub_keys)
    assert_clean_failure(result, code=2, contains=message)
    assert not out.exists()
