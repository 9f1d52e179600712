"""The alert store: alerts, the streaks that lead to them, and the delivery outbox, in one SQL database.

``apply`` runs the rules over one window in one transaction: it reads the streaks, writes the new ones,
the alerts that fired or resolved, and one pending delivery per sink for each change. A crash before
the commit changes nothing (the window is replayed); after it, every delivery is in the outbox, and
``monitors.alerts.delivery`` sends it, however many restarts that takes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from monitors.alerts.alert import Alert
from monitors.alerts.rules import AlertRules, Streak
from monitors.database import alert_streaks, alerts, deliveries, delivery_attempts
from monitors.drift.detector import WindowReport

__all__ = ["AlertStore", "Attempt", "Delivery"]


@dataclass(frozen=True, kw_only=True)
class Delivery:
    id: int
    alert_id: str
    alert_status: str
    sink: str
    payload: str
    state: str
    attempts: int
    next_attempt_at: float


@dataclass(frozen=True, kw_only=True)
class Attempt:
    delivery_id: int
    at: float
    ok: bool
    detail: str


class AlertStore:
    def __init__(self, *, engine: Engine) -> None:
        self.engine = engine

    def apply(
        self,
        report: WindowReport,
        rules: AlertRules,
        *,
        payloads: Callable[[Alert], Sequence[tuple[str, str]]],
        now: float,
        before_queue: Callable[[list[Alert]], None] | None = None,
    ) -> list[Alert]:
        """Run the rules over ``report``; store the changes and queue ``payloads(alert)``, (sink, body)
        pairs, for delivery. ``before_queue(changes)`` runs first when there are changes (it writes the
        report the alerts link to). Returns the alerts that fired or resolved."""
        keys = rules.fingerprints(report)
        with self.engine.begin() as connection:
            streaks = self._streaks(connection, keys)
            changes = rules.evaluate(report, streaks)
            if changes and before_queue is not None:
                before_queue(changes)
            for key in keys:
                self._save_streak(connection, key, streaks[key])
            for alert in changes:
                self._save_alert(connection, alert)
                for sink, body in payloads(alert):
                    connection.execute(
                        insert(deliveries).values(
                            alert_id=alert.id,
                            alert_status=alert.status,
                            sink=sink,
                            payload=body,
                            state="pending",
                            attempts=0,
                            next_attempt_at=now,
                        )
                    )
        return changes

    def record(
        self, changes: Sequence[Alert], *, payloads: Callable[[Alert], Sequence[tuple[str, str]]], now: float
    ) -> None:
        """Store alerts that fired or resolved outside the rules (the monitor's own failures) and queue
        their deliveries, in one transaction."""
        with self.engine.begin() as connection:
            for alert in changes:
                self._save_alert(connection, alert)
                for sink, body in payloads(alert):
                    connection.execute(
                        insert(deliveries).values(
                            alert_id=alert.id,
                            alert_status=alert.status,
                            sink=sink,
                            payload=body,
                            state="pending",
                            attempts=0,
                            next_attempt_at=now,
                        )
                    )

    def alerts(self, *, model: str | None = None, status: str | None = None, limit: int = 100) -> list[Alert]:
        """The latest alerts first."""
        query = select(alerts).order_by(alerts.c.window_start_us.desc(), alerts.c.id).limit(limit)
        if model is not None:
            query = query.where(alerts.c.model == model)
        if status is not None:
            query = query.where(alerts.c.status == status)
        with self.engine.connect() as connection:
            return [Alert.from_record(dict(row._mapping)) for row in connection.execute(query)]

    def alert(self, alert_id: str) -> Alert | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        return Alert.from_record(dict(row._mapping)) if row else None

    def due(
        self,
        *,
        now: float,
        limit: int = 100,
        sinks: Collection[str] | None = None,
        other_than: Collection[str] = (),
    ) -> list[Delivery]:
        """Pending deliveries whose time has come, oldest first, to ``sinks`` (default: any) but not to
        ``other_than``; one waits while an earlier change of the same alert to the same sink is still
        pending, so "resolved" never overtakes "firing"."""
        earlier = deliveries.alias("earlier")
        blocked = (
            select(earlier.c.id)
            .where(
                earlier.c.alert_id == deliveries.c.alert_id,
                earlier.c.sink == deliveries.c.sink,
                earlier.c.state == "pending",
                earlier.c.id < deliveries.c.id,
            )
            .exists()
        )
        query = (
            select(deliveries)
            .where(deliveries.c.state == "pending", deliveries.c.next_attempt_at <= now, ~blocked)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        if sinks is not None:
            query = query.where(deliveries.c.sink.in_(list(sinks)))
        if other_than:
            query = query.where(deliveries.c.sink.not_in(list(other_than)))
        with self.engine.connect() as connection:
            return [Delivery(**_delivery_fields(row._mapping)) for row in connection.execute(query)]

    def deliveries(self, *, alert_id: str | None = None) -> list[Delivery]:
        query = select(deliveries).order_by(deliveries.c.id)
        if alert_id is not None:
            query = query.where(deliveries.c.alert_id == alert_id)
        with self.engine.connect() as connection:
            return [Delivery(**_delivery_fields(row._mapping)) for row in connection.execute(query)]

    def pending(self) -> int:
        with self.engine.connect() as connection:
            query = select(func.count()).select_from(deliveries).where(deliveries.c.state == "pending")
            return int(connection.execute(query).scalar_one())

    def record_attempt(
        self, delivery: Delivery, *, ok: bool, detail: str, now: float, retry_at: float
    ) -> None:
        """Log one attempt; a success marks the delivery done, a failure schedules the next try."""
        with self.engine.begin() as connection:
            connection.execute(
                insert(delivery_attempts).values(delivery_id=delivery.id, at=now, ok=ok, detail=detail[:2000])
            )
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery.id)
                .values(
                    attempts=deliveries.c.attempts + 1,
                    state="delivered" if ok else "pending",
                    delivered_at=now if ok else None,
                    next_attempt_at=now if ok else retry_at,
                )
            )

    def attempts(self, delivery_id: int) -> list[Attempt]:
        query = (
            select(delivery_attempts)
            .where(delivery_attempts.c.delivery_id == delivery_id)
            .order_by(delivery_attempts.c.id)
        )
        with self.engine.connect() as connection:
            return [
                Attempt(delivery_id=row.delivery_id, at=row.at, ok=row.ok, detail=row.detail)
                for row in connection.execute(query)
            ]

    def _streaks(self, connection: Connection, keys: list[str]) -> dict[str, Streak]:
        rows = connection.execute(select(alert_streaks).where(alert_streaks.c.fingerprint.in_(keys))).all()
        firing_ids = [row.firing_alert_id for row in rows if row.firing_alert_id]
        firing = {
            row.id: Alert.from_record(dict(row._mapping))
            for row in connection.execute(select(alerts).where(alerts.c.id.in_(firing_ids)))
        }
        return {
            row.fingerprint: Streak(
                streak=row.streak,
                last_window_start_us=row.last_window_start_us,
                firing=firing.get(row.firing_alert_id) if row.firing_alert_id else None,
                resolved_at_us=row.resolved_at_us,
            )
            for row in rows
        }

    def _save_streak(self, connection: Connection, key: str, streak: Streak) -> None:
        values: dict[str, Any] = {
            "streak": streak.streak,
            "last_window_start_us": streak.last_window_start_us,
            "firing_alert_id": streak.firing.id if streak.firing else None,
            "resolved_at_us": streak.resolved_at_us,
        }
        changed = connection.execute(
            update(alert_streaks).where(alert_streaks.c.fingerprint == key).values(**values)
        )
        if changed.rowcount == 0:
            connection.execute(insert(alert_streaks).values(fingerprint=key, **values))

    def _save_alert(self, connection: Connection, alert: Alert) -> None:
        record = alert.to_record()
        changed = connection.execute(update(alerts).where(alerts.c.id == alert.id).values(**record))
        if changed.rowcount == 0:
            connection.execute(insert(alerts).values(**record))


def _delivery_fields(mapping: Any) -> dict[str, Any]:
    return {name: mapping[name] for name in Delivery.__dataclass_fields__}
