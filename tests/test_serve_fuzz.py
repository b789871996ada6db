"""A fuzzer driven by the server's own OpenAPI schema, against a live `ptflow serve` process.

schemathesis reads /openapi.json and generates requests from it with hypothesis: bodies that fit
the schema (positive) and bodies that break it (negative), for every operation. The reference is
the schema itself: every answer must be one of the statuses it lists for the operation, with the
content type and body it describes, and none may be a 5xx. Derandomised, so CI sees the same
requests each run; the count of requests sent is checked too (at least 1,000).
"""

from __future__ import annotations

from collections import Counter

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
import requests  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode, checks  # noqa: E402

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance, checks.negative_data_rejection]
EXAMPLES = {  # (positive, negative) requests per operation; operations without a body have one request to make
    ("POST", "/v1/predict"): (350, 300),
    ("POST", "/v1/predict/image"): (250, 150),
}


def fuzz_operation(operation, mode: GenerationMode, examples: int, url: str, session, statuses: Counter) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        response = case.call(base_url=url, session=session, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    fuzz()


@pytest.mark.slow
def test_fuzzed_requests_get_no_5xx_and_answers_that_fit_the_schema(serve_process, trained):
    statuses: Counter = Counter()
    with serve_process(trained["safetensors"], "--max_inputs", "8") as url, requests.Session() as session:
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {(o.method.upper(), o.path) for o in operations} >= {
            ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/model"), ("GET", "/metrics"), *EXAMPLES}
        for operation in operations:
            positive, negative = EXAMPLES.get((operation.method.upper(), operation.path), (5, 0))
            fuzz_operation(operation, GenerationMode.POSITIVE, positive, url, session, statuses)
            if negative:
                fuzz_operation(operation, GenerationMode.NEGATIVE, negative, url, session, statuses)
    print(f"fuzzed requests by status: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 1000
    assert not [status for status in statuses if status >= 500]
    assert statuses[200] > 0 and len(statuses) > 3  # successes and several kinds of refusal
