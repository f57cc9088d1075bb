"""Hub side of manifest sets: every YAML document checked, files carried as-is, images listed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.sources.kube import manifests_source
from manifests.kube import KubeObject, image_is_carried, parse_documents, workload_images
from manifests.errors import FerryError
from manifests.model import ImageInfo
from manifests.oci import parse_reference

APP = b"""\
# the app: a namespace, a deployment with an init container, a service
apiVersion: v1
kind: Namespace
metadata:
  name: sentiment
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sentiment-server
  namespace: sentiment
  labels: {app.kubernetes.io/name: sentiment}
spec:
  selector: {matchLabels: {app: sentiment}}
  template:
    metadata: {labels: {app: sentiment}}
    spec:
      initContainers:
      - {name: fetch, image: "registry.example:5000/team/tokenizer:0.4.1"}
      containers:
      - {name: server, image: "registry.example:5000/team/sentiment:1.2.0"}
---
---
apiVersion: v1
kind: Service
metadata: {name: sentiment, namespace: sentiment}
spec: {ports: [{port: 80}]}
"""

BATCH = b"""\
apiVersion: batch/v1
kind: Job
metadata: {name: warmup, namespace: sentiment}
spec:
  template:
    spec:
      containers: [{name: w, image: "busybox:1.36"}]
      restartPolicy: Never
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: sentiment}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: n, image: "ghcr.io/acme/reindex@sha256:%s"}]
          restartPolicy: OnFailure
""" % (b"a" * 64)

MORE = b"""\
apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: sentiment}
spec:
  containers: [{name: a, image: "busybox:1.36"}]
  ephemeralContainers: [{name: dbg, image: "nicolaka/netshoot:v0.13"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache, namespace: sentiment}
spec: {template: {spec: {containers: [{name: r, image: "redis:7.2"}]}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: sentiment}
spec: {template: {spec: {containers: [{name: a, image: "localhost:5000/agent:2.0.0"}]}}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: legacy, namespace: sentiment}
spec: {template: {spec: {containers: [{name: l, image: "quay.io/org/legacy:1.0"}]}}}
"""

POLICY = b"""\
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata: {name: sentiment-edge}
spec:
  clusterSelectors:
  - matchLabels: {location-group: edge}
  downsync:
  - objectSelectors:
    - matchLabels: {app.kubernetes.io/name: sentiment}
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "kubestellar"
    (root / "workloads").mkdir(parents=True)
    (root / "app.yaml").write_bytes(APP)
    (root / "workloads" / "batch.yml").write_bytes(BATCH)
    (root / "workloads" / "more.yaml").write_bytes(MORE)
    (root / "policy.yaml").write_bytes(POLICY)
    (root / "README.md").write_text("not YAML, not carried")
    return root


def _bad(tmp_path: Path, text: str | bytes, name: str = "app.yaml") -> str:
    root = tmp_path / "kubestellar"
    root.mkdir(exist_ok=True)
    (root / name).write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(FerryError) as err:
        manifests_source("app", "1.0.0", root)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_folder_is_carried_byte_for_byte_with_relative_paths(app_dir: Path) -> None:
    art = manifests_source("sentiment-app", "1.2.0", app_dir)
    assert (art.kind, art.name, art.version) == ("manifests", "sentiment-app", "1.2.0")
    assert [f.path for f in art.files] == ["app.yaml", "policy.yaml", "workloads/batch.yml", "workloads/more.yaml"]
    for f in art.files:
        assert f.open().read() == (app_dir / f.path).read_bytes()
        assert f.size == (app_dir / f.path).stat().st_size


def test_images_from_every_workload_kind_sorted_unique(app_dir: Path) -> None:
    art = manifests_source("sentiment-app", "1.2.0", app_dir)
    assert art.images == (
        "busybox:1.36",
        "ghcr.io/acme/reindex@sha256:" + "a" * 64,
        "localhost:5000/agent:2.0.0",
        "nicolaka/netshoot:v0.13",
        "quay.io/org/legacy:1.0",
        "redis:7.2",
        "registry.example:5000/team/sentiment:1.2.0",
        "registry.example:5000/team/tokenizer:0.4.1",
    )


def test_single_file_set(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_bytes(POLICY)
    art = manifests_source("policy", "0.1.0", tmp_path / "policy.yaml")
    assert [f.path for f in art.files] == ["policy.yaml"]
    assert art.images == ()


def test_kubestellar_examples_are_accepted() -> None:
    from tests.support.common import KUBESTELLAR_EXAMPLES

    art = manifests_source("examples", "1.0.0", KUBESTELLAR_EXAMPLES)
    assert len(art.files) == 5
    assert art.images == ("public.ecr.aws/nginx/nginx:latest",)


def test_samples_if_present() -> None:
    from tests.support.common import SAMPLES

    folder = SAMPLES / "kubestellar"
    if not folder.is_dir():  # the samples are written by another part of the project
        return
    for path in sorted(p for p in folder.iterdir() if p.is_dir() or p.suffix in (".yaml", ".yml")):
        art = manifests_source(path.stem, "1.0.0", path)
        assert art.files


def test_not_a_kubernetes_object_names_file_and_document(tmp_path: Path) -> None:
    message = _bad(tmp_path, "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nfoo: 1\n")
    assert message == f"{tmp_path}/kubestellar/app.yaml document 2: not a Kubernetes object (no kind)"


@pytest.mark.parametrize("text, expected", [
    ("- a\n- b\n", "document 1: not a Kubernetes object (a list, not a mapping)"),
    ("just words\n", "document 1: not a Kubernetes object (a str, not a mapping)"),
    ("kind: Namespace\nmetadata: {name: a}\n", "document 1: not a Kubernetes object (no apiVersion)"),
    ("apiVersion: v1\nkind: Namespace\n", "document 1: Namespace has no metadata.name"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {generateName: a-}\n", "document 1: Namespace has no metadata.name"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name!}\n", "metadata.name 'Bad_Name!' is not a valid object name"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: Not/OK}\n", "is not a valid namespace"),
    ("apiVersion: 'apps v1'\nkind: Deployment\nmetadata: {name: a}\n", "apiVersion 'apps v1' is not like v1"),
    ("apiVersion: v1\nkind: 42\nmetadata: {name: a}\n", "kind 42 is not a Kubernetes kind"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {a: 1}}\n", "metadata.labels must map strings"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: !!binary aGk=\n", "a bytes value has no JSON form"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {1: x}\n", "mapping key 1 is not a string"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nx: .nan\n", "has no JSON form"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkey: [unclosed\n", "document 2: not valid YAML"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n!!python/object:os.system x\n", "document 2: not valid YAML"),
    (b"apiVersion: v1\nkind: Namespace\nmetadata: {name: \xff}\n", "not UTF-8 text"),
    ("# only a comment\n", "holds no Kubernetes objects"),
])
def test_bad_documents_are_refused_with_one_line(tmp_path: Path, text: str | bytes, expected: str) -> None:
    assert expected in _bad(tmp_path, text)


def test_malformed_workload_template_is_refused(tmp_path: Path) -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {template: {spec: {containers: oops}}}\n"
    assert "Deployment.apps a: containers must be a list of containers" in _bad(tmp_path, text)
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {template: {spec: {containers: [{image: 'UPPER/Case'}]}}}\n"
    assert "containers[0].image 'UPPER/Case' is not an image reference" in _bad(tmp_path, text)


def test_duplicate_object_is_refused(tmp_path: Path) -> None:
    ns = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: x}\n"
    assert "ConfigMap x/a appears twice" in _bad(tmp_path, ns + "---\n" + ns)


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: a}", 'l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 12):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    assert "values once aliases are expanded" in _bad(tmp_path, "\n".join(lines) + "\n")


def test_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: &a {k: *a}\n"
    message = _bad(tmp_path, text)
    assert "document 1" in message


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    import gc

    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: " + "[" * 5000 + "]" * 5000 + "\n"
    # Garbage left by earlier tests (sockets, clients) must not be finalized near the recursion
    # limit: pytest's unraisable-exception hook then fails itself and fails this test.
    gc.collect()
    gc.disable()
    try:
        assert "document 1" in _bad(tmp_path, text)
    finally:
        gc.enable()


def test_timestamps_stay_strings_as_kubectl_reads_them() -> None:
    text = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {day: 2024-01-01}\n"
    (obj,) = parse_documents(text, "a.yaml")
    assert obj.body["data"]["day"] == "2024-01-01"


def test_link_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.yaml"
    outside.write_bytes(POLICY)
    root = tmp_path / "kubestellar"
    root.mkdir()
    (root / "app.yaml").write_bytes(APP)
    os.symlink(outside, root / "stolen.yaml")
    with pytest.raises(FerryError, match="a link that leaves the manifest folder"):
        manifests_source("app", "1.0.0", root)
    (root / "stolen.yaml").unlink()
    os.symlink(tmp_path, root / "up")
    with pytest.raises(FerryError, match="a link that leaves the manifest folder"):
        manifests_source("app", "1.0.0", root)


def test_link_within_the_folder_is_carried_as_a_file(tmp_path: Path) -> None:
    root = tmp_path / "kubestellar"
    root.mkdir()
    (root / "policy.yaml").write_bytes(POLICY)
    os.symlink("policy.yaml", root / "zz-alias.yaml")
    with pytest.raises(FerryError, match="appears twice"):  # same object twice, through the link
        manifests_source("app", "1.0.0", root)


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FerryError, match="does not exist"):
        manifests_source("app", "1.0.0", tmp_path / "nope")
    with pytest.raises(FerryError, match=r"no \*.yaml or \*.yml files"):
        manifests_source("app", "1.0.0", tmp_path)


def test_oversize_file_is_refused_before_parsing(tmp_path: Path) -> None:
    from manifests import limits

    message = _bad(tmp_path, b"#" * (limits.MAX_KUBE_FILE_BYTES + 1))
    assert "over the limit" in message


# --------------------------------------------------------------------------- image references


def _info(repository: str, tag: str, source: str | None = None) -> ImageInfo:
    return ImageInfo(repository=repository, tag=tag, manifest="sha256:" + "b" * 64,
                     media_type="application/vnd.oci.image.manifest.v1+json", source=source)


def test_image_is_carried() -> None:
    carried = [_info("team/sentiment", "1.2.0", "registry.example:5000/team/sentiment:1.2.0"),
               _info("library/nginx", "latest"), _info("team/tokenizer", "0.4.1")]
    assert image_is_carried("registry.example:5000/team/sentiment:1.2.0", carried)  # the source itself
    assert image_is_carried("other.registry/team/sentiment:1.2.0", carried)  # host ignored
    assert image_is_carried("team/tokenizer:0.4.1", carried)
    assert image_is_carried("nginx", carried)  # Docker Hub's library/ and :latest
    assert image_is_carried("docker.io/library/nginx:latest", carried)
    assert image_is_carried("team/sentiment@sha256:" + "b" * 64, carried)  # by digest
    assert not image_is_carried("team/sentiment@sha256:" + "c" * 64, carried)
    assert not image_is_carried("team/sentiment:1.1.0", carried)
    assert not image_is_carried("team/other:1.2.0", carried)
    assert not image_is_carried("Not A Reference", carried)


@pytest.mark.parametrize("ref, parts", [  # workloads are read by manifests.oci's Docker rules
    ("nginx", ("docker.io", "library/nginx", "latest", None)),
    ("nginx:1.25", ("docker.io", "library/nginx", "1.25", None)),
    ("localhost:5000/a/b:c", ("localhost:5000", "a/b", "c", None)),
    ("localhost/a", ("localhost", "a", "latest", None)),
    ("[::1]:5000/a:1", ("[::1]:5000", "a", "1", None)),
    ("r.io/a/b:1@sha256:" + "d" * 64, ("r.io", "a/b", "1", "sha256:" + "d" * 64)),
])
def test_parse_reference(ref: str, parts: tuple[object, ...]) -> None:
    r = parse_reference(ref)
    assert (r.registry, r.repository, r.tag, r.digest) == parts


_component = st.from_regex(r"\A[a-z0-9]{1,8}(?:[_-][a-z0-9]{1,8}){0,2}\Z")  # no dot: a dotted first part is a host
_ref_parts = st.tuples(
    st.one_of(st.none(), st.sampled_from(["localhost:5000", "registry.example", "10.0.0.1:5000", "ghcr.io"])),
    st.lists(_component, min_size=1, max_size=3),
    st.one_of(st.none(), st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,20}\Z")),
    st.one_of(st.none(), st.from_regex(r"\A[0-9a-f]{64}\Z")),
)


def _join(parts: tuple[str | None, list[str], str | None, str | None]) -> str:
    host, path, tag, digest = parts
    return (f"{host}/" if host else "") + "/".join(path) + (f":{tag}" if tag else "") \
        + (f"@sha256:{digest}" if digest else "")


_refs = _ref_parts.map(_join)
_kinds = st.sampled_from([("v1", "Pod"), ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
                          ("apps/v1", "DaemonSet"), ("apps/v1", "ReplicaSet"), ("batch/v1", "Job"),
                          ("batch/v1", "CronJob"), ("v1", "ConfigMap"), ("example.com/v1", "Deployment")])


def _workload(api_version: str, kind: str, lists: dict[str, list[str]]) -> dict[str, object]:
    spec = {field: [{"name": f"c{i}", "image": ref} for i, ref in enumerate(refs)] for field, refs in lists.items()}
    template = {"spec": spec}
    body: dict[str, object] = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w"}}
    if kind == "Pod":
        body["spec"] = spec
    elif kind == "CronJob":
        body["spec"] = {"jobTemplate": {"spec": {"template": template}}}
    else:
        body["spec"] = {"template": template}
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_kinds, st.dictionaries(st.sampled_from(["containers", "initContainers", "ephemeralContainers"]),
                               st.lists(_refs, max_size=3), max_size=3))
def test_images_extracted_from_any_workload(kind: tuple[str, str], lists: dict[str, list[str]]) -> None:
    body = _workload(*kind, lists)
    (obj,) = parse_documents(yaml.safe_dump(body).encode(), "w.yaml")
    is_workload = kind[1] != "ConfigMap" and kind[0] != "example.com/v1"
    expected = {r for refs in lists.values() for r in refs} if is_workload else set()
    assert set(workload_images(obj)) == expected
    for ref in expected:
        r = parse_reference(ref)
        assert (ref.startswith(r.registry) or r.registry == "docker.io") and r.repository.removeprefix("library/") in ref


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        objects = parse_documents(data, "x.yaml")
    except FerryError as err:
        assert "\n" not in str(err)
    else:
        assert all(isinstance(o, KubeObject) for o in objects)


_yaml_ish = st.text(alphabet=st.sampled_from(list("apiVersion:kind-metadta{}[]&*!|>'\"#\n ,0123456789.@/")),
                    max_size=200)


@settings(max_examples=300, deadline=None)
@given(_yaml_ish)
def test_arbitrary_yaml_text_never_crashes_the_parser(text: str) -> None:
    try:
        for obj in parse_documents(text.encode(), "x.yaml"):
            workload_images(obj)
    except FerryError as err:
        assert "\n" not in str(err)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "kubestellar"
    root.mkdir()
    os.mkfifo(root / "pipe.yaml")
    with pytest.raises(FerryError, match="not a regular file"):
        manifests_source("app", "1.0.0", root)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_parse_reference_never_crashes(text: str) -> None:
    try:
        ref = parse_reference(text)
    except FerryError as err:
        assert "\n" not in str(err) or "\n" in text
    else:
        assert ref.repository and ref.repository.removeprefix("library/") in text


@settings(max_examples=200, deadline=None)
@given(_ref_parts)
def test_generated_references_round_trip(parts: tuple[str | None, list[str], str | None, str | None]) -> None:
    host, path, tag, digest = parts
    r = parse_reference(_join(parts))
    assert r.registry == (host or "docker.io")
    assert r.repository == ("/".join(path) if host or len(path) > 1 else f"library/{path[0]}")
    assert r.tag == (tag or (None if digest else "latest"))
    assert r.digest == (f"sha256:{digest}" if digest else None)
    assert parse_reference(str(r)) == r
