"""What each console page shows, gathered from the stores the CLI reads.

Every section is read on its own, off the event loop, and a store that does not answer becomes a line
on the page that says which and why; the rest of the page still shows. Nothing here writes: no
consumer group is joined, no job is refreshed, no report is saved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Engine, text

from features.config import SluiceConfig
from features.repo import FeatureRepo
from features.spec import FeatureViewSpec
from monitors.alerts.store import AlertStore
from monitors.retraining.store import JobStore
from offline_store.storage import Location
from online_store.client import AsyncOnlineClient
from sluice.console import model_scores
from sluice.console.charts import score_chart
from sluice.console.kafka_state import IngestRates, KafkaState, PartitionState

__all__ = ["NotFound", "Sources"]

log = logging.getLogger("sluice.console")
T = TypeVar("T")

DEAD_LETTER_SCAN = 2000
"""Per dead-letter topic, the newest records the overview counts by reason."""


class NotFound(LookupError):
    """A page for something the stores do not hold: answered with 404 and this message."""


@dataclass(frozen=True)
class Unavailable:
    """A section whose store did not answer."""

    what: str
    why: str


@dataclass(kw_only=True)
class Sources:
    """The stores the console reads, opened once per process."""

    repo: FeatureRepo
    online: AsyncOnlineClient | None
    kafka: KafkaState
    engine: Engine
    rates: IngestRates = field(default_factory=IngestRates)
    reports: OrderedDict[tuple[str, str, int], str] = field(default_factory=OrderedDict)
    clock_s: Callable[[], float] = time.time

    @property
    def config(self) -> SluiceConfig:
        return self.repo.config

    @property
    def specs(self) -> tuple[FeatureViewSpec, ...]:
        return self.repo.specs

    @property
    def worker_group(self) -> str:
        return f"sluice-{self.config.project}"

    @property
    def monitor_group(self) -> str:
        return f"sluice-monitor-{self.config.project}"

    @property
    def scores_root(self) -> Location:
        return Location.parse(self.config.scores_location, self.config.offline_store)

    def spec(self, name: str) -> FeatureViewSpec:
        try:
            return self.repo.spec(name)
        except KeyError as error:
            raise NotFound(error.args[0]) from None

    def sample_offsets(self) -> list[PartitionState]:
        """The worker group's partitions now, recorded for the ingest rates."""
        states = self.kafka.partitions(self.worker_group, [spec.topic for spec in self.specs])
        self.rates.add(
            self.clock_s(),
            {(s.group, s.topic, s.partition): s.committed for s in states if s.committed is not None},
        )
        return states


async def _read(what: str, call: Callable[[], T]) -> T | Unavailable:
    try:
        return await asyncio.to_thread(call)
    except Exception as error:  # a store that does not answer is shown, not raised
        log.warning("console: %s: %r", what, error)
        return Unavailable(what, _reason(error))


async def _await(what: str, call: Awaitable[T]) -> T | Unavailable:
    try:
        return await call
    except Exception as error:
        log.warning("console: %s: %r", what, error)
        return Unavailable(what, _reason(error))


def _reason(error: Exception) -> str:
    text_ = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text_[0][:300]}" if text_ else type(error).__name__


async def overview(src: Sources) -> dict[str, Any]:
    now = src.clock_s()
    topics, offsets, firing, store_ok, redis_ok = await asyncio.gather(
        _read("Kafka", src.kafka.topics),
        _read("Kafka (worker offsets)", src.sample_offsets),
        _read("the alert store", lambda: AlertStore(engine=src.engine).alerts(status="firing", limit=50)),
        _read("the alert store", lambda: _ping_store(src.engine)),
        _await("Redis", _ping_redis(src)),
    )
    monitor_offsets = (
        topics
        if isinstance(topics, Unavailable)
        else await _read("Kafka (monitor offsets)", lambda: _monitor_partitions(src, topics))
    )
    health = [
        ("Kafka", topics, src.config.kafka.bootstrap_servers),
        ("Redis", redis_ok, src.config.redis.url if src.config.redis.redis_type == "redis" else "cluster"),
        ("Alert and job store", store_ok, _safe_url(src.config.store_url)),
    ]
    views = []
    for spec in src.specs:
        parts = [] if isinstance(offsets, Unavailable) else [s for s in offsets if s.topic == spec.topic]
        fresh = [s.freshness_s(spec.name, now) for s in parts]
        known = [value for value in fresh if value is not None]
        views.append(
            {
                "spec": spec,
                "partitions": [(s, value) for s, value in zip(parts, fresh, strict=True)],
                "stalest_s": max(known) if known else None,
                "lag": sum(s.lag for s in parts),
                "rate": src.rates.rate(src.worker_group, spec.topic),
            }
        )
    dlq_topics = [spec.dlq_topic for spec in src.specs]
    if not isinstance(monitor_offsets, Unavailable):
        dlq_topics += [f"{topic}.dlq" for topic in dict.fromkeys(s.topic for s in monitor_offsets)]
    letters = []
    for topic in dict.fromkeys(dlq_topics):
        found = await _read(f"Kafka ({topic})", partial(src.kafka.dead_letters, topic, scan=DEAD_LETTER_SCAN))
        if isinstance(found, Unavailable):
            letters.append({"topic": topic, "problem": found})
            continue
        total, records = found
        reasons = Counter(record.reason for record in records).most_common()
        letters.append({"topic": topic, "total": total, "scanned": len(records), "reasons": reasons})
    return {
        "now": now,
        "health": health,
        "views": views,
        "offsets": offsets,
        "monitor_offsets": monitor_offsets,
        "letters": letters,
        "firing": firing,
    }


def _monitor_partitions(src: Sources, topics: set[str]) -> list[PartitionState]:
    """The prediction topics this project's monitors consume: those of ``topics`` with a ``.scores`` topic
    beside them (where the monitor writes) that the project's monitor group has committed in."""
    monitored = sorted(t[: -len(".scores")] for t in topics if t.endswith(".scores") and t[:-7] in topics)
    states = src.kafka.partitions(src.monitor_group, monitored)
    consumed = {state.topic for state in states if state.committed is not None}
    return [state for state in states if state.topic in consumed]


def _ping_store(engine: Engine) -> bool:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return True


async def _ping_redis(src: Sources) -> bool:
    if src.online is None:
        raise RuntimeError("no online store: the feature registry could not be read")
    await src.online.ping()
    return True


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


async def view_page(src: Sources, name: str, lookup: dict[str, str]) -> dict[str, Any]:
    spec = src.spec(name)
    letters = await _read(
        f"Kafka ({spec.dlq_topic})",
        lambda: src.kafka.dead_letters(spec.dlq_topic, feature_view=spec.name, scan=DEAD_LETTER_SCAN),
    )
    sample: Any = letters if isinstance(letters, Unavailable) else (letters[0], letters[1][:20])
    found: Any = None
    problem = None
    wanted = {key: lookup.get(key, "").strip() for key in spec.join_keys}
    if any(wanted.values()):
        try:
            row = {key: _entity_value(value, spec.join_keys[key], key) for key, value in wanted.items()}
        except ValueError as error:
            problem = str(error)
        else:
            found = await _lookup(src, spec, row)
    return {"spec": spec, "letters": sample, "wanted": wanted, "found": found, "problem": problem}


def _entity_value(value: str, dtype: str, key: str) -> Any:
    if not value:
        raise ValueError(f"give a value for every join key: {key} is empty")
    if dtype in ("Int64", "Int32", "INT64", "INT32"):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key} is an integer key; {value!r} is not an integer") from None
    return value


async def _lookup(src: Sources, spec: FeatureViewSpec, row: dict[str, Any]) -> Any:
    if src.online is None:
        return Unavailable("Redis", "the feature registry could not be read")
    names = [feature for feature in spec.features if feature not in spec.join_keys]
    vectors = await _await(
        "Redis",
        src.online.read(
            entity_rows={key: [value] for key, value in row.items()},
            features=[f"{spec.name}:{feature}" for feature in names],
            full_feature_names=False,
        ),
    )
    if isinstance(vectors, Unavailable):
        return vectors
    shown = []
    for feature_name, values, statuses, times in zip(
        vectors.names, vectors.values, vectors.statuses, vectors.event_times_us, strict=True
    ):
        if feature_name in spec.join_keys:
            continue
        shown.append({"name": feature_name, "value": values[0], "status": statuses[0], "event_us": times[0]})
    return shown


async def models_page(src: Sources) -> dict[str, Any]:
    monitored = await _read("the scores", lambda: model_scores.monitored(src.scores_root))
    jobs = await _read("the job store", lambda: JobStore(engine=src.engine).jobs(limit=500))
    names: set[str] = set()
    if not isinstance(monitored, Unavailable):
        names.update(monitored)
    if not isinstance(jobs, Unavailable):
        names.update(job.model for job in jobs)
    return {"monitored": monitored, "models": sorted(names)}


async def model_page(src: Sources, model: str, version: str | None) -> dict[str, Any]:
    monitored = await _read("the scores", lambda: model_scores.monitored(src.scores_root))
    versions = [] if isinstance(monitored, Unavailable) else monitored.get(model, [])
    registered = await _read("MLflow's registry", lambda: _registered(src, model))
    if not versions and (isinstance(registered, Unavailable) or not registered):
        raise NotFound(f"no model named {model!r} has scored windows or registered versions")
    chosen = version or (versions[-1] if versions else None)
    if chosen is not None and versions and chosen not in versions:
        raise NotFound(
            f"model {model!r} has no scored windows of version {chosen!r}; it has {', '.join(versions)}"
        )
    charts: list[dict[str, Any]] = []
    windows: Any = []
    profile: Any = None
    if chosen is not None and chosen in versions:
        read = await _read(
            "the scores", lambda: model_scores.history(src.scores_root, model=model, version=chosen)
        )
        alerts = await _read(
            "the alert store", lambda: AlertStore(engine=src.engine).alerts(model=model, limit=500)
        )
        profile = await _read("the reference profile", lambda: _profile(src, model, chosen))
        if isinstance(read, Unavailable):
            windows = read
        else:
            windows, series = read
            marks: dict[tuple[str, str], set[int]] = {}
            for alert in [] if isinstance(alerts, Unavailable) else alerts:
                if alert.version == chosen:
                    marks.setdefault((alert.feature, alert.metric), set()).add(alert.window_start_us)
            reportable = {window.window_start_us for window in windows if window.has_report}

            def link(start: int, reportable: set[int] = reportable) -> str | None:
                where = f"/models/{quote(model, safe='')}/{quote(str(chosen), safe='')}/report/{start}"
                return where if start in reportable else None

            for item in series:
                scores = [score for _, score, _ in item.points if score is not None]
                p_value = (
                    item.kind == "drift"
                    and item.threshold is not None
                    and 0 < item.threshold < 0.1
                    and all(0 <= score <= 1 for score in scores)
                )
                metric = _alert_metric(item)
                alerted = marks.get((item.feature, metric), set()) if metric else set()
                charts.append(
                    {
                        "series": item,
                        "alerts": len(alerted),
                        "svg": score_chart(
                            item.points,
                            threshold=item.threshold,
                            log_scale=p_value,
                            alerts=alerted,
                            link=link,
                            label=f"{item.feature} {item.metric}",
                        ),
                    }
                )
            windows = list(reversed(windows))
    return {
        "model": model,
        "versions": versions,
        "chosen": chosen,
        "registered": registered,
        "profile": profile,
        "charts": charts,
        "windows": windows,
    }


def _alert_metric(series: model_scores.ScoreSeries) -> str | None:
    """The metric an alert on this series names (as ``monitors.alerts.rules`` does): alerts are raised
    against the training profile, and for skew against the offline store; never against the previous
    window."""
    if series.against == "offline":
        return f"skew:{series.metric}"
    return series.metric if series.against == "reference" else None


def _registered(src: Sources, model: str) -> Any:
    from monitors.retraining.mlflow import open_registry

    return open_registry(src.config).versions(model)


def _profile(src: Sources, model: str, version: str) -> Any:
    from monitors.drift.profile import ReferenceProfile

    return ReferenceProfile.load(
        src.config.profiles_location, model=model, version=version, storage=src.config.offline_store
    )


async def report_html(src: Sources, model: str, version: str, window_start_us: int) -> str:
    key = (model, version, window_start_us)
    if key in src.reports:
        src.reports.move_to_end(key)
        return src.reports[key]
    saved = src.config.state_dir / "reports" / model / version / f"window-{window_start_us:020d}.html"
    if saved.is_file():
        html = await asyncio.to_thread(saved.read_text, encoding="utf-8")
    else:
        html = await asyncio.to_thread(_render_report, src, model, version, window_start_us)
    src.reports[key] = html
    while len(src.reports) > 4:
        src.reports.popitem(last=False)
    return html


def _render_report(src: Sources, model: str, version: str, window_start_us: int) -> str:
    from monitors.drift.profile import ProfileError
    from monitors.drift.report import ReportError, drift_report_html, read_summary, window_summary_path

    try:
        reference = _profile(src, model, version)
        path = window_summary_path(
            src.scores_root, model=model, version=version, window_start_us=window_start_us
        )
    except (ProfileError, ReportError) as error:
        raise NotFound(str(error)) from None
    return str(drift_report_html(reference, read_summary(path)))


async def alerts_page(src: Sources, filters: dict[str, str]) -> dict[str, Any]:
    store = AlertStore(engine=src.engine)

    def read_alerts() -> list[dict[str, Any]]:
        found = store.alerts(
            model=filters.get("model") or None, status=filters.get("status") or None, limit=200
        )
        if filters.get("severity"):
            found = [alert for alert in found if alert.severity == filters["severity"]]
        return [{"alert": alert, "deliveries": store.deliveries(alert_id=alert.id)} for alert in found]

    def read_jobs() -> list[Any]:
        found = JobStore(engine=src.engine).jobs(model=filters.get("model") or None, limit=200)
        return [job for job in found if not filters.get("job_state") or job.state == filters["job_state"]]

    alerts, jobs = await asyncio.gather(
        _read("the alert store", read_alerts), _read("the job store", read_jobs)
    )
    return {"alerts": alerts, "jobs": jobs, "filters": filters}


async def alert_page(src: Sources, alert_id: str) -> dict[str, Any]:
    store = AlertStore(engine=src.engine)

    def read() -> dict[str, Any]:
        alert = store.alert(alert_id)
        if alert is None:
            raise NotFound(f"no alert with id {alert_id!r}")
        deliveries = [(item, store.attempts(item.id)) for item in store.deliveries(alert_id=alert_id)]
        jobs = [
            job
            for job in JobStore(engine=src.engine).jobs(model=alert.model, limit=200)
            if job.alert_id == alert_id
        ]
        return {"alert": alert, "deliveries": deliveries, "jobs": jobs}

    return await asyncio.to_thread(read)


async def job_page(src: Sources, job_id: str) -> dict[str, Any]:
    job = await asyncio.to_thread(JobStore(engine=src.engine).get, job_id)
    if job is None:
        raise NotFound(f"no retraining job with id {job_id!r}")
    logs = await _read("the job's logs", lambda: _logs(src, job_id))
    return {"job": job, "logs": logs}


def _logs(src: Sources, job_id: str) -> str:
    from monitors.retraining.backends import job_backend

    text_ = job_backend(src.config, src.repo.path).logs(job_id)
    return text_[-200_000:]
