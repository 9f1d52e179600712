"""The stream worker's watch over its Redis: when Redis comes back empty, refill it from the offline store.

Every ``CHECK_EVERY_S`` the worker asks ``online_store.resets.ResetWatch`` whether Redis restarted without
its data. If so, one worker of the group (the one that claims the rebuild) writes each of its views' latest
offline rows back, beside the stream, counts it in ``sluice_online_store_resets_total`` and logs it. While
Redis is down the check fails quietly: the writes already report the outage and retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import redis

from features.spec import FeatureViewSpec
from offline_store.materialize import materialize
from online_store.resets import CHECK_EVERY_S, ResetWatch
from streams.metrics import WorkerMetrics

__all__ = ["watch_resets"]

log = logging.getLogger("sluice.worker")


async def watch_resets(watch: ResetWatch, specs: Sequence[FeatureViewSpec], metrics: WorkerMetrics) -> None:
    """Run until cancelled."""
    while True:
        try:
            run_id = await asyncio.to_thread(watch.emptied)
            if run_id is not None and await asyncio.to_thread(watch.claim_rebuild, run_id):
                metrics.online_resets.inc()
                log.error(
                    "Redis restarted empty (run id %s): rebuilding %s from the offline store",
                    run_id,
                    ", ".join(spec.name for spec in specs),
                )
                for spec in specs:
                    report = await asyncio.to_thread(materialize, spec, watch.client)
                    log.warning("rebuilt after the Redis restart: %s", report.describe())
        except (redis.RedisError, OSError) as error:
            log.debug("could not check Redis for a restart (%r); trying again", error)
        await asyncio.sleep(CHECK_EVERY_S)
