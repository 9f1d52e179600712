"""Rebuild feature views' offline rows from their topics, for data an older sluice wrote.

sluice before change-point rows wrote one row per entity per micro-batch, directly under the batch
source path and with no ``source_offset``; those rows cannot be migrated, because the values between
batches were never computed. ``rebuild`` recomputes them instead: it sets the views' datasets (and the
old layout's ``date=`` folders) aside, never deleting them, and rewinds the worker group's offsets on
the views' topics to the earliest retained record. The next ``sluice worker`` then replays the topics:
the rebuilt views compute every row again, and the other views on the same topics find their rows
already in Parquet, so they only rebuild state and rewrite Redis from their files.

Only what the topic still retains can be rebuilt: rows before its earliest retained record are gone
from the rebuilt dataset (they stay in the folder set aside).
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from features.config import KafkaConfig
from features.spec import FeatureViewSpec
from offline_store.storage import Location

if TYPE_CHECKING:
    from kafka import KafkaAdminClient

__all__ = ["RebuildError", "RebuildReport", "rebuild"]

_T = TypeVar("_T")


class RebuildError(RuntimeError):
    """A rebuild that cannot start; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class RebuildReport:
    views: tuple[str, ...]
    set_aside: tuple[tuple[str, str], ...]
    """(folder, where it went) for every folder moved out of the way."""
    rewound: dict[str, dict[int, int]]
    """Topic to partition to the offset the group starts from again."""

    def describe(self) -> str:
        lines = [f"rebuilding {', '.join(self.views)}"]
        lines += [f"  set aside {source} -> {target}" for source, target in self.set_aside]
        for topic, offsets in self.rewound.items():
            where = ", ".join(f"{partition}@{offset}" for partition, offset in sorted(offsets.items()))
            lines.append(f"  group rewound on {topic}: {where}")
        lines.append("  run `sluice worker` to recompute, then `sluice verify`")
        return "\n".join(lines)


def rebuild(
    specs: Sequence[FeatureViewSpec], *, kafka: KafkaConfig, group: str, now: datetime | None = None
) -> RebuildReport:
    """Set the views' offline rows aside and rewind ``group`` on their topics to the earliest record.
    Refused while the group has members: a running worker would commit over the rewind."""
    from kafka import TopicPartition
    from kafka import errors as Errors
    from kafka.admin import OffsetSpec

    from streams.kafka_clients import admin_client

    if not specs:
        raise RebuildError("no feature view to rebuild")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    admin = admin_client(kafka)
    try:
        members = _members(admin, group)
        if members:
            raise RebuildError(
                f"consumer group {group} has {members} active member(s): stop every `sluice worker` "
                "of this project, then run the rebuild again"
            )
        set_aside = [moved for spec in specs for moved in _set_aside(spec, stamp)]
        rewound: dict[str, dict[int, int]] = {}
        for topic in dict.fromkeys(spec.topic for spec in specs):
            partitions = admin.describe_topics([topic])[0]["partitions"]
            specs_by_partition = {
                TopicPartition(topic, partition["partition_index"]): OffsetSpec.EARLIEST
                for partition in partitions
            }
            results = _retrying(partial(admin.reset_group_offsets, group, specs_by_partition))
            rewound[topic] = {}
            for partition, result in results.items():
                if result["error"] is not Errors.NoError:
                    raise RebuildError(
                        f"could not rewind {group} on {topic}[{partition.partition}]: {result['error']}"
                    )
                rewound[topic][partition.partition] = int(result["offset"])
    finally:
        admin.close()
    return RebuildReport(
        views=tuple(spec.name for spec in specs), set_aside=tuple(set_aside), rewound=rewound
    )


def _members(admin: KafkaAdminClient, group: str) -> int:
    """The group's active members (an unknown group has none)."""
    described = _retrying(lambda: admin.describe_groups([group])).get(group) or {}
    return len(described.get("members") or [])


def _retrying(call: Callable[[], _T], *, timeout_s: float = 30.0) -> _T:
    """``call()``, again while the broker answers with a retriable error: a fresh broker creates its
    group coordinator (``__consumer_offsets``) on the first group request."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaError as error:
            if not getattr(error, "retriable", False) or time.monotonic() > deadline:
                raise RebuildError(f"the broker refused a group request: {error}") from None
        time.sleep(0.5)


def _set_aside(spec: FeatureViewSpec, stamp: str) -> list[tuple[str, str]]:
    """Move the view's dataset, and the old layout's rows under its batch source path, out of the way."""
    moved = []
    root = Location.parse(spec.offline_path, spec.offline_store)
    if root.exists():
        target = root.at(posixpath.join(posixpath.dirname(root.path), f".{root.name}.before-rebuild-{stamp}"))
        root.move_to(target)
        moved.append((root.uri, target.uri))
    if not root.is_local:  # the old layout predates object storage
        return moved
    folder = Path(root.path)
    legacy = [path for path in folder.parent.glob("date=*") if path.is_dir()]
    if legacy:
        target_folder = folder.parent / f".legacy-rows.before-rebuild-{stamp}"
        target_folder.mkdir(exist_ok=True)
        for path in legacy:
            path.rename(target_folder / path.name)
            moved.append((str(path), str(target_folder / path.name)))
    return moved
