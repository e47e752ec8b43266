"""Property-based fuzzing from the served OpenAPI document: no 5xx, no answer off the documented schema.

schemathesis generates valid and invalid requests for every operation from the document the
facade serves, and each is sent with an admin, viewer, agent, unknown or no token, against
real hosts' ids as well as made-up ones. The number of examples is bounded to keep the run short.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies
from schemathesis import checks

from gpufleet.facade import main
from gpufleet.settings import AuthMode, Settings

from .helpers import ADMIN_TOKEN, HOSTS_PATH, REGISTRATION, VIEWER_TOKEN, K8s, bearer, unique_ip

EXAMPLES = 30
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(facade_namespace: str, tokens_file: Any, k8s: K8s) -> Iterator[str]:
    """A facade served by `main.serve` in its own thread and loop (schemathesis' client blocks)."""
    settings = Settings(
        namespace=facade_namespace,
        auth_mode=AuthMode.STATIC,
        static_tokens_file=tokens_file,
        facade_host="127.0.0.1",
        facade_port=_free_port(),
        api_timeout_seconds=1.0,
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


OPERATIONS = ["registerHost", "listHosts", "getHost", "updateHost", "deleteHost", "listHostGpus", "heartbeat"]


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_no_server_errors_and_no_undocumented_answers(
    served: str, schema: Any, agent: dict[str, Any], operation_id: str
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
        case.call_and_validate(base_url=served, headers=bearer(token) if token else {}, checks=CHECKS)

    fuzz()
