"""The samples a new user runs first: reproducible from their scripts, and valid to the tools
that consume them (safetensors readers, skopeo, umoci, KubeStellar's CRD schema, ferry's trust)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import jsonschema
import pytest
import typer.core as typer_core
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.common import SAMPLES, KeyPair, run_ferry

MODEL_DIR = SAMPLES / "models" / "sentiment"
IMAGE_DIR = SAMPLES / "images" / "sentiment-server"
MANIFEST_DIR = SAMPLES / "kubestellar" / "sentiment"
DTYPE_WIDTH = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I32": 4, "I64": 8}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def regenerate(script: str, out: Path) -> None:
    subprocess.run([sys.executable, str(SAMPLES / script), "--out", str(out)], check=True, capture_output=True)


def parse_safetensors(data: bytes) -> tuple[dict[str, str], dict[str, dict]]:
    """Check the safetensors layout strictly; return (metadata, tensors)."""
    (size,) = struct.unpack("<Q", data[:8])
    assert 8 + size <= len(data) and size % 8 == 0
    header = json.loads(data[8:8 + size])
    metadata = header.pop("__metadata__")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    offset = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        start, end = info["data_offsets"]
        assert start == offset, f"{name}: data not contiguous"
        n = 1
        for d in info["shape"]:
            n *= d
        assert end - start == n * DTYPE_WIDTH[info["dtype"]], f"{name}: size does not match dtype*shape"
        offset = end
    assert 8 + size + offset == len(data), "trailing or missing data"
    return metadata, header


# --- the model -------------------------------------------------------------------------------

def test_model_regenerates_byte_identical(tmp_path: Path) -> None:
    regenerate("make_model.py", tmp_path)
    assert tree(tmp_path) == tree(MODEL_DIR)


def test_model_is_a_valid_safetensors_file_of_a_few_hundred_kib() -> None:
    data = (MODEL_DIR / "model.safetensors").read_bytes()
    metadata, tensors = parse_safetensors(data)
    assert metadata["version"] == "1.2.0"
    assert {t["dtype"] for t in tensors.values()} == {"F16", "F32"}
    assert 100 * 1024 < len(data) < 1024 * 1024
    config = json.loads((MODEL_DIR / "config.json").read_text())
    vocab = json.loads((MODEL_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    assert tensors["embeddings.word_embeddings.weight"]["shape"] == [config["vocab_size"], config["hidden_size"]]
    assert len(vocab) == config["vocab_size"]


def test_next_model_version_changes_only_the_small_tensors(tmp_path: Path) -> None:
    """What makes the sample useful for delta bundles: a fine-tune leaves the big tensors alone."""
    subprocess.run([sys.executable, str(SAMPLES / "make_model.py"), "--version", "1.3.0", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    old, new = (MODEL_DIR / "model.safetensors").read_bytes(), (tmp_path / "model.safetensors").read_bytes()
    (old_meta, old_t), (new_meta, new_t) = parse_safetensors(old), parse_safetensors(new)
    assert new_meta["version"] == "1.3.0"
    changed = set()
    for name in old_t:
        (a, b), (c, d) = old_t[name]["data_offsets"], new_t[name]["data_offsets"]
        base_old, base_new = 8 + struct.unpack("<Q", old[:8])[0], 8 + struct.unpack("<Q", new[:8])[0]
        if old[base_old + a:base_old + b] != new[base_new + c:base_new + d]:
            changed.add(name)
    assert changed == {"classifier.weight", "encoder.dense.bias"}


def test_safetensors_check_catches_a_truncated_file() -> None:
    data = bytearray((MODEL_DIR / "model.safetensors").read_bytes())
    with pytest.raises(AssertionError):
        parse_safetensors(bytes(data[:-2]))  # truncated data


def test_sample_server_classifies_with_the_sample_model() -> None:
    serve = SAMPLES / "src" / "sentiment-server" / "app" / "serve.py"
    env = {"MODEL_DIR": str(MODEL_DIR), "PATH": "/usr/bin:/bin"}
    for text, label in [("the update was great and stable", "positive"), ("this disk is broken and slow", "negative")]:
        out = subprocess.run([sys.executable, str(serve), "--classify", text], env=env,
                             capture_output=True, text=True, check=True).stdout
        assert json.loads(out)["label"] == label


# --- the image -------------------------------------------------------------------------------

def test_image_regenerates_byte_identical(tmp_path: Path) -> None:
    regenerate("make_image.py", tmp_path)
    assert tree(tmp_path) == tree(IMAGE_DIR)


def test_image_is_valid_to_skopeo_and_umoci(tmp_path: Path) -> None:
    ref = f"{IMAGE_DIR}:1.2.0"
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{ref}"], capture_output=True, text=True,
                                     check=True).stdout)
    assert info["Labels"]["org.opencontainers.image.version"] == "1.2.0" and len(info["Layers"]) == 2
    # umoci unpack checks every layer against its digest and its diff_id.
    layout = tmp_path / "layout"
    shutil.copytree(IMAGE_DIR, layout)  # umoci may write to the layout; the committed one stays as it is
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:1.2.0", str(tmp_path / "bundle")],
                   capture_output=True, check=True)
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "app" / "serve.py").read_bytes() == (SAMPLES / "src" / "sentiment-server" / "app" / "serve.py").read_bytes()
    tags = subprocess.run(["umoci", "list", "--layout", str(layout)], capture_output=True, text=True, check=True).stdout
    assert tags.split() == ["1.2.0"]


def test_skopeo_refuses_a_tampered_layer(tmp_path: Path) -> None:
    """The image check above can fail: a layer whose bytes no longer match its digest is refused."""
    layout = tmp_path / "layout"
    shutil.copytree(IMAGE_DIR, layout)
    index = json.loads((layout / "index.json").read_bytes())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    layer = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    data = bytearray(layer.read_bytes())
    data[20] ^= 0xFF
    layer.write_bytes(bytes(data))
    result = subprocess.run(["skopeo", "copy", f"oci:{layout}:1.2.0", f"dir:{tmp_path / 'out'}"], capture_output=True)
    assert result.returncode != 0


# --- the KubeStellar manifests ---------------------------------------------------------------

def manifest_docs() -> list[dict]:
    docs = []
    for path in sorted(MANIFEST_DIR.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def binding_policy_schema() -> dict:
    from tests.support.kubeschema import kind_schemas

    return kind_schemas()[("control.kubestellar.io/v1alpha1", "BindingPolicy")]


def test_every_manifest_is_a_named_kubernetes_object() -> None:
    docs = manifest_docs()
    assert {d["kind"] for d in docs} == {"Namespace", "Deployment", "Service", "BindingPolicy"}
    for d in docs:
        assert d["apiVersion"] and d["kind"] and d["metadata"]["name"]


def kubernetes_model(doc: dict) -> object:
    """Deserialize into the kubernetes client's typed model: wrong types and missing required
    fields raise. (The name-mangled method is the one every client version since 12 has.)"""
    from kubernetes.client import ApiClient

    return ApiClient()._ApiClient__deserialize(doc, doc["apiVersion"].split("/")[-1].capitalize() + doc["kind"])


def test_workloads_fit_the_kubernetes_object_models() -> None:
    workload = [d for d in manifest_docs() if d["kind"] != "BindingPolicy"]
    assert [type(kubernetes_model(d)).__name__ for d in workload] == [f"V1{d['kind']}" for d in workload]
    broken = copy.deepcopy([d for d in workload if d["kind"] == "Deployment"][0])
    broken["spec"]["template"]["spec"]["contianers"] = broken["spec"]["template"]["spec"].pop("containers")
    with pytest.raises((ValueError, TypeError)):
        kubernetes_model(broken)


def test_deployment_runs_the_bundled_image_on_the_published_model() -> None:
    spec = yaml.safe_load((SAMPLES / "bundle.yaml").read_text())["spec"]
    (deployment,) = [d for d in manifest_docs() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == [spec["images"][0]["ref"]]
    model = spec["models"][0]
    assert pod["volumes"][0]["image"]["reference"] == f"models/{model['name']}:{model['version']}"
    assert "hostPath" not in pod["volumes"][0]
    mount = pod["containers"][0]["volumeMounts"][0]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["MODEL_DIR"] == mount["mountPath"] + "/models"  # the modelcar holds the files under /models/


def test_binding_policy_selects_edge_wecs_and_the_workload() -> None:
    (policy,) = [d for d in manifest_docs() if d["kind"] == "BindingPolicy"]
    jsonschema.validate(policy, binding_policy_schema())
    assert policy["apiVersion"] == "control.kubestellar.io/v1alpha1"
    assert {"location-group": "edge"} in [s["matchLabels"] for s in policy["spec"]["clusterSelectors"]]
    selected = policy["spec"]["downsync"][0]["objectSelectors"][0]["matchLabels"]
    workload = [d for d in manifest_docs() if d["kind"] != "BindingPolicy"]
    assert all(selected.items() <= d["metadata"]["labels"].items() for d in workload)


@pytest.mark.parametrize("breakage", ["no-selector-in-downsync", "bad-label-value", "selectors-not-a-list"])
def test_a_broken_binding_policy_fails_the_schema(breakage: str) -> None:
    (policy,) = [d for d in manifest_docs() if d["kind"] == "BindingPolicy"]
    broken = copy.deepcopy(policy)
    if breakage == "no-selector-in-downsync":
        broken["spec"]["downsync"] = [{}]
    elif breakage == "bad-label-value":
        broken["spec"]["clusterSelectors"] = [{"matchLabels": {"location-group": "edge site!"}}]
    else:
        broken["spec"]["clusterSelectors"] = {"matchLabels": {"location-group": "edge"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, binding_policy_schema())


# --- the spec, the trust policy, and the whole -----------------------------------------------

def test_bundle_spec_carries_all_three_samples() -> None:
    doc = yaml.safe_load((SAMPLES / "bundle.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]) == ("ferry/v1", "Bundle", {"name": "edge-ai", "channel": "stable"})
    spec = doc["spec"]
    assert (SAMPLES / spec["models"][0]["path"] / "model.safetensors").is_file()
    assert (SAMPLES / spec["images"][0]["layout"] / "index.json").is_file()
    assert spec["images"][0]["ref"].endswith(":1.2.0")
    assert (SAMPLES / spec["manifests"][0]["path"]).resolve() == MANIFEST_DIR


def test_trust_policy_loads_with_two_keys_threshold_one_on_stable() -> None:
    from manifests.trust import load_trust

    trust = load_trust([SAMPLES / "trust-policy.yaml"])
    assert trust.threshold == 1 and len(trust.keys) == 2
    assert all(k.channels == frozenset({"stable"}) for k in trust.keys.values())


def test_no_private_key_is_shipped_and_samples_stay_small() -> None:
    files = [p for p in SAMPLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert not [p for p in files if p.suffix == ".key" or b"PRIVATE KEY" in p.read_bytes()]
    assert sum(p.stat().st_size for p in files) < 2 * 1024 * 1024



# --- the hand-written safetensors encoder, and the server's reader of it ---------------------

def load_script(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@st.composite
def tensor_sets(draw: st.DrawFn) -> dict[str, tuple[str, list[int], list[float]]]:
    names = draw(st.lists(st.text("abcdefgh._", min_size=1, max_size=12), min_size=1, max_size=5, unique=True))
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(["F16", "F32"]))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        n = 1
        for d in shape:
            n *= d
        width = 16 if dtype == "F16" else 32
        out[name] = (dtype, shape, draw(st.lists(st.floats(width=width, allow_nan=False), min_size=n, max_size=n)))
    return out


@settings(max_examples=60, deadline=None)
@given(tensor_sets(), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
def test_safetensors_encoder_round_trips(tensors: dict, metadata: dict) -> None:
    """make_model.py's encoder writes what a strict reader and the sample server read back exactly."""
    make_model = load_script(SAMPLES / "make_model.py")
    serve = load_script(SAMPLES / "src" / "sentiment-server" / "app" / "serve.py")
    data = make_model.safetensors_bytes(tensors, metadata)
    got_meta, header = parse_safetensors(data)
    assert got_meta == metadata and set(header) == set(tensors)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        path.write_bytes(data)
        meta2, read = serve.read_safetensors(path)
    assert meta2 == metadata
    for name, (_, shape, values) in tensors.items():
        assert read[name] == (shape, values)


# --- the samples through the real CLI --------------------------------------------------------

def test_the_sample_spec_exports_all_three_artifacts(tmp_path: Path, hub_keys: KeyPair) -> None:
    result = run_ferry("export", SAMPLES / "bundle.yaml", "--out", tmp_path / "usb", "--key", hub_keys.key,
                       "--state", tmp_path / "hub", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sorted((a["kind"], a["name"], a["version"]) for a in summary["artifacts"]) == [
        ("image", "team/sentiment-server", "1.2.0"), ("manifests", "sentiment-app", "1.2.0"),
        ("model", "sentiment", "1.2.0")]
    assert summary["bundle"]["name"] == "edge-ai" and summary["bundle"]["channel"] == "stable"
    assert summary["warnings"] == []  # the Deployment's image is the one the bundle carries


def test_operator_walkthrough_on_the_samples(tmp_path: Path, hub_keys: KeyPair) -> None:
    """docs/operator-guide.md section 9: export, verify, import, serve the model, then a delta
    with a fine-tuned model made against the edge's receipt upgrades only the model."""
    usb, hub, edge = tmp_path / "usb", tmp_path / "hub", tmp_path / "edge"

    def ok(*args: object) -> str:
        result = run_ferry(*args)
        assert result.returncode == 0, f"ferry {args[0]}: {result.stderr}"
        return result.stdout

    ok("export", SAMPLES / "bundle.yaml", "--out", usb, "--key", hub_keys.key, "--state", hub)
    ok("verify", usb, "--trust", hub_keys.pub, "--report", tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["verdict"] == "pass"
    ok("import", usb, "--trust", hub_keys.pub, "--state", edge)
    current = edge / "models" / "sentiment" / "current"
    assert tree(current) == tree(MODEL_DIR)
    serve = SAMPLES / "src" / "sentiment-server" / "app" / "serve.py"
    out = subprocess.run([sys.executable, str(serve), "--classify", "the update was great"],
                         env={"MODEL_DIR": str(current)}, capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["label"] == "positive"
    subprocess.run(["skopeo", "inspect", f"oci:{edge / 'oci'}:team/sentiment-server:1.2.0"], capture_output=True, check=True)

    # The next release: a fine-tuned model, exported as a delta against the edge's receipt.
    ok("receipt", "--state", edge, "--out", tmp_path / "receipt.json")
    src = tmp_path / "src"
    shutil.copytree(SAMPLES, src, ignore=shutil.ignore_patterns("models", "__pycache__"))
    subprocess.run([sys.executable, str(SAMPLES / "make_model.py"), "--version", "1.3.0", "--out",
                    str(src / "models" / "sentiment")], check=True, capture_output=True)
    spec = yaml.safe_load((src / "bundle.yaml").read_text())
    spec["spec"]["models"][0]["version"] = "1.3.0"
    (src / "bundle.yaml").write_text(yaml.safe_dump(spec))
    summary = json.loads(ok("export", src / "bundle.yaml", "--out", tmp_path / "usb2", "--key", hub_keys.key,
                            "--state", hub, "--since", tmp_path / "receipt.json", "--json"))
    assert summary["bundle"]["sequence"] == 2 and summary["carriedChunks"] < summary["chunks"]
    ok("import", tmp_path / "usb2", "--trust", hub_keys.pub, "--state", edge)
    assert current.resolve().name == "1.3.0" and (edge / "models" / "sentiment" / "1.2.0").is_dir()
    status = json.loads(ok("status", "--state", edge, "--json"))
    assert "1.3.0" in json.dumps(status)
    ok("audit", "verify", "--state", edge)

    # The first disk again: a bundle already imported is a no-op, and never rolls the model back.
    again = ok("import", usb, "--trust", hub_keys.pub, "--state", edge)
    assert "): already imported; nothing to do" in again and "already imported: already" not in again
    assert current.resolve().name == "1.3.0"


def test_the_sample_trust_policy_shape_works_with_real_keys(tmp_path: Path) -> None:
    """The sample policy, with keys made by `ferry keys generate` in place of the sample .pub
    files: a bundle signed by either key verifies on `stable`; on another channel it is refused."""
    site = tmp_path / "site"
    shutil.copytree(SAMPLES, site, ignore=shutil.ignore_patterns("keys", "__pycache__"))
    for name in ("hub-a", "hub-b"):
        assert run_ferry("keys", "generate", name, "--out", site / "keys").returncode == 0
    policy = yaml.safe_load((site / "trust-policy.yaml").read_text())
    for key in policy["keys"]:
        key.pop("keyid")  # the sample ids name the sample keys
    (site / "trust-policy.yaml").write_text(yaml.safe_dump(policy))

    stable = run_ferry("export", site / "bundle.yaml", "--out", tmp_path / "stable", "--key", site / "keys" / "hub-b.key",
                       "--state", tmp_path / "hub")
    assert stable.returncode == 0, stable.stderr
    assert run_ferry("verify", tmp_path / "stable", "--trust", site / "trust-policy.yaml").returncode == 0

    spec = yaml.safe_load((site / "bundle.yaml").read_text())
    spec["metadata"]["channel"] = "testing"
    (site / "bundle.yaml").write_text(yaml.safe_dump(spec))
    testing = run_ferry("export", site / "bundle.yaml", "--out", tmp_path / "testing", "--key", site / "keys" / "hub-a.key",
                        "--state", tmp_path / "hub")
    assert testing.returncode == 0, testing.stderr
    refused = run_ferry("verify", tmp_path / "testing", "--trust", site / "trust-policy.yaml")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr


# --- the docs name only commands and options that exist --------------------------------------

DOCS = sorted((SAMPLES.parent / "docs").glob("*.md")) + [
    SAMPLES.parent / "README.md", SAMPLES / "README.md"]


def cli_commands() -> dict[str, typer_core.TyperCommand]:
    """Every leaf command of the real typer app by path: 'export', 'audit verify', ..."""
    import typer.main

    from ferry.cli import app

    leaves = {}

    def walk(command: object, path: str) -> None:
        subcommands = getattr(command, "commands", None)
        for name, sub in (subcommands or {}).items():
            walk(sub, f"{path} {name}".strip())
        if not subcommands:
            leaves[path] = command

    walk(typer.main.get_command(app), "")
    return leaves


def cli_options() -> dict[str, set[str]]:
    """Each command's long options."""
    return {path: {o for p in c.params for o in p.opts if o.startswith("--")} | {"--help"}
            for path, c in cli_commands().items()}


def ferry_invocations(text: str) -> list[list[str]]:
    """Every `ferry ...` command line in fenced blocks and inline code, as words."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`(ferry [^`]+)`", text)
    found = []
    for line in lines:
        line = line.split(" #")[0]
        for part in re.split(r"&&|;|\|", line):
            words = part.split()
            if "ferry" in words:
                found.append(words[words.index("ferry"):])
    return found


def doc_problems(text: str, options: dict[str, set[str]]) -> tuple[list[str], int]:
    """(what in ``text`` names a command or option ferry does not have, invocations checked)."""
    problems, checked = [], 0
    for words in ferry_invocations(text):
        if len(words) == 1 or words[1].startswith("-"):
            continue  # `ferry --version`, `ferry --help`
        command = " ".join(words[1:3]) if " ".join(words[1:3]) in options else words[1]
        if any(name.startswith(command + " ") for name in options) and (
                len(words) == 2 or not re.fullmatch(r"[a-z]+", words[2])):
            continue  # the group itself named in prose: `ferry audit`, `ferry keys`
        if command not in options:
            problems.append(f"no command `ferry {command}`: {' '.join(words)}")
            continue
        problems += [f"`ferry {command}` has no {w}" for w in words[2:]
                     if w.startswith("--") and w.split("=")[0] not in options[command]]
        checked += 1
    return problems, checked


def test_docs_use_only_real_commands_and_options() -> None:
    options = cli_options()
    for doc in DOCS:
        problems, checked = doc_problems(doc.read_text(), options)
        assert problems == [], f"{doc.name}: {problems}"
        assert checked >= 1 or doc.name == "README.md" and doc.parent == SAMPLES, doc.name
    bad = "```sh\nferry export spec.yaml --out x --key k --compress\nferry sync x\n```\nand `ferry keys rotate a`"
    assert len(doc_problems(bad, options)[0]) == 3  # the check can fail


def test_every_command_help_has_one_line_and_a_working_example() -> None:
    """Issue 7: each command's --help says what it does in one line and shows an example that
    names only options the command has."""
    options = cli_options()
    leaves = cli_commands()
    assert {"export", "inspect", "verify", "import", "status", "receipt", "keys generate", "keys id",
            "audit verify", "audit show", "audit export"} <= set(leaves)
    for path, command in leaves.items():
        assert command.help and command.help.strip().splitlines()[0].endswith("."), path
        assert (command.epilog or "").startswith(f"Example: ferry {path}"), path
        problems, checked = doc_problems(f"`{command.epilog.removeprefix('Example: ').split('  |  ')[0]}`", options)
        assert problems == [] and checked == 1, (path, problems)


def help_examples() -> list[tuple[str, object, list[str]]]:
    """Every example every --help shows (a command's or a group's epilog, ``Example: ferry ...``,
    several separated by ``|``), as (command path, the command, its arguments)."""
    import shlex

    import typer.main

    from ferry.cli import app

    found: list[tuple[str, object, list[str]]] = []

    def walk(command: object, path: str) -> None:
        epilog = getattr(command, "epilog", None) or ""
        for part in epilog.removeprefix("Example: ").split("|"):
            if "ferry " in part:
                words = shlex.split(part[part.index("ferry "):])
                assert words[1:1 + len(path.split())] == path.split(), (path, part)
                found.append((path, command, words[1 + len(path.split()):]))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def parse_problem(command: object, path: str, args: list[str]) -> str | None:
    """What the command line parser says against ``ferry PATH ARGS`` (an unknown option, a
    missing or extra argument, arguments in the wrong place), or None: parsing only, nothing runs."""
    try:
        command.make_context(path, list(args))  # type: ignore[attr-defined]
    except Exception as err:  # click's UsageError family, vendored by typer
        return f"{type(err).__name__}: {getattr(err, 'format_message', lambda: str(err))()}"
    return None


def test_every_help_example_parses_as_written() -> None:
    """Each example of every --help, the second and later ones too, goes through the real
    command line parser: the options exist, the arguments are the right number and order."""
    examples = help_examples()
    paths = {path for path, _, _ in examples}
    assert {"import", "watch", "audit verify", "sites", "sites add", "trust init", "push"} <= paths
    assert sum(path == "import" for path, _, _ in examples) == 2  # the folder and the oci:// one
    problems = [(path, args, parse_problem(command, path, args)) for path, command, args in examples]
    assert [p for p in problems if p[2] is not None] == []
    # the check can fail: an extra argument, an unknown option, a missing argument
    by_path = {path: command for path, command, _ in examples}
    assert parse_problem(by_path["trust init"], "trust init", ["--state", "/e", "root.json", "more.json"])
    assert parse_problem(by_path["push"], "push", ["oci://registry.hub:5000/x:1"])
    assert parse_problem(by_path["export"], "export", ["b.yaml", "--out", "o", "--key", "k", "--compress"])


def test_readme_quickstart_runs_on_the_samples(tmp_path: Path) -> None:
    """The README's first shell block, as a new user runs it (minus `pip install .`, which the
    test environment has already done): it must exit 0 and leave the model installed."""
    readme = (SAMPLES.parent / "README.md").read_text()
    block = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)[0]
    assert block.startswith("pip install . && ")
    (tmp_path / "samples").symlink_to(SAMPLES)
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("FERRY_KEY_PASSPHRASE", "FERRY_DEBUG")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.removeprefix("pip install . && ")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "demo" / "edge" / "models" / "sentiment" / "current") == tree(MODEL_DIR)
