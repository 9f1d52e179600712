"""From alerts to jobs: one incident gives one job, through duplicate alerts and restarts."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from monitors.alerts.alert import Alert
from monitors.database import open_store
from monitors.retraining.local import LocalBackend
from monitors.retraining.policy import RetrainPolicy
from monitors.retraining.retrainer import Retrainer
from monitors.retraining.store import JobStore
from tests.streaming import sluice

HOUR_US = 3_600_000_000
ENTRYPOINT = [sys.executable, "-c", "import os; print('retraining', os.environ['SLUICE_ALERT_ID'])"]


def alert(
    *, feature: str = "amount", window: int = 0, severity: str = "critical", model: str = "fraud"
) -> Alert:
    return Alert.firing(
        model=model,
        version="1",
        feature=feature,
        metric="ks",
        severity=severity,  # type: ignore[arg-type]
        value=0.001,
        threshold=0.05,
        window_start_us=window * 5_000_000,
        window_end_us=(window + 1) * 5_000_000,
        report_url="",
    )


def retrainer(tmp_path: Path, *, max_running: int = 1, dry_run: bool = False) -> Retrainer:
    """A retrainer as the monitor builds it, on a store file and a job folder that outlive it."""
    return Retrainer(
        policy=RetrainPolicy(severities=["critical"], metrics=[], cooldown_us=HOUR_US),
        store=JobStore(engine=open_store(f"sqlite:///{tmp_path / 'sluice.db'}")),
        backend=LocalBackend(root=tmp_path / "jobs"),
        entrypoint=ENTRYPOINT,
        training_window_us=HOUR_US,
        max_running=max_running,
        dry_run=dry_run,
    )


def wait_done(first: Retrainer, job_id: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        first.pump()
        job = first.store.get(job_id)
        assert job is not None
        if job.state in ("succeeded", "failed", "cancelled"):
            return job.state
        time.sleep(0.1)
    raise AssertionError("the job did not finish")


def test_one_incident_gives_exactly_one_job_through_duplicates_and_a_restart(tmp_path: Path) -> None:
    incident = alert()
    first = retrainer(tmp_path)
    [job] = first.on_alerts([incident, incident])  # the same alert twice in one batch
    assert first.on_alerts([incident]) == []  # and again later
    # Two features drift in the same window: one job per model within the cooldown.
    assert first.on_alerts([alert(feature="count")]) == []
    assert wait_done(first, job.job_id) == "succeeded"

    restarted = retrainer(tmp_path)  # the monitor restarts and replays the window
    assert restarted.on_alerts([incident]) == []
    assert [item.job_id for item in restarted.store.jobs()] == [job.job_id]
    assert len(list((tmp_path / "jobs").iterdir())) == 1
    assert f"retraining {incident.id}" in LocalBackend(root=tmp_path / "jobs").logs(job.job_id)
    stored = restarted.store.get(job.job_id)
    assert stored is not None and stored.duration_s is not None and stored.duration_s > 0
    assert stored.train_start_us == incident.window_end_us - HOUR_US


def test_a_job_recorded_before_a_crash_is_submitted_once_by_the_next_process(tmp_path: Path) -> None:
    first = retrainer(tmp_path)
    job = first.on_alerts([alert()])[0]
    # Crash between submitting and recording the submission: the store says "not submitted".
    first.store.update(job.job_id, submitted=False, state="queued")
    restarted = retrainer(tmp_path)
    restarted.pump()
    stored = restarted.store.get(job.job_id)
    assert stored is not None and stored.submitted and "already submitted before" in stored.detail
    assert wait_done(restarted, job.job_id) == "succeeded"
    assert len(list((tmp_path / "jobs").iterdir())) == 1


def test_warnings_do_not_retrain_cooldown_is_per_model_and_jobs_wait_for_a_slot(tmp_path: Path) -> None:
    first = retrainer(tmp_path, max_running=1)
    assert first.on_alerts([alert(severity="warning")]) == []
    fraud = first.on_alerts([alert(model="fraud")])[0]
    churn = first.on_alerts([alert(model="churn")])[0]  # another model: its own cooldown
    waiting = first.store.get(churn.job_id)
    assert waiting is not None and not waiting.submitted  # one slot, taken by fraud's job
    assert wait_done(first, fraud.job_id) == "succeeded"
    assert wait_done(first, churn.job_id) == "succeeded"  # submitted once the slot freed
    later = alert(model="fraud", window=HOUR_US // 5_000_000 + 1)  # past the one-hour cooldown
    assert [job.model for job in first.on_alerts([later])] == ["fraud"]


def test_dry_run_records_the_decision_and_runs_nothing(tmp_path: Path) -> None:
    dry = retrainer(tmp_path, dry_run=True)
    [job] = dry.on_alerts([alert()])
    dry.pump()
    stored = dry.store.get(job.job_id)
    assert stored is not None and stored.state == "dry-run" and not stored.submitted
    assert "critical alert on amount (ks)" in stored.detail
    assert not (tmp_path / "jobs").exists()


def test_sluice_jobs_list_shows_each_job_with_its_state_and_duration(tmp_path: Path) -> None:
    first = retrainer(tmp_path / "state")
    [job] = first.on_alerts([alert()])
    assert wait_done(first, job.job_id) == "succeeded"
    env = {"SLUICE_STATE_DIR": str(tmp_path / "state")}
    listed = sluice(tmp_path, "jobs", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert line.startswith(f"{job.job_id} succeeded local      fraud 1 created ")
    assert line.endswith(f"alert {job.alert_id}: critical alert on amount (ks)")
    assert f"retraining {job.alert_id}" in sluice(tmp_path, "jobs", "logs", job.job_id, env=env).stdout
    unknown = sluice(tmp_path, "jobs", "logs", "sluice-nope", env=env)
    assert unknown.returncode == 1 and "no local job 'sluice-nope'" in unknown.stderr


def test_a_job_the_backend_lost_is_failed_and_frees_its_slot(tmp_path: Path) -> None:
    first = retrainer(tmp_path, max_running=1)
    lost = first.on_alerts([alert(model="fraud")])[0]
    waiting = first.on_alerts([alert(model="churn")])[0]
    assert wait_done(first, lost.job_id) == "succeeded"
    # Someone deleted the finished job's folder; and a queued one is lost before it ran.
    first.store.update(waiting.job_id, state="queued", submitted=True)
    import shutil

    shutil.rmtree(tmp_path / "jobs" / waiting.job_id, ignore_errors=True)
    first.pump()
    stored = first.store.get(waiting.job_id)
    assert stored is not None and stored.state == "failed" and "lost: no local job" in stored.detail


def test_a_dry_run_submits_nothing_even_for_jobs_queued_before_it(tmp_path: Path) -> None:
    live = retrainer(tmp_path, max_running=1)
    live.on_alerts([alert(model="fraud")])
    queued = live.on_alerts([alert(model="churn")])[0]  # waits for the slot
    dry = retrainer(tmp_path, dry_run=True)
    dry.pump()
    stored = dry.store.get(queued.job_id)
    assert stored is not None and not stored.submitted


def test_sluice_jobs_cancel_stops_a_job_that_waits_for_a_slot(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = retrainer(state, max_running=1)
    running = first.on_alerts([alert(model="fraud")])[0]
    waiting = first.on_alerts([alert(model="churn")])[0]
    cancelled = sluice(tmp_path, "jobs", "cancel", waiting.job_id, env={"SLUICE_STATE_DIR": str(state)})
    assert cancelled.returncode == 0, cancelled.stderr
    wait_done(first, running.job_id)
    first.pump()
    stored = first.store.get(waiting.job_id)
    assert stored is not None and stored.state == "cancelled" and not stored.submitted
    assert not (state / "jobs" / waiting.job_id).exists()
    again = sluice(tmp_path, "jobs", "cancel", waiting.job_id, env={"SLUICE_STATE_DIR": str(state)})
    assert again.returncode == 1 and "is cancelled: there is nothing to cancel" in again.stderr


def test_a_job_whose_entrypoint_ended_is_running_until_its_runner_records_the_exit_code(
    tmp_path: Path,
) -> None:
    """The race CI once lost: the entrypoint reaped, its exit code not yet written. Not a failure."""
    import subprocess

    backend = LocalBackend(root=tmp_path)
    folder = tmp_path / "job-1"
    folder.mkdir()
    (folder / "spec.json").write_text("{}")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (folder / "pid").write_text(str(ended.pid))
    (folder / "runner_pid").write_text(str(os.getpid()))  # a live runner, about to write the exit code
    assert backend.status("job-1") == "running"
    (folder / "exit_code").write_text("0")
    assert backend.status("job-1") == "succeeded"
    (folder / "exit_code").unlink()
    (folder / "runner_pid").write_text(str(ended.pid))  # the runner died without writing it
    assert backend.status("job-1") == "failed"
