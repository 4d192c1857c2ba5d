"""The greeter against its own OpenAPI document, through the gateway (schemathesis)."""

from __future__ import annotations

import schemathesis

# Loaded when the tests run, from the deployed app: no server is needed at collection time.
schema = schemathesis.pytest.from_fixture("falemu_schema")


@schema.parametrize()
def test_api_matches_its_schema(case):
    case.call_and_validate()
