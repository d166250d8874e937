"""Schemathesis over the hub's OpenAPI document: generated requests to every operation, without credentials (all
refused but ``/health``) and with an admin token (all past authentication)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from hub.app import Hub
from tests.hub.auth.clients import token_for

FAST = settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _fuzz(app: FastAPI, headers: dict[str, str], check: Callable[[Any, Any], None]) -> int:
    """Run generated cases of every operation through ``check``; return how many operations ran."""
    operations = [result.ok() for result in schemathesis.openapi.from_asgi("/openapi.json", app).get_all_operations()]
    for operation in operations:

        @FAST
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            check(case, case.call(headers=headers))

        run()
    return len(operations)


def test_no_operation_works_anonymously(app: FastAPI) -> None:
    def refused(case: Any, response: Any) -> None:  # generated bearer values are bad tokens: 401, then 429
        if response.status_code == 422 and "NUL byte" in response.text:
            return  # refused before authentication by the request limits (hub/request_limits.py): nothing ran
        expected = {200} if (case.method, case.path) == ("GET", "/health") else {401, 429}
        assert response.status_code in expected, (case.method, case.formatted_path, response.text)

    assert _fuzz(app, {}, refused) > 30


def test_an_admin_token_passes_every_operation(hub: Hub, app: FastAPI) -> None:
    hub.start()  # deployments need the broker

    def admitted(case: Any, response: Any) -> None:
        assert response.status_code not in (401, 403, 429), (case.method, case.formatted_path, response.text)

    assert _fuzz(app, {"Authorization": f"Bearer {token_for(hub)}"}, admitted) > 30
