"""Two facade replicas against one API, as the chart runs them: every write path agrees across them.

Two `gpufleet facade` processes (each with its own caches) share the cluster under test and the
namespace of this session. Callers reach either, as through a Service: registrations of one IP
race through both, and a host registered through one is updated, deleted and heartbeated through
the other right away, before that one's watch may have brought it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from gpufleet.api import meta
from gpufleet.facade import claims, errors
from tests.support.ports import free_port

from .helpers import (
    HOSTS_PATH,
    MERGE,
    REGISTRATION,
    Facade,
    K8s,
    configmap_path,
    eventually,
    hosts_with_ip,
    unique_ip,
    unique_ipv6_groups,
    unique_name,
)

ATTEMPTS = 20
START_TIMEOUT = 30.0


@dataclasses.dataclass
class Process:
    """One `gpufleet facade` process; its output goes to a file so that it never blocks on a pipe."""

    url: str
    popen: subprocess.Popen[bytes]
    log: pathlib.Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, f"the facade exited:\n{self.output()}"
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.url}/readyz did not answer 200 within {START_TIMEOUT:g}s:\n{self.output()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _start(kubeconfig: pathlib.Path, namespace: str, tokens_file: pathlib.Path, log: pathlib.Path) -> Process:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GPUFLEET_")}
    env.update(
        KUBECONFIG=str(kubeconfig),
        GPUFLEET_AUTH_MODE="static",
        GPUFLEET_STATIC_TOKENS_FILE=str(tokens_file),
        GPUFLEET_FACADE_HOST="127.0.0.1",
        GPUFLEET_FACADE_PORT=str(port),
        GPUFLEET_NAMESPACE=namespace,
    )
    with log.open("wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "gpufleet", "facade"], env=env, stdout=out, stderr=out)
    return Process(f"http://127.0.0.1:{port}", popen, log)


@pytest.fixture(scope="module")
def processes(
    kube: Any, facade_namespace: str, tokens_file: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Process]]:
    folder = tmp_path_factory.mktemp("replicas")
    started = [_start(kube.kubeconfig, facade_namespace, tokens_file, folder / f"facade-{i}.log") for i in (1, 2)]
    try:
        for process in started:
            process.wait_ready()
        yield started
    finally:
        for process in started:
            process.stop()


@pytest.fixture
async def replicas(processes: list[Process], k8s: K8s) -> AsyncIterator[tuple[Facade, Facade]]:
    """Clients of the two replicas; the hosts they registered are deleted afterwards."""
    registered: list[str] = []
    async with aiohttp.ClientSession() as http:
        first, second = (Facade(process.url, http, None, registered) for process in processes)
        yield first, second
    for name in registered:
        k8s("DELETE", f"{HOSTS_PATH}/{name}")


def _body(ip: str) -> dict[str, Any]:
    return {**REGISTRATION, "ip_address": ip}


def _is_duplicate(status: int, answer: Any) -> bool:
    return (status, answer["code"]) == (409, errors.DUPLICATE_IP.code) and answer["message"].startswith(
        errors.DUPLICATE_IP.message
    )


def _ipv6_spellings() -> list[str]:
    a, b = unique_ipv6_groups()
    return [f"fd00::{a:x}:{b:x}", f"fd00:0::{a:x}:{b:x}", f"FD00:0:0::{a:X}:{b:X}"]


@pytest.mark.parametrize(
    "spellings",
    [lambda: [unique_ip()], _ipv6_spellings],
    ids=["ipv4", "ipv6-spelled-three-ways"],
)
async def test_concurrent_registrations_of_one_ip_through_both_replicas_make_one_host(
    replicas: tuple[Facade, Facade], k8s: K8s, spellings: Any
) -> None:
    for _ in range(3):  # a few rounds, for a few different interleavings
        ips: list[str] = spellings()
        answers = await asyncio.gather(
            *(
                replicas[attempt % 2].call("POST", "/api/v1/hosts", json=_body(ips[attempt % len(ips)]))
                for attempt in range(ATTEMPTS)
            )
        )
        created = [answer["data"]["host_id"] for status, answer in answers if status == 201]
        replicas[0].registered.extend(created)
        assert len(created) == 1, answers
        assert all(_is_duplicate(status, answer) for status, answer in answers if status != 201), answers
        assert hosts_with_ip(k8s, ips[0]) == created
        for replica in replicas:  # and the IP stays taken, whichever replica is asked
            status, answer = await replica.call("POST", "/api/v1/hosts", json=_body(ips[-1]))
            assert _is_duplicate(status, answer) and created[0] in answer["message"], answer


async def test_deleting_a_host_through_either_replica_frees_its_ip_for_both(
    replicas: tuple[Facade, Facade], k8s: K8s
) -> None:
    first, second = replicas
    ip = unique_ip()
    host_id = (await first.register(ip_address=ip))["host_id"]
    for deleting, registering in ((second, first), (first, second)):
        status, _ = await deleting.call("DELETE", f"/api/v1/hosts/{host_id}")
        assert status == 204
        host_id = (await registering.register(ip_address=ip))["host_id"]  # at once, through either replica
        status, answer = await deleting.call("POST", "/api/v1/hosts", json=_body(ip))
        assert _is_duplicate(status, answer) and host_id in answer["message"], answer
    assert hosts_with_ip(k8s, ip) == [host_id]


async def test_a_host_registered_through_one_replica_is_updated_through_the_other_at_once(
    replicas: tuple[Facade, Facade], k8s: K8s
) -> None:
    first, second = replicas
    host_id = (await first.register())["host_id"]
    status, _ = await second.call("PUT", f"/api/v1/hosts/{host_id}", json={"name": "renamed"})
    assert status == 200
    # Label sets replace each other as a whole, whichever replica each update reaches.
    for replica, labels in ((first, {"a": "1"}), (second, {"b": "2"}), (first, {"c": "3"})):
        status, _ = await replica.call("PUT", f"/api/v1/hosts/{host_id}", json={"labels": labels})
        assert status == 200
    stored = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")
    assert stored["spec"]["displayName"] == "renamed"
    assert {key: value for key, value in stored["metadata"]["labels"].items() if "gpufleet.io" not in key} == {"c": "3"}

    async def both_read_it() -> bool:
        details = [await replica.detail(host_id) for replica in replicas]
        return all(detail["name"] == "renamed" and detail["labels"] == {"c": "3"} for detail in details)

    assert await eventually(both_read_it, within=5.0)


async def test_heartbeats_reach_the_host_through_either_replica(replicas: tuple[Facade, Facade]) -> None:
    first, second = replicas
    host = await first.register()
    host_id, token = host["host_id"], host["agent_token"]

    async def accepted_by_the_other() -> bool:
        # The other replica knows the new agent token once its watch has brought the token Secret.
        status, _ = await second.heartbeat(host_id, token)
        return status == 200

    assert await eventually(accepted_by_the_other, within=5.0)
    answers = await asyncio.gather(*(replicas[i % 2].heartbeat(host_id, token, used_cpu=i) for i in range(10)))
    assert [status for status, _ in answers] == [200] * 10

    async def both_read_a_beat() -> bool:
        details = [await replica.detail(host_id) for replica in replicas]
        return all(detail["last_heartbeat"] and detail["used_cpu"] in range(10) for detail in details)

    assert await eventually(both_read_a_beat, within=5.0)


async def test_a_claim_whose_host_is_being_deleted_does_not_block_its_ip(
    replicas: tuple[Facade, Facade], k8s: K8s
) -> None:
    """kubectl deleted the host; its deletion waits on the operator's cleanup, and so does the GC of its claim."""
    first, second = replicas
    ip = unique_ip()
    old = (await first.register(ip_address=ip))["host_id"]
    k8s.ok("PATCH", f"{HOSTS_PATH}/{old}", {"metadata": {"finalizers": [meta.CLEANUP_FINALIZER]}}, MERGE)
    k8s.ok("DELETE", f"{HOSTS_PATH}/{old}")
    try:
        new = (await second.register(ip_address=ip))["host_id"]
        status, answer = await first.call("POST", "/api/v1/hosts", json=_body(ip))
        assert _is_duplicate(status, answer) and new in answer["message"], answer
    finally:
        k8s("PATCH", f"{HOSTS_PATH}/{old}", {"metadata": {"finalizers": None}}, MERGE)


async def test_a_claim_outliving_its_host_does_not_block_its_ip(
    replicas: tuple[Facade, Facade], k8s: K8s, facade_namespace: str
) -> None:
    """The Host was deleted with kubectl and the garbage collector has not removed its claim yet."""
    ip = unique_ip()
    gone = k8s.create_host(unique_name(), ip)
    k8s.ok("DELETE", f"{HOSTS_PATH}/{gone['metadata']['name']}")
    claim = claims.manifest(ip, gone["metadata"]["name"], facade_namespace)
    path = configmap_path(facade_namespace, claim["metadata"]["name"])
    k8s.ok("POST", configmap_path(facade_namespace), claim)
    # Bound to the Host after it went: a real collector removes such a claim soon, the emulated one never.
    reference = {"apiVersion": meta.API_VERSION, "kind": "Host", "name": gone["metadata"]["name"]}
    k8s.ok("PATCH", path, {"metadata": {"ownerReferences": [{**reference, "uid": gone["metadata"]["uid"]}]}}, MERGE)
    host_id = (await replicas[1].register(ip_address=ip))["host_id"]
    owner = k8s.ok("GET", path)["metadata"]["ownerReferences"][0]
    assert (owner["name"], owner["uid"]) == (host_id, k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")["metadata"]["uid"])
