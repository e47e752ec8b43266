"""Property-based fuzzing from the served OpenAPI document: no 5xx, no answer off the documented schema.

schemathesis generates valid and invalid requests for every operation from the document the
facade serves, and each is sent with an admin, viewer, agent, unknown or no token, against
real hosts' ids as well as made-up ones. A stateful run chains the operations as the document's
links say (register, then read, update, heartbeat and delete the host it made).

`GPUFLEET_FUZZ_CASES` sets how many requests to aim for in all (default 300, about 10 s; the
documented long run is 5,000 or more):

    GPUFLEET_FUZZ_CASES=5000 .venv/bin/pytest tests/facade/test_fuzz.py -s

Each test reports the requests it sent and how many were answered 5xx (the test fails on any).
Seven eighths of the cases go to the operations one by one, the rest to the stateful run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import checks

from gpufleet.facade import main
from gpufleet.settings import AuthMode, Settings
from tests.support.ports import free_port

from .helpers import ADMIN_TOKEN, HOSTS_PATH, REGISTRATION, VIEWER_TOKEN, K8s, bearer, unique_ip

CASES = int(os.environ.get("GPUFLEET_FUZZ_CASES", "300"))
OPERATIONS = ["registerHost", "listHosts", "getHost", "updateHost", "deleteHost", "listHostGpus", "heartbeat"]
#: Examples per operation: each example is one request.
EXAMPLES = max(10, math.ceil(CASES * 7 / 8 / len(OPERATIONS)))
#: Stateful scenarios, of up to STEPS requests each (about half that on average).
STEPS = 10
SCENARIOS = max(5, math.ceil(CASES / 8 / (STEPS / 2)))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(facade_namespace: str, tokens_file: Any, k8s: K8s) -> Iterator[str]:
    """A facade served by `main.serve` in its own thread and loop (schemathesis' client blocks)."""
    settings = Settings(
        namespace=facade_namespace,
        auth_mode=AuthMode.STATIC,
        static_tokens_file=tokens_file,
        facade_host="127.0.0.1",
        facade_port=free_port(),
        api_timeout_seconds=1.0,
        # A fifth of the requests carry a wrong token: with the default limit, the client would be
        # answered 429 for most of the run. The limit has tests of its own (test_auth_abuse.py).
        auth_failure_burst=10**9,
    )
    loop = asyncio.new_event_loop()
    stop, ready = asyncio.Event(), threading.Event()

    async def run() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(main.serve(settings, stop=stop, ready=started))
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        ready.set()
        await task

    before = {item["metadata"]["name"] for item in k8s.ok("GET", HOSTS_PATH)["items"]}
    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(30) and thread.is_alive(), "the facade did not start"
    yield f"http://127.0.0.1:{settings.facade_port}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    loop.close()
    for item in k8s.ok("GET", HOSTS_PATH)["items"]:
        if item["metadata"]["name"] not in before:
            k8s("DELETE", f"{HOSTS_PATH}/{item['metadata']['name']}")


@pytest.fixture(scope="module")
def agent(served: str) -> dict[str, Any]:
    response = requests.post(
        f"{served}/api/v1/hosts",
        headers=bearer(ADMIN_TOKEN),
        timeout=10,
        json={**REGISTRATION, "ip_address": unique_ip()},
    )
    assert response.status_code == 201
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.fixture(scope="module")
def schema(served: str) -> Any:
    return schemathesis.openapi.from_url(f"{served}/api/v1/openapi.json")


class Tally:
    """Requests sent and answers received, by HTTP status class."""

    def __init__(self) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()

    def count(self, status: int) -> None:
        self.statuses[status // 100 * 100] += 1

    def report(self, what: str) -> str:
        sent = sum(self.statuses.values())
        by_class = ", ".join(f"{status // 100}xx: {n}" for status, n in sorted(self.statuses.items()))
        return f"fuzz {what}: {sent} requests ({by_class}); 5xx: {self.statuses[500]}"


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    total = Tally()
    yield total
    print("\n" + total.report("in all"))


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_no_server_errors_and_no_undocumented_answers(
    served: str, schema: Any, agent: dict[str, Any], operation_id: str, tally: Tally
) -> None:
    operation = schema.find_operation_by_id(operation_id)
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    cases = strategies.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))
    if "{host_id}" in operation.path:
        cases = strategies.one_of(
            cases,
            *(
                operation.as_strategy(generation_mode=mode, path_parameters={"host_id": agent["host_id"]})
                for mode in modes
            ),
        )
    if operation_id == "deleteHost":  # keep the agent's host for the other operations
        cases = cases.filter(lambda case: case.path_parameters.get("host_id") != agent["host_id"])
    tokens = strategies.sampled_from([ADMIN_TOKEN, VIEWER_TOKEN, agent["agent_token"], "not-a-token", None])

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=cases, token=tokens)
    def fuzz(case: Any, token: str | None) -> None:
        case.headers = {key: value for key, value in (case.headers or {}).items() if key.lower() != "authorization"}
        response = case.call(base_url=served, headers=bearer(token) if token else {})
        mine.count(response.status_code)
        tally.count(response.status_code)
        case.validate_response(response, checks=CHECKS)

    mine = Tally()
    fuzz()
    print("\n" + mine.report(operation_id))
    assert mine.statuses[500] == 0


def test_stateful_sequences_find_no_server_errors(served: str, schema: Any, tally: Tally) -> None:
    """Register, then use what the answers give (host ids, agent tokens) in the operations that follow."""
    mine = Tally()

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        agent_tokens: dict[str, str] = {}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            token = ADMIN_TOKEN
            if case.operation.path.endswith("/heartbeat"):
                token = self.agent_tokens.get(case.path_parameters.get("host_id", ""), ADMIN_TOKEN)
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            return {"base_url": served, "headers": bearer(token)}

        def after_call(self, response: Any, case: Any) -> None:
            mine.count(response.status_code)
            tally.count(response.status_code)
            if case.operation.path == "/api/v1/hosts" and case.method.upper() == "POST" and response.status_code == 201:
                data = response.json()["data"]
                self.agent_tokens[data["host_id"]] = data["agent_token"]

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    settings = hypothesis.settings(
        max_examples=SCENARIOS,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    target = CASES - len(OPERATIONS) * EXAMPLES
    for _ in range(20):
        # The server's answers (which hosts exist) may change what a replayed scenario draws: the
        # sequences are not reproducible by nature. Go on with a fresh session then, as schemathesis
        # itself does; a 5xx met on the way is counted all the same.
        with contextlib.suppress(FlakyStrategyDefinition):
            Workflow.run(settings=settings)
        if sum(mine.statuses.values()) >= target:
            break
    print("\n" + mine.report("stateful"))
    assert mine.statuses[500] == 0
