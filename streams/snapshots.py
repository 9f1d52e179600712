"""Window state to bytes and back: what a restart loads instead of replaying a partition's history.

A snapshot holds every array of a ``WindowState`` (each entity's rings of panes, its newest event
time, the raw events kept for late ones, the stream time) for the entities seen, as a NumPy ``.npz``
archive read with ``allow_pickle=False``: no payload is ever unpickled. Entity keys are stored as
JSON. Each snapshot carries the fingerprint of the view definition and of this format; a snapshot
whose fingerprint differs is refused, since its state would not be the state of the view as now
defined (another window, another udf, another layout of the arrays).

>>> from datetime import timedelta
>>> from features.spec import AggregationSpec, FeatureViewSpec
>>> import numpy as np
>>> spec = FeatureViewSpec(name="v", project="p", topic="t", join_keys={"k": "INT64"}, timestamp_field="ts",
...     message_schema={"k": "INT64", "x": "FLOAT64", "ts": "UNIX_TIMESTAMP"}, features={"x_sum": "FLOAT64"},
...     aggregations=(AggregationSpec(feature="x_sum", column="x", function="sum",
...                   window=timedelta(seconds=10), slide=timedelta(seconds=10), dtype="FLOAT64"),))
>>> state = WindowState(spec=spec)
>>> _ = state.advance(state.ids_for([7, 8]), np.array([1, 2]), np.array([0, 1]), {"x": np.array([1.5, 2.0])})
>>> again = load_state(spec, dump_state(state))
>>> again.entity_keys, again.stream_time
([7, 8], 2)
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import orjson

from features.spec import FeatureViewSpec
from streams.windows import WindowState

__all__ = ["FORMAT", "SnapshotError", "dump_state", "load_state", "state_fingerprint"]

FORMAT = 1
"""The layout of the arrays in a snapshot; a change to ``WindowState``'s arrays raises it."""


class SnapshotError(ValueError):
    """A snapshot that cannot be used for this view: another definition, format, or a damaged file."""


def state_fingerprint(spec: FeatureViewSpec) -> str:
    """The identity of the state a view's definition makes: any change to the definition changes it
    (conservatively: a change that would keep the state valid also does, and costs one replay)."""
    return hashlib.sha256(f"{FORMAT}\n{spec!r}".encode()).hexdigest()


def dump_state(state: WindowState) -> bytes:
    """The state as an ``.npz`` archive of its arrays, with a JSON header: format, fingerprint,
    stream time and entity keys."""
    header = {
        "format": FORMAT,
        "fingerprint": state_fingerprint(state.spec),
        "stream_time": state.stream_time,
        "keys": state.entity_keys,
    }
    encoded = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, header=np.frombuffer(encoded, dtype=np.uint8), **state.to_arrays())
    return out.getvalue()


def load_state(spec: FeatureViewSpec, data: bytes) -> WindowState:
    """The state a snapshot holds, for this view; ``SnapshotError`` when it is not this view's."""
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        stored = {name: archive[name] for name in archive.files}
        header = orjson.loads(stored.pop("header").tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise SnapshotError(f"unreadable snapshot: {error}") from None
    if header.get("format") != FORMAT:
        raise SnapshotError(f"snapshot format {header.get('format')} is not this sluice's ({FORMAT})")
    if header.get("fingerprint") != state_fingerprint(spec):
        raise SnapshotError(f"snapshot was made by another definition of feature view {spec.name!r}")
    keys = [tuple(key) if isinstance(key, list) else key for key in header["keys"]]
    try:
        return WindowState.from_arrays(
            spec=spec, keys=keys, stream_time=int(header["stream_time"]), arrays=stored
        )
    except (KeyError, ValueError) as error:
        raise SnapshotError(f"snapshot does not match feature view {spec.name!r}: {error}") from None
