"""Read online features at inference time: ``OnlineClient`` and, for asyncio servers, ``AsyncOnlineClient``.

Example (with the fraud example applied and streamed)::

    client = OnlineClient(repo_path="examples/fraud")
    client.get_online_features(
        features=["card_transaction_stats:amount_sum_1h"], entity_rows=[{"card_id": 7}]
    )
    # {'card_id': [7], 'amount_sum_1h': [42.5]}

Each call makes one Redis round trip, whatever the number of entities and views; on a Redis Cluster,
one per primary that holds a key, all at once (``online_store.cluster``). The import path stays light:
no pandas, no Feast; the registry is read by ``online_store.catalog``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from redis.cluster import RedisCluster

from features.config import SluiceConfig, load_config
from online_store.catalog import Catalog, load_catalog
from online_store.cluster import ClusterWire
from online_store.connection import OnlineStoreUnavailable, client, connect, describe_config
from online_store.on_demand import OnDemandPlan
from online_store.reads import FeatureVectors, PlanCache, ReadPlan, entity_columns
from online_store.registry_cache import CatalogCache
from online_store.wire import fetch, fetch_async

__all__ = ["AsyncOnlineClient", "EntityRows", "OnlineClient"]

EntityRows = Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]
"""A list of ``{join_key: value}`` rows, or a dict of join key columns."""


@dataclass(frozen=True, kw_only=True)
class _Setup:
    """What both clients share: the config, the refreshed catalog and the cached read plans."""

    config: SluiceConfig
    catalogs: CatalogCache
    plans: PlanCache

    @classmethod
    def create(cls, repo_path: str | Path, config: SluiceConfig | None) -> _Setup:
        repo = Path(repo_path).resolve()
        config = config or load_config(repo)
        location = config.registry.location(repo)
        project = config.project
        catalogs = CatalogCache(
            load=lambda: load_catalog(location, project=project),
            ttl_seconds=config.registry.cache_ttl_seconds,
        )
        return cls(config=config, catalogs=catalogs, plans=PlanCache())

    def prepare(
        self,
        entity_rows: EntityRows,
        features: Sequence[str] | None,
        feature_service: str | None,
        full_feature_names: bool,
        request_data: Mapping[str, Sequence[Any]] | None = None,
        *,
        cluster: bool = False,
    ) -> _Read:
        """Everything a read needs before its round trip: the plan, the key columns, the packed commands
        (one payload for one Redis, or each command with its key for a cluster)."""
        plan = self.plans.plan(
            self.catalogs.catalog,
            features=features,
            feature_service=feature_service,
            full_feature_names=full_feature_names,
        )
        if request_data:
            columns = entity_columns(entity_rows, plan.join_keys)
            columns.update({name: list(values) for name, values in request_data.items()})
            columns = entity_columns(columns, plan.join_keys, plan.request_fields)
        else:
            columns = entity_columns(entity_rows, plan.join_keys, plan.request_fields)
        if cluster:
            keys, commands = plan.cluster_request(columns)
            return _Read(
                plan=plan, columns=columns, payload=b"", count=len(keys), keys=keys, commands=commands
            )
        payload, count = plan.request(columns)
        return _Read(plan=plan, columns=columns, payload=payload, count=count)

    def unavailable(self, error: Exception) -> OnlineStoreUnavailable:
        where = describe_config(self.config.redis)
        return OnlineStoreUnavailable(f"cannot read from Redis at {where}: {error}")


@dataclass(frozen=True, kw_only=True)
class _Read:
    plan: ReadPlan | OnDemandPlan
    columns: dict[str, list[Any]]
    payload: bytes
    count: int
    keys: list[bytes] | None = None
    commands: list[bytes] | None = None

    def replies_from(self, wire: ClusterWire) -> list[list[bytes | None]]:
        assert self.keys is not None and self.commands is not None
        return wire.read(self.keys, self.commands)

    def result(self, replies: list[list[bytes | None]]) -> FeatureVectors:
        return self.plan.decode(self.columns, replies, now_us=time.time_ns() // 1000)


class OnlineClient:
    """Reads features from Redis in Feast's layout; the registry is cached and refreshed off the read path."""

    def __init__(
        self,
        *,
        repo_path: str | Path = ".",
        config: SluiceConfig | None = None,
        redis_client: redis.Redis | RedisCluster | None = None,
    ) -> None:
        """``repo_path`` holds ``sluice.yaml``; ``config`` replaces it. Redis is checked with a PING."""
        self._setup = _Setup.create(repo_path, config)
        self.config = self._setup.config
        self._redis = redis_client or connect(self.config.redis)
        self._wire = ClusterWire.of(self._redis) if isinstance(self._redis, RedisCluster) else None

    @property
    def catalog(self) -> Catalog:
        """The registry's feature views and services, as of the last refresh."""
        return self._setup.catalogs.catalog

    def refresh_registry(self) -> None:
        """Reload the registry now rather than at the next background refresh."""
        self._setup.catalogs.refresh()

    def get_online_features(
        self,
        *,
        entity_rows: EntityRows,
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        include_event_timestamps: bool = False,
        include_status: bool = False,
        request_data: Mapping[str, Sequence[Any]] | None = None,
    ) -> dict[str, list[Any]]:
        """Feature values per entity row, shaped like Feast's ``OnlineResponse.to_dict()``.

        ``include_event_timestamps`` adds ``<feature>__ts`` columns (seconds), and ``include_status``
        adds ``<feature>__status`` columns: PRESENT, NULL_VALUE, NOT_FOUND or OUTSIDE_MAX_AGE. Values
        older than their view's ttl come back as None. On-demand views are computed from their
        sources; their request data comes in the entity rows (as in Feast) or in ``request_data``,
        a dict of columns.
        """
        vectors = self.read(
            entity_rows=entity_rows,
            features=features,
            feature_service=feature_service,
            full_feature_names=full_feature_names,
            request_data=request_data,
        )
        return vectors.to_dict(
            include_event_timestamps=include_event_timestamps, include_status=include_status
        )

    def read(
        self,
        *,
        entity_rows: EntityRows,
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Sequence[Any]] | None = None,
    ) -> FeatureVectors:
        """The same read, as columns of values, statuses and event times."""
        wire = self._wire
        read = self._setup.prepare(
            entity_rows, features, feature_service, full_feature_names, request_data, cluster=wire is not None
        )
        try:
            replies = (
                fetch(self._redis, read.payload, read.count)  # type: ignore[arg-type]
                if wire is None
                else read.replies_from(wire)
            )
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._setup.unavailable(error) from error
        return read.result(replies)

    def close(self) -> None:
        self._setup.catalogs.close()
        self._redis.close()

    def __enter__(self) -> OnlineClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncOnlineClient:
    """``OnlineClient`` for asyncio code: the same reads, awaited on ``redis.asyncio``.

    On a Redis Cluster a read runs the synchronous cluster read in a worker thread (its nodes are
    still asked at once); the cluster's client is made on the first call, so a server starts while
    the cluster is away."""

    def __init__(
        self,
        *,
        repo_path: str | Path = ".",
        config: SluiceConfig | None = None,
        redis_client: redis.asyncio.Redis | None = None,
    ) -> None:
        self._setup = _Setup.create(repo_path, config)
        self.config = self._setup.config
        self._cluster: RedisCluster | None = None
        self._redis = redis_client or redis.asyncio.Redis.from_url(
            self.config.redis.url, **self.config.redis.client_kwargs()
        )
        self._is_cluster = redis_client is None and self.config.redis.redis_type == "redis_cluster"

    async def _cluster_wire(self) -> ClusterWire:
        if self._cluster is None:
            made = await asyncio.to_thread(client, self.config.redis)
            assert isinstance(made, RedisCluster)
            self._cluster = made
        return ClusterWire.of(self._cluster)

    @property
    def catalog(self) -> Catalog:
        return self._setup.catalogs.catalog

    async def ping(self) -> None:
        """Check that Redis answers; raises ``OnlineStoreUnavailable`` naming the address."""
        try:
            if self._is_cluster:
                wire = await self._cluster_wire()
                await asyncio.to_thread(wire.cluster.ping)
            else:
                await self._redis.ping()  # type: ignore[misc]
        except (redis.ConnectionError, redis.TimeoutError, redis.RedisClusterException, OSError) as error:
            raise self._setup.unavailable(error) from error

    async def get_online_features(
        self,
        *,
        entity_rows: EntityRows,
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        include_event_timestamps: bool = False,
        include_status: bool = False,
        request_data: Mapping[str, Sequence[Any]] | None = None,
    ) -> dict[str, list[Any]]:
        """See ``OnlineClient.get_online_features``."""
        vectors = await self.read(
            entity_rows=entity_rows,
            features=features,
            feature_service=feature_service,
            full_feature_names=full_feature_names,
            request_data=request_data,
        )
        return vectors.to_dict(
            include_event_timestamps=include_event_timestamps, include_status=include_status
        )

    async def read(
        self,
        *,
        entity_rows: EntityRows,
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Sequence[Any]] | None = None,
    ) -> FeatureVectors:
        read = self._setup.prepare(
            entity_rows, features, feature_service, full_feature_names, request_data, cluster=self._is_cluster
        )
        try:
            if self._is_cluster:
                wire = await self._cluster_wire()
                replies = await asyncio.to_thread(read.replies_from, wire)
            else:
                replies = await fetch_async(self._redis, read.payload, read.count)
        except (redis.ConnectionError, redis.TimeoutError, redis.RedisClusterException, OSError) as error:
            raise self._setup.unavailable(error) from error
        return read.result(replies)

    async def close(self) -> None:
        self._setup.catalogs.close()
        await self._redis.aclose()
        if self._cluster is not None:
            self._cluster.close()

    async def __aenter__(self) -> AsyncOnlineClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
