"""The offline store: the Parquet dataset that is the source of truth, and point-in-time reads of it."""

from offline_store.historical import RetrievalError, TrainingSet, get_historical_features

__all__ = ["RetrievalError", "TrainingSet", "get_historical_features"]
