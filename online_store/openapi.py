"""The OpenAPI description of ``sluice serve``, served at ``/openapi.json``.

It spells out what the server takes and answers, so that clients can be generated and the server can be
checked against it: the tests run schemathesis over it against a running server (no 5xx, every status
documented, every error a JSON object whose ``error`` says what is wrong).

>>> spec = openapi()
>>> sorted(spec["paths"])
['/get-online-features', '/health', '/metrics', '/openapi.json', '/push']
>>> spec["paths"]["/health"]["get"]["security"]
[]
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi"]

_SCALAR = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}]}
_VALUES = {"type": "array", "items": {"anyOf": [*_SCALAR["anyOf"], {"type": "null"}]}}
_COLUMNS = {"type": "object", "minProperties": 1, "additionalProperties": _VALUES}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_ERRORS = {
    "400": _error("The request is malformed or names something the registry does not hold."),
    "401": _error("The bearer token is missing or wrong."),
    "413": _error("The body or the number of rows is over the server's limit."),
    "503": _error("Redis or Kafka did not answer, or the request took longer than the server's timeout."),
}


def openapi(*, title: str = "sluice feature server") -> dict[str, Any]:
    """The description, as a JSON-ready dict (OpenAPI 3.0)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": "1",
            "description": "Feast's feature server API: online features at inference time, and pushes.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string", "minLength": 1}},
                },
                "OnlineFeaturesRequest": {
                    "type": "object",
                    "required": ["entities"],
                    "additionalProperties": False,
                    "properties": {
                        "features": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                        "feature_service": {"type": "string"},
                        "entities": _COLUMNS,
                        "full_feature_names": {"type": "boolean"},
                        "request_data": _COLUMNS,
                    },
                },
                "OnlineFeaturesResponse": {
                    "type": "object",
                    "required": ["metadata", "results"],
                    "properties": {
                        "metadata": {
                            "type": "object",
                            "required": ["feature_names"],
                            "properties": {"feature_names": {"type": "array", "items": {"type": "string"}}},
                        },
                        "results": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["values", "statuses", "event_timestamps"],
                                "properties": {
                                    "values": {"type": "array"},
                                    "statuses": {
                                        "type": "array",
                                        "items": {
                                            "enum": ["PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"]
                                        },
                                    },
                                    "event_timestamps": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
                "PushRequest": {
                    "type": "object",
                    "required": ["push_source_name", "df"],
                    "additionalProperties": False,
                    "properties": {
                        "push_source_name": {"type": "string", "minLength": 1},
                        "df": _COLUMNS,
                        "to": {"enum": ["online", "offline", "online_and_offline"]},
                        "allow_registry_cache": {"type": "boolean"},
                        "transform_on_write": {"type": "boolean"},
                    },
                },
                "PushReceipt": {
                    "type": "object",
                    "required": ["push_source_name", "rows", "topic", "last_offsets"],
                    "properties": {
                        "push_source_name": {"type": "string"},
                        "rows": {"type": "integer"},
                        "topic": {"type": "string"},
                        "last_offsets": {"type": "object", "additionalProperties": {"type": "integer"}},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/get-online-features": {
                "post": {
                    "summary": "Read online features for entity rows (Feast's JSON).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/OnlineFeaturesRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "One result per feature, with a value, status and time per row.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/OnlineFeaturesResponse"}
                                }
                            },
                        },
                        **_ERRORS,
                        "422": _error("An on-demand view could not compute its features from the request."),
                    },
                }
            },
            "/push": {
                "post": {
                    "summary": "Hand rows of a push source to the stream worker (Feast's push request).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/PushRequest"}}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The rows are in Kafka; the worker writes them to the stores.",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/PushReceipt"}}
                            },
                        },
                        **_ERRORS,
                        "404": _error("This server takes no pushes (it serves no feature repo)."),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "200 when Redis and the registry answer.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Healthy.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {
                                            "status": {"enum": ["ok"]},
                                            "feature_views": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        "503": _ERRORS["503"],
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {"description": "The text exposition format.", "content": {"text/plain": {}}},
                        "401": _ERRORS["401"],
                        "503": _ERRORS["503"],
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This description.",
                    "security": [],
                    "responses": {
                        "200": {"description": "OpenAPI 3.0.", "content": {"application/json": {}}}
                    },
                }
            },
        },
    }
