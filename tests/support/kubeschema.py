"""KubeStellar objects checked against ferry's own schema of the fields it relies on.

The schema is ``tests/support/kubestellar/kubestellar.schema.json``: the control.kubestellar.io
v1alpha1 kinds (BindingPolicy, Binding, CustomTransform, StatusCollector, CombinedStatus) with
field names, types, required fields, label patterns and the rule that each downsync clause needs
a selector, written from KubeStellar's ``pkg/crd/files/crds.yaml`` (commit 1c28a8a, see the
README beside it). It lives in the project, so a fresh clone tests itself with nothing beside it.

KubeStellar's own CRDs (``tests/support/kubestellar/crds.yaml``, ``pkg/crd/files/crds.yaml`` of
the same commit, unchanged, Apache-2.0) are kept beside it, so ``tests/test_kube_schema.py``
cross-checks that both agree in every checkout.

Schemas are JSON Schema draft 4 (what Kubernetes' OpenAPI v3.0 ``openAPIV3Schema`` is, less the
``x-kubernetes-*`` extensions, which the validator ignores; ``nullable`` is honoured by allowing
null). Unknown fields are not errors (a WDS prunes them).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml


SCHEMA_FILE = Path(__file__).parent / "kubestellar" / "kubestellar.schema.json"
EXAMPLES = Path(__file__).parent / "kubestellar" / "examples"
UPSTREAM_CRDS = Path(__file__).parent / "kubestellar" / "crds.yaml"


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/definitions/X"}`` replaced by X (CRDs allow no $ref)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(definitions[node["$ref"].rsplit("/", 1)[1]], definitions)
        return {k: _inline(v, definitions) for k, v in node.items() if k != "$comment"}
    if isinstance(node, list):
        return [_inline(v, definitions) for v in node]
    return node


@cache
def _document() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


@cache
def kind_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the ``openAPIV3Schema`` of that kind, from ferry's own schema file."""
    doc = _document()
    api_version = f"{doc['group']}/{doc['version']}"
    out = {}
    for kind, entry in doc["kinds"].items():
        props: dict[str, Any] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                 "metadata": {"type": "object"}}
        if entry.get("spec") is not None:
            props["spec"] = entry["spec"]
        props.update(entry.get("topLevel", {}))
        out[(api_version, kind)] = _inline({"type": "object", "properties": props}, doc["definitions"])
    return out


def crd_documents() -> list[dict[str, Any]]:
    """The five CustomResourceDefinitions (apiextensions.k8s.io/v1) a WDS holds, built from the schema, by name."""
    doc = _document()
    crds = []
    for (_, kind), schema in kind_schemas().items():
        entry = doc["kinds"][kind]
        version: dict[str, Any] = {"name": doc["version"], "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": schema}}
        if entry["scope"] == "Cluster":
            version["subresources"] = {"status": {}}
        crds.append({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{entry['plural']}.{doc['group']}"},
            "spec": {"group": doc["group"], "scope": entry["scope"],
                     "names": {"kind": kind, "listKind": f"{kind}List", "plural": entry["plural"],
                               "singular": kind.lower(), "shortNames": entry["shortNames"]},
                     "versions": [version]},
        })
    return sorted(crds, key=lambda c: c["metadata"]["name"])


def crds_yaml() -> bytes:
    """:func:`crd_documents` as one multi-document YAML file (what ``kubectl apply -f`` would take)."""
    return yaml.safe_dump_all(crd_documents(), sort_keys=False).encode()


def _nullable(schema: Any) -> Any:
    """Translate OpenAPI's ``nullable: true`` into JSON Schema (type may also be null)."""
    if isinstance(schema, dict):
        out = {k: _nullable(v) for k, v in schema.items()}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_nullable(v) for v in schema]
    return schema


def crd_schemas(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD in the YAML file ``path``."""
    out = {}
    with open(path, "rb") as f:
        for crd in yaml.safe_load_all(f):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return out


def schema_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every violation of ``schema`` by ``obj``, as ``path: message`` lines (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft4Validator(_nullable(copy.deepcopy(schema)),
                                           format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def validate(obj: dict[str, Any]) -> list[str]:
    """Errors for a control.kubestellar.io object against ferry's schema (KeyError for other kinds)."""
    return schema_errors(obj, kind_schemas()[(obj["apiVersion"], obj["kind"])])
