"""Schemathesis against the running API's own OpenAPI document: no 5xx, every answer as documented.

A real API process over the session's Redis, with no worker (generated jobs stay queued; nothing runs
the engine). Bounded: a few dozen examples per operation. The checkpoint upload is left out: random
multipart bodies only exercise the 4xx paths tests/integration/test_service.py covers by hand, slowly.

Checked: no 5xx, every status code, content type, header and body as the schema documents them.
Not checked: that every schema-valid body is accepted. JobRequest has rules JSON Schema does not
carry (exactly one of `sparsity`/`sparsities`; names are not paths; the checkpoint and dataset
must exist), so a 422 or 404 for a schema-valid body is the right answer, not a defect.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.support.stack import Service

pytestmark = pytest.mark.slow

KEY = "fuzz-key-0123456789abcdef"


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    stack = Service(redis_url, root, {"PRUNEBENCH_API_KEYS": f"fuzzer:{KEY}", "PRUNEBENCH_AUTH_DISABLED": "0"})
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def test_api_conforms_to_its_schema(api: Service) -> None:
    # Driven by hand rather than by schemathesis' pytest plugin: the plugin's lazy fixture loading does
    # not work with this pytest. One Hypothesis run per operation; failures are gathered, then reported.
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json").exclude(method="POST", path="/v1/checkpoints")
    headers = {"Authorization": f"Bearer {KEY}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=api.url, headers=headers, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 8
    assert not failures, "\n\n".join(failures)
