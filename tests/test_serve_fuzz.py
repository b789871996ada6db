"""A fuzzer driven by the server's own OpenAPI schema, against a live `ptflow serve` process.

schemathesis reads /openapi.json and generates requests from it with hypothesis: bodies that fit
the schema (positive) and bodies that break it (negative), for every operation. The reference is
the schema itself, under every check schemathesis has: every answer must be one of the statuses
it lists for the operation, with the content type and body it describes, none may be a 5xx, a
request that breaks the schema must be refused and one that fits it accepted (schemathesis.toml
says which answers an image's bytes may still get). Derandomised, so CI sees the same requests
each run; the count of requests sent is checked too (at least 1,000). Its coverage phase (edge
cases of each keyword: empty arrays, missing fields, other methods) runs through the CLI, as a
user would run it.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
import requests  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

CONFIG = Path(__file__).with_name("schemathesis.toml")
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
        case.validate_response(response)  # every check schemathesis has (all are enabled by default)

    fuzz()


@pytest.mark.slow
def test_fuzzed_requests_get_no_5xx_and_answers_that_fit_the_schema(serve_process, trained):
    statuses: Counter = Counter()
    with serve_process(trained["safetensors"], "--max_inputs", "8") as url, requests.Session() as session:
        schema = schemathesis.openapi.from_url(url + "/openapi.json", config=SchemathesisConfig.from_path(CONFIG))
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


@pytest.mark.slow
def test_schemathesis_all_checks_coverage_phase_finds_nothing(serve_process, trained, tmp_path):
    """`schemathesis run --checks all` as a user runs it, limited to its coverage phase: the boundary
    cases of every keyword (minItems, required, oneOf, additionalProperties, unsupported methods)."""
    with serve_process(trained["safetensors"], "--max_inputs", "8") as url:
        run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
                              url + "/openapi.json", "--checks", "all", "--phases", "coverage", "--seed", "1",
                              "--no-color"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)  # where it keeps its cache
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
