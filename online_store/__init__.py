"""The online store: Redis in Feast's layout, read on the inference hot path.

Keep this package light to import: no pandas, no Evidently, no Feast repo loading.
"""

from online_store.client import AsyncOnlineClient, OnlineClient
from online_store.connection import OnlineStoreUnavailable, connect
from online_store.on_demand import OnDemandError
from online_store.reads import EntityRowError, UnknownFeatureError

__all__ = [
    "AsyncOnlineClient",
    "EntityRowError",
    "OnDemandError",
    "OnlineClient",
    "OnlineStoreUnavailable",
    "UnknownFeatureError",
    "connect",
]
