"""Deliver queued alerts to their sinks: retry with backoff, record every attempt, never drop one.

Sinks are the Kafka alerts topic and the webhooks of ``alerts.webhooks`` (URLs and headers come from
config only). Each change of an alert is rendered once per sink when it is queued (``AlertStore.apply``),
so a retry, even after a restart, sends the same bytes. A failed attempt waits ``initial`` seconds, then
twice that, up to ``maximum``, and the delivery stays pending until a sink accepts it. Each sink has a
lane of its own (a thread): a receiver that accepts a connection and never answers holds up only its
own deliveries, for its timeout, never another sink's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

from features.monitoring_config import WebhookConfig
from monitors.alerts.alert import Alert
from monitors.alerts.payloads import cloudevent, render
from monitors.alerts.store import AlertStore, Delivery

__all__ = ["Deliverer", "DeliveryError", "KafkaAlertSink", "Sink", "WebhookSink", "backoff"]

log = logging.getLogger("sluice.alerts")


class DeliveryError(RuntimeError):
    """A sink did not accept a payload; the message is kept as the attempt's detail."""


class Sink(Protocol):
    name: str

    def payload(self, alert: Alert) -> str: ...

    def send(self, payload: str) -> str:
        """Deliver; returns a short detail for the attempt log, raises DeliveryError on failure."""
        ...


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


class WebhookSink:
    """POSTs JSON to one configured URL."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.name = config.name or f"{config.kind}:{urlsplit(config.url).netloc}"

    def payload(self, alert: Alert) -> str:
        return _dumps(render(self.config.kind, alert))

    def send(self, payload: str) -> str:
        content_type = (
            "application/cloudevents+json" if self.config.kind == "cloudevents" else "application/json"
        )
        request = urllib.request.Request(  # noqa: S310 (the URL comes from the operator's config)
            self.config.url,
            data=payload.encode(),
            method="POST",
            headers={"Content-Type": content_type, "User-Agent": "sluice", **self.config.headers},
        )
        try:
            with _NO_REDIRECTS.open(request, timeout=self.config.timeout_s) as response:
                return f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            body = error.read()[:200].decode(errors="replace")
            raise DeliveryError(f"HTTP {error.code}: {body}") from None
        except (OSError, ValueError) as error:
            raise DeliveryError(f"{type(error).__name__}: {error}") from None


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would be re-sent as a GET without its body, with our headers (a bearer token)
    to wherever it points: a 3xx is a failed attempt instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


class KafkaAlertSink:
    """Produces each alert change to the alerts topic as a CloudEvent in Kafka's binary mode, keyed by
    fingerprint, so one alert's changes stay in order on one partition."""

    def __init__(self, *, producer: Any, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.name = f"kafka:{topic}"

    def payload(self, alert: Alert) -> str:
        return _dumps(cloudevent(alert))

    def send(self, payload: str) -> str:
        event = json.loads(payload)
        headers = [
            (f"ce_{name}", str(event[name]).encode())
            for name in ("specversion", "id", "source", "type", "subject", "time")
        ]
        headers.append(("content-type", b"application/json"))
        try:
            future = self.producer.send(
                self.topic,
                key=event["subject"].encode(),
                value=_dumps(event["data"]).encode(),
                headers=headers,
            )
            metadata = future.get(timeout=30)
        except Exception as error:  # kafka-python raises its own hierarchy; the detail is what matters
            raise DeliveryError(f"{type(error).__name__}: {error}") from None
        return f"partition {metadata.partition} offset {metadata.offset}"


def backoff(attempts: int, *, initial: float, maximum: float) -> float:
    """Seconds to wait after the ``attempts``-th failure.

    >>> [backoff(n, initial=1, maximum=10) for n in range(1, 6)]
    [1.0, 2.0, 4.0, 8.0, 10]
    """
    return min(initial * float(2 ** (attempts - 1)), maximum)


class Deliverer:
    """Sends due deliveries, in a background thread or on demand."""

    def __init__(
        self,
        *,
        store: AlertStore,
        sinks: Sequence[Sink],
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        on_attempt: Callable[[str, bool], None] | None = None,
    ) -> None:
        """``on_attempt(sink, ok)`` is told of every attempt (the monitor counts them for Prometheus)."""
        self.store = store
        self.on_attempt = on_attempt
        self.sinks = {sink.name: sink for sink in sinks}
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._clock = clock
        self._stop = threading.Event()
        self._lanes: list[threading.Event] = []
        self._threads: list[threading.Thread] = []

    def payloads(self, alert: Alert) -> list[tuple[str, str]]:
        """What ``AlertStore.apply`` queues for one alert change: one body per sink."""
        return [(name, sink.payload(alert)) for name, sink in self.sinks.items()]

    def deliver_due(self, *, sink: str | None = None) -> int:
        """Try every delivery that is due now (to ``sink`` only, when given); returns how many succeeded.
        A sink that fails is not tried again in the same round, so a receiver that is down costs one
        timeout per round."""
        delivered = 0
        failing: set[str] = set()
        due = self.store.due(now=self._clock(), sinks=None if sink is None else [sink])
        for delivery in due:
            if delivery.sink in failing:
                continue
            if self._attempt(delivery):
                delivered += 1
            else:
                failing.add(delivery.sink)
        return delivered

    def _deliver_orphans(self) -> int:
        """Deliveries to sinks no longer configured: each attempt records why it cannot be sent."""
        due = self.store.due(now=self._clock(), other_than=list(self.sinks))
        return sum(self._attempt(delivery) for delivery in due)

    def _attempt(self, delivery: Delivery) -> bool:
        sink = self.sinks.get(delivery.sink)
        now = self._clock()
        if sink is None:
            ok, detail = False, f"sink {delivery.sink!r} is not configured any more"
        else:
            try:
                ok, detail = True, sink.send(delivery.payload)
            except DeliveryError as error:
                ok, detail = False, str(error)
            except Exception as error:  # http.client's protocol errors, and whatever else a sink raises
                ok, detail = False, f"{type(error).__name__}: {error}"
        wait = backoff(delivery.attempts + 1, initial=self.retry_initial_s, maximum=self.retry_max_s)
        self.store.record_attempt(delivery, ok=ok, detail=detail, now=now, retry_at=now + wait)
        if self.on_attempt is not None:
            self.on_attempt(delivery.sink, ok)
        if not ok:
            log.warning(
                "alert %s to %s failed (attempt %d, next in %.0f s): %s",
                delivery.alert_id,
                delivery.sink,
                delivery.attempts + 1,
                wait,
                detail,
            )
        return ok

    def wake(self) -> None:
        for lane in self._lanes:
            lane.set()

    def start(self, *, interval_s: float = 1.0) -> None:
        """One thread per sink, and one for deliveries to sinks no longer configured."""

        def lane(name: str, deliver: Callable[[], int], wake: threading.Event) -> threading.Thread:
            def loop() -> None:
                while not self._stop.is_set():
                    try:
                        deliver()
                    except Exception:  # a store outage must not end deliveries for good
                        log.exception("delivering alerts to %s failed; trying again", name)
                    wake.wait(interval_s)
                    wake.clear()

            return threading.Thread(target=loop, name=f"sluice-alert-delivery:{name}", daemon=True)

        self._lanes = [threading.Event() for _ in range(len(self.sinks) + 1)]
        deliveries: list[tuple[str, Callable[[], int]]] = [
            (name, partial(self.deliver_due, sink=name)) for name in self.sinks
        ]
        deliveries.append(("removed sinks", self._deliver_orphans))
        self._threads = [
            lane(name, deliver, wake) for (name, deliver), wake in zip(deliveries, self._lanes, strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the lanes; one still waiting on a receiver is left behind (its thread is a daemon) after
        ``timeout_s`` in all."""
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
