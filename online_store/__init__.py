"""The online store: Redis in Feast's layout, read on the inference hot path.

Keep this package light to import: no pandas, no Evidently, no Feast repo loading.
"""

from online_store.connection import OnlineStoreUnavailable, connect

__all__ = ["OnlineStoreUnavailable", "connect"]
