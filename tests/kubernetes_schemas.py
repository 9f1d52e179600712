"""The schemas a Kubernetes API server would check sluice's manifests against, offline.

The core schemas are the ones bundled in ``kubernetes_validate`` (strict: an unknown field is an error).
The Kubeflow kinds and the Prometheus Operator's ServiceMonitor are CRDs, not in those schemas, so their
envelope is checked by a schema written here from the CRDs' fields that sluice sets, and the core objects
inside them (metadata, pod templates, env, resources, selectors) by the bundled core schemas.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

KUBERNETES = "1.37"  # the API the kubernetes client 37 speaks
_SCHEMAS = files("kubernetes_validate") / "kubernetes-json-schema" / "v1.37.0-local-strict"


# -- Schemas ------------------------------------------------------------------------------------------


def _core(type_name: str) -> dict[str, Any]:
    return {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{type_name}"}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(required),
    }


def _envelope(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _core("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": spec,
            "status": {"type": "object"},
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    )


_STRING, _COUNT = {"type": "string"}, {"type": "integer", "minimum": 0}
_ARGV = {"type": "array", "items": _STRING, "maxItems": 128}
# The fields of trainer.kubeflow.org_trainjobs.yaml and kubeflow.org_pytorchjobs.yaml that sluice sets
# (plus the defaults the server adds), with the embedded core types checked by the core schemas.
TRAINJOB_SCHEMA = _envelope(
    "trainer.kubeflow.org/v1alpha1",
    "TrainJob",
    _closed(
        {
            "runtimeRef": _closed(
                {"name": _STRING, "apiGroup": _STRING, "kind": _STRING}, required=("name",)
            ),
            "trainer": _closed(
                {
                    "image": _STRING,
                    "command": _ARGV,
                    "args": _ARGV,
                    "env": {"type": "array", "items": _core("io.k8s.api.core.v1.EnvVar"), "maxItems": 128},
                    "numNodes": {"type": "integer", "minimum": 1},
                    "resourcesPerNode": _core("io.k8s.api.core.v1.ResourceRequirements"),
                }
            ),
            "suspend": {"type": "boolean"},
            "managedBy": _STRING,
        },
        required=("runtimeRef",),
    ),
)
_REPLICA = _closed(
    {
        "replicas": _COUNT,
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": _core("io.k8s.api.core.v1.PodTemplateSpec"),
    }
)
PYTORCHJOB_SCHEMA = _envelope(
    "kubeflow.org/v1",
    "PyTorchJob",
    _closed(
        {
            "runPolicy": _closed(
                {
                    "backoffLimit": _COUNT,
                    "ttlSecondsAfterFinished": _COUNT,
                    "activeDeadlineSeconds": _COUNT,
                    "cleanPodPolicy": {"enum": ["None", "Running", "All"]},
                }
            ),
            "pytorchReplicaSpecs": _closed({"Master": _REPLICA, "Worker": _REPLICA}),
        },
        required=("pytorchReplicaSpecs",),
    ),
)

_SECRET_KEY = _closed({"name": _STRING, "key": _STRING, "optional": {"type": "boolean"}}, required=("key",))
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
# The fields of monitoring.coreos.com_servicemonitors.yaml (Prometheus Operator, v1) that sluice's
# manifests set, with their types and patterns as the CRD gives them.
SERVICEMONITOR_SCHEMA = _envelope(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    _closed(
        {
            "jobLabel": _STRING,
            "selector": _core("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
            "namespaceSelector": _closed(
                {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STRING}}
            ),
            "endpoints": {
                "type": "array",
                "items": _closed(
                    {
                        "port": _STRING,
                        "path": _STRING,
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                        "honorLabels": {"type": "boolean"},
                        "authorization": _closed({"type": _STRING, "credentials": _SECRET_KEY}),
                    }
                ),
            },
        },
        required=("selector",),
    ),
)
_CUSTOM = {
    "TrainJob": TRAINJOB_SCHEMA,
    "PyTorchJob": PYTORCHJOB_SCHEMA,
    "ServiceMonitor": SERVICEMONITOR_SCHEMA,
}


@functools.cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    # As kubernetes_validate does: the shared definitions are a resource that $refs resolve into.
    definitions = Resource.from_contents(json.loads((_SCHEMAS / "_definitions.json").read_text()))
    schema = _CUSTOM[kind]
    return jsonschema.Draft202012Validator(schema, registry=definitions @ Registry())


LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def validate(manifest: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless the API server's schema would accept ``manifest``."""
    if manifest["kind"] in _CUSTOM:
        _validator(manifest["kind"]).validate(manifest)
    else:
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
    # What the schemas leave to the API server's own validation: names and label values.
    if not (_DNS_LABEL.match(manifest["metadata"]["name"]) and len(manifest["metadata"]["name"]) <= 63):
        raise jsonschema.ValidationError(f"name {manifest['metadata']['name']!r} is not a DNS-1035 label")
    for value in _label_values(manifest):
        if len(value) > 63 or not LABEL_VALUE.match(value):
            raise jsonschema.ValidationError(f"label value {value!r} is not valid")


def _label_values(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        yield from ((node.get("metadata") or {}).get("labels") or {}).values()
        for child in node.values():
            yield from _label_values(child)
    elif isinstance(node, list):
        for child in node:
            yield from _label_values(child)
