"""A small stand-in for a kube-apiserver (a KubeStellar WDS) on 127.0.0.1, for tests.

No kube-apiserver can be installed here, so ferry's cluster path is tested against this:
enough of the API for the kubernetes Python client's DynamicClient — ``/version``,
discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<version>``), GET of one
object (with the ``.status`` a test set with :meth:`FakeKube.set_status`), DELETE of one
object with ``preconditions`` (uid, resourceVersion; 409 when they do not hold), and server-side apply (PATCH with ``application/apply-patch+yaml``: create or
merge, ``fieldManager`` required, ``force`` recorded, 409 on a conflict without force, 409 when
the patch names a ``metadata.resourceVersion`` the object no longer has).
Namespaced objects need their Namespace to exist, as on a real server. Applying a
CustomResourceDefinition makes its kind served (and Established); custom resources are
checked against the CRD's ``openAPIV3Schema`` (422 when invalid), as a real server does.

Every request is recorded (method, path, query, content type, parsed body) so tests can
assert order and content. What it does NOT do: authentication, lists, watch, finalizers and cascading deletion,
strategic merge, field-level ownership (merge is a plain recursive map merge, lists
replaced), admission, defaulting. See docs/kubernetes.md.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

APPLY_PATCH = "application/apply-patch+yaml"


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    schema: dict[str, Any] | None = None  # openAPIV3Schema of a custom resource

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTIN = [
    ResourceType("", "v1", "namespaces", "Namespace", False),
    ResourceType("", "v1", "configmaps", "ConfigMap", True),
    ResourceType("", "v1", "secrets", "Secret", True),
    ResourceType("", "v1", "services", "Service", True),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True),
    ResourceType("", "v1", "pods", "Pod", True),
    ResourceType("", "v1", "podtemplates", "PodTemplate", True),
    ResourceType("", "v1", "replicationcontrollers", "ReplicationController", True),
    ResourceType("apps", "v1", "deployments", "Deployment", True),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True),
    ResourceType("batch", "v1", "jobs", "Job", True),
    ResourceType("batch", "v1", "cronjobs", "CronJob", True),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False),
]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any  # parsed YAML/JSON body, or None


def _merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for key, value in new.items():
            out[key] = _merge(old.get(key), value)
        return out
    return new


class FakeKube:
    """The server's state; start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.types: list[ResourceType] = list(BUILTIN)
        self.objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}  # (gv, plural, ns, name)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._generation = 0
        self.server: ThreadingHTTPServer | None = None
        #: called with (method, path) before each request is served, outside the lock: a test's
        #: way to change an object between two requests of one run (another writer on the cluster)
        self.before: Callable[[str, str], None] | None = None

    # ---- lifecycle

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = fake.handle(method, self.path, self.headers.get("Content-Type"), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, path: Path, *, namespace: str = "default", context: str = "wds1") -> Path:
        """Write a kubeconfig file whose context ``context`` points at this server."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
        }))
        return path

    # ---- what tests look at

    def applies(self) -> list[Request]:
        """The PATCH (apply) requests, in order."""
        with self.lock:
            return [r for r in self.requests if r.method == "PATCH"]

    def get_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        rt = self._type_by_kind(api_version, kind)
        assert rt is not None, (api_version, kind)
        with self.lock:
            return self.objects.get((rt.group_version, rt.plural, namespace if rt.namespaced else None, name))

    def put_object(self, body: dict[str, Any], manager: str = "someone-else") -> None:
        """Store an object directly (as if another client had applied it)."""
        rt = self._type_by_kind(body["apiVersion"], body["kind"])
        assert rt is not None
        meta = body["metadata"]
        status, out = self._apply(rt, meta.get("namespace") if rt.namespaced else None, meta["name"], body,
                                  manager, force=True)
        assert status in (200, 201), out

    # ---- request handling

    def _type_by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return next((t for t in self.types if t.group_version == api_version and t.kind == kind), None)

    def _type_by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        return next((t for t in self.types if (t.group, t.version, t.plural) == (group, version, plural)), None)

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                      "message": message, "code": code}

    def handle(self, method: str, raw_path: str, content_type: str | None, raw: bytes) -> tuple[int, Any]:
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if self.before is not None:
            self.before(method, split.path)
        body = None
        if raw:
            try:
                body = yaml.safe_load(raw.decode())  # JSON is YAML; apply patches may be either
            except (yaml.YAMLError, UnicodeDecodeError):
                with self.lock:
                    self.requests.append(Request(method, split.path, query, content_type, raw))
                return self._status(400, "BadRequest", "cannot parse the request body")
        with self.lock:
            self.requests.append(Request(method, split.path, query, content_type, body))
            return self._route(method, split.path, query, content_type, body)

    def _route(self, method: str, path: str, query: dict[str, str], content_type: str | None,
               body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts == ["version"]:
            return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fakekube", "platform": "linux/amd64"}
        if method == "GET" and parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if method == "GET" and parts == ["apis"]:
            return 200, self._group_list()
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return self._status(404, "NotFound", f"the server could not find the requested resource ({path})")
        if not rest:
            if method != "GET":
                return self._status(405, "MethodNotAllowed", "discovery is read-only")
            return self._resource_list(group, version)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if len(rest) != 2:
            return self._status(405, "MethodNotAllowed", f"this fake serves single objects only ({path})")
        plural, name = rest
        rt = self._type_by_path(group, version, plural)
        if rt is None or rt.namespaced != (namespace is not None):
            return self._status(404, "NotFound", f"the server could not find the requested resource ({path})")
        if method == "GET":
            found = self.objects.get((rt.group_version, plural, namespace, name))
            if found is None:
                return self._status(404, "NotFound", f'{plural}.{group or "core"} "{name}" not found')
            return 200, found
        if method == "DELETE":
            return self._delete(rt, namespace, name, body)
        if method != "PATCH":
            return self._status(405, "MethodNotAllowed", f"this fake does not implement {method}")
        if content_type != APPLY_PATCH:
            return self._status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")
        manager = query.get("fieldManager")
        if not manager:
            return self._status(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                                               "Required value: is required for apply patch")
        return self._apply(rt, namespace, name, body, manager, force=query.get("force") == "true")

    def _group_list(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for t in self.types:
            if t.group and t.version not in groups.setdefault(t.group, []):
                groups[t.group].append(t.version)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
            for g, vs in groups.items()
        ]}

    def _resource_list(self, group: str, version: str) -> tuple[int, Any]:
        types = [t for t in self.types if (t.group, t.version) == (group, version)]
        if not types:
            return self._status(404, "NotFound", "the server could not find the requested resource")
        return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                     "groupVersion": types[0].group_version,
                     "resources": [{"name": t.plural, "singularName": t.kind.lower(), "namespaced": t.namespaced,
                                    "kind": t.kind, "verbs": ["get", "patch", "delete"]} for t in types]}

    def _apply(self, rt: ResourceType, namespace: str | None, name: str, body: Any, manager: str,
               *, force: bool) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return self._status(400, "BadRequest", "the apply patch is not an object")
        meta = body.get("metadata") or {}
        if body.get("apiVersion") != rt.group_version or body.get("kind") != rt.kind:
            return self._status(400, "BadRequest", f"apiVersion/kind {body.get('apiVersion')}/{body.get('kind')} "
                                                   f"does not match the URL ({rt.group_version}/{rt.kind})")
        if meta.get("name") != name:
            return self._status(400, "BadRequest", f"the name of the object ({meta.get('name')}) does not match "
                                                   f"the name on the URL ({name})")
        if rt.namespaced and meta.get("namespace") not in (None, namespace):
            return self._status(400, "BadRequest", "the namespace of the object does not match the namespace on the URL")
        if rt.namespaced and ("v1", "namespaces", None, namespace) not in self.objects:
            return self._status(404, "NotFound", f'namespaces "{namespace}" not found')
        if rt.schema is not None:
            from tests.support.kubeschema import schema_errors

            errors = schema_errors(body, rt.schema)
            if errors:
                return self._status(422, "Invalid", f'{rt.kind}.{rt.group} "{name}" is invalid: {errors[0]}')
        key = (rt.group_version, rt.plural, namespace, name)
        current = self.objects.get(key)
        managers = [m["manager"] for m in (current or {}).get("metadata", {}).get("managedFields", [])]
        wanted = meta.get("resourceVersion")
        if current is not None and wanted is not None and str(wanted) != current["metadata"].get("resourceVersion"):
            # optimistic concurrency: a patch naming a resourceVersion applies only to that version
            what = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            return self._status(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": the object has '
                                                 "been modified; please apply your changes to the latest version "
                                                 "and try again")
        if current is not None and not force and any(m != manager for m in managers):
            return self._status(409, "Conflict", f"Apply failed with conflicts with {managers[0]!r} (use force)")
        self._generation += 1
        applied = _merge(current or {}, body)
        applied_meta = applied.setdefault("metadata", {})
        if rt.namespaced:
            applied_meta["namespace"] = namespace
        applied_meta.setdefault("uid", str(uuid.uuid4()))
        applied_meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        applied_meta["resourceVersion"] = str(self._generation)
        entry = {"manager": manager, "operation": "Apply", "apiVersion": rt.group_version}
        applied_meta["managedFields"] = [m for m in applied_meta.get("managedFields", []) if m["manager"] != manager]
        applied_meta["managedFields"].append(entry)
        if (rt.group, rt.kind) == ("apiextensions.k8s.io", "CustomResourceDefinition"):
            problem = self._serve_crd(applied)
            if problem:
                return self._status(422, "Invalid", problem)
            applied["status"] = {"conditions": [{"type": "NamesAccepted", "status": "True"},
                                                {"type": "Established", "status": "True"}]}
        self.objects[key] = applied
        return (200 if current is not None else 201), applied

    def _delete(self, rt: ResourceType, namespace: str | None, name: str, body: Any) -> tuple[int, Any]:
        """DELETE of one object, honouring ``DeleteOptions.preconditions`` (uid, resourceVersion) with
        409 Conflict, as the API server does; the object goes at once (no finalizers here)."""
        key = (rt.group_version, rt.plural, namespace, name)
        current = self.objects.get(key)
        if current is None:
            return self._status(404, "NotFound", f'{rt.plural}.{rt.group or "core"} "{name}" not found')
        pre = (body or {}).get("preconditions") or {} if isinstance(body, dict) else {}
        meta = current["metadata"]
        for field, have in (("uid", meta.get("uid")), ("resourceVersion", meta.get("resourceVersion"))):
            if pre.get(field) is not None and pre[field] != have:
                return self._status(409, "Conflict", f"Precondition failed: {field}: {pre[field]}, "
                                                     f"object {field}: {have}")
        del self.objects[key]
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                     "details": {"name": name, "kind": rt.plural, "uid": meta.get("uid")}}

    def set_status(self, api_version: str, kind: str, name: str, namespace: str | None, status: dict[str, Any]) -> None:
        """Write an object's ``.status``, as its controller (or the kubelet) would."""
        rt = self._type_by_kind(api_version, kind)
        assert rt is not None
        with self.lock:
            obj = self.objects[(rt.group_version, rt.plural, namespace if rt.namespaced else None, name)]
            obj["status"] = status
            self._generation += 1
            obj["metadata"]["resourceVersion"] = str(self._generation)

    def deletes(self) -> list[Request]:
        """The DELETE requests, in order."""
        with self.lock:
            return [r for r in self.requests if r.method == "DELETE"]

    def _serve_crd(self, crd: dict[str, Any]) -> str | None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        if not (group and plural and kind and crd["metadata"]["name"] == f"{plural}.{group}"):
            return f'CustomResourceDefinition "{crd["metadata"]["name"]}" is invalid: metadata.name must be <plural>.<group>'
        for v in spec.get("versions") or []:
            if not v.get("served", True):
                continue
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            rt = ResourceType(group, v["name"], plural, kind, spec.get("scope") == "Namespaced", schema)
            self.types = [t for t in self.types if (t.group, t.version, t.plural) != (group, v["name"], plural)]
            self.types.append(rt)
        return None


@pytest.fixture
def fakekube() -> Iterator[FakeKube]:
    """A fresh fake API server for one test."""
    fake = FakeKube()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
