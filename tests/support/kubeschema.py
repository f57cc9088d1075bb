"""Checking objects against the KubeStellar CRDs' ``openAPIV3Schema``, as a WDS would.

The schemas come from ``../shared/kubestellar/crds.yaml`` (what KubeStellar installs into
a WDS: the five control.kubestellar.io CRDs with their extra validations). That file is
read-only test data. OpenAPI v3.0 schemas as Kubernetes uses them are JSON Schema (draft 4
keywords) plus ``x-kubernetes-*`` extensions, which the validator ignores; ``nullable`` is
honoured by allowing null. Unknown fields are not errors (a WDS prunes them).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.common import KUBESTELLAR

CRDS_FILE = KUBESTELLAR / "crds.yaml"


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


@cache
def crd_schemas(path: Path = CRDS_FILE) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD in ``path``."""
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
    """Errors for a control.kubestellar.io object against crds.yaml (KeyError for other kinds)."""
    return schema_errors(obj, crd_schemas()[(obj["apiVersion"], obj["kind"])])
