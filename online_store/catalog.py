"""What the read path needs from Feast's registry, read without importing Feast.

Importing Feast takes seconds, so the online client reads the registry itself: the file registry
is one serialized ``feast.core.Registry`` protobuf, the SQL registry keeps one serialized object
per row. Only a handful of fields are needed (view names, join keys and their types, feature
names and types, ttl, feature services), so they are read straight from the protobuf wire format
by field number. Feast keeps those numbers stable, and a test compares this reader with Feast's
own registry on a real ``apply``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from features.spec import OnDemandSpec
from online_store.layout import read_varint

__all__ = ["Catalog", "CatalogError", "OnDemandView", "ServedView", "load_catalog", "parse_registry"]

# feast.types.ValueType numbers to the Feast type names sluice uses everywhere else.
_VALUE_TYPES = {
    1: "BYTES",
    2: "STRING",
    3: "INT32",
    4: "INT64",
    5: "FLOAT64",
    6: "FLOAT32",
    7: "BOOL",
    8: "UNIX_TIMESTAMP",
    11: "BYTES_LIST",
    12: "STRING_LIST",
    13: "INT32_LIST",
    14: "INT64_LIST",
    15: "DOUBLE_LIST",
    16: "FLOAT_LIST",
    17: "BOOL_LIST",
    18: "UNIX_TIMESTAMP_LIST",
}
# feast.core.Registry fields that hold objects, and the field numbers inside each object's spec.
_REGISTRY_FEATURE_VIEWS, _REGISTRY_STREAM_VIEWS, _REGISTRY_SERVICES, _REGISTRY_ON_DEMAND = 6, 14, 7, 8
_VIEW_FIELDS = {"name": 1, "project": 2, "features": 4, "ttl": 6, "entity_columns": 12}
_STREAM_VIEW_FIELDS = {"name": 1, "project": 2, "features": 4, "ttl": 9, "entity_columns": 5}


class CatalogError(LookupError):
    """The registry could not be read, or holds nothing for the project."""


@dataclass(frozen=True, kw_only=True)
class ServedView:
    """A feature view as the read path sees it."""

    name: str
    join_keys: dict[str, str]
    """Join key to its Feast type name, in the view's declared order."""
    features: dict[str, str]
    """Feature name to its Feast type name."""
    ttl: timedelta = timedelta(0)
    """Values older than this are not served; zero means they never expire."""


OnDemandView = OnDemandSpec
"""An on-demand feature view, as the read path sees it."""


@dataclass(frozen=True, kw_only=True)
class Catalog:
    """The project's feature views and feature services."""

    project: str
    views: dict[str, ServedView] = field(default_factory=dict)
    on_demand: dict[str, OnDemandView] = field(default_factory=dict)
    services: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = field(default_factory=dict)
    """Feature service name to its (feature view, features) projections."""


def load_catalog(registry_path: str, *, project: str) -> Catalog:
    """The catalog of one project from a file registry path or an SQLAlchemy registry URL."""
    if "://" in registry_path:
        return _from_sql(registry_path, project=project)
    path = Path(registry_path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CatalogError(
            f"cannot read Feast's registry at {path}: {error.strerror}; run `sluice apply` in the repo first"
        ) from None
    return parse_registry(data, project=project)


def parse_registry(data: bytes, *, project: str) -> Catalog:
    """The catalog of one project from a serialized ``feast.core.Registry``."""
    registry = _message(data)
    views: dict[str, ServedView] = {}
    for number, numbers in (
        (_REGISTRY_FEATURE_VIEWS, _VIEW_FIELDS),
        (_REGISTRY_STREAM_VIEWS, _STREAM_VIEW_FIELDS),
    ):
        for raw in registry.get(number, []):
            view = _view(_spec(_as_bytes(raw)), numbers, project=project)
            if view is not None:
                views[view.name] = view
    services = dict(
        service
        for raw in registry.get(_REGISTRY_SERVICES, [])
        if (service := _service(_spec(_as_bytes(raw)), project))
    )
    on_demand: dict[str, OnDemandView] = {}
    for raw in registry.get(_REGISTRY_ON_DEMAND, []):
        _add_on_demand(_spec(_as_bytes(raw)), project, views, on_demand)
    return Catalog(project=project, views=views, services=services, on_demand=on_demand)


def _from_sql(url: str, *, project: str) -> Catalog:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    views: dict[str, ServedView] = {}
    services: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {}
    on_demand: dict[str, OnDemandView] = {}
    try:
        with engine.connect() as connection:
            for table, numbers in (
                ("feature_views", _VIEW_FIELDS),
                ("stream_feature_views", _STREAM_VIEW_FIELDS),
            ):
                query = sqlalchemy.text(f"SELECT feature_view_proto FROM {table} WHERE project_id = :project")
                for (raw,) in connection.execute(query, {"project": project}):
                    view = _view(_spec(bytes(raw)), numbers, project=project)
                    if view is not None:
                        views[view.name] = view
            query = sqlalchemy.text(
                "SELECT feature_service_proto FROM feature_services WHERE project_id = :project"
            )
            for (raw,) in connection.execute(query, {"project": project}):
                service = _service(_spec(bytes(raw)), project)
                if service is not None:
                    services[service[0]] = service[1]
            query = sqlalchemy.text(
                "SELECT feature_view_proto FROM on_demand_feature_views WHERE project_id = :project"
            )
            for (raw,) in connection.execute(query, {"project": project}):
                _add_on_demand(_spec(bytes(raw)), project, views, on_demand)
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise CatalogError(f"cannot read Feast's SQL registry: {error}") from None
    finally:
        engine.dispose()
    return Catalog(project=project, views=views, services=services, on_demand=on_demand)


def _spec(raw: bytes) -> dict[int, list[bytes | int]]:
    """The spec (field 1) of a registry object."""
    specs = _message(raw).get(1, [])
    return _message(specs[0]) if specs and isinstance(specs[0], bytes) else {}


def _view(spec: dict[int, list[bytes | int]], numbers: dict[str, int], *, project: str) -> ServedView | None:
    if _string(spec, numbers["project"]) != project:
        return None
    ttl = timedelta(0)
    for raw in spec.get(numbers["ttl"], []):
        duration = _message(_as_bytes(raw))
        ttl = timedelta(seconds=_int(duration, 1), microseconds=_int(duration, 2) // 1000)
    join_keys = dict(_columns(spec, numbers["entity_columns"]))
    return ServedView(
        name=_string(spec, numbers["name"]),
        join_keys=join_keys,
        features={
            name: dtype for name, dtype in _columns(spec, numbers["features"]) if name not in join_keys
        },
        ttl=ttl,
    )


def _service(
    spec: dict[int, list[bytes | int]], project: str
) -> tuple[str, tuple[tuple[str, tuple[str, ...]], ...]] | None:
    if _string(spec, 2) != project:
        return None
    projections = []
    for raw in spec.get(3, []):
        projection = _message(_as_bytes(raw))
        projections.append((_string(projection, 1), tuple(name for name, _ in _columns(projection, 2))))
    return _string(spec, 1), tuple(projections)


def _add_on_demand(
    spec: dict[int, list[bytes | int]],
    project: str,
    views: dict[str, ServedView],
    on_demand: dict[str, OnDemandView],
) -> None:
    """An on-demand view the worker stores is read from Redis like any view; the others are computed."""
    view = _on_demand(spec, project)
    if view is None:
        return
    if view.write_to_online_store:
        views[view.name] = ServedView(
            name=view.name, join_keys=dict(_columns(spec, 14)), features=view.features
        )
    else:
        on_demand[view.name] = view


def _on_demand(spec: dict[int, list[bytes | int]], project: str) -> OnDemandView | None:
    """An ``OnDemandFeatureViewSpec``: its sources map (field 4) holds projections and request sources."""
    if _string(spec, 2) != project:
        return None
    sources: list[tuple[str, tuple[str, ...]]] = []
    request_fields: dict[str, str] = {}
    for raw in spec.get(4, []):
        entry = _message(_as_bytes(raw))
        source = _message(_as_bytes(entry[2][0])) if entry.get(2) else {}
        if source.get(3):  # FeatureViewProjection: the view's name, then its features
            projection = _message(_as_bytes(source[3][0]))
            sources.append((_string(projection, 1), tuple(name for name, _ in _columns(projection, 2))))
        elif source.get(2):  # a RequestSource: DataSource.request_data_options.schema
            options = _message(_as_bytes(_message(_as_bytes(source[2][0])).get(18, [b""])[0]))
            request_fields.update(_columns(options, 3))
    transformation = _message(_as_bytes(spec[10][0])) if spec.get(10) else {}
    udf = _message(_as_bytes(transformation[1][0])) if transformation.get(1) else {}
    return OnDemandView(
        name=_string(spec, 1),
        mode=_string(spec, 11) or "pandas",
        singleton=bool(_int(spec, 15)),
        features=dict(_columns(spec, 3)),
        sources=tuple(sources),
        request_fields=request_fields,
        udf_name=_string(udf, 1),
        udf_source=_string(udf, 3),
        write_to_online_store=bool(_int(spec, 12)),
    )


def _columns(message: dict[int, list[bytes | int]], number: int) -> Iterator[tuple[str, str]]:
    """(name, Feast type name) of each ``FeatureSpecV2`` in a repeated field."""
    for raw in message.get(number, []):
        column = _message(_as_bytes(raw))
        value_type = _int(column, 2)
        yield _string(column, 1), _VALUE_TYPES.get(value_type, f"VALUE_TYPE_{value_type}")


def _string(message: dict[int, list[bytes | int]], number: int) -> str:
    values = message.get(number)
    return _as_bytes(values[-1]).decode() if values else ""


def _int(message: dict[int, list[bytes | int]], number: int) -> int:
    values = message.get(number)
    return int(values[-1]) if values else 0


def _as_bytes(value: bytes | int) -> bytes:
    if not isinstance(value, bytes):
        raise CatalogError("Feast's registry has an unexpected shape; is it from a Feast older than 0.40?")
    return value


def _message(data: bytes) -> dict[int, list[bytes | int]]:
    """A protobuf message's fields by number: varints as ints, length-delimited fields as bytes."""
    fields: dict[int, list[bytes | int]] = {}
    offset, end = 0, len(data)
    try:
        while offset < end:
            key, offset = read_varint(data, offset)
            number, wire_type = key >> 3, key & 7
            value: bytes | int
            if wire_type == 0:
                value, offset = read_varint(data, offset)
            elif wire_type == 2:
                length, offset = read_varint(data, offset)
                value, offset = data[offset : offset + length], offset + length
            elif wire_type == 1:
                value, offset = int.from_bytes(data[offset : offset + 8], "little"), offset + 8
            elif wire_type == 5:
                value, offset = int.from_bytes(data[offset : offset + 4], "little"), offset + 4
            else:
                raise CatalogError(f"Feast's registry is not a protobuf message (wire type {wire_type})")
            fields.setdefault(number, []).append(value)
    except IndexError:
        raise CatalogError("Feast's registry is truncated") from None
    return fields
