"""Register features in Python: Feast's definition objects, validated and compiled for streaming.

``from features import Entity, StreamFeatureView, ...`` gives Feast's own classes, so existing Feast
definitions work unchanged. They are imported on first use: importing Feast takes seconds, and the
inference read path imports this package only for its configuration and specs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from features.config import ConfigError, KafkaConfig, RedisConfig, SluiceConfig, load_config

if TYPE_CHECKING:
    from feast import (
        Aggregation,
        Entity,
        FeatureService,
        FeatureView,
        Field,
        FileSource,
        KafkaSource,
        StreamFeatureView,
        ValueType,
    )
    from feast.data_format import JsonFormat
    from feast.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp

_FEAST_NAMES = {
    "Aggregation": "feast",
    "Entity": "feast",
    "FeatureService": "feast",
    "FeatureView": "feast",
    "Field": "feast",
    "FileSource": "feast",
    "KafkaSource": "feast",
    "StreamFeatureView": "feast",
    "ValueType": "feast",
    "JsonFormat": "feast.data_format",
    "Array": "feast.types",
    "Bool": "feast.types",
    "Bytes": "feast.types",
    "Float32": "feast.types",
    "Float64": "feast.types",
    "Int32": "feast.types",
    "Int64": "feast.types",
    "String": "feast.types",
    "UnixTimestamp": "feast.types",
}

__all__ = [
    "Aggregation",
    "Array",
    "Bool",
    "Bytes",
    "ConfigError",
    "Entity",
    "FeatureService",
    "FeatureView",
    "Field",
    "FileSource",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "JsonFormat",
    "KafkaConfig",
    "KafkaSource",
    "RedisConfig",
    "SluiceConfig",
    "StreamFeatureView",
    "String",
    "UnixTimestamp",
    "ValueType",
    "load_config",
]


def __getattr__(name: str) -> Any:
    module = _FEAST_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'features' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
