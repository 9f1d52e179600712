"""Where a restart without a usable snapshot starts to replay: event-time checkpoints in the commit.

A partition's window state needs only the records whose events its windows can still hold; the rest of
the retained history is dead weight on a restart. Kafka's record timestamps are not event times (a
producer sets them, a replayed or backfilled topic carries old events with new timestamps), so a worker
keeps its own: with each commit of a partition it writes, in the commit's metadata, a few checkpoints
per view, ``(offset, the newest accepted event time before that offset)``.

Replay may start at a checkpoint whose newest time is below ``the newest time at the commit - the
watermark delay - the longest window - its slide`` (``replay_start``): every record before it holds an
event older than that, so it is in no pane the state keeps (the ring reaches back by the window and the
delay), its expiry rows were emitted before the commit, and it cannot make a later event late, since
the replay starts with the checkpoint's newest time as the partition's. A view without aggregations
keeps no window state: it starts at the commit itself. Records a retention has deleted are skipped as
before.

Each view keeps at most ``KEPT`` checkpoints per partition: the latest one that is already a valid start,
and then one per eighth of the horizon, so that a later restart finds one within an eighth of the best.

>>> horizon = 100
>>> kept = []
>>> for offset, newest in [(10, 0), (20, 50), (30, 90), (40, 160), (50, 300)]:
...     kept = keep(kept, Checkpoint(offset=offset, newest_us=newest), horizon_us=horizon)
>>> [checkpoint.offset for checkpoint in kept]
[40, 50]
>>> replay_start(kept, horizon_us=horizon)
Checkpoint(offset=40, newest_us=160)
>>> parse_metadata(metadata({"card_stats": kept}))["card_stats"] == kept
True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from features.spec import FeatureViewSpec

__all__ = [
    "KEPT",
    "MAX_METADATA_BYTES",
    "Checkpoint",
    "horizon_us",
    "keep",
    "metadata",
    "parse_metadata",
    "replay_start",
]

log = logging.getLogger(__name__)

KEPT = 10
"""Checkpoints kept per view and partition."""
MAX_METADATA_BYTES = 3000
"""Under the broker's ``offset.metadata.max.bytes`` (4096 by default), or the commit is refused."""
_FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """Every accepted event before ``offset`` has an event time at or before ``newest_us``."""

    offset: int
    newest_us: int


def horizon_us(spec: FeatureViewSpec) -> int | None:
    """How far behind the newest event time a view's state reaches: the watermark delay, the longest
    window and the longest slide; None for a view without aggregations (no window state)."""
    if not spec.aggregations:
        return None
    window = max(int(aggregation.window.total_seconds() * 1_000_000) for aggregation in spec.aggregations)
    slide = max(int(aggregation.slide.total_seconds() * 1_000_000) for aggregation in spec.aggregations)
    return int(spec.watermark_delay.total_seconds() * 1_000_000) + window + slide


def replay_start(checkpoints: Sequence[Checkpoint], *, horizon_us: int | None) -> Checkpoint | None:
    """Where to replay from, given the checkpoints up to the commit (the last one is at the commit):
    the latest one far enough behind it, or None (replay everything retained)."""
    if not checkpoints:
        return None
    last = checkpoints[-1]
    if horizon_us is None:
        return last
    usable = [checkpoint for checkpoint in checkpoints if checkpoint.newest_us < last.newest_us - horizon_us]
    return usable[-1] if usable else None


def keep(
    checkpoints: Sequence[Checkpoint], checkpoint: Checkpoint, *, horizon_us: int | None
) -> list[Checkpoint]:
    """The checkpoints worth keeping once ``checkpoint`` (at a later offset) is added."""
    if checkpoints and checkpoint.offset <= checkpoints[-1].offset:
        return list(checkpoints)
    ordered = [*checkpoints, checkpoint]
    if horizon_us is None:
        return [checkpoint]
    start = replay_start(ordered, horizon_us=horizon_us)
    # Older than today's start: a later restart's start is at or after today's, so never one of these.
    if start is not None:
        ordered = ordered[ordered.index(start) :]
    spacing = max(horizon_us // 8, 1)
    thinned: list[Checkpoint] = []
    for candidate in ordered:
        # The latest of each eighth of the horizon; the first (today's start) and the last always.
        if (
            thinned
            and len(thinned) > 1
            and candidate.newest_us // spacing == thinned[-1].newest_us // spacing
        ):
            thinned[-1] = candidate
        else:
            thinned.append(candidate)
    return [thinned[0], *thinned[-(KEPT - 1) :]] if len(thinned) > KEPT else thinned


def metadata(views: Mapping[str, Sequence[Checkpoint]]) -> str:
    """The commit metadata of one partition: each view's checkpoints, as compact JSON under
    ``MAX_METADATA_BYTES``: if all of them are too long, each view's first (its start) and last; if that
    is still too long, none (restarts without a snapshot then replay all that is retained)."""
    for shorten in (False, True):
        text = orjson.dumps(
            {
                "sluice": _FORMAT,
                "views": {
                    name: [
                        [checkpoint.offset, checkpoint.newest_us]
                        for checkpoint in (
                            [checkpoints[0], checkpoints[-1]] if shorten and checkpoints else checkpoints
                        )
                    ]
                    for name, checkpoints in views.items()
                },
            }
        ).decode()
        if len(text) <= MAX_METADATA_BYTES:
            return text
    log.warning("too many views share a topic for their checkpoints to fit a commit; restarts replay all")
    return ""


def parse_metadata(text: str | None) -> dict[str, list[Checkpoint]]:
    """The checkpoints in a commit's metadata; none for metadata that is not sluice's (or damaged)."""
    if not text:
        return {}
    try:
        data = orjson.loads(text)
        if not isinstance(data, dict) or data.get("sluice") != _FORMAT:
            return {}
        return {
            str(name): [Checkpoint(offset=int(offset), newest_us=int(newest)) for offset, newest in entries]
            for name, entries in data["views"].items()
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("the commit's metadata is not sluice's checkpoints; ignored")
        return {}
