"""What each kind of receiver is sent for one alert change: Slack, Alertmanager, CloudEvents.

- ``slack``: an incoming-webhook message, ``text`` plus Block Kit ``blocks``.
- ``alertmanager``: Alertmanager's webhook body, version 4 (status, alerts[] with labels, annotations,
  startsAt, endsAt, generatorURL and fingerprint), so tools that take Alertmanager webhooks take ours.
- ``cloudevents``: a CloudEvents 1.0 JSON event (structured mode), type ``io.sluice.alert.firing`` or
  ``io.sluice.alert.resolved``, with the alert as data; the Kafka alerts topic carries the same event.

>>> from monitors.alerts.alert import Alert
>>> alert = Alert.firing(model="fraud", version="1", feature="amount", metric="ks", severity="critical",
...     value=0.001, threshold=0.05, window_start_us=0, window_end_us=5_000_000, report_url="file:///r.html")
>>> body = alertmanager(alert)
>>> body["version"], body["status"], body["alerts"][0]["labels"]["alertname"], body["alerts"][0]["endsAt"]
('4', 'firing', 'FeatureDrift', '0001-01-01T00:00:00Z')
>>> cloudevent(alert)["type"]
'io.sluice.alert.firing'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from monitors.alerts.alert import Alert

__all__ = ["alertmanager", "cloudevent", "cloudevent_id", "render", "slack"]

EVENT_SOURCE = "sluice/monitor"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended yet"


def render(kind: str, alert: Alert) -> dict[str, Any]:
    renderers = {"slack": slack, "alertmanager": alertmanager, "cloudevents": cloudevent}
    if kind not in renderers:
        raise ValueError(f"unknown webhook kind {kind!r}; use one of {', '.join(sorted(renderers))}")
    return renderers[kind](alert)


def slack(alert: Alert) -> dict[str, Any]:
    icon = ":rotating_light:" if alert.status == "firing" else ":white_check_mark:"
    title = f"{icon} [{alert.status.upper()}] {alert.severity}: {alert.summary}"
    window = f"window {_rfc3339(alert.starts_at)}"
    return {
        "text": title,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"{window} · fingerprint `{alert.fingerprint}`"},
                    {"type": "mrkdwn", "text": f"<{alert.report_url}|drift report>"},
                ],
            },
        ],
    }


def alertmanager(alert: Alert, *, receiver: str = "sluice") -> dict[str, Any]:
    labels = {
        "alertname": "FeatureDrift",
        "model": alert.model,
        "version": alert.version,
        "feature": alert.feature,
        "metric": alert.metric,
        "severity": alert.severity,
    }
    annotations = {
        "summary": alert.summary,
        "value": "" if alert.value is None else repr(alert.value),
        "threshold": repr(alert.threshold),
        "report_url": alert.report_url,
        "alert_id": alert.id,
    }
    group = {"alertname": "FeatureDrift", "model": alert.model}
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f'{key}="{value}"' for key, value in group.items()) + "}",
        "truncatedAlerts": 0,
        "status": alert.status,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": alert.report_url,
        "alerts": [
            {
                "status": alert.status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _rfc3339(alert.starts_at),
                "endsAt": _rfc3339(alert.ends_at) if alert.ends_at else _ZERO_TIME,
                "generatorURL": alert.report_url,
                "fingerprint": alert.fingerprint,
            }
        ],
    }


def cloudevent_id(alert: Alert) -> str:
    """One id per alert change: a receiver that sees it twice knows it is the same event."""
    return f"{alert.id}:{alert.status}"


def cloudevent(alert: Alert) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": cloudevent_id(alert),
        "source": EVENT_SOURCE,
        "type": f"io.sluice.alert.{alert.status}",
        "subject": alert.fingerprint,
        "time": _rfc3339(alert.ends_at or alert.starts_at),
        "datacontenttype": "application/json",
        "data": alert.to_record(),
    }


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
