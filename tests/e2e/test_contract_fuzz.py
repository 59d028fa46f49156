"""The API against its own contract: schemathesis reads the live /openapi.json, generates requests
that fit it and requests that break it, for every operation, and checks every answer against it.

Nothing may answer 5xx (PostgreSQL, Cassandra and Kafka are up here, so no 503 is expected), and
every answer must have a status, a media type and a body the schema declares for that operation.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tally.auth.devissuer import bearer

# positive_data_acceptance is left out on purpose: the schema cannot say that an event time lies
# between 1970 and the server's clock plus TALLY_MAX_AHEAD_S, or that `to` is at most 31 days after
# `from`, so many requests that fit the schema are rightly refused with a 422 naming the field.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    unsupported_method,  # another method on an API path: 405 naming the route's own in Allow
]
# Generated examples per operation: few in the quick run, part of `make test`; `make test-fuzz` runs
# the long one. Schemathesis's coverage phase adds its own deterministic cases (boundaries, missing
# and mistyped parameters, other media types and methods: ~600 requests over the six operations)
# whatever the number.
QUICK_EXAMPLES = int(os.environ.get("TALLY_FUZZ_QUICK_EXAMPLES", "30"))
LONG_EXAMPLES = int(os.environ.get("TALLY_FUZZ_EXAMPLES", "500"))
# Every request goes over the network to the real pipeline: no per-example deadline, and a slow
# example or a small rejection rate is no reason to stop.
NETWORK = {"deadline": None, "suppress_health_check": list(HealthCheck)}


@schemathesis.serializer("application/x-ndjson")
def ndjson(_ctx, value) -> bytes:
    """The schema declares an NDJSON body as a string; anything else the negative cases make goes as
    its JSON, which is an NDJSON body of one line too."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def contract(api):
    return schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("contract")


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request):
    """schemathesis 4.32.5 names each operation's subtest through `node._nodeid`, which pytest 9.2
    replaced with `node._id`: given the attribute it reads, it reports as it should."""
    request.node._nodeid = request.node.nodeid


def test_the_contract_covers_every_operation(contract):
    operations = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in contract.get_all_operations())}
    assert operations == {
        "POST /api/events",
        "GET /api/aggregate",
        "GET /api/filtered_events",
        "GET /api/metrics",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /quality/{path}",
        "GET /api/ops/panels",
        "GET /api/ops/series",
        "GET /api/ops/alerts",
    }
    body = contract.raw_schema["paths"]["/api/events"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/x-ndjson"}


@pytest.fixture(scope="module")
def auth(stack) -> dict[str, str]:
    """A token with every scope: the contract is fuzzed past the door (tests/e2e/test_auth.py tries
    the door itself). Schemathesis's negative cases still drop or garble it where they choose."""
    return bearer(stack)


@schema.parametrize()
@settings(max_examples=QUICK_EXAMPLES, **NETWORK)
def test_every_answer_keeps_to_the_contract(case, auth):
    case.call_and_validate(headers=auth, checks=CHECKS)


@pytest.mark.fuzz
@schema.parametrize()
@settings(max_examples=LONG_EXAMPLES, **NETWORK)
def test_every_answer_keeps_to_the_contract_over_a_long_run(case, auth):
    case.call_and_validate(headers=auth, checks=CHECKS)
