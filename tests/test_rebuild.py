"""``sluice rebuild`` recomputes a view's offline rows from its topic, setting the old ones aside."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.repo import load_repo
from offline_store.dataset import OfflineDataset
from tests.streaming import (
    delete_topics,
    make_repo,
    produce,
    sluice,
    start_worker,
    stop,
    wait_until_committed,
)
from tests.test_stream_worker import transactions

pytestmark = pytest.mark.stack


def _final_values(repo: Path) -> pa.Table:
    """The dataset's value per (card, event time): the row with the highest source offset."""
    spec = load_repo(repo).spec("card_stats")
    table = OfflineDataset(spec=spec).read().drop_columns(["created_timestamp"])
    rows = sorted(
        table.to_pylist(), key=lambda row: (row["card_id"], row["event_timestamp"], row["source_offset"])
    )
    final = {(row["card_id"], row["event_timestamp"]): row for row in rows}
    return pa.Table.from_pylist(
        [{k: v for k, v in row.items() if k != "source_offset"} for row in final.values()]
    )


def test_rebuild_sets_old_rows_aside_and_the_worker_recomputes_them_from_the_topic(
    tmp_path: Path, project: str, topic: str
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    group = f"sluice-{project}"
    events = transactions(8_000, cards=50, seed=3)
    worker = None
    try:
        produce(topic, events)
        worker = start_worker(repo, tmp_path / "first.log", "--batch-size", "700")
        wait_until_committed(group, topic, workers=[worker], timeout_s=120)

        # A running worker would commit over the rewind: refused, with what to do.
        refused = sluice(repo, "rebuild", "--view", "card_stats")
        assert refused.returncode == 1
        assert "stop every `sluice worker`" in refused.stderr
        stop(worker)
        worker = None
        first = _final_values(repo)

        # Rows as sluice wrote them before change points: per batch, under the batch source path.
        offline = repo / "offline"
        legacy = offline / "date=2026-01-01"
        legacy.mkdir()
        pq.write_table(
            pa.table({"card_id": [1], "txn_count_10s": [99]}), legacy / f"{topic}-00000-0-9.parquet"
        )

        for _attempt in range(30):  # the group's members leave a moment after the worker exits
            rebuilt = sluice(repo, "rebuild", "--view", "card_stats")
            if rebuilt.returncode == 0 or "active member" not in rebuilt.stderr:
                break
            time.sleep(1)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "group rewound on" in rebuilt.stdout
        assert not (offline / "card_stats").exists() and not legacy.exists()
        aside = sorted(path.name for path in offline.iterdir())
        assert any(name.startswith(".card_stats.before-rebuild-") for name in aside)
        assert any(name.startswith(".legacy-rows.before-rebuild-") for name in aside)

        # A different batch size: the rebuilt values do not depend on how the first run batched.
        worker = start_worker(repo, tmp_path / "second.log", "--batch-size", "3000")
        wait_until_committed(group, topic, workers=[worker], timeout_s=120)
        stop(worker)
        worker = None
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")

    second = _final_values(repo)
    assert second.num_rows == first.num_rows > 0
    order = [("card_id", "ascending"), ("event_timestamp", "ascending")]
    before, after = first.sort_by(order).to_pandas(), second.sort_by(order).to_pandas()
    # Sums merged from panes in another order may differ in the last bits; counts and times not at all.
    pd.testing.assert_frame_equal(after, before, check_exact=False, rtol=1e-9)
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
