"""Issue #20: model variants and site profiles.

The done-when scenario runs on the real CLI: a spec with three variants of the sample model
(fp32 and int8 made here by casting its tensors with numpy, fp16 as shipped), two site
profiles, exports per site that carry different variants, imports that install them and refuse
the wrong one, and a byte budget that forces the smaller variant. The header readers and the
choosing rule are checked with Hypothesis.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.sources.oci_models import modelpack_stated
from bundler.spec import parse_spec
from bundler.weights import (GGML_TYPES, GGUF_FILE_TYPES, ONNX_TYPES, check_declaration, gguf_kind, onnx_precision,
                             weight_facts)
from manifests.errors import FormatError, PolicyError, SpecError, UsageError
from manifests.units import parse_link
from manifests.variants import Resources, Variant, choose, fit_problem
from importer.apply.modelpack import publish_model
from tests.support.common import assert_clean_failure, run_ferry
from transport.registry import RegistryClient

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "models" / "sentiment"
GiB = 1024**3


# --------------------------------------------------------------------------- making variants


def cast_sample(dst: Path, to: str) -> Path:
    """The sample model with every tensor cast to ``to`` (``fp32`` or ``int8``) with numpy."""
    shutil.copytree(SAMPLE, dst)
    data = (SAMPLE / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    out: dict[str, dict] = {}
    blobs: list[bytes] = []
    at = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a = np.frombuffer(body[t["data_offsets"][0]:t["data_offsets"][1]],
                          dtype={"F16": np.float16, "F32": np.float32}[t["dtype"]])
        b = (np.clip(a * 127, -127, 127).astype(np.int8) if to == "int8" else a.astype(np.float32)).tobytes()
        out[name] = {"dtype": "I8" if to == "int8" else "F32", "shape": t["shape"], "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    head = json.dumps(out).encode()
    head += b" " * (-len(head) % 8)
    (dst / "model.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return dst


SPEC = """\
apiVersion: ferry/v1
kind: Bundle
metadata: {{name: edge-ai}}
spec:
  models:
    - name: sentiment
      version: "{version}"
      variants:
        - {{name: fp32, path: {root}/fp32, precision: fp32, minMemory: 8GiB, accelerator: gpu, quality: {{accuracy: 0.93}}}}
        - {{name: fp16, path: {root}/fp16, precision: fp16, minMemory: 4GiB, quality: {{accuracy: 0.92}}}}
        - {{name: int8, path: {root}/int8, minMemory: 1GiB, quality: {{accuracy: 0.88}}}}
"""


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("variants")
    cast_sample(root / "fp32", "fp32")
    shutil.copytree(SAMPLE, root / "fp16")
    cast_sample(root / "int8", "int8")
    for version in ("1.2.0", "1.3.0", "1.1.0"):
        (root / f"spec-{version}.yaml").write_text(SPEC.format(root=root, version=version))
    (root / "gpu-site.yaml").write_text("apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {name: gpu-site}\n"
                                        "spec: {memory: 32GiB, accelerator: gpu, link: 100GB/month}\n")
    (root / "small-site.json").write_text(json.dumps({"apiVersion": "ferry/v1", "kind": "SiteProfile",
                                                      "metadata": {"name": "small-site"},
                                                      "spec": {"memory": "2GiB", "accelerator": "none"}}))
    return root


def _export(variants: Path, hub_keys, out: Path, *extra: object, version: str = "1.2.0") -> dict:
    done = run_ferry("export", variants / f"spec-{version}.yaml", "--out", out, "--key", hub_keys.key,
                     "--state", out.parent / "hub", "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _import(bundle: Path, hub_keys, edge: Path, *extra: str) -> tuple[int, dict, str]:
    done = run_ferry("import", bundle, "--trust", hub_keys.pub, "--state", edge, "--json", *extra)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout)["bundles"][0]["artifacts"][0], done.stderr


def _status_model(edge: Path) -> dict:
    doc = json.loads(run_ferry("status", "--state", edge, "--json").stdout)
    return next(r for r in doc["installed"] if r["kind"] == "model")


# --------------------------------------------------------------------------- done when


def test_each_site_gets_its_variant_and_the_wrong_one_is_refused(variants, hub_keys, tmp_path):
    gpu = _export(variants, hub_keys, tmp_path / "usb-gpu", "--profile", variants / "gpu-site.yaml")
    small = _export(variants, hub_keys, tmp_path / "usb-small", "--profile", variants / "small-site.json")
    assert gpu["artifacts"][0]["variant"]["name"] == "fp32"
    assert small["artifacts"][0]["variant"]["name"] == "int8"
    assert gpu["artifacts"][0]["variant"]["precision"] == "fp32"
    assert small["artifacts"][0]["variant"]["precision"] == "int8"  # read from the file: not declared
    assert small["artifacts"][0]["variant"]["quality"] == {"accuracy": "0.88"}
    why = {p["variant"]: p["why"] for p in small["variants"][0]["passedOver"]}
    assert "needs 8.0 GiB memory, the site has 2.0 GiB" in why["fp32"] and "4.0 GiB" in why["fp16"]
    assert small["artifacts"][0]["size"] < gpu["artifacts"][0]["size"]

    # the small site records its resources; the GPU bundle is refused there, its own installs
    edge = tmp_path / "small-edge"
    done = run_ferry("site", "set", "--state", edge, "--memory", "2GiB", "--accelerator", "none",
                     "--link", "10GB/month", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["wec"] is False  # resources alone do not make a KubeStellar WEC
    code, a, err = _import(tmp_path / "usb-gpu", hub_keys, edge)
    assert code == 1 and a["action"] == "unfit" and "--allow-variant" in a["reason"]
    assert "needs 8.0 GiB memory, the site has 2.0 GiB" in a["reason"]
    assert [line for line in err.splitlines() if line.startswith("ferry: error")][0].count("\n") == 0
    code, a, _ = _import(tmp_path / "usb-small", hub_keys, edge)
    assert code == 0 and a["status"] == "applied"
    row = _status_model(edge)
    assert row["variant"] == "int8" and row["version"] == "1.2.0"
    text = run_ferry("status", "--state", edge).stdout
    assert "1.2.0 (variant int8)" in text and "memory 2.0 GiB" in text
    installed = edge / "models" / "sentiment" / "current" / "model.safetensors"
    assert installed.read_bytes() == (variants / "int8" / "model.safetensors").read_bytes()

    # the GPU site installs fp32; its ModelPack config says so
    gpu_edge = tmp_path / "gpu-edge"
    assert run_ferry("site", "set", "--state", gpu_edge, "--memory", "32GiB", "--accelerator", "gpu").returncode == 0
    code, a, _ = _import(tmp_path / "usb-gpu", hub_keys, gpu_edge)
    assert code == 0 and _status_model(gpu_edge)["variant"] == "fp32"
    configs = [json.loads(p.read_bytes()) for p in (gpu_edge / "oci" / "blobs" / "sha256").iterdir()
               if p.stat().st_size < 4096 and b'"descriptor"' in p.read_bytes()]
    assert [c["config"]["precision"] for c in configs] == ["fp32"]


def test_a_byte_budget_forces_the_smaller_variant(variants, hub_keys, tmp_path):
    full = _export(variants, hub_keys, tmp_path / "a", "--profile", variants / "gpu-site.yaml")
    fp32 = full["artifacts"][0]["size"]
    budget = fp32 - 1
    doc = _export(variants, hub_keys, tmp_path / "b", "--profile", variants / "gpu-site.yaml",
                  "--max-bytes", str(budget))
    assert doc["artifacts"][0]["variant"]["name"] == "fp16"
    assert doc["variants"][0]["passedOver"][0]["variant"] == "fp32"
    assert "over the" in doc["variants"][0]["passedOver"][0]["why"]
    assert doc["rawBytes"] <= budget
    # nothing fits: one line, exit 1, nothing written
    done = run_ferry("export", variants / "spec-1.2.0.yaml", "--out", tmp_path / "c", "--key", hub_keys.key,
                     "--state", tmp_path / "hub", "--max-bytes", "10KiB")
    assert_clean_failure(done, code=1, contains="no variant fits the byte budget")
    assert not (tmp_path / "c").exists()
    # a model without variants is bound by the budget too
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"apiVersion: ferry/v1\nkind: Bundle\nmetadata: {{name: p}}\nspec:\n  models:\n"
                     f"    - {{name: m, version: 1.0.0, path: {SAMPLE}}}\n")
    done = run_ferry("export", plain, "--out", tmp_path / "d", "--key", hub_keys.key, "--state", tmp_path / "hub",
                     "--max-bytes", "100KB")
    assert_clean_failure(done, code=1, contains="over the byte budget of 97.7 KiB")


def test_profiles_kept_at_the_hub_and_a_site_that_runs_nothing(variants, hub_keys, tmp_path):
    hub = tmp_path / "hub"
    done = run_ferry("profile", "add", variants / "small-site.json", "--state", hub)
    assert done.returncode == 0 and "small-site" in done.stdout
    doc = _export(variants, hub_keys, tmp_path / "usb", "--site", "small-site")
    assert doc["artifacts"][0]["variant"]["name"] == "int8"
    listed = json.loads(run_ferry("profile", "list", "--state", hub, "--json").stdout)
    assert listed == [{"site": "small-site", "memory": 2 * GiB, "accelerator": "none", "link": None, "source": "hand"}]
    assert_clean_failure(run_ferry("export", variants / "spec-1.2.0.yaml", "--out", tmp_path / "x", "--key",
                                   hub_keys.key, "--state", hub, "--site", "nowhere"),
                         code=2, contains="keeps no profile for it (kept: small-site)")
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {name: tiny}\n"
                    "spec: {memory: 512MiB, accelerator: none}\n")
    assert_clean_failure(run_ferry("export", variants / "spec-1.2.0.yaml", "--out", tmp_path / "y", "--key",
                                   hub_keys.key, "--state", hub, "--profile", tiny),
                         code=1, contains="model 'sentiment': no variant fits the site (memory 512.0 MiB")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {name: b}\nspec: {memory: 16GB/s, accelerator: none}\n")
    assert_clean_failure(run_ferry("profile", "add", bad, "--state", hub), code=2, contains="spec.memory")


def test_return_bundles_keep_the_site_profile_unless_one_was_given_by_hand(variants, hub_keys, tmp_path):
    """#20 item 2: the resources an edge records travel in its return bundles' status.json; the hub
    keeps them as the site's profile (export --site chooses from it) unless a profile was given by hand."""
    hub, edge, keys = tmp_path / "hub", tmp_path / "edge", tmp_path / "keys"
    assert run_ferry("keys", "generate", "clinic", "--out", keys).returncode == 0
    assert run_ferry("sites", "add", "clinic", "--key", keys / "clinic.pub", "--hub", hub).returncode == 0
    spec = tmp_path / "return.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Return\nspec:\n  updates: []\n")

    def site_returns(*resources: str) -> dict:
        assert run_ferry("site", "set", "--state", edge, "--name", "clinic", *resources).returncode == 0
        out = tmp_path / f"ret-{len(list(tmp_path.glob('ret-*')))}"
        done = run_ferry("return", "export", "--state", edge, "--spec", spec, "--out", out, "--key", keys / "clinic.key")
        assert done.returncode == 0, done.stderr
        done = run_ferry("return", "import", out, "--hub", hub, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["profile"]

    def chosen() -> str:
        doc = _export(variants, hub_keys, tmp_path / f"usb-{len(list(tmp_path.glob('usb-*')))}", "--site", "clinic")
        return doc["artifacts"][0]["variant"]["name"]

    def listed() -> list:
        return json.loads(run_ferry("profile", "list", "--state", hub, "--json").stdout)

    assert site_returns("--memory", "2GiB", "--accelerator", "none")["kept"] == "kept"
    assert listed() == [{"site": "clinic", "memory": 2 * GiB, "accelerator": "none", "link": None, "source": "return"}]
    assert "clinic: memory 2.0 GiB, accelerator none (from its return bundles)" in \
        run_ferry("profile", "list", "--state", hub).stdout
    assert chosen() == "int8"
    profile = site_returns("--memory", "32GiB", "--accelerator", "gpu", "--link", "100GB/month")
    assert profile == {"kept": "kept", "resources": {"memory": 32 * GiB, "accelerator": "gpu",
                                                     "link": {"bytes": 100 * 10**9, "per": "month"}}}
    assert chosen() == "fp32"
    hand = tmp_path / "clinic.yaml"  # the operator knows better: the hand-given profile wins
    hand.write_text("apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {name: clinic}\n"
                    "spec: {memory: 6GiB, accelerator: none}\n")
    assert run_ferry("profile", "add", hand, "--state", hub).returncode == 0
    done = run_ferry("return", "import", tmp_path / "ret-1", "--hub", hub)  # a replay changes nothing either
    assert_clean_failure(done, code=1, contains="sequence")
    assert site_returns()["kept"] == "hand"
    assert listed()[0]["source"] == "hand" and listed()[0]["memory"] == 6 * GiB
    assert chosen() == "fp16"
    assert "(given by hand)" in run_ferry("profile", "list", "--state", hub).stdout


@given(st.builds(Resources, memory=st.one_of(st.none(), st.integers(1, 2**62)),
                 accelerator=st.sampled_from([None, "none", "gpu", "nvidia-l4"]),
                 link=st.one_of(st.none(), st.tuples(st.integers(1, 10**15), st.sampled_from(["day", "week", "month"])))))
def test_resources_round_trip_through_status_json(res):
    assert Resources.from_json(json.loads(json.dumps(res.to_json())), "status.json") == res


@pytest.mark.parametrize("doc", [[], {"memory": "16GiB"}, {"memory": -1}, {"memory": True}, {"accelerator": "Big GPU"},
                                 {"link": {"bytes": 10}}, {"link": {"bytes": 10, "per": "year"}}, {"cpus": 4}])
def test_malformed_resources_in_status_json_are_refused(doc):
    with pytest.raises(FormatError, match="status.json"):
        Resources.from_json(doc, "status.json")


def test_switching_variants_is_not_a_downgrade_and_versions_stay_monotonic(variants, hub_keys, tmp_path):
    edge = tmp_path / "edge"
    small = tmp_path / "small.yaml"
    small.write_text("apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {name: s}\nspec: {memory: 2GiB, accelerator: none}\n")
    _export(variants, hub_keys, tmp_path / "int8", "--profile", small)
    _export(variants, hub_keys, tmp_path / "fp16", "--max-bytes", "400KiB")
    assert _import(tmp_path / "int8", hub_keys, edge)[0] == 0
    code, a, _ = _import(tmp_path / "fp16", hub_keys, edge)  # no resources recorded: nothing restricts
    assert code == 0 and a["action"] == "switch" and "int8 -> fp16 of 1.2.0" in a["reason"]
    assert _status_model(edge)["variant"] == "fp16"
    # the same variant back again: a switch too (an int8 bundle of 1.2.0, re-exported)
    _export(variants, hub_keys, tmp_path / "int8b", "--profile", small)
    code, a, _ = _import(tmp_path / "int8b", hub_keys, edge)
    assert code == 0 and a["action"] == "switch" and _status_model(edge)["variant"] == "int8"
    # an older version of any variant is still refused; a newer one applies
    _export(variants, hub_keys, tmp_path / "old", "--profile", small, version="1.1.0")
    code, a, _ = _import(tmp_path / "old", hub_keys, edge)
    assert code == 1 and a["action"] == "older"
    _export(variants, hub_keys, tmp_path / "new", "--max-bytes", "400KiB", version="1.3.0")
    code, a, _ = _import(tmp_path / "new", hub_keys, edge)
    assert code == 0 and a["action"] == "newer" and _status_model(edge)["variant"] == "fp16"


def test_allow_variant_installs_what_the_site_cannot_run(variants, hub_keys, tmp_path):
    edge = tmp_path / "edge"
    _export(variants, hub_keys, tmp_path / "fp16", "--max-bytes", "400KiB")
    assert run_ferry("site", "set", "--state", edge, "--memory", "1GiB").returncode == 0
    assert _import(tmp_path / "fp16", hub_keys, edge)[1]["action"] == "unfit"
    code, a, _ = _import(tmp_path / "fp16", hub_keys, edge, "--allow-variant")
    assert code == 0 and "installed anyway (--allow-variant)" in a["reason"]
    trail = [json.loads(line) for line in (edge / "audit" / "trail.jsonl").read_text().splitlines()]
    assert "resources: not recorded -> memory 1.0 GiB" in trail[0]["reason"]
    installed = [e for e in trail if e["decision"] not in ("published", "refused") and e["artifact"]][-1]
    assert "--allow-variant" in installed["reason"] and installed["artifact"]["variant"] == "fp16"


def test_verify_state_decides_an_unfit_variant_as_the_dry_run_does(variants, hub_keys, tmp_path):
    # found in review: verify --state said PASS for a variant the site cannot run; the dry run exited 1
    edge = tmp_path / "edge"
    _export(variants, hub_keys, tmp_path / "fp16", "--max-bytes", "400KiB")
    assert run_ferry("site", "set", "--state", edge, "--memory", "1GiB").returncode == 0
    dry = run_ferry("import", tmp_path / "fp16", "--trust", hub_keys.pub, "--state", edge, "--dry-run")
    checked = run_ferry("verify", tmp_path / "fp16", "--trust", hub_keys.pub, "--state", edge, "--json")
    assert dry.returncode == checked.returncode == 1, (dry.stderr, checked.stderr)
    report = json.loads(checked.stdout)
    plan = report["bundles"][0]["artifacts"][0]["plan"]
    assert report["verdict"] == "fail" and plan["action"] == "unfit" and plan["refused"]
    assert "plan: an import into the edge state would refuse 1 artifact(s)" in report["summary"]
    assert "needs 4.0 GiB memory" in report["summary"] and "--allow-variant" in report["summary"]
    # the bundle itself is authentic and whole: every other check passed
    assert all(c["ok"] for c in report["bundles"][0]["checks"] if c["name"] != "plan")
    assert run_ferry("verify", tmp_path / "fp16", "--trust", hub_keys.pub).returncode == 0  # without --state: pass
    # where the variant fits, both pass
    assert run_ferry("site", "set", "--state", edge, "--memory", "8GiB").returncode == 0
    assert run_ferry("verify", tmp_path / "fp16", "--trust", hub_keys.pub, "--state", edge).returncode == 0
    assert run_ferry("import", tmp_path / "fp16", "--trust", hub_keys.pub, "--state", edge,
                     "--dry-run").returncode == 0


def test_an_unfit_refusal_leaves_the_channel_for_the_allow_variant_rerun(variants, hub_keys, tmp_path):
    # found in review: the refusal advanced the channel, so the --allow-variant rerun of the same
    # bundle was stale, and a stale bundle never switches a variant: refused as a conflict
    edge = tmp_path / "edge"
    small = tmp_path / "small.yaml"
    small.write_text("apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {name: s}\nspec: {memory: 2GiB, accelerator: none}\n")
    _export(variants, hub_keys, tmp_path / "int8", "--profile", small)  # sequence 1
    _export(variants, hub_keys, tmp_path / "fp16", "--max-bytes", "400KiB")  # sequence 2, same version
    assert run_ferry("site", "set", "--state", edge, "--memory", "2GiB", "--accelerator", "none").returncode == 0
    assert _import(tmp_path / "int8", hub_keys, edge)[0] == 0
    code, a, _ = _import(tmp_path / "fp16", hub_keys, edge)
    assert code == 1 and a["action"] == "unfit"
    status = json.loads(run_ferry("status", "--state", edge, "--json").stdout)
    assert status["channels"] == {"stable": 1}  # the refused bundle did not move the channel
    code, a, err = _import(tmp_path / "fp16", hub_keys, edge, "--allow-variant")
    assert code == 0 and a["action"] == "switch" and "installed anyway (--allow-variant)" in a["reason"], a
    assert "stale" not in err
    assert _status_model(edge)["variant"] == "fp16"
    status = json.loads(run_ferry("status", "--state", edge, "--json").stdout)
    assert status["channels"] == {"stable": 2}
    # once it settled, the same bundle is a repeat like any other
    again = run_ferry("import", tmp_path / "fp16", "--trust", hub_keys.pub, "--state", edge)
    assert again.returncode == 0 and "already imported" in again.stdout


def test_a_stale_bundle_never_switches_the_variant_back(variants, hub_keys, tmp_path):
    edge = tmp_path / "edge"
    small = tmp_path / "small.yaml"
    small.write_text("apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {name: s}\nspec: {memory: 2GiB, accelerator: none}\n")
    _export(variants, hub_keys, tmp_path / "int8", "--profile", small)  # sequence 1
    _export(variants, hub_keys, tmp_path / "fp16", "--max-bytes", "400KiB")  # sequence 2
    assert _import(tmp_path / "fp16", hub_keys, edge)[0] == 0
    code, a, _ = _import(tmp_path / "int8", hub_keys, edge)  # replayed, older sequence
    assert code == 1 and a["action"] == "conflict" and "stale bundle" in a["reason"]
    assert _status_model(edge)["variant"] == "fp16"
    code, a, _ = _import(tmp_path / "int8", hub_keys, edge, "--allow-downgrade", "--reason", "less memory now")
    assert code == 0 and _status_model(edge)["variant"] == "int8"
    shown = run_ferry("inspect", tmp_path / "int8").stdout
    assert "variant int8 (int8, " in shown and "needs 1.0 GiB memory, no accelerator" in shown


# --------------------------------------------------------------------------- the spec


def _spec(tmp: Path, variants_yaml: str) -> str:
    return ("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: b}\nspec:\n  models:\n"
            f"    - name: m\n      version: 1.0.0\n      variants:\n{variants_yaml}")


def test_a_declaration_the_files_contradict_is_refused(variants, hub_keys, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(_spec(tmp_path, f"        - {{name: small, path: {variants}/int8, precision: fp16, minMemory: 1GiB}}\n"))
    done = run_ferry("export", spec, "--out", tmp_path / "o", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert_clean_failure(done, code=2, contains="spec.models[0].variants[0].precision 'fp16' contradicts the files: "
                                                "model.safetensors hold int8 weights")


@pytest.mark.parametrize("variant, problem", [
    ("{name: a, path: P, minMemory: lots}", "variants[0].minMemory"),
    ("{name: a, path: P, minMemory: 1GiB, accelerator: GPU!}", "variants[0].accelerator"),
    ("{name: a, path: P, minMemory: 1GiB, quality: {acc: high}}", "variants[0].quality"),
    ("{name: a, path: P, minMemory: 1GiB, speed: 3}", "variants[0].speed is not a known field"),
    ("{name: a, path: P}", "variants[0].minMemory is required"),
])
def test_bad_variant_fields_name_the_field(tmp_path, variant, problem):
    with pytest.raises(SpecError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(_spec(tmp_path, f"        - {variant.replace('P', str(SAMPLE))}\n"), tmp_path / "s.yaml")


def test_path_and_variants_together_are_refused(tmp_path):
    text = (f"apiVersion: ferry/v1\nkind: Bundle\nmetadata: {{name: b}}\nspec:\n  models:\n    - name: m\n"
            f"      version: 1.0.0\n      path: {SAMPLE}\n      variants: [{{name: a, path: {SAMPLE}, minMemory: 1GiB}}]\n")
    with pytest.raises(SpecError, match="give exactly one of path .* and variants"):
        parse_spec(text, tmp_path / "s.yaml")


# --------------------------------------------------------------------------- header readers


def gguf(file_type: int | None, tensors: list[tuple[int, list[int]]]) -> bytes:
    """A GGUF v3 header (ggml docs/gguf.md) with ``general.file_type`` and tensors of (type, dims)."""
    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b
    kvs = [s(b"general.name") + struct.pack("<I", 8) + s(b"x")]
    if file_type is not None:
        kvs.append(s(b"general.file_type") + struct.pack("<II", 4, file_type))
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    for i, (kind, dims) in enumerate(tensors):
        head += s(f"t{i}".encode()) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        head += struct.pack("<IQ", kind, 0)
    return head + b"\0" * (-len(head) % 32) + b"\0" * 64


@given(st.sampled_from(sorted(GGUF_FILE_TYPES)), st.lists(st.sampled_from(sorted(GGML_TYPES)), max_size=4))
def test_gguf_file_type_names_the_quantization(file_type, kinds):
    data = gguf(file_type, [(k, [4, 4]) for k in kinds])
    assert gguf_kind(data, len(data)) == GGUF_FILE_TYPES[file_type]


@given(st.lists(st.tuples(st.sampled_from(sorted(GGML_TYPES)), st.integers(1, 10_000)), min_size=1, max_size=6))
def test_gguf_without_file_type_takes_the_type_of_most_elements(tensors):
    data = gguf(None, [(k, [n]) for k, n in tensors])
    totals: dict[int, int] = {}
    for k, n in tensors:
        totals[k] = totals.get(k, 0) + n
    top = max(totals.values())
    assert gguf_kind(data, len(data)) in {GGML_TYPES[k] for k, n in totals.items() if n == top}


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(0, 10**12))
def test_gguf_reader_never_fails_on_any_bytes(data, extra):
    assert gguf_kind(b"GGUF" + data, 4 + len(data) + extra % 1000) in {None, *GGUF_FILE_TYPES.values(),
                                                                     *GGML_TYPES.values()}


@given(st.binary(max_size=200))
def test_gguf_reader_never_trusts_a_truncated_header(data):
    full = gguf(15, [(12, [8, 8])])
    cut = full[:len(full) // 2]
    assert gguf_kind(cut, len(cut)) is None
    assert gguf_kind(data, len(data)) in {None, *GGUF_FILE_TYPES.values(), *GGML_TYPES.values()}


def test_gguf_files_fill_quantization_and_are_checked(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(gguf(15, [(12, [64, 64]), (0, [64])]))
    facts = weight_facts([("m.gguf", f)])
    assert (facts.precision, facts.quantization) == (None, "q4_k_m")
    assert check_declaration("w", None, None, facts) == (None, "q4_k_m")
    with pytest.raises(SpecError, match="quantization 'q8_0' contradicts the files: m.gguf are q4_k_m"):
        check_declaration("w", None, "q8_0", facts)
    f.write_bytes(gguf(1, [(1, [64, 64])]))
    assert weight_facts([("m.gguf", f)]).precision == "fp16"


def test_files_that_say_nothing_need_a_declaration(tmp_path):
    for name, data in (("model.onnx", b"\x08\x07onnx"), ("model.pt", b"PK\x03\x04")):
        f = tmp_path / name
        f.write_bytes(data)
        facts = weight_facts([(name, f)])
        assert check_declaration("w", "fp16", None, facts) == ("fp16", None)
        with pytest.raises(SpecError, match="give precision or quantization"):
            check_declaration("w", None, None, facts)


def _pb_varint(n: int) -> bytes:
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def _pb(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _pb_varint(number << 3) + _pb_varint(value)
    return _pb_varint(number << 3 | 2) + _pb_varint(len(value)) + value


def onnx_model(initializers: list[tuple[int, list[int], bool]]) -> bytes:
    """An ONNX ModelProto (onnx.proto): a node and initializers of (data_type, dims, packed dims)."""
    node = _pb(1, b"x") + _pb(2, b"y") + _pb(4, b"MatMul")
    graph = _pb(1, node) + _pb(2, b"g")
    for data_type, dims, packed in initializers:
        count = 1
        for d in dims:
            count *= d
        tensor = (_pb(1, b"".join(_pb_varint(d) for d in dims)) if packed and dims else
                  b"".join(_pb(1, d) for d in dims))
        tensor += _pb(2, data_type) + _pb(8, b"w") + _pb(9, b"\0" * min(count, 64))
        graph += _pb(5, tensor)
    return _pb(1, 8) + _pb(2, b"pytorch") + _pb(7, graph) + _pb(8, _pb(2, 17))


@given(st.lists(st.tuples(st.sampled_from(sorted(ONNX_TYPES)), st.lists(st.integers(1, 300), max_size=3),
                          st.booleans()), min_size=1, max_size=6))
def test_onnx_precision_is_the_type_of_most_initializer_elements(initializers):
    import io

    data = onnx_model(initializers)
    totals: dict[int, int] = {}
    for t, dims, _ in initializers:
        n = 1
        for d in dims:
            n *= d
        totals[t] = totals.get(t, 0) + n
    top = max(totals.values())
    assert onnx_precision(io.BytesIO(data), len(data)) in {ONNX_TYPES[t] for t, n in totals.items() if n == top}


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_onnx_reader_never_fails_on_any_bytes(data):
    import io

    assert onnx_precision(io.BytesIO(data), len(data)) in {None, *ONNX_TYPES.values()}
    whole = onnx_model([(10, [4, 4], True)])
    cut = whole[:len(whole) - 3]
    assert onnx_precision(io.BytesIO(cut), len(cut)) is None


def test_an_onnx_variant_is_checked_against_its_initializers(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(onnx_model([(10, [64, 64], True), (1, [64], False)]))
    facts = weight_facts([("model.onnx", f)])
    assert facts.precision == "fp16"
    with pytest.raises(SpecError, match="precision 'int8' contradicts the files: model.onnx hold fp16 weights"):
        check_declaration("w", "int8", None, facts)


# --------------------------------------------------------------------------- units and the rule


@given(st.integers(1, 10**6), st.sampled_from(["KiB", "MiB", "GiB", "KB", "MB", "GB", "K", "G"]),
       st.sampled_from(["day", "week", "month"]))
def test_link_budgets_parse_strictly(n, unit, per):
    size, period = parse_link(f"{n}{unit}/{per}")
    scale = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
             "K": 1000, "G": 1000**3}[unit]
    assert (size, period) == (n * scale, per)


@pytest.mark.parametrize("text", ["10GB", "10GB/year", "10XB/month", "/month", "0GB/day", "10 GB / fortnight"])
def test_bad_link_budgets_are_refused(text):
    with pytest.raises(UsageError, match="--link"):
        parse_link(text)


def test_site_set_refuses_sloppy_units(tmp_path):
    for opt, value in (("--memory", "16 gigs"), ("--accelerator", "Nvidia A100"), ("--link", "10GB")):
        assert_clean_failure(run_ferry("site", "set", "--state", tmp_path / "e", opt, value), code=2, contains=opt)


_variant = st.builds(Variant, name=st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True),
                     size=st.integers(1, 10**9), min_memory=st.integers(0, 64 * GiB),
                     accelerator=st.sampled_from(["none", "gpu", "npu"]))


@given(st.lists(_variant, min_size=1, max_size=5, unique_by=lambda v: v.name),
       st.builds(Resources, memory=st.integers(0, 64 * GiB), accelerator=st.sampled_from(["none", "gpu"])),
       st.one_of(st.none(), st.integers(0, 2 * 10**9)))
def test_the_choice_is_the_first_variant_that_fits(variants, site, budget):
    fitting = [v for v in variants if fit_problem(v, site) is None and (budget is None or v.size <= budget)]
    try:
        [choice] = choose([("m", variants)], site, budget)
    except PolicyError:
        assert not fitting
        return
    assert choice.variant == fitting[0]
    assert [n for n, _ in choice.passed] == [v.name for v in variants[:variants.index(fitting[0])]]


@given(_variant, st.sampled_from([None, "fp16", "int8"]), st.sampled_from([None, "q4_k_m"]),
       st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.from_regex(r"-?[0-9]{1,5}\.[0-9]{1,3}",
                                                                                   fullmatch=True), max_size=3))
def test_variant_records_round_trip(v, precision, quantization, quality):
    from dataclasses import replace

    v = replace(v, precision=precision, quantization=quantization, quality=tuple(sorted(quality.items())))
    assert Variant.from_dict(json.loads(json.dumps(v.to_dict())), "variant") == v


def test_delta_summaries_say_what_a_variant_switch_and_a_version_carry(variants, hub_keys, tmp_path):
    edge = tmp_path / "edge"
    small = tmp_path / "small.yaml"
    small.write_text("apiVersion: ferry/v1\nkind: SiteProfile\nmetadata: {name: s}\nspec: {memory: 2GiB, accelerator: none}\n")
    _export(variants, hub_keys, tmp_path / "int8", "--profile", small)
    assert _import(tmp_path / "int8", hub_keys, edge)[0] == 0
    receipt = tmp_path / "receipt.json"
    assert run_ferry("receipt", "--state", edge, "--out", receipt).returncode == 0
    assert json.loads(receipt.read_text())["artifacts"][0]["variant"] == "int8"
    switch = _export(variants, hub_keys, tmp_path / "fp16", "--max-bytes", "400KiB", "--since", receipt)
    [line] = switch["variantDeltas"]
    assert "variant int8 -> fp16 of the same version: carries what differs" in line
    carried = switch["carriedChunks"]
    assert carried >= 1 and f"{carried} of {switch['chunks']} chunk(s) carried" in line
    newer = _export(variants, hub_keys, tmp_path / "new", "--profile", small, "--since", receipt, version="1.3.0")
    [line] = newer["variantDeltas"]
    assert "variant int8: 1.2.0 -> 1.3.0: only changed chunks, 0 of" in line  # the same bytes: nothing to carry
    assert newer["carriedChunks"] == 0


def test_a_schema_2_state_gains_the_variant_column(variants, hub_keys, tmp_path):
    """A ledger written before variants (schema 2, no installed.variant) is read as it is and
    migrated by the next import (docs/edge-state.md, *Schema versions*)."""
    import sqlite3

    edge = tmp_path / "edge"
    _export(variants, hub_keys, tmp_path / "int8", "--max-bytes", "200KiB")
    _export(variants, hub_keys, tmp_path / "fp16", "--max-bytes", "400KiB")
    assert _import(tmp_path / "int8", hub_keys, edge)[0] == 0
    db = sqlite3.connect(edge / "state.db")
    with db:  # the ledger as schema 2 wrote it
        db.execute("ALTER TABLE installed DROP COLUMN variant")
        db.execute("UPDATE meta SET value='2' WHERE key='schema'")
    db.close()
    assert _status_model(edge)["variant"] is None  # read-only: shown as it is
    code, a, _ = _import(tmp_path / "fp16", hub_keys, edge)
    assert code == 0 and a["action"] == "switch" and "(none) -> fp16" in a["reason"]
    assert _status_model(edge)["variant"] == "fp16"
    db = sqlite3.connect(edge / "state.db")
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "3"
    db.close()


# --------------------------------------------------------------------------- variants from a registry


def _config_facts(raw: bytes) -> dict:
    """``config`` of a ModelPack config blob that skopeo read (``inspect --config --raw``)."""
    return json.loads(raw)["config"]


def _skopeo_config(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--config", "--raw", "--tls-verify=false", ref], check=True,
                          capture_output=True, timeout=60).stdout


def _registry_spec(tmp_path: Path, variants: Path, *entries: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: edge-ai}\nspec:\n  models:\n"
                    "    - name: sentiment\n      version: 1.2.0\n      variants:\n"
                    + "".join(f"        - {e}\n" for e in entries))
    return spec


def test_a_variant_from_a_registry_is_read_checked_and_chosen_by_budget(variants, hub_keys, registry, edge_registry,
                                                                         tmp_path):
    client = RegistryClient(registry.host)
    int8 = publish_model(variants / "int8", "sentiment", "1.2.0", client=client, modelcar=False)
    assert _config_facts(_skopeo_config(f"docker://{registry.host}/models/sentiment@{int8.digest}"))["precision"] == "int8"
    spec = _registry_spec(tmp_path, variants,
                          f"{{name: fp32, path: {variants}/fp32, precision: fp32, minMemory: 8GiB, accelerator: gpu}}",
                          f"{{name: int8, ref: '{registry.host}/models/sentiment:1.2.0', minMemory: 1GiB}}")
    fp32_bytes = sum(p.stat().st_size for p in (variants / "fp32").rglob("*") if p.is_file())
    int8_bytes = sum(p.stat().st_size for p in (variants / "int8").rglob("*") if p.is_file())

    def export(out: str, *extra: object) -> dict:
        done = run_ferry("export", spec, "--out", tmp_path / out, "--key", hub_keys.key, "--state", tmp_path / "hub",
                         "--json", "--profile", variants / "gpu-site.yaml", *extra)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert export("full")["artifacts"][0]["variant"]["name"] == "fp32"  # the best fits the GPU site's memory
    doc = export("usb", "--max-bytes", str(fp32_bytes - 1))  # the budget forces the registry's int8
    v = doc["artifacts"][0]["variant"]
    assert (v["name"], v["precision"], v["size"]) == ("int8", "int8", int8_bytes)  # read and measured, not declared
    assert doc["variants"][0]["passedOver"][0]["variant"] == "fp32"

    edge = tmp_path / "edge"
    done = run_ferry("import", tmp_path / "usb", "--trust", hub_keys.pub, "--state", edge, "--json")
    assert done.returncode == 0, done.stderr
    assert (edge / "models" / "sentiment" / "current" / "model.safetensors").read_bytes() == \
        (variants / "int8" / "model.safetensors").read_bytes()
    assert _status_model(edge)["variant"] == "int8"
    trail = [json.loads(line) for line in (edge / "audit" / "trail.jsonl").read_text().splitlines()]
    assert {e["decision"]: e["artifact"]["variant"] for e in trail if e["artifact"]} == {"applied": "int8",
                                                                                      "published": "int8"}
    # the ModelPack config ferry publishes says the variant's precision: in EDGE/oci and in a site registry
    assert _config_facts(_skopeo_config(f"oci:{edge / 'oci'}:models/sentiment:1.2.0"))["precision"] == "int8"
    site = tmp_path / "site"
    done = run_ferry("import", tmp_path / "full", "--trust", hub_keys.pub, "--state", site,
                     "--registry", edge_registry.host)
    assert done.returncode == 0, done.stderr
    assert _config_facts(_skopeo_config(f"docker://{edge_registry.host}/models/sentiment:1.2.0"))["precision"] == "fp32"


def test_a_registry_variant_the_files_or_its_config_contradict_is_refused(variants, hub_keys, registry, tmp_path):
    client = RegistryClient(registry.host)
    lying = publish_model(variants / "int8", "sentiment-lying", "1.2.0", client=client, modelcar=False,
                          variant=Variant(name="x", size=1, min_memory=1, accelerator="none", precision="fp32"))
    raw = _skopeo_config(f"docker://{registry.host}/models/sentiment-lying@{lying.digest}")
    assert _config_facts(raw)["precision"] == "fp32"  # a config that says fp32 over int8 files
    spec = _registry_spec(tmp_path, variants,
                          f"{{name: small, ref: '{registry.host}/models/sentiment-lying@{lying.digest}', minMemory: 1GiB}}")
    done = run_ferry("export", spec, "--out", tmp_path / "a", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert_clean_failure(done, code=2, contains="the ModelPack config's config.precision 'fp32' contradicts the files: "
                                                "model.safetensors hold int8 weights")
    assert not (tmp_path / "a").exists()
    honest = publish_model(variants / "int8", "sentiment-int8", "1.2.0", client=client, modelcar=False)
    spec = _registry_spec(tmp_path, variants, f"{{name: small, ref: '{registry.host}/models/sentiment-int8@"
                                              f"{honest.digest}', precision: fp16, minMemory: 1GiB}}")
    done = run_ferry("export", spec, "--out", tmp_path / "b", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert_clean_failure(done, code=2, contains="spec.models[0].variants[0].precision 'fp16' contradicts the files: "
                                                "model.safetensors hold int8 weights")


def test_a_modelpack_config_speaks_for_files_that_say_nothing(variants, hub_keys, registry, tmp_path):
    folder = tmp_path / "pickle"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"not a format ferry reads" * 100)
    client = RegistryClient(registry.host)
    stated = publish_model(folder, "pickled", "1.0.0", client=client, modelcar=False,
                           variant=Variant(name="x", size=1, min_memory=1, accelerator="none", quantization="awq"))
    bare = publish_model(folder, "pickled-bare", "1.0.0", client=client, modelcar=False)
    spec = _registry_spec(tmp_path, variants,
                          f"{{name: awq, ref: '{registry.host}/models/pickled@{stated.digest}', minMemory: 1GiB}}")
    done = run_ferry("export", spec, "--out", tmp_path / "a", "--key", hub_keys.key, "--state", tmp_path / "hub",
                     "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["artifacts"][0]["variant"]["quantization"] == "awq"
    spec = _registry_spec(tmp_path, variants,
                          f"{{name: awq, ref: '{registry.host}/models/pickled-bare@{bare.digest}', minMemory: 1GiB}}")
    done = run_ferry("export", spec, "--out", tmp_path / "b", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert_clean_failure(done, code=2, contains="spec.models[0].variants[0]: give precision or quantization")


@pytest.mark.parametrize("fields, problem", [
    ("path: P, ref: 'localhost:5000/m:1'", "give exactly one of path"),
    ("minMemory: 1GiB", "give exactly one of path"),
])
def test_a_variant_names_exactly_one_of_path_and_ref(tmp_path, fields, problem):
    entry = "{name: a, " + fields.replace("P", str(SAMPLE)) + (", minMemory: 1GiB}" if "minMemory" not in fields else "}")
    with pytest.raises(SpecError, match=problem):
        parse_spec(_spec(tmp_path, f"        - {entry}\n"), tmp_path / "s.yaml")


_WORD = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(st.one_of(st.none(), _WORD), st.one_of(st.none(), _WORD),
       st.dictionaries(st.sampled_from(["format", "paramSize", "architecture"]), st.text(max_size=8), max_size=3))
@settings(max_examples=200, deadline=None)
def test_a_modelpack_config_states_its_words_lower_cased(precision, quantization, extra):
    config = {"descriptor": {"name": "m"}, "config": {**extra, "precision": precision, "quantization": quantization}}
    said = modelpack_stated(json.dumps(config).encode(), "model 'm'")
    assert said == (precision and precision.lower(), quantization and quantization.lower())


@given(st.one_of(st.binary(max_size=64), st.text(max_size=20).map(lambda t: json.dumps({"config": {"precision": t}})
                                                                    .encode())))
@settings(max_examples=300, deadline=None)
def test_a_modelpack_config_of_any_bytes_is_read_or_refused_in_one_line(data):
    try:
        said = modelpack_stated(data, "model 'm'")
    except SpecError as exc:
        assert str(exc).startswith("model 'm': ") and "\n" not in str(exc)
    else:
        assert all(v is None or v == v.lower() and v.strip() == v for v in said)
    for bad in (b"[]", b"{", b'{"config": 3}', b'{"config": {"precision": 16}}', b'{"config": {"precision": "fp 16"}}',
                b'{"config": {"precision": "fp16\\n"}}', b"[" * 100000):
        with pytest.raises(SpecError, match="model 'm'"):
            modelpack_stated(bad, "model 'm'")
