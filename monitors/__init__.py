"""Model monitoring: prediction events, drift and skew detectors, alerts and retraining.

Names are imported on first use, so that ``from monitors import PredictionLogger`` in inference code
does not load Numba and the metric kernels.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitors.drift.detector import DriftDetector, WindowReport
    from monitors.drift.metrics import metric
    from monitors.drift.profile import ReferenceProfile
    from monitors.drift.window import ServingWindow
    from monitors.events.logger import PredictionLogger

__all__ = [
    "DriftDetector",
    "PredictionLogger",
    "ReferenceProfile",
    "ServingWindow",
    "WindowReport",
    "metric",
]

_HOMES = {
    "DriftDetector": "monitors.drift.detector",
    "PredictionLogger": "monitors.events.logger",
    "ReferenceProfile": "monitors.drift.profile",
    "ServingWindow": "monitors.drift.window",
    "WindowReport": "monitors.drift.detector",
    "metric": "monitors.drift.metrics",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'monitors' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
