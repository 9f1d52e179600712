"""The alert and job store's tables, and how to open it: SQLite by default, any SQLAlchemy URL.

One schema for the monitor's durable state: alerts and the streaks that lead to them, the delivery
outbox with every attempt, retraining jobs, the model versions they register, and the window parts
that monitors sharing a topic merge (``monitors.runtime.parts``). SQLite runs in WAL
mode with a busy timeout, so the monitor, its delivery thread and ``sluice alerts list`` can share the
file; several monitors share a PostgreSQL URL instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.pool import StaticPool

__all__ = [
    "StoreError",
    "alert_streaks",
    "alerts",
    "deliveries",
    "delivery_attempts",
    "jobs",
    "model_versions",
    "open_store",
]

metadata = MetaData()

alerts = Table(
    "sluice_alerts",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False, index=True),
    Column("model", String(200), nullable=False, index=True),
    Column("version", String(200), nullable=False),
    Column("feature", String(200), nullable=False),
    Column("metric", String(100), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("value", Float, nullable=True),
    Column("threshold", Float, nullable=False),
    Column("window_start_us", BigInteger, nullable=False),
    Column("window_end_us", BigInteger, nullable=False),
    Column("resolved_window_start_us", BigInteger, nullable=True),
    Column("report_url", Text, nullable=False),
)

alert_streaks = Table(
    "sluice_alert_streaks",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("streak", Integer, nullable=False),
    Column("last_window_start_us", BigInteger, nullable=False),
    Column("firing_alert_id", String(200), nullable=True),
    Column("resolved_at_us", BigInteger, nullable=True),
)

deliveries = Table(
    "sluice_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(200), nullable=False, index=True),
    Column("alert_status", String(20), nullable=False),
    Column("sink", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(20), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
)

delivery_attempts = Table(
    "sluice_delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", Integer, nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
)

jobs = Table(
    "sluice_jobs",
    metadata,
    Column("job_id", String(100), primary_key=True),
    Column("alert_id", String(200), nullable=False),
    Column("model", String(200), nullable=False, index=True),
    Column("version", String(200), nullable=False),
    Column("backend", String(20), nullable=False),
    Column("state", String(20), nullable=False, index=True),
    Column("submitted", Boolean, nullable=False),
    Column("window_end_us", BigInteger, nullable=False),
    Column("train_start_us", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("detail", Text, nullable=False, default=""),
)

model_versions = Table(
    "sluice_model_versions",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("version", String(200), primary_key=True),
    Column("uri", Text, nullable=False),
    Column("job_id", String(100), nullable=True),
    Column("metrics", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False),
)

window_parts = Table(
    "sluice_window_parts",
    metadata,
    Column("topic", String(250), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("version", String(200), primary_key=True),
    Column("window_start_us", BigInteger, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("window", LargeBinary, nullable=False),
    Column("skew", LargeBinary, nullable=True),
)

partition_marks = Table(
    "sluice_partition_marks",
    metadata,
    Column("topic", String(250), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("mark", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

merged_windows = Table(
    "sluice_merged_windows",
    metadata,
    Column("topic", String(250), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("version", String(200), primary_key=True),
    Column("window_start_us", BigInteger, primary_key=True),
    Column("window", LargeBinary, nullable=True),
    Column("merged_at", Float, nullable=False),
)


class StoreError(Exception):
    """The store URL cannot be used: not a URL, a driver that is not installed, or unreachable."""


def open_store(url: str) -> Engine:
    """An engine on the store at ``url``, with its tables created if they are missing.

    >>> open_store("postgres:/nowhere")
    Traceback (most recent call last):
    ...
    monitors.database.StoreError: store_url 'postgres:/nowhere' is not a SQLAlchemy URL (dialect+driver://user:password@host/database)
    """
    try:
        return _open(url)
    except (NoSuchModuleError, ModuleNotFoundError) as error:  # NoSuchModuleError is an ArgumentError
        raise StoreError(
            f"store_url {_safe(url)}: {error}; install the database driver "
            "(for PostgreSQL: pip install 'psycopg[binary]' and use postgresql+psycopg://)"
        ) from None
    except ArgumentError:
        raise StoreError(
            f"store_url {url!r} is not a SQLAlchemy URL (dialect+driver://user:password@host/database)"
        ) from None
    except (OperationalError, OSError) as error:
        reason = error.orig if isinstance(error, OperationalError) else error
        raise StoreError(f"cannot open the store at {_safe(url)}: {reason}") from None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def _open(url: str) -> Engine:
    sqlite = url.startswith("sqlite")
    memory = url in ("sqlite://", "sqlite:///:memory:")
    if sqlite and not memory:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if memory:  # one database shared by every thread, not one per connection
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url, connect_args={"timeout": 30} if sqlite else {})
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    _create_tables(engine)
    return engine


def _create_tables(engine: Engine, *, attempts: int = 5) -> None:
    """Create the missing tables. Monitors that start together race to create them (each checks, then
    creates): the loser's CREATE fails with "already exists" (PostgreSQL may say "duplicate key" of its
    catalog instead), and looking again finds the table."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as error:
            raced = "already exists" in str(error) or "duplicate key" in str(error)
            if not raced or attempt == attempts - 1:
                raise


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # an alert is on disk before the window's offsets are committed
    cursor.close()
