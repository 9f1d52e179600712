"""One online read: feature references become Redis commands, and Redis replies become columns.

A ``ReadPlan`` is built once per (catalog, feature list) and cached by the clients, so a read only
builds keys, sends one pipelined round trip and decodes. Views keyed by the same join keys live in
the same Redis hash (Feast's layout), so one ``HMGET`` per entity fetches all of their features.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from online_store.catalog import Catalog, ServedView
from online_store.layout import (
    decode_timestamp_micros,
    decode_value,
    entity_keys,
    feature_field,
    timestamp_field,
)
from online_store.wire import bulk, hmget_parts, pack_hmgets

if TYPE_CHECKING:
    from online_store.on_demand import OnDemandPlan

__all__ = [
    "EntityRowError",
    "FeatureVectors",
    "PlanCache",
    "ReadPlan",
    "UnknownFeatureError",
    "close_matches",
    "entity_columns",
    "feature_references",
]

PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE = "PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"
_TIMESTAMP_SUFFIX, _STATUS_SUFFIX = "__ts", "__status"


class UnknownFeatureError(LookupError):
    """A feature reference, feature view or feature service that the registry does not have."""


class EntityRowError(ValueError):
    """An entity row without a needed join key, or with a key of the wrong type."""


@dataclass(frozen=True, kw_only=True)
class _ViewRead:
    view: ServedView
    features: tuple[str, ...]
    output_names: tuple[str, ...]
    offset: int
    """Where this view's fields start in its group's HMGET."""


@dataclass(frozen=True, kw_only=True)
class _KeyGroup:
    join_keys: dict[str, str]
    views: tuple[_ViewRead, ...]
    fields: tuple[bytes, ...]
    """Per view: its feature fields, then its ``_ts`` field."""
    resp: tuple[bytes, bytes]
    """The RESP encoding around the key of this group's HMGET."""


@dataclass(frozen=True, kw_only=True)
class FeatureVectors:
    """The result of a read, column by column: join keys first, then features in request order."""

    names: list[str]
    values: list[list[Any]]
    statuses: list[list[str]]
    """PRESENT, NULL_VALUE, NOT_FOUND or OUTSIDE_MAX_AGE for each value."""
    event_times_us: list[list[int]]
    """The row's event time in microseconds; 0 where there is none, as Feast reports it."""
    join_key_count: int

    def to_dict(
        self, *, include_event_timestamps: bool = False, include_status: bool = False
    ) -> dict[str, list[Any]]:
        """Feast's ``OnlineResponse.to_dict()`` shape, plus ``<name>__status`` columns when asked."""
        result: dict[str, list[Any]] = {}
        for index, name in enumerate(self.names):
            result[name] = self.values[index]
            # Join keys get a zero timestamp and PRESENT too, as in Feast's response.
            if include_event_timestamps:
                result[name + _TIMESTAMP_SUFFIX] = [
                    micros // 1_000_000 for micros in self.event_times_us[index]
                ]
            if include_status:
                result[name + _STATUS_SUFFIX] = self.statuses[index]
        return result

    def to_feast_json(self) -> dict[str, Any]:
        """The JSON body of Feast's feature server ``/get-online-features`` response."""
        return {
            "metadata": {"feature_names": self.names},
            "results": [
                {
                    "values": [_json_value(value) for value in values],
                    "statuses": statuses,
                    "event_timestamps": [_json_timestamp(micros) for micros in times],
                }
                for values, statuses, times in zip(
                    self.values, self.statuses, self.event_times_us, strict=True
                )
            ],
        }


class ReadPlan:
    """The Redis fields to fetch for a list of feature references, grouped by the entity they are keyed by."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
    ) -> None:
        self.project = catalog.project
        requested = _requested(catalog, features, feature_service)
        by_keys: dict[tuple[tuple[str, str], ...], list[tuple[ServedView, list[str]]]] = {}
        for view, names in requested:
            by_keys.setdefault(tuple(sorted(view.join_keys.items())), []).append((view, names))
        groups = []
        output_names: list[str] = []
        for views in by_keys.values():
            reads: list[_ViewRead] = []
            fields: list[bytes] = []
            for view, names in views:
                outputs = tuple(f"{view.name}__{name}" if full_feature_names else name for name in names)
                output_names += outputs
                reads.append(
                    _ViewRead(view=view, features=tuple(names), output_names=outputs, offset=len(fields))
                )
                fields += [feature_field(view.name, name) for name in names]
                fields.append(timestamp_field(view.name))
            groups.append(
                _KeyGroup(
                    join_keys=dict(views[0][0].join_keys),
                    views=tuple(reads),
                    fields=tuple(fields),
                    resp=hmget_parts(fields),
                )
            )
        duplicates = sorted({name for name in output_names if output_names.count(name) > 1})
        if duplicates:
            raise UnknownFeatureError(
                f"features {', '.join(duplicates)} come from more than one feature view; "
                "ask for full_feature_names=True to name them <feature_view>__<feature>"
            )
        self._groups = tuple(groups)
        self._order = {
            name: position for position, name in enumerate(_request_order(requested, full_feature_names))
        }
        self.join_keys = tuple(dict.fromkeys(key for group in groups for key in group.join_keys))
        self.request_fields: tuple[str, ...] = ()
        """Request data the read takes with its entity rows (only on-demand views take any)."""
        self.feature_names = tuple(sorted(output_names, key=self._order.__getitem__))

    def commands(self, columns: Mapping[str, Sequence[Any]]) -> list[tuple[bytes, tuple[bytes, ...]]]:
        """One (key, fields) HMGET per entity row and key group, group by group."""
        return [(key, group.fields) for group in self._groups for key in self._keys(group, columns)]

    def request(self, columns: Mapping[str, Sequence[Any]]) -> tuple[bytes, int]:
        """The same commands packed for one write to Redis, and how many there are."""
        parts, count = [], 0
        for group in self._groups:
            keys = self._keys(group, columns)
            parts.append(pack_hmgets(keys, *group.resp))
            count += len(keys)
        return b"".join(parts), count

    def cluster_request(self, columns: Mapping[str, Sequence[Any]]) -> tuple[list[bytes], list[bytes]]:
        """The same commands one by one, with their keys, for a cluster to route each to its node."""
        keys: list[bytes] = []
        commands: list[bytes] = []
        for group in self._groups:
            group_keys = self._keys(group, columns)
            head, tail = group.resp
            keys += group_keys
            commands += [head + bulk(key) + tail for key in group_keys]
        return keys, commands

    def _keys(self, group: _KeyGroup, columns: Mapping[str, Sequence[Any]]) -> list[bytes]:
        names = list(group.join_keys)
        values = (
            columns[names[0]]
            if len(names) == 1
            else list(zip(*(columns[name] for name in names), strict=True))
        )
        try:
            return entity_keys(values, group.join_keys, self.project)
        except (TypeError, ValueError, OverflowError):
            raise EntityRowError(_bad_key_message(columns, group.join_keys)) from None

    def decode(
        self, columns: Mapping[str, Sequence[Any]], replies: Sequence[Sequence[bytes | None]], *, now_us: int
    ) -> FeatureVectors:
        """The read's columns from the replies to ``commands``, in the same order."""
        rows = len(columns[self.join_keys[0]]) if self.join_keys else 0
        values: dict[str, list[Any]] = {}
        statuses: dict[str, list[str]] = {}
        times: dict[str, list[int]] = {}
        for index, group in enumerate(self._groups):
            group_replies = replies[index * rows : (index + 1) * rows]
            for read in group.views:
                _decode_view(read, group_replies, now_us, values, statuses, times)
        names = list(self.join_keys) + list(self.feature_names)
        key_statuses = [PRESENT] * rows
        key_times = [0] * rows
        return FeatureVectors(
            names=names,
            values=[list(columns[name]) for name in self.join_keys]
            + [values[name] for name in self.feature_names],
            statuses=[key_statuses] * len(self.join_keys) + [statuses[name] for name in self.feature_names],
            event_times_us=[key_times] * len(self.join_keys) + [times[name] for name in self.feature_names],
            join_key_count=len(self.join_keys),
        )


def entity_columns(
    entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    join_keys: Sequence[str],
    request_fields: Sequence[str] = (),
) -> dict[str, list[Any]]:
    """The join key columns of a read, then its request data, from a list of rows or a dict of columns
    (both are Feast's forms)."""
    if request_fields:
        return _with_request_data(entity_rows, join_keys, request_fields)
    if isinstance(entity_rows, Mapping):
        columns = {}
        for name in join_keys:
            if name not in entity_rows:
                given = ", ".join(sorted(entity_rows)) or "none"
                raise EntityRowError(f"entities have no join key {name!r} (given: {given})")
            columns[name] = list(entity_rows[name])
        lengths = {name: len(column) for name, column in columns.items()}
        if len(set(lengths.values())) > 1:
            raise EntityRowError(f"entity columns differ in length: {lengths}")
        return columns
    columns = {name: [] for name in join_keys}
    for position, row in enumerate(entity_rows):
        for name in join_keys:
            try:
                columns[name].append(row[name])
            except KeyError:
                given = ", ".join(sorted(row)) or "none"
                raise EntityRowError(
                    f"entity row {position} has no join key {name!r} (it has: {given})"
                ) from None
            except TypeError:
                raise EntityRowError(f"entity row {position} is not a mapping of join key to value") from None
    return columns


def _with_request_data(
    entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    join_keys: Sequence[str],
    request_fields: Sequence[str],
) -> dict[str, list[Any]]:
    try:
        return entity_columns(entity_rows, [*join_keys, *request_fields])
    except EntityRowError as error:
        for name in request_fields:
            if repr(name) in str(error):
                raise EntityRowError(
                    str(error).replace("join key", "request data field", 1)
                    + "; an on-demand view takes it with the entity rows"
                ) from None
        raise


def _decode_view(
    read: _ViewRead,
    replies: Sequence[Sequence[bytes | None]],
    now_us: int,
    values: dict[str, list[Any]],
    statuses: dict[str, list[str]],
    times: dict[str, list[int]],
) -> None:
    width = len(read.features)
    ttl_us = read.view.ttl // timedelta(microseconds=1)
    timestamps = [reply[read.offset + width] for reply in replies]
    # Rows written together share a timestamp, so decode each distinct one once.
    decoded = {raw: decode_timestamp_micros(raw) for raw in set(timestamps) if raw is not None}
    row_times = [decoded[raw] if raw is not None else 0 for raw in timestamps]
    row_state: list[str | None] = [
        NOT_FOUND if raw is None else (OUTSIDE_MAX_AGE if ttl_us and now_us - micros > ttl_us else None)
        for raw, micros in zip(timestamps, row_times, strict=True)
    ]
    servable = all(state is None for state in row_state)
    for position, (feature, output) in enumerate(zip(read.features, read.output_names, strict=True)):
        field_index = read.offset + position
        column = _decode_column([reply[field_index] for reply in replies])
        if read.view.features.get(feature) == "UNIX_TIMESTAMP":
            column = [None if value is None else datetime.fromtimestamp(value, UTC) for value in column]
        if servable:
            column_statuses = (
                [PRESENT] * len(column)
                if None not in column
                else [NULL_VALUE if value is None else PRESENT for value in column]
            )
        else:
            column = [None if state else value for value, state in zip(column, row_state, strict=True)]
            column_statuses = [
                state or (NULL_VALUE if value is None else PRESENT)
                for value, state in zip(column, row_state, strict=True)
            ]
        values[output] = column
        statuses[output] = column_statuses
        times[output] = row_times


_DOUBLE_TAG = 0x29
_TIMESTAMP_TAG = 0x40  # Value field 8 (unix_timestamp_val), a varint
_TIMESTAMP_LIST_TAG = b"\x92\x01"  # Value field 18 (unix_timestamp_list_val), length-delimited
_NULL_TIMESTAMP = -(1 << 63)  # Feast's NULL_TIMESTAMP_INT_VALUE
_DOUBLES = np.dtype([("tag", "u1"), ("value", "<f8")])


def _decode_column(raw: list[bytes | None]) -> list[Any]:
    """Decode one feature's values; a column of doubles, the common case, is decoded in one go.

    Feast's null time (what its SDK writes for a missing timestamp) is None, and a timestamp list's
    seconds become UTC datetimes, as Feast's SDK reads them; a scalar timestamp's seconds are
    converted by the caller, which knows the view's type."""
    if len(raw) >= 16 and None not in raw:  # below that, numpy's call overhead costs more than it saves
        joined = b"".join(raw)  # type: ignore[arg-type]
        if len(joined) == 9 * len(raw) and joined[::9] == bytes([_DOUBLE_TAG]) * len(raw):
            return list(np.frombuffer(joined, dtype=_DOUBLES)["value"].tolist())
    values: list[Any] = [decode_value(value) for value in raw]
    for row, data in enumerate(raw):
        if not data:
            continue
        if data.startswith(_TIMESTAMP_LIST_TAG):
            values[row] = [
                None if seconds == _NULL_TIMESTAMP else datetime.fromtimestamp(seconds, UTC)
                for seconds in values[row]
            ]
        elif data[0] == _TIMESTAMP_TAG and values[row] == _NULL_TIMESTAMP:
            values[row] = None
    return values


def feature_references(
    catalog: Catalog, features: Sequence[str] | None, feature_service: str | None
) -> list[str]:
    """The ``view:feature`` references of a read, a feature service's expanded."""
    if (features is None) == (feature_service is None):
        raise UnknownFeatureError('give either features=["view:feature", ...] or feature_service="name"')
    if feature_service is not None:
        projections = catalog.services.get(feature_service)
        if projections is None:
            raise UnknownFeatureError(
                f"no feature service named {feature_service!r}"
                f"{close_matches(feature_service, catalog.services)}"
            )
        return [f"{view}:{name}" for view, names in projections for name in names]
    assert features is not None
    if isinstance(features, str):
        raise UnknownFeatureError('features must be a list of "view:feature" strings, not one string')
    for reference in features:
        _, separator, feature = reference.partition(":")
        if not separator or not feature:
            raise UnknownFeatureError(
                f'feature reference {reference!r} is not of the form "feature_view:feature"'
            )
    return list(features)


def _requested(
    catalog: Catalog, features: Sequence[str] | None, feature_service: str | None
) -> list[tuple[ServedView, list[str]]]:
    """(view, feature names) per requested view, in the order the views are first named."""
    requested: dict[str, list[str]] = {}
    for reference in feature_references(catalog, features, feature_service):
        view_name, _, feature = reference.partition(":")
        view = catalog.views.get(view_name)
        if view is None:
            raise UnknownFeatureError(
                f"no feature view named {view_name!r} in project {catalog.project!r}"
                f"{close_matches(view_name, {**catalog.views, **catalog.on_demand})}"
            )
        if feature not in view.features:
            raise UnknownFeatureError(
                f"feature view {view_name!r} has no feature {feature!r}"
                f"{close_matches(feature, view.features)}"
            )
        names = requested.setdefault(view_name, [])
        if feature not in names:
            names.append(feature)
    return [(catalog.views[name], names) for name, names in requested.items()]


def _request_order(requested: list[tuple[ServedView, list[str]]], full_feature_names: bool) -> list[str]:
    return [
        f"{view.name}__{name}" if full_feature_names else name for view, names in requested for name in names
    ]


def close_matches(name: str, known: Mapping[str, Any]) -> str:
    """A hint naming the known names close to ``name``, or listing them."""
    if not known:
        return " (there are none; run `sluice apply`)"
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.5)
    if close:
        return f"; did you mean {', '.join(repr(match) for match in close)}?"
    listed = sorted(known)
    more = f" and {len(listed) - 10} more" if len(listed) > 10 else ""
    return f"; known: {', '.join(listed[:10])}{more}"


def _bad_key_message(columns: Mapping[str, Sequence[Any]], join_keys: Mapping[str, str]) -> str:
    for name, dtype in join_keys.items():
        for value in columns[name]:
            if dtype in ("INT64", "INT32") and (isinstance(value, bool) or not isinstance(value, int)):
                return f"join key {name!r} is {dtype}, but an entity row gives {value!r}"
            if dtype not in ("INT64", "INT32", "STRING"):
                return f"join key {name!r} has type {dtype}; Redis keys support INT64, INT32 and STRING"
    return f"entity keys {', '.join(join_keys)} could not be encoded as {', '.join(join_keys.values())}"


_PLAIN_JSON = frozenset({int, str, bool})
_NUMBERS = frozenset({int, float})


def _json_value(value: Any) -> Any:
    """A value as Feast's feature server prints it: a list as a JSON array of its elements printed
    so, bytes in base64, a timestamp as epoch seconds (Feast's null time in a list as its raw
    value, which is the only None a list read from Redis holds)."""
    if isinstance(value, float) and not math.isfinite(value):
        # Not JSON numbers: spelled the way protobuf's JSON mapping (and Feast's server) spells them.
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, list):
        types = set(map(type, value))
        if types <= _PLAIN_JSON or (types <= _NUMBERS and all(map(math.isfinite, value))):
            return value  # an embedding, say: nothing to spell out
        return [_NULL_TIMESTAMP if item is None else _json_value(item) for item in value]
    return value


def _json_timestamp(micros: int) -> str:
    """A ``google.protobuf.Timestamp`` in proto3 JSON, the way Feast's server prints it."""
    seconds, fraction = divmod(micros, 1_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += f".{fraction:06d}" if fraction % 1000 else f".{fraction // 1000:03d}"
    return text + "Z"


class PlanCache:
    """Read plans by request shape, for the current catalog; a new catalog starts a new cache."""

    def __init__(self) -> None:
        self._catalog: Catalog | None = None
        self._plans: dict[tuple[Any, ...], ReadPlan | OnDemandPlan] = {}

    def plan(
        self,
        catalog: Catalog,
        *,
        features: Sequence[str] | None,
        feature_service: str | None,
        full_feature_names: bool,
    ) -> ReadPlan | OnDemandPlan:
        if catalog is not self._catalog:
            self._catalog, self._plans = catalog, {}
        shape = (tuple(features) if features is not None else None, feature_service, full_feature_names)
        plan = self._plans.get(shape)
        if plan is None:
            from online_store.on_demand import OnDemandPlan, names_on_demand

            kind: type[ReadPlan | OnDemandPlan] = (
                OnDemandPlan if names_on_demand(catalog, features, feature_service) else ReadPlan
            )
            plan = kind(
                catalog=catalog,
                features=features,
                feature_service=feature_service,
                full_feature_names=full_feature_names,
            )
            if len(self._plans) < 1024:
                self._plans[shape] = plan
        return plan
