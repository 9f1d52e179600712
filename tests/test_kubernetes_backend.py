"""The Kubernetes backend without a cluster: manifests checked against the Kubernetes schemas
(``tests/kubernetes_schemas.py``), and the client's calls played against an API server on loopback that
answers with recorded responses (``tests/kubernetes_api.py``). The recorded server checks every body
POSTed to it against the same schemas, so what is checked is what the backend sends.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import jsonschema
import kubernetes_validate
import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.config import kube_config

from features.monitoring_config import KubernetesJobConfig
from monitors.retraining.jobs import JobError, JobSpec, TrainingRequest, job_id
from monitors.retraining.kubernetes_jobs import KubernetesBackend
from monitors.retraining.kubernetes_manifests import label_value, render
from tests import job_backend_checks as checks
from tests.kubernetes_api import Handler, RecordedApi, status_answer
from tests.kubernetes_schemas import KUBERNETES, LABEL_VALUE, validate

Kind = Literal["job", "trainjob", "pytorchjob"]


def make_spec(*, model: str = "fraud", incident: str = "a", gpus: int = 0) -> JobSpec:
    request = TrainingRequest(
        job_id=job_id(model=model, version="1", fingerprint=incident, window_start_us=0),
        model=model,
        version="1",
        alert_id=f"{model}/1/amount/ks@0",
        train_start_us=0,
        train_end_us=5_000_000,
    )
    return JobSpec(request=request, entrypoint=["python", "train.py"], gpus=gpus, env={"REPO": "/repo"})


# -- Manifests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gpus", [0, 2])
def test_job_is_a_valid_batch_v1_job(gpus: int) -> None:
    job = render(make_spec(model="Fraud Model (EU)", gpus=gpus), KubernetesJobConfig(backoff_limit=3))
    validate(job)
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["ttlSecondsAfterFinished"] == 86_400
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "REPO", "value": "/repo"}
    assert {"name": "SLUICE_TRAIN_END", "value": "1970-01-01T00:00:05+00:00"} in env


def test_trainjob_envelope_and_core_objects_are_valid() -> None:
    spec = make_spec(gpus=1)
    config = KubernetesJobConfig(
        kind="trainjob", namespace="ml", num_nodes=3, image="registry.example/train:1"
    )
    trainjob = render(spec, config)
    validate(trainjob)
    assert (trainjob["apiVersion"], trainjob["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert trainjob["spec"]["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    trainer = trainjob["spec"]["trainer"]
    assert (trainer["image"], trainer["numNodes"], trainer["command"]) == (
        "registry.example/train:1",
        3,
        spec.command(),
    )
    assert trainer["resourcesPerNode"]["limits"] == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}


@pytest.mark.parametrize("num_nodes", [1, 4])
def test_pytorchjob_envelope_and_pod_templates_are_valid(num_nodes: int) -> None:
    pytorchjob = render(make_spec(), KubernetesJobConfig(kind="pytorchjob", num_nodes=num_nodes))
    validate(pytorchjob)
    assert (pytorchjob["apiVersion"], pytorchjob["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = pytorchjob["spec"]["pytorchReplicaSpecs"]
    # One master, and the other nodes as workers.
    expected = {"Master": 1, "Worker": num_nodes - 1} if num_nodes > 1 else {"Master": 1}
    assert {role: replica["replicas"] for role, replica in replicas.items()} == expected
    for replica in replicas.values():
        assert replica["restartPolicy"] == "OnFailure"
        assert [c["name"] for c in replica["template"]["spec"]["containers"]] == ["pytorch"]
    assert pytorchjob["spec"]["runPolicy"] == {"backoffLimit": 2, "ttlSecondsAfterFinished": 86_400}


_CONTAINER = ("spec", "template", "spec", "containers", 0)
_MASTER = ("spec", "pytorchReplicaSpecs", "Master", "template", "spec", "containers", 0)


@pytest.mark.parametrize(
    ("kind", "path", "value", "error"),
    [
        ("job", ("spec", "backoffLimit"), "2", "'2' is not of type 'integer'"),
        ("job", (*_CONTAINER, "imagePullPolice"), "Always", "'imagePullPolice' was unexpected"),
        ("job", ("metadata", "labels", "sluice.io/model"), "Fraud Model", "label value 'Fraud Model'"),
        ("trainjob", ("spec", "trainer", "numNode"), 2, "'numNode' was unexpected"),
        ("trainjob", ("spec", "trainer", "env", 0, "val"), "x", "'val' was unexpected"),  # EnvVar
        ("trainjob", ("spec", "trainer", "resourcesPerNode", "limit"), {}, "'limit' was unexpected"),
        ("trainjob", ("metadata", "labels"), ["a"], "is not of type 'object'"),  # ObjectMeta
        ("pytorchjob", (*_MASTER, "command"), "python", "'python' is not of type 'array'"),  # PodTemplateSpec
        ("pytorchjob", ("spec", "pytorchReplicaSpecs", "Launcher"), {}, "'Launcher' was unexpected"),
        ("pytorchjob", ("metadata", "name"), "Not_A_Name", "is not a DNS-1035 label"),
    ],
)
def test_validation_rejects_a_bad_field(
    kind: Kind, path: tuple[str | int, ...], value: Any, error: str
) -> None:
    manifest = render(make_spec(), KubernetesJobConfig(kind=kind))
    validate(copy.deepcopy(manifest))  # the manifest as rendered passes: the failure below is the field's
    node: Any = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=re.escape(error)):
        validate(manifest)


@pytest.mark.parametrize("kind", ["job", "trainjob", "pytorchjob"])
def test_rendering_is_deterministic_and_named_by_the_incident(kind: Kind) -> None:
    config = KubernetesJobConfig(kind=kind)
    first, second = render(make_spec(), config), render(make_spec(), config)
    assert json.dumps(first, sort_keys=False) == json.dumps(second, sort_keys=False)
    assert first["metadata"]["name"] == make_spec().job_id
    assert first["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "sluice",
        "sluice.io/model": "fraud",
        "sluice.io/job-id": make_spec().job_id,
    }
    assert first["metadata"]["annotations"]["sluice.io/alert-id"] == "fraud/1/amount/ks@0"
    assert render(make_spec(incident="b"), config)["metadata"]["name"] != first["metadata"]["name"]


def _resources(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if manifest["kind"] == "TrainJob":
        return [manifest["spec"]["trainer"]["resourcesPerNode"]]
    replicas = manifest["spec"].get("pytorchReplicaSpecs") or {"Job": manifest["spec"]}
    return [
        c["resources"] for replica in replicas.values() for c in replica["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize("kind", ["job", "trainjob", "pytorchjob"])
@pytest.mark.parametrize("gpus", [0, 1, 8])
def test_gpu_limit_is_present_iff_the_spec_asks_for_gpus(kind: Kind, gpus: int) -> None:
    manifest = render(make_spec(gpus=gpus), KubernetesJobConfig(kind=kind, num_nodes=2))
    for resources in _resources(manifest):
        assert resources["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
        assert "nvidia.com/gpu" not in resources["requests"]


@pytest.mark.parametrize("model", ["fraud", "Fraud Model/v2 (EU)", "-_.x._-", "ü" * 5, "m" * 100, "///"])
def test_any_model_name_gives_a_valid_label_value(model: str) -> None:
    value = label_value(model)
    assert len(value) <= 63 and LABEL_VALUE.match(value)
    validate(render(make_spec(model=model), KubernetesJobConfig()))


# -- The client against recorded API responses --------------------------------------------------------
@pytest.fixture
def api() -> Iterator[RecordedApi]:
    recorded = RecordedApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (Handler,), {"api": recorded}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    recorded.host = f"http://127.0.0.1:{server.server_port}"
    yield recorded
    server.shutdown()
    server.server_close()
    assert recorded.rejected == []  # every body the backend sent passed the schema checks


def backend(api: RecordedApi, **config: Any) -> KubernetesBackend:
    return KubernetesBackend(
        config=KubernetesJobConfig(**config), api_client=ApiClient(Configuration(host=api.host))
    )


# A Job as GET answers it once created: the server's defaults in spec, and the controller's labels on
# the pod template. Its status is one of the recorded ones below.
RECORDED_JOB = json.loads("""{
 "kind": "Job", "apiVersion": "batch/v1",
 "metadata": {"name": "sluice-fraud-1-5d41402abc4b", "namespace": "default",
  "uid": "6f1c2a8e-3b1d-4c55-9f0e-2d7c8b9a1e40", "resourceVersion": "48377", "generation": 1,
  "creationTimestamp": "2025-06-02T10:00:00Z",
  "labels": {"app.kubernetes.io/managed-by": "sluice", "sluice.io/job-id": "sluice-fraud-1-5d41402abc4b",
   "sluice.io/model": "fraud"},
  "annotations": {"sluice.io/alert-id": "fraud/1/amount/ks@0", "sluice.io/model": "fraud",
   "sluice.io/model-version": "1"}},
 "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 2, "ttlSecondsAfterFinished": 86400,
  "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "6f1c2a8e-3b1d-4c55-9f0e-2d7c8b9a1e40"}},
  "manualSelector": false, "completionMode": "NonIndexed", "suspend": false,
  "podReplacementPolicy": "TerminatingOrFailed",
  "template": {"metadata": {"labels": {
    "batch.kubernetes.io/controller-uid": "6f1c2a8e-3b1d-4c55-9f0e-2d7c8b9a1e40",
    "batch.kubernetes.io/job-name": "sluice-fraud-1-5d41402abc4b",
    "controller-uid": "6f1c2a8e-3b1d-4c55-9f0e-2d7c8b9a1e40", "job-name": "sluice-fraud-1-5d41402abc4b",
    "app.kubernetes.io/managed-by": "sluice", "sluice.io/job-id": "sluice-fraud-1-5d41402abc4b",
    "sluice.io/model": "fraud"}},
   "spec": {"containers": [{"name": "trainer", "image": "sluice-trainer:latest",
     "command": ["python", "train.py", "--model", "fraud"],
     "env": [{"name": "SLUICE_MODEL", "value": "fraud"}],
     "resources": {"limits": {"cpu": "2", "memory": "8Gi"}, "requests": {"cpu": "2", "memory": "8Gi"}},
     "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
     "imagePullPolicy": "IfNotPresent"}],
    "restartPolicy": "Never", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
    "securityContext": {}, "schedulerName": "default-scheduler"}}}
}""")
_STARTED, _ENDED = "2025-06-02T10:00:00Z", "2025-06-02T10:04:12Z"


def _condition(kind: str, reason: str, message: str, status: str = "True", *times: str) -> dict[str, Any]:
    """A status condition; each kind has its own timestamps (``lastTransitionTime`` and the ``times``)."""
    stamps = dict.fromkeys((*times, "lastTransitionTime"), _ENDED)
    return {"type": kind, "status": status, **stamps, "reason": reason, "message": message}


def _job_condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    return _condition(kind, reason, message, "True", "lastProbeTime")


def _pytorchjob_condition(kind: str, status: str = "True") -> dict[str, Any]:
    return _condition(
        kind, f"PyTorchJob{kind}", f"PyTorchJob ml/x is {kind.lower()}.", status, "lastUpdateTime"
    )


_COMPLETIONS = ("CompletionsReached", "Reached expected number of succeeded pods")
_BACKOFF = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
RECORDED_JOB_STATUSES: dict[str, dict[str, Any]] = {
    "queued": {"ready": 0, "terminating": 0},
    "running": {
        "startTime": _STARTED,
        "active": 1,
        "ready": 1,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    },
    "succeeded": {
        "conditions": [
            _job_condition("SuccessCriteriaMet", *_COMPLETIONS),
            _job_condition("Complete", *_COMPLETIONS),
        ],
        "startTime": _STARTED,
        "completionTime": _ENDED,
        "succeeded": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    },
    "failed": {
        "conditions": [_job_condition("FailureTarget", *_BACKOFF), _job_condition("Failed", *_BACKOFF)],
        "startTime": _STARTED,
        "failed": 3,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    },
}


def _children(*, active: int = 0, succeeded: int = 0) -> list[dict[str, Any]]:
    """A TrainJob's ``jobsStatus``: its JobSet's one replicated job, ``node``."""
    return [
        {
            "name": "node",
            "ready": active,
            "succeeded": succeeded,
            "failed": 0,
            "active": active,
            "suspended": 0,
        }
    ]


# TrainJob has no Running condition: while it runs, only its child Jobs say so.
RECORDED_TRAINJOB_STATUSES: dict[str, dict[str, Any]] = {
    "queued": {"conditions": [_condition("Suspended", "Suspended", "TrainJob is suspended")]},
    "running": {"jobsStatus": _children(active=1)},
    "succeeded": {
        "conditions": [_condition("Complete", "JobsCompleted", "TrainJob is completed")],
        "jobsStatus": _children(succeeded=1),
    },
    "failed": {
        "conditions": [_condition("Failed", "JobsFailed", "TrainJob is failed")],
        "jobsStatus": _children(),
    },
}
RECORDED_PYTORCHJOB_STATUSES: dict[str, dict[str, Any]] = {
    "queued": {"conditions": [_pytorchjob_condition("Created")], "replicaStatuses": {}},
    "running": {
        "conditions": [_pytorchjob_condition("Created"), _pytorchjob_condition("Running")],
        "replicaStatuses": {"Master": {"active": 1}},
        "startTime": _STARTED,
    },
    "succeeded": {
        "conditions": [
            _pytorchjob_condition("Created"),
            _pytorchjob_condition("Running", status="False"),
            _pytorchjob_condition("Succeeded"),
        ],
        "replicaStatuses": {"Master": {"succeeded": 1}},
        "startTime": _STARTED,
        "completionTime": _ENDED,
    },
}


def test_recorded_job_is_itself_valid() -> None:
    # The recorded bodies are only worth playing if a real server could have sent them.
    for status in RECORDED_JOB_STATUSES.values():
        kubernetes_validate.validate({**RECORDED_JOB, "status": status}, KUBERNETES, strict=True)


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("job", "/apis/batch/v1/namespaces/ml/jobs"),
        ("trainjob", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"),
        ("pytorchjob", "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"),
    ],
)
def test_submit_creates_once_then_is_already_submitted(api: RecordedApi, kind: Kind, path: str) -> None:
    jobs = backend(api, kind=kind, namespace="ml", num_nodes=2)
    spec = make_spec(gpus=1)
    assert jobs.submit(spec).created
    # The same incident again (a duplicate alert, or a restart): the server answers 409 AlreadyExists.
    assert not jobs.submit(spec).created
    assert [(r.method, r.path) for r in api.requests] == [("POST", path), ("POST", path)]
    # What was sent is exactly what was rendered: the client drops and renames nothing.
    assert api.requests[0].body == render(spec, KubernetesJobConfig(kind=kind, namespace="ml", num_nodes=2))
    assert jobs.status(spec.job_id) == "queued"  # created, and no controller has written a status yet


@pytest.mark.parametrize("state", sorted(RECORDED_JOB_STATUSES))
def test_status_of_a_recorded_job(api: RecordedApi, state: str) -> None:
    name = RECORDED_JOB["metadata"]["name"]
    api.objects[f"/apis/batch/v1/namespaces/default/jobs/{name}"] = {
        **RECORDED_JOB,
        "status": RECORDED_JOB_STATUSES[state],
    }
    assert backend(api).status(name) == state
    assert api.requests[-1][:2] == ("GET", f"/apis/batch/v1/namespaces/default/jobs/{name}")


@pytest.mark.parametrize(
    ("kind", "plural_path", "recorded", "state"),
    [
        (
            "trainjob",
            "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs",
            RECORDED_TRAINJOB_STATUSES,
            s,
        )
        for s in sorted(RECORDED_TRAINJOB_STATUSES)
    ]
    + [
        ("pytorchjob", "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs", RECORDED_PYTORCHJOB_STATUSES, s)
        for s in sorted(RECORDED_PYTORCHJOB_STATUSES)
    ],
)
def test_status_of_a_recorded_custom_object(
    api: RecordedApi, kind: Kind, plural_path: str, recorded: dict[str, Any], state: str
) -> None:
    jobs = backend(api, kind=kind, namespace="ml")
    spec = make_spec()
    assert jobs.submit(spec).created
    api.statuses[spec.job_id] = recorded[state]
    assert jobs.status(spec.job_id) == state
    assert api.requests[-1][:2] == ("GET", f"{plural_path}/{spec.job_id}")


@pytest.mark.parametrize("kind", ["job", "trainjob", "pytorchjob"])
def test_a_missing_job_is_a_job_error(api: RecordedApi, kind: Kind) -> None:
    jobs = backend(api, kind=kind)
    with pytest.raises(JobError, match=r"404 NotFound: .*\"sluice-nope\" not found"):
        jobs.status("sluice-nope")
    with pytest.raises(JobError, match="404 NotFound"):
        jobs.cancel("sluice-nope")


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("job", "/apis/batch/v1/namespaces/default/jobs"),
        ("trainjob", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/default/trainjobs"),
        ("pytorchjob", "/apis/kubeflow.org/v1/namespaces/default/pytorchjobs"),
    ],
)
def test_cancel_deletes_in_the_background(api: RecordedApi, kind: Kind, path: str) -> None:
    jobs = backend(api, kind=kind)
    spec = make_spec()
    jobs.submit(spec)
    jobs.cancel(spec.job_id)
    delete = api.requests[-1]
    assert (delete.method, delete.path) == ("DELETE", f"{path}/{spec.job_id}")
    assert delete.query == {"propagationPolicy": "Background"}
    assert f"{path}/{spec.job_id}" not in api.objects


@pytest.mark.parametrize(
    ("kind", "label", "container", "pods"),
    [
        ("job", "job-name", "trainer", ["{job}-x7k2p"]),
        (
            "trainjob",
            "jobset.sigs.k8s.io/jobset-name",
            "node",
            ["{job}-node-0-1-h2m4q", "{job}-node-0-0-q8z5w"],
        ),
        ("pytorchjob", "training.kubeflow.org/job-name", "pytorch", ["{job}-worker-0", "{job}-master-0"]),
    ],
)
def test_logs_are_the_first_pods(
    api: RecordedApi, kind: Kind, label: str, container: str, pods: list[str]
) -> None:
    jobs = backend(api, kind=kind)
    spec = make_spec()
    assert jobs.logs(spec.job_id) == ""  # no pod yet
    for pod in pods:
        name = pod.format(job=spec.job_id)
        api.pods.append({"metadata": {"name": name, "namespace": "default", "labels": {label: spec.job_id}},
                         "spec": {"containers": [{"name": container, "image": "sluice-trainer:latest"}]},
                         "status": {"phase": "Running"}})  # fmt: skip
        api.pod_logs[name] = f"training fraud from {name}\n"
    first = min(pod.format(job=spec.job_id) for pod in pods)
    assert jobs.logs(spec.job_id) == f"training fraud from {first}\n"
    listing, log = api.requests[-2:]
    assert listing.query["labelSelector"] == f"{label}={spec.job_id}"
    assert (log.path, log.query["container"]) == (f"/api/v1/namespaces/default/pods/{first}/log", container)


_FORBIDDEN = (
    'trainjobs.trainer.kubeflow.org is forbidden: User "system:serviceaccount:ml:sluice" cannot create '
    'resource "trainjobs" in API group "trainer.kubeflow.org" in the namespace "ml"'
)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        # No Kubeflow Trainer in the cluster: the API server does not know the resource.
        (
            status_answer(404, "NotFound", "the server could not find the requested resource"),
            r"create TrainJob .* 404 NotFound: the server could not find .*; is the TrainJob CRD installed\?",
        ),
        (
            status_answer(403, "Forbidden", _FORBIDDEN),
            r"403 Forbidden: .* cannot create resource \"trainjobs\" .*; the service account needs RBAC",
        ),
        (
            status_answer(500, "InternalError", "Internal error occurred: failed calling webhook"),
            r"500 InternalError: Internal error occurred: failed calling webhook$",
        ),
    ],
)
def test_other_api_errors_name_the_status_and_reason(
    api: RecordedApi, answer: dict[str, Any], error: str
) -> None:
    api.outage = answer
    with pytest.raises(JobError, match=error):
        backend(api, kind="trainjob", namespace="ml").submit(make_spec())


def test_an_unreachable_api_is_a_job_error() -> None:
    client = ApiClient(Configuration(host="http://127.0.0.1:9"))
    client.configuration.retries = 0
    with pytest.raises(JobError, match="did not answer"):
        KubernetesBackend(config=KubernetesJobConfig(), api_client=client).status("sluice-x")


def test_without_an_api_client_kube_config_is_loaded_on_first_use(
    api: RecordedApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: no service account
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "recorded", "cluster": {"server": api.host}}],
                "users": [{"name": "sluice", "user": {"token": "recorded"}}],
                "contexts": [{"name": "recorded", "context": {"cluster": "recorded", "user": "sluice"}}],
                "current-context": "recorded",
            }
        )
    )
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    jobs = KubernetesBackend(config=KubernetesJobConfig())
    assert api.requests == []  # nothing is loaded or sent before the first call
    assert jobs.submit(make_spec()).created


def test_no_configuration_is_a_job_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "missing"))
    with pytest.raises(
        JobError, match=r"no Kubernetes configuration: not running in a pod .* ~/.kube/config"
    ):
        KubernetesBackend(config=KubernetesJobConfig()).status("sluice-x")


def test_a_missing_client_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # what an uninstalled package looks like to import
    jobs = KubernetesBackend(config=KubernetesJobConfig())  # constructing needs no client
    with pytest.raises(JobError, match="pip install kubernetes"):
        jobs.submit(make_spec())


@pytest.mark.parametrize(
    "check", [checks.check_duplicate_is_already_submitted, checks.check_failure_is_failed]
)
def test_conformance_against_recorded_answers(api: RecordedApi, check: Any) -> None:
    # The conformance checks poll until the job finishes: record how each of their jobs ended.
    for incident, state in [("duplicate", "succeeded"), ("fails", "failed")]:
        api.statuses[checks.spec(incident=incident).job_id] = RECORDED_JOB_STATUSES[state]
    check(backend(api))
