"""MLflow as the model registry: versions, their training runs and files, and the ``champion`` and
``challenger`` aliases, through MLflow's own client (``mlflow-skinny``).

The tracking URI picks the store, and nothing else changes: ``sqlite:///<state>/mlflow/mlflow.db`` (the
default, embedded: no server) or the URL of an ``mlflow server`` (the local stack runs one on the same
database, for its UI; a team's own server the same way). Credentials for a server come from the
environment, as every MLflow client reads them: ``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME``
and ``MLFLOW_TRACKING_PASSWORD``; ``MLFLOW_TRACKING_INSECURE_TLS`` and ``MLFLOW_TRACKING_SERVER_CERT_PATH``
for TLS.

A retraining job logs a run (its parameters, metrics, training window and the alert it answers), uploads
the model's files as the run's artifacts, registers them as a new version of the registered model, and
points the ``challenger`` alias at it. The promotion gate (``monitors.retraining.gate``) moves
``champion``. Inference code reads ``models:/<name>@champion``, and so does the monitor for prediction
events that name a model that way (``parse_reference``, ``MlflowRegistry.resolve``).

>>> parse_reference("models:/fraud@champion")
('fraud', 'champion', None)
>>> parse_reference("models:/fraud/3")
('fraud', None, '3')
>>> parse_reference("fraud") is None
True
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from features.config import SluiceConfig

__all__ = [
    "MlflowError",
    "MlflowRegistry",
    "References",
    "RegisteredVersion",
    "open_registry",
    "parse_reference",
]

T = TypeVar("T")
# MLflow's client retries a request to a server for minutes by default; a monitor or a job waiting that
# long on a registry that is away helps nobody. These bounds hold unless the environment sets them, and
# so does the quiet: no progress bars on a server's log for each download.
for _name, _value in (
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
    ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
    ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
    ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
):
    os.environ.setdefault(_name, _value)
_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


class MlflowError(RuntimeError):
    """The tracking store refused a request or cannot be reached; the message says which and why."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class RegisteredVersion:
    """One version of a registered model, as MLflow keeps it."""

    model: str
    version: str
    source: str
    """Where its files are (a URI)."""
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created_ms: int = 0


def parse_reference(reference: str) -> tuple[str, str | None, str | None] | None:
    """``(name, alias, version)`` of a ``models:/name@alias`` or ``models:/name/<version>`` reference;
    None for anything else (a plain model name)."""
    found = _REFERENCE.match(reference)
    if found is None:
        return None
    return found["name"], found["alias"], found["version"]


class MlflowRegistry:
    """The registry and the runs of one MLflow tracking store.

    ``artifact_root`` is where an embedded (SQLite) store keeps the files of the experiments it creates
    (``<artifact_root>/<experiment>``); a server decides that itself.
    """

    def __init__(self, *, tracking_uri: str, artifact_root: Path | None = None) -> None:
        if not tracking_uri.startswith(("http://", "https://", "sqlite:///", "postgresql", "mysql")):
            raise MlflowError(
                f"the MLflow tracking URI {tracking_uri!r} is neither the http(s) URL of a tracking server "
                "nor a database URI (sqlite:///path/mlflow.db); set mlflow.tracking_uri in sluice.yaml or "
                "MLFLOW_TRACKING_URI"
            )
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """MLflow's client, made on first use (importing mlflow takes a second or two)."""
        if self._client is None:
            import logging

            from mlflow import MlflowClient

            # The embedded store logs its schema check at INFO on every start.
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    # --- the registry ------------------------------------------------------------------------------

    def ensure_model(self, model: str) -> None:
        """Create the registered model unless it exists."""
        try:
            self._do(lambda: self.client.create_registered_model(model))
        except MlflowError as error:
            if error.code != "RESOURCE_ALREADY_EXISTS":
                raise

    def register(
        self, model: str, *, source: str, run_id: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        """Register ``source`` as the model's next version; returns the version."""
        self.ensure_model(model)
        created = self._do(
            lambda: self.client.create_model_version(
                model, source, run_id=run_id, tags={key: str(value) for key, value in (tags or {}).items()}
            )
        )
        return str(created.version)

    def versions(self, model: str) -> list[RegisteredVersion]:
        """Every version of the model, oldest first (none for a model not registered)."""
        escaped = model.replace("'", "\\'")
        found = [_version(item) for item in self._do(lambda: list(self._search(f"name='{escaped}'")))]
        if not found:
            return []
        # The search leaves aliases out; the registered model has them.
        held = self._do(lambda: self.client.get_registered_model(model)).aliases
        aliases: dict[str, list[str]] = {}
        for alias, version in held.items():
            aliases.setdefault(str(version), []).append(alias)
        return sorted(
            (replace(item, aliases=tuple(sorted(aliases.get(item.version, [])))) for item in found),
            key=lambda item: int(item.version),
        )

    def version(self, model: str, version: str) -> RegisteredVersion | None:
        try:
            return _version(self._do(lambda: self.client.get_model_version(model, version)))
        except MlflowError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def alias(self, model: str, alias: str) -> str | None:
        """The version the alias points at, or None."""
        try:
            return str(self._do(lambda: self.client.get_model_version_by_alias(model, alias)).version)
        except MlflowError as error:
            if error.code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise

    def resolve(self, reference: str) -> tuple[str, str] | None:
        """``(name, version)`` of a ``models:/`` reference, or None when it names nothing registered."""
        parsed = parse_reference(reference)
        if parsed is None:
            return None
        name, alias, version = parsed
        if alias is not None:
            version = self.alias(name, alias)
        elif version is not None and self.version(name, version) is None:
            version = None
        return None if version is None else (name, version)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._do(lambda: self.client.set_registered_model_alias(model, alias, version))

    def set_version_tag(self, model: str, version: str, key: str, value: str) -> None:
        self._do(lambda: self.client.set_model_version_tag(model, version, key, value))

    def delete_model(self, model: str) -> bool:
        """Delete the registered model and its versions (not their runs); False if there was none."""
        try:
            self._do(lambda: self.client.delete_registered_model(model))
        except MlflowError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    # --- runs and their files ----------------------------------------------------------------------

    def start_run(self, *, experiment: str, name: str, tags: Mapping[str, str] | None = None) -> str:
        """Start a run in the experiment (made when missing); returns its id."""
        experiment_id = self._experiment(experiment)
        run = self._do(
            lambda: self.client.create_run(
                experiment_id,
                run_name=name,
                start_time=int(time.time() * 1000),
                tags={key: str(value) for key, value in (tags or {}).items()},
            )
        )
        return str(run.info.run_id)

    def log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self._do(
            lambda: self.client.log_batch(
                run_id,
                metrics=[Metric(key, float(value), now, 0) for key, value in (metrics or {}).items()],
                params=[Param(key, str(value)) for key, value in (params or {}).items()],
                tags=[RunTag(key, str(value)) for key, value in (tags or {}).items()],
            )
        )

    def finish(self, run_id: str, *, status: str = "FINISHED") -> None:
        self._do(lambda: self.client.set_terminated(run_id, status=status))

    def run(self, run_id: str) -> dict[str, Any]:
        """The run's metrics, params and tags, each as a plain dict, with its status."""
        found = self._do(lambda: self.client.get_run(run_id))
        return {
            "status": found.info.status,
            "metrics": dict(found.data.metrics),
            "params": dict(found.data.params),
            "tags": dict(found.data.tags),
        }

    def log_artifacts(self, run_id: str, folder: Path, *, artifact_path: str = "model") -> str:
        """Upload every file under ``folder`` into the run's artifacts under ``artifact_path``; returns
        the URI to register as a version's ``source``."""
        if not any(path.is_file() for path in Path(folder).rglob("*")):
            raise MlflowError(f"{folder} holds no files to log as the model of run {run_id}")
        self._do(lambda: self.client.log_artifacts(run_id, str(folder), artifact_path))
        root = self._do(lambda: self.client.get_run(run_id)).info.artifact_uri
        return f"{root}/{artifact_path}"

    def download(self, model: str, version: str, target: Path) -> Path:
        """Copy the files of a model version into ``target``; returns the folder that holds them."""
        import mlflow.artifacts

        uri = self._do(lambda: self.client.get_model_version_download_uri(model, version))
        Path(target).mkdir(parents=True, exist_ok=True)
        return Path(
            self._do(
                lambda: mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(target), tracking_uri=self.tracking_uri
                )
            )
        )

    # --- the wire ----------------------------------------------------------------------------------

    def _experiment(self, name: str) -> str:
        found = self._do(lambda: self.client.get_experiment_by_name(name))
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.artifact_root is not None and not self.tracking_uri.startswith(("http://", "https://")):
            location = (Path(self.artifact_root).resolve() / name).as_uri()
        try:
            return str(self._do(lambda: self.client.create_experiment(name, artifact_location=location)))
        except MlflowError as error:  # made by another process since
            if error.code != "RESOURCE_ALREADY_EXISTS":
                raise
            again = self._do(lambda: self.client.get_experiment_by_name(name))
            assert again is not None
            return str(again.experiment_id)

    def _search(self, filter_string: str) -> Iterator[Any]:
        token = None
        while True:
            page = self.client.search_model_versions(filter_string, max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _do(self, call: Callable[[], T]) -> T:
        with self._errors():
            return call()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """MLflow's exceptions, and the network's, as one-line ``MlflowError``s."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as error:
            message = str(error.message).splitlines()[0]
            unreachable = "Max retries exceeded" in message or "ConnectionError" in message
            if unreachable:
                raise MlflowError(
                    f"cannot reach MLflow at {self.tracking_uri}; is the tracking server up (sluice stack up "
                    "starts one), and is mlflow.tracking_uri right?"
                ) from None
            raise MlflowError(f"MLflow at {self.tracking_uri}: {message}", code=error.error_code) from None
        except OSError as error:
            raise MlflowError(f"cannot reach MLflow at {self.tracking_uri} ({error})") from None


class References:
    """``models:/`` references resolved to ``(name, version)``, each asked of the registry at most once
    per ``ttl_s``: what the monitor uses for prediction events that name a model that way.

    While the registry cannot be reached, a reference resolved before keeps its last answer; one never
    resolved answers None with the reason in ``problem``, and its events are dead-lettered."""

    def __init__(
        self, *, registry: MlflowRegistry, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._clock = clock
        self._known: dict[str, tuple[float, tuple[str, str] | None]] = {}
        self.problem = ""

    def resolve(self, reference: str, version: str = "") -> tuple[str, str] | None:
        """The model and version an event names: a version sent with the reference wins."""
        parsed = parse_reference(reference)
        if parsed is None:
            self.problem = f"{reference!r} is not models:/<name>@<alias> or models:/<name>/<version>"
            return None
        if version:
            return parsed[0], version
        now = self._clock()
        known = self._known.get(reference)
        if known is None or now - known[0] >= self.ttl_s:
            try:
                known = self._known[reference] = (now, self.registry.resolve(reference))
            except MlflowError as error:
                if known is None:
                    self.problem = str(error)
                    return None
        self.problem = "" if known[1] else f"{reference} names no registered model version"
        return known[1]


def open_registry(config: SluiceConfig) -> MlflowRegistry:
    """The registry of the configured tracking store (``mlflow.tracking_uri``, embedded by default)."""
    return MlflowRegistry(
        tracking_uri=config.mlflow_tracking_uri, artifact_root=config.state_dir / "mlflow" / "artifacts"
    )


def _version(item: Any) -> RegisteredVersion:
    return RegisteredVersion(
        model=item.name,
        version=str(item.version),
        source=item.source or "",
        run_id=item.run_id or None,
        tags=dict(item.tags or {}),
        aliases=tuple(item.aliases or ()),
        created_ms=int(item.creation_timestamp or 0),
    )
