"""The OpenAPI document is valid and the API keeps to it: schemathesis generates requests from
``/api/v1/openapi.json`` (valid and invalid ones) and sends them to the real app, with an admin
token, over a broker and result store that hold tasks, dead letters and a paused queue, with
every check schemathesis has: no response is a server error or breaks its documented schema,
status, content type or headers; invalid requests are refused and documented ones accepted
(422 is documented for a request an operation cannot honour as given). The suite runs a
bounded number of examples per operation (``TQ_API_FUZZ_EXAMPLES``, 30); raise it to fuzz for
minutes (``TQ_API_FUZZ_ONLY`` keeps the operations whose label holds its text).
``/api/v1/stream`` is left out: it is an endless event stream (the serving tests cover it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as REGISTERED
from schemathesis.checks import load_all_checks
from schemathesis.config import SchemathesisConfig

from tests.support.dead_letters import bury
from tests.test_api_tasks import submit

#: examples per operation and mode; ``TQ_API_FUZZ_EXAMPLES=500`` fuzzes for several minutes
EXAMPLES = int(os.environ.get("TQ_API_FUZZ_EXAMPLES", "30"))
#: fuzz only the operations whose label holds this text (``GET /api/v1/workers``)
ONLY = os.environ.get("TQ_API_FUZZ_ONLY", "")
load_all_checks()
#: every check schemathesis has
CHECKS = REGISTERED.get_all()
#: 422 is every operation's documented answer to a request it cannot honour as given (a time
#: range that ends before it starts, a cursor no page handed out, a task nobody registered):
#: a valid request may get it
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
            }
        }
    }
)


@pytest.fixture
def api_schema(api: Any) -> Iterator[Any]:
    for i in range(3):
        submit(api, "bk.add", i, i, queue="fuzzed", priority=i)
    submit(api, "bk.add", 9, 9, countdown=3600)
    api.post("/api/v1/queues/paused/pause", {"reason": "fuzzing"})
    client = api.ops.celery
    bury(client, "bk.add", (1, 2))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api.app, config=CONFIG)
    yield schema.exclude(path="/api/v1/stream")


def test_the_openapi_document_is_valid(api: Any) -> None:
    from openapi_spec_validator import validate

    document = api.get("/api/v1/openapi.json", role=None).json
    validate(document)
    assert document["openapi"].startswith("3.")
    paths = set(document["paths"])
    assert {"/api/v1/tasks", "/api/v1/tasks/{task_id}", "/api/v1/dlq/replay",
            "/api/v1/queues/{name}/pause", "/api/v1/stream"} <= paths  # fmt: skip
    assert document["components"]["securitySchemes"]["BearerAuth"]["scheme"].lower() == "bearer"
    # a bound the models hold is a bound the document states (not a key no tool reads)
    text = json.dumps(document)
    assert not re.findall(r'"(ge|le|gt|lt|min_length|max_length)":', text)
    for path, operations in document["paths"].items():  # a body that is not JSON
        for method in {"post", "put", "patch"} & set(operations):
            assert "415" in operations[method]["responses"], (method, path)
    priority = document["components"]["schemas"]["SubmitIn"]["properties"]["priority"]
    assert {"minimum": 0, "maximum": 255}.items() <= priority["anyOf"][0].items(), priority


def described(exc: BaseException) -> str:
    """An error with the errors inside it (hypothesis reports a flaky case as a group)."""
    inner = exc.exceptions if isinstance(exc, BaseExceptionGroup) else ()
    return "\n".join([str(exc), *(f"  - {described(e)}" for e in inner)])


def drops_authorization(case: Any) -> bool:
    """Whether an invalid case is one without its bearer token (the document's security
    scheme): then it is sent without one, not with the admin token every other case gets."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    named = [getattr(data, "parameter", None),
             *(m.parameter for m in getattr(data, "mutations", None) or ())]  # fmt: skip
    return any(isinstance(n, str) and n.lower() == "authorization" for n in named)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])  # fmt: skip
def test_the_api_keeps_to_its_document(api: Any, api_schema: Any, mode: GenerationMode) -> None:
    failures: dict[str, str] = {}
    operations = [found.ok() for found in api_schema.get_all_operations()]
    assert len(operations) > 25
    operations = [o for o in operations if ONLY in o.label]

    for operation in operations:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.generate])  # fmt: skip
        def keeps_to_it(case: Any) -> None:
            headers = {} if drops_authorization(case) else api.headers("admin")
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            keeps_to_it()
        except hypothesis.errors.Unsatisfiable:
            continue  # no invalid request exists for an operation without inputs
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried, all shown
            failures[operation.label] = described(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
