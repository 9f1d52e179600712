"""The Kubernetes backend: each job is an object in the cluster (a Job, a TrainJob, or a PyTorchJob).

For teams that train on a Kubernetes cluster: the cluster schedules the job on nodes with the GPUs it
asks for, keeps its status and its pods' logs, and outlives the process that submitted it. The object's
name is the job id, so the API server itself refuses a second job of the same incident
(``409 AlreadyExists``), and that refusal is "already submitted". What is sent is rendered by
``monitors.retraining.kubernetes_manifests``; this module only talks to the API. The ``kubernetes``
client is an optional dependency: it is imported on first use, and a missing install says how to add
it. Without an ``api_client``, the configuration is found like ``kubectl`` run in a pod would: the
pod's service account first, then ``~/.kube/config`` (or ``$KUBECONFIG``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitors.retraining.jobs import JobError, JobNotFound, JobSpec, JobState, Submission
from monitors.retraining.kubernetes_manifests import KINDS, render

if TYPE_CHECKING:
    from features.monitoring_config import KubernetesJobConfig

__all__ = ["KubernetesBackend"]

# Condition types of the Kubeflow kinds: PyTorchJob's Created/Running/Restarting/Succeeded/Failed/
# Suspended, TrainJob's Complete/Failed/Suspended. Any other type leaves the job queued.
_CONDITION_STATES: dict[str, JobState] = {
    "Succeeded": "succeeded",
    "Complete": "succeeded",
    "Failed": "failed",
    "Running": "running",
    "Restarting": "running",
}
_FINAL: tuple[JobState, ...] = ("failed", "succeeded")


@dataclass(frozen=True)
class _Client:
    api_client: Any
    batch: Any
    custom: Any
    core: Any
    errors: tuple[type[Exception], ...]
    """What a call can raise: the API's answers (``ApiException``) and failures to reach it."""


class KubernetesBackend:
    """Runs jobs as Kubernetes objects, through the Kubernetes Python client."""

    name = "kubernetes"

    def __init__(self, *, config: KubernetesJobConfig, api_client: Any | None = None) -> None:
        """``config`` says what to render and where; ``api_client`` is a ``kubernetes.client.ApiClient``
        (by default, one configured in-cluster or from ``~/.kube/config`` on first use)."""
        self.config = config
        self.kind = KINDS[config.kind]
        self._api_client = api_client
        self._client: _Client | None = None

    def submit(self, spec: JobSpec) -> Submission:
        client = self._connect()
        manifest = render(spec, self.config)
        try:
            if self.config.kind == "job":
                client.batch.create_namespaced_job(self.config.namespace, manifest)
            else:
                client.custom.create_namespaced_custom_object(*self._resource(), manifest)
        except client.errors as error:
            if getattr(error, "status", None) == 409:  # AlreadyExists: a duplicate alert or a restart
                return Submission(spec.job_id, created=False)
            raise self._error("create", spec.job_id, error) from error
        return Submission(spec.job_id, created=True)

    def status(self, job_id: str) -> JobState:
        client = self._connect()
        try:
            if self.config.kind == "job":
                job = client.batch.read_namespaced_job(job_id, self.config.namespace)
                found: dict[str, Any] = client.api_client.sanitize_for_serialization(job)
            else:
                found = client.custom.get_namespaced_custom_object(*self._resource(), job_id)
        except client.errors as error:
            raise self._error("read", job_id, error) from error
        if (found.get("metadata") or {}).get("deletionTimestamp"):
            return "cancelled"  # deleted, and held only by a finalizer until its pods are gone
        status = found.get("status") or {}
        if self.config.kind == "job":
            # Kubernetes' own default when the manifest left it out.
            return _job_state(status, (found.get("spec") or {}).get("backoffLimit", 6))
        return _custom_state(status)

    def logs(self, job_id: str) -> str:
        """The log of the job's first pod (by name: a PyTorchJob's master); empty before a pod runs."""
        client = self._connect()
        container = self.kind.container
        try:
            pods = client.core.list_namespaced_pod(
                self.config.namespace, label_selector=f"{self.kind.pod_label}={job_id}"
            ).items
            names = sorted(
                pod.metadata.name
                for pod in pods
                if pod.spec is not None and any(c.name == container for c in pod.spec.containers)
            )
            if not names:
                return ""
            return str(
                client.core.read_namespaced_pod_log(names[0], self.config.namespace, container=container)
            )
        except client.errors as error:
            if getattr(error, "status", None) == 400:  # the container is waiting to start: no log yet
                return ""
            raise self._error("read the logs of", job_id, error) from error

    def cancel(self, job_id: str) -> None:
        client = self._connect()
        # Background: the object goes now, and the garbage collector removes its pods.
        try:
            if self.config.kind == "job":
                client.batch.delete_namespaced_job(
                    job_id, self.config.namespace, propagation_policy="Background"
                )
            else:
                client.custom.delete_namespaced_custom_object(
                    *self._resource(), job_id, propagation_policy="Background"
                )
        except client.errors as error:
            raise self._error("delete", job_id, error) from error

    def _resource(self) -> tuple[str, str, str, str]:
        """``group, version, namespace, plural``: the first arguments of every custom-object call."""
        return self.kind.group, self.kind.version, self.config.namespace, self.kind.plural

    def _connect(self) -> _Client:
        if self._client is None:
            kubernetes = _import_kubernetes()
            import urllib3  # a dependency of the kubernetes client

            api_client = self._api_client if self._api_client is not None else _load_api_client(kubernetes)
            self._client = _Client(
                api_client=api_client,
                batch=kubernetes.client.BatchV1Api(api_client),
                custom=kubernetes.client.CustomObjectsApi(api_client),
                core=kubernetes.client.CoreV1Api(api_client),
                errors=(kubernetes.client.ApiException, urllib3.exceptions.HTTPError),
            )
        return self._client

    def _error(self, action: str, job_id: str, error: Exception) -> JobError:
        where = f"{self.kind.kind} {job_id!r} in namespace {self.config.namespace!r}"
        status = getattr(error, "status", None)
        if status is None:
            host = self._connect().api_client.configuration.host
            return JobError(
                f"could not {action} {where}: the Kubernetes API at {host} did not answer ({error})"
            )
        reason, message = _status_of(error)
        hint = ""
        if status == 404 and action == "create":
            crd = f"{self.kind.plural}.{self.kind.group}"
            hint = f"; is the {self.kind.kind} CRD installed? (kubectl get crd {crd})"
        elif status == 403:
            hint = f"; the service account needs RBAC permission on {self.kind.plural} and pods/log"
        kind = JobNotFound if status == 404 and action != "create" else JobError
        return kind(f"could not {action} {where}: Kubernetes answered {status} {reason}: {message}{hint}")


def _job_state(status: dict[str, Any], backoff_limit: int) -> JobState:
    conditions = _true_conditions(status)
    if status.get("succeeded") or "Complete" in conditions:
        return "succeeded"
    if "Failed" in conditions or (status.get("failed") or 0) > backoff_limit:
        return "failed"
    if status.get("active") and "Suspended" not in conditions:
        return "running"
    return "queued"


def _custom_state(status: dict[str, Any]) -> JobState:
    states = [_CONDITION_STATES.get(kind, "queued") for kind in _true_conditions(status)]
    # A finished job stays finished, whatever condition was added after.
    for final in _FINAL:
        if final in states:
            return final
    # A TrainJob has no Running condition; its child Jobs say whether pods are active.
    if any(child.get("active") for child in status.get("jobsStatus") or []):
        return "running"
    return states[-1] if states else "queued"


def _true_conditions(status: dict[str, Any]) -> list[str]:
    return [str(c.get("type")) for c in status.get("conditions") or [] if c.get("status") == "True"]


def _status_of(error: Exception) -> tuple[str, str]:
    """The ``reason`` and ``message`` of the API's ``Status`` answer, or the HTTP reason."""
    try:
        body = json.loads(getattr(error, "body", None) or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return str(body.get("reason", "")), str(body.get("message", ""))
    return str(getattr(error, "reason", "")), str(getattr(error, "body", "") or "")


def _import_kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError as error:
        raise JobError(
            f"the kubernetes job backend needs the Kubernetes client: pip install kubernetes ({error})"
        ) from error
    return kubernetes


def _load_api_client(kubernetes: Any) -> Any:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        except (kubernetes.config.ConfigException, OSError) as error:
            raise JobError(
                "no Kubernetes configuration: not running in a pod with a service account, and "
                f"~/.kube/config (or $KUBECONFIG) could not be loaded: {error}"
            ) from error
    return kubernetes.client.ApiClient(configuration)
