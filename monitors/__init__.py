"""Model monitoring: prediction events, drift and skew detectors, alerts and retraining.

Names are imported on first use, so that ``from monitors import PredictionLogger`` in inference code
does not load Numba and the metric kernels.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitors.detector import DriftDetector, WindowReport
    from monitors.logger import PredictionLogger
    from monitors.metrics import metric
    from monitors.profile import ReferenceProfile
    from monitors.window import ServingWindow

__all__ = [
    "DriftDetector",
    "PredictionLogger",
    "ReferenceProfile",
    "ServingWindow",
    "WindowReport",
    "metric",
]

_HOMES = {
    "DriftDetector": "monitors.detector",
    "PredictionLogger": "monitors.logger",
    "ReferenceProfile": "monitors.profile",
    "ServingWindow": "monitors.window",
    "WindowReport": "monitors.detector",
    "metric": "monitors.metrics",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'monitors' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
