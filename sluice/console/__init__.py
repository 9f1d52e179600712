"""``sluice ui``: a read-only web console over the stores the CLI reads.

It runs in its own process, so it never competes with ``sluice serve`` for latency, and it only reads:
the feature repo's definitions, Kafka as an observer (committed offsets, end offsets, the dead-letter
topics, without a consumer group), Redis through ``AsyncOnlineClient``, the alert and job store, the
window scores and reference profiles, and MLflow's registry. Pages: an overview (health, freshness per
partition, ingest rate, lag, dead letters by reason, firing alerts), feature views (definition, dead
letters, an entity lookup), models (versions, profile, scores over time with thresholds and alerts,
each window's Evidently report) and alerts and jobs (deliveries, attempts, logs).
"""

from __future__ import annotations

from features.repo import FeatureRepo
from sluice.console.app import ConsoleSettings, create_console
from sluice.console.pages import Sources

__all__ = ["ConsoleSettings", "Sources", "create_console", "open_sources"]


def open_sources(repo: FeatureRepo) -> Sources:
    """The stores of a loaded repo (Kafka and Redis connect on first use); raises
    ``monitors.database.StoreError`` for an alert store URL that cannot be used."""
    from monitors.database import open_store
    from online_store.catalog import CatalogError
    from online_store.client import AsyncOnlineClient
    from sluice.console.kafka_state import KafkaState

    config = repo.config
    try:
        online: AsyncOnlineClient | None = AsyncOnlineClient(repo_path=repo.path, config=config)
    except CatalogError:  # not applied yet: the overview says Redis cannot be read, the rest still shows
        online = None
    return Sources(
        repo=repo,
        online=online,
        kafka=KafkaState(config=config.kafka),
        engine=open_store(config.store_url),
    )
