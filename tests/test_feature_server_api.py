"""schemathesis against ``sluice serve``'s own OpenAPI description, over a real server and Redis.

Each operation gets generated requests, valid and invalid: the server must never answer 5xx, must answer
only the statuses it documents, with the documented bodies, must refuse what the description rules out,
and every error must be a JSON object whose ``error`` says what is wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.served import feast_materialized_repo, now_utc, serving

pytestmark = pytest.mark.stack

TOKEN = "api-token"


@pytest.fixture(scope="module")
def api_server(stack_config: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("api")
    served = feast_materialized_repo(root / "repo", project=f"api_{uuid.uuid4().hex[:8]}", now=now_utc())
    with serving(served.path, root / "serve.log", "--request-timeout", "5", token=TOKEN) as url:
        yield url


@schemathesis.check
def errors_say_what_is_wrong(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], response.text
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    errors_say_what_is_wrong,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_generated_request_gets_a_documented_answer_and_never_a_5xx(api_server: str, mode: Any) -> None:
    schema = schemathesis.openapi.from_url(f"{api_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == {
        ("POST", "/get-online-features"),
        ("POST", "/push"),
        ("GET", "/health"),
        ("GET", "/metrics"),
    }  # schemathesis leaves out the description's own route
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not len(operation.body):
            continue  # nothing of a GET without parameters can be made invalid

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: Any) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

        call()
