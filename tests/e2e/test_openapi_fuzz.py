"""schemathesis, driven by deploy/openapi/scheduler.yaml, through Envoy with valid tokens:
no answer is a 5xx, every answer is documented (status, content type, body schema), and no
request that names another client or its queue gets its data. `make fuzz` runs the same with
>= 10,000 requests (bench/fuzz_api.py)."""

from __future__ import annotations

import uuid

import pytest

from deploy.local.stack import Stack
from tests.support import api_fuzz

# Generated requests per operation and mode, after the ~600 coverage cases: ~60 s on 2 cores.
EXAMPLES = 8


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    stack: Stack, tenant: str
) -> None:
    other = f"t-{uuid.uuid4().hex[:12]}"
    report = api_fuzz.run(
        stack.rest_url,
        own=tenant,
        own_token=stack.token(tenant),
        other=other,
        other_token=stack.token(other),
        examples=EXAMPLES,
    )
    assert not report.failures, report.summary()
    # The requests reached real logic: created and listed things, refused bad input,
    # refused the other client, and found nothing where nothing was.
    assert report.requests >= 600, report.summary()
    for status in (200, 400, 401, 403, 404):
        assert report.statuses[status] > 0, report.summary()
