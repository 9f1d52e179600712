"""MLflow as the model registry, through MLflow's own client, against both stores it is used with: the
embedded one (SQLite in a folder, no server) and a real ``mlflow server`` process on loopback (the local
stack's, on SQLite): versions, aliases and files, runs, the promotion gate's decisions, the migration of
sluice's own registry table, and ``sluice models`` on top."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from kafka import KafkaConsumer

from features.config import SluiceConfig, load_config
from monitors.database import open_store
from monitors.events.logger import PredictionLogger
from monitors.retraining.gate import promote
from monitors.retraining.migrate import migrate
from monitors.retraining.mlflow import MlflowError, MlflowRegistry, References, open_registry
from monitors.retraining.store import LegacyRegistry, ModelVersion
from tests.streaming import BOOTSTRAP, dead_letters, delete_topics, sluice, stop

pytestmark = pytest.mark.stack
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["embedded", "server"])
def registry(request: pytest.FixtureRequest, stack_config: SluiceConfig, tmp_path: Path) -> MlflowRegistry:
    if request.param == "server":
        return MlflowRegistry(tracking_uri=stack_config.mlflow.server)
    store = tmp_path / "mlflow"
    return MlflowRegistry(tracking_uri=f"sqlite:///{store / 'mlflow.db'}", artifact_root=store / "artifacts")


@pytest.fixture
def model(unique_name: str) -> str:
    return f"m-{unique_name}"


def train(
    registry: MlflowRegistry, model: str, *, holdout: float, champion_holdout: float | None, folder: Path
) -> str:
    """What a retraining job does: a run with its metrics and model files, a version from it, the
    challenger alias."""
    run = registry.start_run(experiment="sluice-tests", name=f"{model}-job", tags={"sluice.alert_id": "a-1"})
    metrics = {"holdout_log_loss": holdout}
    if champion_holdout is not None:
        metrics["champion_holdout_log_loss"] = champion_holdout
    registry.log(run, metrics=metrics, params={"train_start": "2026-01-01T00:00:00+00:00", "rows": 500})
    (folder / run).mkdir(parents=True)
    (folder / run / "weights.json").write_text(f'{{"holdout": {holdout}}}')
    source = registry.log_artifacts(run, folder / run)
    registry.finish(run)
    version = registry.register(model, source=source, run_id=run)
    registry.set_alias(model, "challenger", version)
    return version


def test_versions_aliases_runs_and_files_round_trip(
    registry: MlflowRegistry, model: str, tmp_path: Path
) -> None:
    run = registry.start_run(experiment="sluice-tests", name="job", tags={"sluice.job_id": "j-1"})
    registry.log(run, metrics={"holdout_log_loss": 0.25}, params={"rows": 10}, tags={"sluice.model": model})
    files = {"weights.npz": bytes(range(256)) * 40, "meta/model.json": b'{"trainer": "sklearn"}'}
    for name, content in files.items():
        (tmp_path / "out" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / name).write_bytes(content)
    source = registry.log_artifacts(run, tmp_path / "out")
    registry.finish(run)
    assert source.endswith(f"/{run}/artifacts/model")
    first = registry.register(model, source=source, run_id=run, tags={"sluice.job_id": "j-1"})
    second = registry.register(model, source="s3://models/two")  # files in a store of their own
    assert (first, second) == ("1", "2")
    registry.set_alias(model, "champion", first)
    assert registry.alias(model, "champion") == "1" and registry.alias(model, "challenger") is None
    found = registry.versions(model)
    assert [(item.version, item.source, item.aliases) for item in found] == [
        ("1", source, ("champion",)),
        ("2", "s3://models/two", ()),
    ]
    # The champion's files come back byte for byte, found through its alias.
    assert registry.resolve(f"models:/{model}@champion") == (model, "1")
    assert registry.resolve(f"models:/{model}/2") == (model, "2")
    assert (
        registry.resolve(f"models:/{model}/9") is None and registry.resolve(f"models:/{model}@gone") is None
    )
    folder = registry.download(model, "1", tmp_path / "back")
    back = {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }
    assert back == files
    assert found[0].run_id == run and found[0].tags["sluice.job_id"] == "j-1"
    logged = registry.run(run)
    assert logged["status"] == "FINISHED" and logged["metrics"] == {"holdout_log_loss": 0.25}
    assert logged["params"] == {"rows": "10"} and logged["tags"]["sluice.job_id"] == "j-1"
    assert registry.versions(f"{model}-none") == []


def test_the_gate_promotes_only_a_challenger_that_beats_the_champion_on_held_out_data(
    registry: MlflowRegistry, model: str, tmp_path: Path
) -> None:
    first = train(registry, model, holdout=0.40, champion_holdout=None, folder=tmp_path)
    decision = promote(registry, model, margin=0.01)
    assert decision.promoted and decision.reason == "there is no champion yet"
    assert registry.alias(model, "champion") == first
    # Worse than the champion on the same held-out slice: kept, and the version says why.
    second = train(registry, model, holdout=0.41, champion_holdout=0.39, folder=tmp_path)
    decision = promote(registry, model, margin=0.01)
    assert not decision.promoted and registry.alias(model, "champion") == first
    tags = registry.version(model, second).tags  # type: ignore[union-attr]
    assert tags["sluice.gate"] == "kept" and "does not beat the champion's 0.39" in tags["sluice.gate.reason"]
    # Better by less than the margin: kept too. Better by more: promoted.
    train(registry, model, holdout=0.385, champion_holdout=0.39, folder=tmp_path)
    assert not promote(registry, model, margin=0.01).promoted
    fourth = train(registry, model, holdout=0.30, champion_holdout=0.39, folder=tmp_path)
    decision = promote(registry, model, margin=0.01)
    assert decision.promoted and decision.champion == first and registry.alias(model, "champion") == fourth
    assert registry.version(model, fourth).tags["sluice.gate"] == "promoted"  # type: ignore[union-attr]


def test_the_registry_table_of_the_release_before_mlflow_is_migrated_once(
    registry: MlflowRegistry, model: str, tmp_path: Path
) -> None:
    legacy = LegacyRegistry(engine=open_store(f"sqlite:///{tmp_path / 'sluice.db'}"))
    saved = tmp_path / "models"
    (saved / "1").mkdir(parents=True)
    (saved / "1" / "model.json").write_text('{"version": 1}')
    (saved / "2.pkl").write_bytes(b"weights of 2")
    uris = {
        "1": (saved / "1").as_uri(),  # a folder on this machine
        "2": str(saved / "2.pkl"),  # one file, as a bare path
        "3": (saved / "3").as_uri(),  # deleted since
        "4": "s3://bucket/models/4",  # in object storage
    }
    for version, uri in uris.items():
        made = time.time() + int(version)
        metrics = {"validation_log_loss": 0.3}
        legacy.add(
            ModelVersion(
                model=model,
                version=version,
                uri=uri,
                job_id=f"job-{version}",
                metrics=metrics,
                created_at=made,
            )
        )
    moved = migrate(legacy, registry)
    assert [(item.old_version, item.version, item.moved) for item in moved] == [
        ("1", "1", True),
        ("2", "2", True),
        ("3", None, False),
        ("4", "3", True),
    ]
    assert "files are gone" in moved[2].problem
    versions = registry.versions(model)
    assert versions[2].source == "s3://bucket/models/4"
    assert versions[1].tags == {"sluice.version": "2", "sluice.job_id": "job-2", "sluice.source": uris["2"]}
    assert registry.run(versions[1].run_id)["metrics"] == {"validation_log_loss": 0.3}  # type: ignore[arg-type]
    one = registry.download(model, "1", tmp_path / "one")
    two = registry.download(model, "2", tmp_path / "two")
    assert (one / "model.json").read_text() == '{"version": 1}'
    assert [(path.name, path.read_bytes()) for path in two.iterdir()] == [("2.pkl", b"weights of 2")]
    assert registry.alias(model, "champion") == "3"  # the newest was what scoring used
    again = migrate(legacy, registry)
    assert [item.moved for item in again] == [False] * 4 and len(registry.versions(model)) == 3


def test_sluice_models_lists_and_promotes(registry: MlflowRegistry, model: str, tmp_path: Path) -> None:
    train(registry, model, holdout=0.5, champion_holdout=None, folder=tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"MLFLOW_TRACKING_URI": registry.tracking_uri}
    promoted = sluice(repo, "models", "promote", "--model", model, env=env)
    assert (
        promoted.returncode == 0
        and "version 1 promoted to champion: there is no champion yet" in promoted.stdout
    )
    listed = sluice(repo, "models", "list", "--model", model, env=env)
    assert listed.returncode == 0 and "champion" in listed.stdout and "promoted" in listed.stdout


def test_an_unreachable_server_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MlflowError, match=r"cannot reach MLflow at http://127\.0\.0\.1:1"):
        MlflowRegistry(tracking_uri="http://127.0.0.1:1").versions("x")
    with pytest.raises(MlflowError, match="neither the http"):
        MlflowRegistry(tracking_uri="ftp://mlflow.internal/")
    (tmp_path / "repo").mkdir()
    listed = sluice(
        tmp_path / "repo", "models", "list", "--model", "x", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    )
    assert (
        listed.returncode == 1 and "cannot reach MLflow" in listed.stderr and "Traceback" not in listed.stderr
    )


def test_references_are_asked_once_per_ttl_and_outlive_an_outage(tmp_path: Path) -> None:
    store = tmp_path / "mlflow"
    registry = MlflowRegistry(tracking_uri=f"sqlite:///{store / 'mlflow.db'}", artifact_root=store / "a")
    for holdout in (0.4, 0.3):
        train(registry, "m", holdout=holdout, champion_holdout=None, folder=tmp_path / "runs")
    registry.set_alias("m", "champion", "1")
    now = [0.0]
    references = References(registry=registry, ttl_s=30, clock=lambda: now[0])
    assert references.resolve("models:/m@champion") == ("m", "1")
    assert references.resolve("models:/m@champion", "7") == ("m", "7")  # the version sent wins
    registry.set_alias("m", "champion", "2")
    now[0] = 29.0
    assert references.resolve("models:/m@champion") == ("m", "1")  # asked again only after the ttl
    now[0] = 31.0
    assert references.resolve("models:/m@champion") == ("m", "2")
    # The registry goes away: what was known stays, what was not is refused with the reason.
    references.registry = MlflowRegistry(tracking_uri="http://127.0.0.1:1")
    now[0] = 100.0
    assert references.resolve("models:/m@champion") == ("m", "2")
    assert references.resolve("models:/m@challenger") is None
    assert "cannot reach MLflow at http://127.0.0.1:1" in references.problem
    assert references.resolve("models:/m") is None and "is not models:/" in references.problem


def test_prediction_events_that_name_an_mlflow_model_are_scored_as_the_version_it_points_at(
    tmp_path: Path, project: str, topic: str
) -> None:
    """``sluice monitor`` on real Kafka, with the repo's embedded MLflow store: events sent as
    ``models:/m@champion`` count for the champion's version, ``models:/m/1`` for version 1, and a
    reference to nothing is dead-lettered with its reason."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "sluice.yaml").write_text(f"project: {project}\ntopics: {{partitions: 1}}\n")
    env = {"SLUICE_STATE_DIR": str(repo / ".sluice"), "MLFLOW_TRACKING_URI": ""}
    rng = np.random.default_rng(3)
    pd.DataFrame({"x": rng.normal(0, 1, 2000)}).to_parquet(tmp_path / "training.parquet")
    for version in ("1", "2"):
        built = sluice(repo, "profile", "--model", "m", "--version", version,
                       "--training", str(tmp_path / "training.parquet"), env=env)  # fmt: skip
        assert built.returncode == 0, built.stderr
    config = load_config(repo, environ={**os.environ, **env})
    registry = open_registry(config)
    assert registry.tracking_uri.startswith("sqlite:///") and str(repo / ".sluice") in registry.tracking_uri
    for holdout in (0.4, 0.3):
        train(registry, "m", holdout=holdout, champion_holdout=None, folder=tmp_path / "runs")
    registry.set_alias("m", "champion", "2")

    logger = PredictionLogger(config=config.kafka, topic=topic, source="tests")
    sent = {"models:/m@champion": 30, "models:/m/1": 20, "models:/m@gone": 5, "models:/nobody@champion": 4}
    for reference, count in sent.items():
        for row in range(count):
            logger.log(model=reference, request_id=f"{reference}-{row}", features={"x": float(row)},
                       event_time=T0 + timedelta(seconds=row * 4 / count))  # fmt: skip
    for row in range(5):  # labels may name the model by reference too
        logger.log_label(model="models:/m@champion", request_id=f"models:/m@champion-{row}", label=row % 2)
    for reference in ("models:/m@champion", "models:/m/1"):  # a version's windows close on its own events
        logger.log(
            model=reference, request_id=f"tick-{reference}", features={}, event_time=T0 + timedelta(days=1)
        )
    logger.flush()
    logger.close()
    log = tmp_path / "monitor.log"
    with log.open("wb") as output:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), "monitor", "--topic", topic,
             "--window-seconds", "5", "--lateness-seconds", "0"],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip
    try:
        reports: dict[tuple[str, str], int] = {}
        reader = KafkaConsumer(f"{topic}.scores", bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest",
                               consumer_timeout_ms=1000)  # fmt: skip
        deadline = time.monotonic() + 120
        while len(reports) < 2 and time.monotonic() < deadline:
            assert monitor.poll() is None, log.read_text()
            for record in reader:
                report = orjson.loads(record.value)
                reports[(report["model"], report["version"])] = report["events"]
        reader.close()
        assert reports == {("m", "2"): 30, ("m", "1"): 20}, log.read_text()
        letters = dead_letters(topic)
        assert sorted(headers["sluice.reason"].decode() for _, headers in letters) == ["unresolved_model"] * 9
        labelled = KafkaConsumer(f"{topic}.labelled", bootstrap_servers=BOOTSTRAP,
                                 auto_offset_reset="earliest", consumer_timeout_ms=3000)  # fmt: skip
        pairs = [orjson.loads(record.value) for record in labelled]
        labelled.close()
        assert sorted((pair["model"], pair["version"], pair["label"]) for pair in pairs) == sorted(
            ("m", "2", row % 2) for row in range(5)
        )
        details = {headers["sluice.detail"].decode() for _, headers in letters}
        assert details == {
            "models:/m@gone names no registered model version",
            "models:/nobody@champion names no registered model version",
        }
    finally:
        stop(monitor)
        delete_topics(topic, f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled")


TRAINER = """
import os, sys, tempfile
from pathlib import Path
from monitors.retraining.mlflow import MlflowRegistry
store = Path(sys.argv[1])
registry = MlflowRegistry(tracking_uri=f"sqlite:///{store / 'mlflow.db'}", artifact_root=store / "artifacts")
model, job = os.environ["SLUICE_MODEL"], os.environ["SLUICE_JOB_ID"]
run = registry.start_run(experiment="jobs", name=job, tags={"sluice.job_id": job})
registry.log(run, metrics={"holdout_log_loss": float(sys.argv[2]), "champion_holdout_log_loss": 0.35})
with tempfile.TemporaryDirectory() as folder:
    Path(folder, "model.json").write_text("{}")
    source = registry.log_artifacts(run, Path(folder))
registry.finish(run)
version = registry.register(model, source=source, run_id=run, tags={"sluice.job_id": job})
registry.set_alias(model, "challenger", version)
"""


def test_a_job_that_succeeded_goes_through_the_gate_before_it_is_recorded(tmp_path: Path) -> None:
    """The retrainer runs the promotion gate on the version a job registered (found by its job id tag)
    before it records the job as succeeded; while the registry is away the job stays running."""
    from monitors.alerts.alert import Alert
    from monitors.retraining.gate import job_gate
    from monitors.retraining.local import LocalBackend
    from monitors.retraining.policy import RetrainPolicy
    from monitors.retraining.retrainer import Retrainer
    from monitors.retraining.store import JobStore

    store = tmp_path / "mlflow"
    registry = MlflowRegistry(
        tracking_uri=f"sqlite:///{store / 'mlflow.db'}", artifact_root=store / "artifacts"
    )
    first = train(registry, "fraud", holdout=0.35, champion_holdout=None, folder=tmp_path / "runs")
    registry.set_alias("fraud", "champion", first)
    jobs = JobStore(engine=open_store(f"sqlite:///{tmp_path / 'sluice.db'}"))

    def run_job(holdout: float, window: int, gate_registry: MlflowRegistry) -> str:
        retrainer = Retrainer(
            policy=RetrainPolicy(severities=["critical"], metrics=[], cooldown_us=0),
            store=jobs,
            backend=LocalBackend(root=tmp_path / "jobs"),
            entrypoint=[sys.executable, "-c", TRAINER, str(store), str(holdout)],
            training_window_us=3_600_000_000,
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            gate=job_gate(gate_registry, metric="log_loss", margin=0.01, higher_is_better=False),
        )
        incident = Alert.firing(
            model="fraud",
            version="1",
            feature="amount",
            metric="ks",
            severity="critical",
            value=0.001,
            threshold=0.05,
            window_start_us=window * 5_000_000,
            window_end_us=(window + 1) * 5_000_000,
            report_url="",
        )
        [job] = retrainer.on_alerts([incident])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            retrainer.pump()
            stored = jobs.get(job.job_id)
            assert stored is not None
            if stored.state != "queued" and stored.state != "running":
                return f"{stored.state}: {stored.detail}"
            if gate_registry is not registry and (tmp_path / "jobs" / job.job_id / "exit_code").exists():
                time.sleep(2)  # finished at the backend: the gate keeps failing, the job stays running
                retrainer.pump()
                stored = jobs.get(job.job_id)
                assert stored is not None and stored.state == "running"
                retrainer.gate = job_gate(registry, metric="log_loss", margin=0.01, higher_is_better=False)
            time.sleep(0.2)
        raise AssertionError(LocalBackend(root=tmp_path / "jobs").logs(job.job_id))

    # Worse than the champion on the same slice: kept.
    kept = run_job(0.36, 0, registry)
    assert kept.startswith("succeeded") and "version 2 kept as challenger" in kept
    assert registry.alias("fraud", "champion") == first
    # Better by more than the margin, with the registry away when the job ends: gated once it is back.
    away = MlflowRegistry(tracking_uri="http://127.0.0.1:1")
    promoted = run_job(0.30, 1, away)
    assert promoted.startswith("succeeded") and "version 3 promoted to champion" in promoted
    assert registry.alias("fraud", "champion") == "3"
