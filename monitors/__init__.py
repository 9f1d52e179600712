"""Model monitoring: prediction events, drift and skew detectors, alerts and retraining.

Its public API arrives with the detectors (issue 5) and alerts and retraining (issue 6).
"""

__all__: list[str] = []
