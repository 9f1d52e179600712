"""Check a feature repo's definitions and turn them into specs, or say exactly what to fix.

Every problem is collected, not just the first, and each names the object and the field:

    StreamFeatureView 'card_stats': aggregations[1].function: unknown aggregation function 'median'; ...
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from features.aggregations import UnknownAggregation, get_aggregation
from features.config import OBJECT_STORE_SCHEMES, OfflineStoreConfig
from features.schema import LIST_ELEMENTS, SchemaError, parse_schema
from features.spec import AggregationSpec, FeatureViewSpec, TransformSpec, window_label

__all__ = ["DefinitionError", "InvalidDefinitions", "type_name", "validate"]

# Feast's Redis key encoding supports these entity key types (key_encoding_utils).
_JOIN_KEY_DTYPES = frozenset({"INT64", "INT32", "STRING"})


@dataclass(frozen=True, kw_only=True)
class DefinitionError:
    """One problem in one field of one definition, with what to change."""

    kind: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}: {self.field}: {self.message}"


class InvalidDefinitions(ValueError):
    """The repo's definitions have problems; ``errors`` lists each one."""

    def __init__(self, errors: Sequence[DefinitionError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


def validate(objects: Iterable[Any], *, project: str) -> list[FeatureViewSpec]:
    """Specs for every feature view fed by a Kafka or push source; raises InvalidDefinitions listing all
    problems."""
    from feast import (
        Entity,
        FeatureService,
        FeatureView,
        KafkaSource,
        OnDemandFeatureView,
        PushSource,
        StreamFeatureView,
    )
    from feast.data_source import DataSource

    from features.on_demand import check_on_demand_views
    from features.push_sources import PushAsKafka

    objects = list(objects)
    errors: list[DefinitionError] = []
    entities = [item for item in objects if isinstance(item, Entity)]
    sources = [item for item in objects if isinstance(item, DataSource)]
    views = [item for item in objects if isinstance(item, FeatureView)]
    on_demand = [item for item in objects if isinstance(item, OnDemandFeatureView)]
    services = [item for item in objects if isinstance(item, FeatureService)]
    errors += _duplicates("Entity", entities)
    errors += _duplicates("DataSource", sources)
    errors += _duplicates("FeatureView", [*views, *on_demand], kinds=True)
    errors += _duplicates("FeatureService", services)

    specs = []
    for view in views:
        kind = "StreamFeatureView" if isinstance(view, StreamFeatureView) else "FeatureView"
        source: Any = view.stream_source if view.stream_source is not None else view.batch_source
        if isinstance(source, PushSource):
            if getattr(view, "aggregations", None):
                errors.append(
                    DefinitionError(
                        kind=kind,
                        name=view.name,
                        field="aggregations",
                        message="a PushSource carries feature values, not events to aggregate; "
                        "remove the aggregations, or aggregate in a view over a KafkaSource",
                    )
                )
                continue
            source = PushAsKafka(source=source, view=view, project=project)
        elif view.stream_source is not None and not isinstance(source, KafkaSource):
            errors.append(
                DefinitionError(
                    kind=kind,
                    name=view.name,
                    field="source",
                    message=f"sluice streams from a KafkaSource or a PushSource, not a "
                    f"{type(source).__name__}; use one of those",
                )
            )
            continue
        elif not isinstance(source, KafkaSource):
            continue  # a batch view: Feast's materialize writes it, sluice serves it
        checker = _ViewChecker(kind=kind, view=view, source=source, entities=entities)
        spec = checker.spec(project=project)
        errors += checker.errors
        if spec is not None:
            specs.append(spec)
    on_demand_errors, stored = check_on_demand_views(on_demand, specs=specs, all_views=views)
    errors += on_demand_errors
    if errors:
        raise InvalidDefinitions(errors)
    return [replace(spec, stored_on_demand=tuple(stored.get(spec.name, ()))) for spec in specs]


def _duplicates(kind: str, items: Sequence[Any], *, kinds: bool = False) -> list[DefinitionError]:
    """One error per name used more than once; with ``kinds``, named by the first object's own class."""
    counts = Counter(item.name for item in items)
    first = {item.name: type(item).__name__ for item in reversed(items)}
    return [
        DefinitionError(
            kind=first[name] if kinds else kind,
            name=name,
            field="name",
            message=f"{count} definitions share this name; names must be unique, so rename all but one",
        )
        for name, count in counts.items()
        if count > 1
    ]


class _ViewChecker:
    """Checks one feature view and its Kafka source, collecting errors as it goes."""

    def __init__(self, *, kind: str, view: Any, source: Any, entities: Sequence[Any]) -> None:
        self.kind = kind
        self.view = view
        self.source = source
        self.source_kind = getattr(source, "kind", "KafkaSource")
        self.entities_by_name = {entity.name: entity for entity in entities}
        self.errors: list[DefinitionError] = []

    def fail(self, field: str, message: str, *, kind: str | None = None, name: str | None = None) -> None:
        self.errors.append(
            DefinitionError(kind=kind or self.kind, name=name or self.view.name, field=field, message=message)
        )

    def spec(self, *, project: str) -> FeatureViewSpec | None:
        message_schema = self._message_schema()
        if message_schema is None:
            return None
        timestamp_field = self._timestamp_field(message_schema)
        join_keys = self._join_keys(message_schema)
        # Declaration order (Feast's own ``schema`` property passes through a set).
        entity_columns = {
            self.entities_by_name[name].join_key
            for name in self.view.entities
            if name in self.entities_by_name
        }
        declared = {
            field.name: type_name(field.dtype)
            for field in [*self.view.entity_columns, *self.view.features]
            if field.name not in entity_columns
        }
        declared_aggregations = list(getattr(self.view, "aggregations", None) or [])
        transform = None
        if getattr(self.view, "udf", None) is not None:
            transform = self._transform(message_schema, declared, declared_aggregations)
            if transform is None:
                return None
        inputs = message_schema if transform is None else {**message_schema, **transform.output_types}
        aggregations = tuple(self._aggregations(inputs, declared))
        if declared_aggregations:
            # Outputs of rejected aggregations already have their error; do not report them again.
            named = {aggregation.name for aggregation in declared_aggregations if aggregation.name}
            produced = {aggregation.feature for aggregation in aggregations} | named | self._default_names()
            for name in declared:
                if name not in produced:
                    self.fail(
                        f"schema[{name!r}]",
                        "no aggregation produces this feature; remove the field or add an Aggregation "
                        f"with name={name!r}",
                    )
        else:
            self._plain_features(inputs, declared)
        offline_path = self._offline_path()
        delay = self.source.kafka_options.watermark_delay_threshold or timedelta(0)
        if delay < timedelta(0):
            self.fail(
                "watermark_delay_threshold",
                "must not be negative",
                kind=self.source_kind,
                name=self.source.name,
            )
        if self.errors or timestamp_field is None:
            return None
        return FeatureViewSpec(
            name=self.view.name,
            project=project,
            topic=self.source.kafka_options.topic,
            join_keys=join_keys,
            timestamp_field=timestamp_field,
            message_schema=message_schema,
            features=declared,
            aggregations=aggregations,
            watermark_delay=delay,
            ttl=self.view.ttl or timedelta(0),
            offline_path=offline_path,
            offline_store=OfflineStoreConfig(endpoint_url=self._endpoint_override()),
            tags=dict(self.view.tags),
            transform=transform,
        )

    def _transform(
        self, message_schema: dict[str, str], declared: dict[str, str], aggregations: list[Any]
    ) -> TransformSpec | None:
        """The view's udf, checked on sample events; the columns it must return are the aggregations'
        inputs (their types as the message declares them, or as the function returns them), or a plain
        view's features (as declared)."""
        from features.stream_udf import check_stream_udf

        if aggregations:
            needed = {
                aggregation.column: message_schema.get(aggregation.column) for aggregation in aggregations
            }
        else:
            needed = dict(declared)
        transform, problems = check_stream_udf(self.view, message_schema=message_schema, needed=needed)
        for problem in problems:
            field, _, message = problem.partition(": ")
            self.fail(field, message)
        return transform

    def _default_names(self) -> set[str]:
        """The default output name of every declared aggregation that has a window, valid or not."""
        names = set()
        for aggregation in getattr(self.view, "aggregations", None) or []:
            if aggregation.time_window:
                names.add(
                    f"{aggregation.column}_{aggregation.function}_{window_label(aggregation.time_window)}"
                )
        return names

    def _message_schema(self) -> dict[str, str] | None:
        from feast.data_format import JsonFormat

        message_format = self.source.kafka_options.message_format
        if not isinstance(message_format, JsonFormat):
            self.fail(
                "message_format",
                f"sluice reads JSON messages; use message_format=JsonFormat(schema_json=...), "
                f"not {type(message_format).__name__}",
                kind=self.source_kind,
                name=self.source.name,
            )
            return None
        try:
            return parse_schema(message_format.schema_json)
        except SchemaError as error:
            self.fail("message_format.schema_json", str(error), kind=self.source_kind, name=self.source.name)
            return None

    def _timestamp_field(self, message_schema: dict[str, str]) -> str | None:
        field = self.source.timestamp_field
        if not field:
            self.fail(
                "timestamp_field",
                "is empty; name the message field that holds the event time",
                kind=self.source_kind,
                name=self.source.name,
            )
            return None
        if field not in message_schema:
            self.fail(
                "timestamp_field",
                f"{field!r} is not in the message schema ({', '.join(message_schema)}); "
                "add it to schema_json or name an existing field",
                kind=self.source_kind,
                name=self.source.name,
            )
            return None
        if message_schema[field] != "UNIX_TIMESTAMP":
            self.fail(
                "timestamp_field",
                f"{field!r} is declared {message_schema[field]}; declare it TIMESTAMP in schema_json",
                kind=self.source_kind,
                name=self.source.name,
            )
        view_field = getattr(self.view, "timestamp_field", "")
        if view_field and view_field != field:
            self.fail(
                "timestamp_field",
                f"{view_field!r} differs from its source's timestamp_field {field!r}; "
                "remove it or make them equal",
            )
        return str(field)

    def _join_keys(self, message_schema: dict[str, str]) -> dict[str, str]:
        join_keys: dict[str, str] = {}
        if not self.view.entities:
            self.fail("entities", "is empty; a streamed feature view needs at least one entity")
        declared_types = {field.name: type_name(field.dtype) for field in self.view.entity_columns}
        for entity_name in self.view.entities:
            entity = self.entities_by_name.get(entity_name)
            if entity is None:
                self.fail(
                    "entities", f"entity {entity_name!r} is not defined in the repo; define it or remove it"
                )
                continue
            for key in [entity.join_key]:
                if key not in message_schema:
                    self.fail(
                        "join_keys",
                        f"join key {key!r} is not in the message schema of KafkaSource "
                        f"{self.source.name!r} ({', '.join(message_schema)}); add it to schema_json",
                        kind="Entity",
                        name=entity.name,
                    )
                    continue
                dtype = declared_types.get(key, message_schema[key])
                if dtype not in _JOIN_KEY_DTYPES:
                    self.fail(
                        "join_keys",
                        f"join key {key!r} has type {dtype}; "
                        "Feast's Redis keys support INT64, INT32 and STRING",
                        kind="Entity",
                        name=entity.name,
                    )
                    continue
                join_keys[key] = dtype
        return join_keys

    def _aggregations(
        self, message_schema: dict[str, str], declared: dict[str, str]
    ) -> list[AggregationSpec]:
        result: list[AggregationSpec] = []
        seen: set[str] = set()
        for index, aggregation in enumerate(getattr(self.view, "aggregations", None) or []):
            where = f"aggregations[{index}]"
            try:
                function = get_aggregation(aggregation.function)
            except UnknownAggregation as error:
                self.fail(f"{where}.function", str(error))
                continue
            column = aggregation.column
            if column not in message_schema:
                self.fail(
                    f"{where}.column",
                    f"{column!r} is not in the message schema ({', '.join(message_schema)})",
                )
                continue
            input_dtype = message_schema[column]
            if input_dtype not in function.input_dtypes:
                accepted = ", ".join(sorted(_feast_type_name(dtype) for dtype in function.input_dtypes))
                self.fail(
                    f"{where}.function",
                    f"{function.name} cannot aggregate {column!r} of type {_feast_type_name(input_dtype)}; "
                    f"it takes {accepted}",
                )
                continue
            window, slide = aggregation.time_window, aggregation.slide_interval or aggregation.time_window
            if window is None or window <= timedelta(0):
                self.fail(
                    f"{where}.time_window", "must be a positive timedelta, for example timedelta(hours=1)"
                )
                continue
            if slide <= timedelta(0) or window % slide != timedelta(0):
                self.fail(
                    f"{where}.slide_interval",
                    f"the window {window_label(window)} is not a multiple of "
                    f"the slide {window_label(slide)}; "
                    "choose a slide that divides the window evenly",
                )
                continue
            feature = aggregation.name or f"{column}_{function.name}_{window_label(window)}"
            dtype = function.output_dtype(input_dtype)
            if feature in seen:
                self.fail(
                    f"{where}.name", f"feature {feature!r} is produced twice; give one of them another name"
                )
                continue
            seen.add(feature)
            if feature not in declared:
                self.fail(
                    "schema",
                    f"the {where} output {feature!r} is missing; add Field(name={feature!r}, "
                    f"dtype={_feast_type_name(dtype)})",
                )
                continue
            if declared[feature] != dtype:
                self.fail(
                    f"schema[{feature!r}]",
                    f"is declared {_feast_type_name(declared[feature])}, "
                    f"but {function.name} over {_feast_type_name(input_dtype)} "
                    f"produces {_feast_type_name(dtype)}; declare dtype={_feast_type_name(dtype)}",
                )
                continue
            result.append(
                AggregationSpec(
                    feature=feature,
                    column=column,
                    function=function.name,
                    window=window,
                    slide=slide,
                    dtype=dtype,
                )
            )
        return result

    def _plain_features(self, message_schema: dict[str, str], declared: dict[str, str]) -> None:
        if not declared:
            self.fail("schema", "declares no features; add a Field for each message field to serve")
        for name, dtype in declared.items():
            if name not in message_schema:
                self.fail(
                    f"schema[{name!r}]",
                    f"is not in the message schema of KafkaSource {self.source.name!r} "
                    f"({', '.join(message_schema)}); add it to schema_json or remove the field",
                )
            elif message_schema[name] != dtype:
                self.fail(
                    f"schema[{name!r}]",
                    f"is declared {_feast_type_name(dtype)} but the message field is "
                    f"{_feast_type_name(message_schema[name])}; make them agree",
                )

    def _endpoint_override(self) -> str | None:
        options = getattr(self.source.batch_source, "file_options", None)
        return getattr(options, "s3_endpoint_override", None) or None

    def _offline_path(self) -> str:
        from feast import FileSource

        batch = self.source.batch_source
        if not isinstance(batch, FileSource) or not batch.path:
            self.fail(
                "batch_source",
                "sluice writes the offline store where the batch source points; "
                "set batch_source=FileSource(path=..., timestamp_field=...)",
                kind=self.source_kind,
                name=self.source.name,
            )
            return ""
        scheme = str(batch.path).partition("://")[0].lower() if "://" in str(batch.path) else "file"
        if scheme != "file" and scheme not in OBJECT_STORE_SCHEMES:
            self.fail(
                "batch_source.path",
                f"sluice cannot write offline data at {batch.path!r}: use a local path or a URI of "
                f"{', '.join(f'{known}://' for known in OBJECT_STORE_SCHEMES)}",
                kind=self.source_kind,
                name=self.source.name,
            )
            return ""
        # Each view owns a folder under the batch source: any number of views may read one source.
        return f"{str(batch.path).rstrip('/')}/{self.view.name}"


def type_name(dtype: Any) -> str:
    """sluice's name for a Feast type: a primitive's (``FLOAT64``), a list's ValueType (``DOUBLE_LIST``)."""
    name = getattr(dtype, "name", None)
    return str(name) if name else str(dtype.to_value_type().name)


def _feast_type_name(dtype: str) -> str:
    """``FLOAT64`` -> ``Float64``, ``FLOAT_LIST`` -> ``Array(Float32)``: the name a user writes in a Field.

    >>> _feast_type_name("UNIX_TIMESTAMP"), _feast_type_name("INT32"), _feast_type_name("FLOAT_LIST")
    ('UnixTimestamp', 'Int32', 'Array(Float32)')
    """
    if dtype in LIST_ELEMENTS:
        return f"Array({_feast_type_name(LIST_ELEMENTS[dtype])})"
    return {"UNIX_TIMESTAMP": "UnixTimestamp"}.get(dtype, dtype.capitalize().replace("int", "Int"))
