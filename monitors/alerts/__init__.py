"""Drift alerts: rules that turn drifting windows into alerts, the store, delivery, and subscriptions.

    from monitors import alerts

    for alert in alerts.subscribe(model="fraud"):
        print(alert.summary, alert.report_url)

Names load on first use, so that subscribing does not load the detectors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitors.alerts.alert import Alert
    from monitors.alerts.rules import AlertRules
    from monitors.alerts.store import AlertStore
    from monitors.alerts.subscription import Subscription, on_alert, subscribe

__all__ = ["Alert", "AlertRules", "AlertStore", "Subscription", "on_alert", "subscribe"]

_HOMES = {
    "Alert": "monitors.alerts.alert",
    "AlertRules": "monitors.alerts.rules",
    "AlertStore": "monitors.alerts.store",
    "Subscription": "monitors.alerts.subscription",
    "on_alert": "monitors.alerts.subscription",
    "subscribe": "monitors.alerts.subscription",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'monitors.alerts' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
