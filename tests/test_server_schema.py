"""Schemathesis against /openapi.json: generated requests never get a 5xx answer, and
every answer matches the schema (status codes, bodies)."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

import support_server
from satchel.server import Config

EXAMPLES = 12  # per operation: keeps the run to seconds
# Not positive_data_acceptance: a key may be any JSON string to the schema, but one with
# a NUL or a lone surrogate is a 400, as the core refuses it (keys.py); likewise base64.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


def test_every_operation_against_the_schema(tmp_path: Path) -> None:
    running = support_server.serve(f"sqlite:///{tmp_path}/schema.db", Config())
    try:
        tenant = running.tenant(quota_bytes=1 << 20)
        admin = running.tenant(admin=True, prefix="admin:")
        schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 18
        for operation in operations:
            token = admin if operation.path == "/v1/tenants" else tenant
            headers = {"Authorization": f"Bearer {token}"}

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)  # noqa: B023

            try:
                check()
            except Exception as exc:
                exc.add_note(f"operation: {operation.method.upper()} {operation.path}")
                raise
    finally:
        support_server.stop(running)
