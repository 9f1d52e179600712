"""The Kubernetes object of a retraining job, rendered as a plain dict: a Job, a TrainJob, or a PyTorchJob.

Rendering is kept apart from submitting so that what we would send can be checked offline against the
cluster's schemas, with no client and no cluster. It is deterministic: the object's name is the job id,
so a duplicate alert renders the same object and the API server's ``AlreadyExists`` is "already
submitted". Model names are free text, so their label value is cleaned; the exact values ride in
annotations.

>>> from features.monitoring_config import KubernetesJobConfig
>>> from monitors.retraining.jobs import JobSpec, TrainingRequest
>>> request = TrainingRequest(
...     job_id="sluice-fraud-1-0123456789ab", model="Fraud Model", version="1",
...     alert_id="fraud/1/amount/ks@5", train_start_us=0, train_end_us=5_000_000)
>>> job = render(JobSpec(request=request, entrypoint=["python", "train.py"], gpus=1), KubernetesJobConfig())
>>> job["apiVersion"], job["kind"], job["metadata"]["name"]
('batch/v1', 'Job', 'sluice-fraud-1-0123456789ab')
>>> job["metadata"]["labels"]["sluice.io/model"]
'Fraud-Model'
>>> job["spec"]["backoffLimit"], job["spec"]["template"]["spec"]["restartPolicy"]
(2, 'Never')
>>> container = job["spec"]["template"]["spec"]["containers"][0]
>>> container["command"][:4]
['python', 'train.py', '--model', 'Fraud Model']
>>> container["resources"]["limits"]
{'cpu': '2', 'memory': '8Gi', 'nvidia.com/gpu': '1'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from features.monitoring_config import KubernetesJobConfig
    from monitors.retraining.jobs import JobSpec

__all__ = ["KINDS", "ResourceKind", "label_value", "render"]

MANAGED_BY = "sluice"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class ResourceKind:
    """Where a kind lives in the API, and how to find the pods that run it."""

    api_version: str
    kind: str
    plural: str
    pod_label: str
    """The label the controller puts on the job's pods, whose value is the job's name."""
    container: str
    """The container that runs the entrypoint."""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


KINDS: dict[str, ResourceKind] = {
    "job": ResourceKind("batch/v1", "Job", "jobs", "job-name", "trainer"),
    # The TrainJob controller runs it as a JobSet of the same name; "node" is the trainer's container
    # in the Trainer's ClusterTrainingRuntimes.
    "trainjob": ResourceKind(
        "trainer.kubeflow.org/v1alpha1", "TrainJob", "trainjobs", "jobset.sigs.k8s.io/jobset-name", "node"
    ),
    # The training operator finds the entrypoint by this container name.
    "pytorchjob": ResourceKind(
        "kubeflow.org/v1", "PyTorchJob", "pytorchjobs", "training.kubeflow.org/job-name", "pytorch"
    ),
}


def render(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, Any]:
    """The object to create for ``spec``, of the kind ``config.kind``."""
    kind = KINDS[config.kind]
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {
            "name": spec.job_id,
            "namespace": config.namespace,
            "labels": _labels(spec),
            "annotations": {
                "sluice.io/alert-id": spec.request.alert_id,
                "sluice.io/model": spec.request.model,
                "sluice.io/model-version": spec.request.version,
            },
        },
        "spec": _SPECS[config.kind](spec, config),
    }


def label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends.

    >>> label_value("Fraud Model/v2 (EU)")
    'Fraud-Model-v2-EU'
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def _labels(spec: JobSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "sluice.io/model": label_value(spec.request.model),
        "sluice.io/job-id": spec.job_id,
    }


def _env(spec: JobSpec) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in spec.environment().items()]


def _resources(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, dict[str, str]]:
    requests = {"cpu": config.cpu, "memory": config.memory}
    # GPUs are an extended resource: a limit alone is the request too.
    limits = {**requests, GPU_RESOURCE: str(spec.gpus)} if spec.gpus > 0 else dict(requests)
    return {"limits": limits, "requests": requests}


def _pod_template(spec: JobSpec, config: KubernetesJobConfig, **pod_spec: Any) -> dict[str, Any]:
    container = {
        "name": KINDS[config.kind].container,
        "image": config.image,
        "command": spec.command(),
        "env": _env(spec),
        "resources": _resources(spec, config),
    }
    return {"metadata": {"labels": _labels(spec)}, "spec": {**pod_spec, "containers": [container]}}


def _job_spec(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, Any]:
    return {
        "backoffLimit": config.backoff_limit,
        "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
        "template": _pod_template(spec, config, restartPolicy="Never"),
    }


def _trainjob_spec(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, Any]:
    return {
        "runtimeRef": {
            "name": config.runtime,
            "apiGroup": "trainer.kubeflow.org",
            "kind": "ClusterTrainingRuntime",
        },
        "trainer": {
            "image": config.image,
            "command": spec.command(),
            "env": _env(spec),
            "numNodes": config.num_nodes,
            "resourcesPerNode": _resources(spec, config),
        },
    }


def _pytorchjob_spec(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, Any]:
    # The operator sets the pods' own restart policy from each replica's.
    replicas = {
        "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": _pod_template(spec, config)}
    }
    if config.num_nodes > 1:
        replicas["Worker"] = {
            "replicas": config.num_nodes - 1,
            "restartPolicy": "OnFailure",
            "template": _pod_template(spec, config),
        }
    return {
        "runPolicy": {
            "backoffLimit": config.backoff_limit,
            "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
        },
        "pytorchReplicaSpecs": replicas,
    }


_SPECS = {"job": _job_spec, "trainjob": _trainjob_spec, "pytorchjob": _pytorchjob_spec}
