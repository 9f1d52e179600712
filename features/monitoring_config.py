"""Configuration of what happens after drift: alert rules and sinks, and retraining jobs.

These are the ``alerts:`` and ``retraining:`` sections of ``sluice.yaml``. Webhook URLs and their
secrets come from here (use ``${ENV_VAR}`` for secrets), never from event data.

>>> AlertsConfig.model_validate({"webhooks": [{"kind": "slack", "url": "https://hooks.example/T0"}]}).webhooks[0].kind
'slack'
>>> RetrainingConfig().promotion.metric
'log_loss'
>>> RetrainingConfig().backend
'local'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AlertsConfig",
    "KfpJobConfig",
    "KubernetesJobConfig",
    "MetaflowJobConfig",
    "PromotionConfig",
    "RayJobConfig",
    "RetrainingConfig",
    "WebhookConfig",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookConfig(_Model):
    """One HTTP receiver of alerts."""

    kind: Literal["slack", "alertmanager", "cloudevents"]
    """The payload: a Slack incoming-webhook message, an Alertmanager webhook (version 4), or a CloudEvent."""

    url: str
    """Where to POST. Slack's URL is itself a secret: write ``${SLACK_WEBHOOK_URL}``."""

    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    """Extra headers, for example ``Authorization: Bearer ${TOKEN}``."""

    timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to wait for the receiver before the attempt counts as failed."""

    name: str | None = None
    """A name for this receiver in the delivery log; defaults to the kind and host."""


class AlertsConfig(_Model):
    """When a drifting feature becomes an alert, and where alerts go."""

    store_url: str | None = None
    """SQLAlchemy URL of the alert and job store; defaults to SQLite at ``<state_dir>/sluice.db``.
    ``postgresql://...`` works as well."""

    topic: str = "sluice.alerts"
    """Kafka topic that receives every alert change as a CloudEvent."""

    consecutive_windows: int = Field(default=2, ge=1)
    """Drifting windows in a row before an alert fires."""

    cooldown_seconds: float = Field(default=900.0, ge=0)
    """After an alert resolves, the same fingerprint cannot fire again for this long (in event time)."""

    critical_share: float = Field(default=0.5, gt=0, le=1)
    """An alert is critical when at least this share of the window's features drift, else a warning."""

    report_base_url: str | None = None
    """Where the windows' HTML reports are served; the alert links ``<base>/<model>/<version>/<file>``.
    Defaults to a ``file://`` link to ``<state_dir>/reports``."""

    webhooks: list[WebhookConfig] = Field(default_factory=list)
    """HTTP receivers; each gets every firing and resolved alert."""

    retry_initial_seconds: float = Field(default=1.0, gt=0)
    """Wait before the first retry of a failed delivery; it doubles with each failure."""

    retry_max_seconds: float = Field(default=300.0, gt=0)
    """The longest wait between two attempts. A delivery is retried until it succeeds."""


class RayJobConfig(_Model):
    """Ray Jobs API settings."""

    address: str = "http://127.0.0.1:8265"
    """The Ray dashboard's address, where the Jobs API listens."""

    runtime_env: dict[str, Any] = Field(default_factory=dict)
    """Ray ``runtime_env`` for the job (``working_dir``, ``pip``, ``env_vars``...)."""


class KubernetesJobConfig(_Model):
    """How retraining jobs are rendered for a Kubernetes cluster."""

    kind: Literal["job", "trainjob", "pytorchjob"] = "job"
    """A ``batch/v1`` Job, a Kubeflow Trainer ``TrainJob``, or a Kubeflow ``PyTorchJob``."""

    namespace: str = "default"
    image: str = "sluice-trainer:latest"
    """The container image that holds the training entrypoint and its dependencies."""

    num_nodes: int = Field(default=1, ge=1)
    """Nodes (TrainJob) or workers (PyTorchJob) to train on."""

    backoff_limit: int = Field(default=2, ge=0)
    """Retries of a failed Job's pod."""

    ttl_seconds_after_finished: int = Field(default=86_400, ge=0)
    """How long a finished Job is kept before Kubernetes deletes it."""

    runtime: str = "torch-distributed"
    """The Kubeflow Trainer ClusterTrainingRuntime a TrainJob refers to."""

    cpu: str = "2"
    memory: str = "8Gi"


class MetaflowJobConfig(_Model):
    """How the ``metaflow`` backend runs jobs: as runs of sluice's retraining flow, through Metaflow's
    Runner API, from Metaflow's own virtual environment."""

    python: str = ""
    """The Metaflow environment's Python; ``<state_dir>/tools/metaflow/bin/python`` (``make
    pipeline-tools``) when empty."""

    datastore_root: str = ""
    """Metaflow's local datastore and metadata (``METAFLOW_DATASTORE_SYSROOT_LOCAL``);
    ``<state_dir>/metaflow`` when empty."""

    decorators: list[str] = Field(default_factory=list)
    """Added to every step with ``--with``: ``kubernetes`` or ``batch`` sends the training step to a
    cluster, with the job's GPUs (``@resources``); Metaflow's own configuration says which cluster."""


class KfpJobConfig(_Model):
    """How the ``kfp`` backend runs jobs: each a run of a one-step Kubeflow Pipelines pipeline (the
    training command in ``image``), submitted with the ``kfp`` client from its own virtual environment.
    The bearer token, when the API needs one (multi-user Kubeflow), comes from ``$KFP_TOKEN``.

    >>> KfpJobConfig(memory="8GB")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for KfpJobConfig
    memory
      String should match pattern '^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$' ...
    """

    python: str = ""
    """The kfp environment's Python; ``<state_dir>/tools/kfp/bin/python`` (``make pipeline-tools``)
    when empty."""

    host: str = "http://127.0.0.1:8080"
    """The Kubeflow Pipelines API (``kubectl port-forward svc/ml-pipeline-ui 8080:80`` serves it here)."""

    namespace: str = ""
    """The profile namespace of a multi-user Kubeflow; empty for a standalone install."""

    experiment: str = "sluice-retraining"
    """The KFP experiment that holds the runs (made on the first submission)."""

    image: str = "sluice-trainer:latest"
    """The container image that holds the training entrypoint and its dependencies."""

    cpu: str = Field(default="2", pattern=r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
    """The step's CPU limit, as KFP takes it: ``2``, ``0.5`` or ``500m``."""

    memory: str = Field(default="8Gi", pattern=r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")
    """The step's memory limit: ``8Gi``, ``512M``."""

    service_account: str = ""
    """The Kubernetes service account the run's pods use; KFP's default when empty."""

    ssl_ca_cert: str = ""
    """A CA bundle to check the API's TLS certificate with."""

    timeout_seconds: float = Field(default=60.0, gt=0)
    """How long one call of the client may take."""


class PromotionConfig(_Model):
    """The promotion gate, run on the version a retraining job registered once the job has succeeded
    (``monitors.retraining.gate``): it becomes the ``champion`` only when its held-out metric beats the
    champion's on the same slice by ``margin``."""

    enabled: bool = True
    """Off: versions stay challengers until ``sluice models promote``."""

    metric: str = "log_loss"
    """Compared as the job logged it: ``holdout_<metric>`` and ``champion_holdout_<metric>``."""

    margin: float = Field(default=0.0, ge=0)
    """By how much (in the metric's units) the challenger must beat the champion."""

    higher_is_better: bool = False
    """True for metrics such as ROC AUC or accuracy."""


class RetrainingConfig(_Model):
    """Which alerts start a retraining job, and where it runs."""

    enabled: bool = False
    """Off by default: alerts are sent either way; jobs start only when this is on."""

    dry_run: bool = False
    """Decide and record the jobs that would run, but submit nothing."""

    entrypoint: str = ""
    """The training command, for example ``python train.py``; the request's arguments are appended."""

    backend: Literal["local", "ray", "kubernetes", "metaflow", "kfp"] = "local"
    """Where jobs run: a subprocess on this machine, a Ray cluster, Kubernetes, a Metaflow run, or a
    Kubeflow Pipelines run."""

    severities: tuple[Literal["warning", "critical"], ...] = ("critical",)
    """Alerts of these severities trigger a job."""

    metrics: list[str] = Field(default_factory=list)
    """Only alerts on these metrics trigger a job; empty for any metric."""

    cooldown_seconds: float = Field(default=3600.0, ge=0)
    """At most one job per model in this long (in event time of the alerts' windows)."""

    max_running: int = Field(default=1, ge=1)
    """Jobs that may be queued or running at once, over all models."""

    training_window_seconds: float = Field(default=7 * 86_400.0, gt=0)
    """The job trains on the labelled predictions of this long before the alert's window ended."""

    gpus: int = Field(default=0, ge=0)
    """GPUs each job asks for."""

    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment for the job."""

    promotion: PromotionConfig = PromotionConfig()
    """The promotion gate that runs when a job succeeds."""

    ray: RayJobConfig = RayJobConfig()
    kubernetes: KubernetesJobConfig = KubernetesJobConfig()
    metaflow: MetaflowJobConfig = MetaflowJobConfig()
    kfp: KfpJobConfig = KfpJobConfig()

    @model_validator(mode="after")
    def _needs_an_entrypoint(self) -> RetrainingConfig:
        if self.enabled and not self.dry_run and not self.entrypoint.strip():
            raise ValueError("retraining is enabled but has no entrypoint: set retraining.entrypoint")
        return self
