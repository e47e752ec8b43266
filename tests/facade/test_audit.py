"""Who did what: each REST write is one structured audit line, and the Kubernetes API learns the caller.

The audit line (logger `gpufleet.facade.audit`) names the caller, the operation, the host, the
outcome and the request id, never a token. The Kubernetes API calls made for a request carry the
caller and the request id in their `User-Agent`, which the API server's audit log records: here a
proxy in front of the emulated API plays the audit log.
"""

from __future__ import annotations

import json
import logging
import pathlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils, web

from gpufleet import logs
from gpufleet.settings import Settings
from kube_emulator import write_kubeconfig

from .conftest import StartFacade, TokenReviews
from .helpers import ADMIN_TOKEN, REGISTRATION, VIEWER_TOKEN, Facade, unique_ip

AUDIT = "gpufleet.facade.audit"
FIELDS = {"request_id", "operation", "method", "path", "host", "caller", "caller_kind", "client", "status", "code"}


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The audit records as the JSON log format writes them (one object per line)."""
    formatter = logs.JsonFormatter()
    return [json.loads(formatter.format(record)) for record in caplog.records if record.name == AUDIT]


@pytest.fixture
def audit_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=AUDIT)
    return caplog


async def test_every_write_is_one_line_naming_who_what_which_host_and_how_it_ended(
    facade: Facade, audit_log: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Request-Id": "change-4711"}
    async with facade.http.post(
        f"{facade.url}/api/v1/hosts",
        json={**REGISTRATION, "ip_address": unique_ip()},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **headers},
    ) as response:
        assert response.status == 201 and response.headers["X-Request-Id"] == "change-4711"
        host = (await response.json())["data"]
    facade.registered.append(host["host_id"])
    host_id = host["host_id"]
    await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN)  # reads are not audited
    await facade.call("GET", f"/api/v1/hosts/{host_id}", token=VIEWER_TOKEN)
    assert (await facade.call("PUT", f"/api/v1/hosts/{host_id}", json={"name": "renamed"}))[0] == 200
    assert (await facade.heartbeat(host_id, host["agent_token"]))[0] == 200
    assert (await facade.call("DELETE", f"/api/v1/hosts/{host_id}"))[0] == 204

    lines = _lines(audit_log)
    assert [(line["operation"], line["method"], line["status"], line["outcome"]) for line in lines] == [
        ("register", "POST", 201, "success"),
        ("update", "PUT", 200, "success"),
        ("heartbeat", "POST", 200, "success"),
        ("delete", "DELETE", 204, "success"),
    ]
    for line in lines:
        assert line.keys() >= FIELDS and line["logger"] == AUDIT
        assert line["host"] == host_id and line["code"] == 0 and line["client"] == "127.0.0.1"
    assert [line["caller"] for line in lines] == [
        "static:admin:line-2",  # the line of the tokens file the token is on, never the token
        "static:admin:line-2",
        f"agent:{host_id}",
        "static:admin:line-2",
    ]
    assert lines[0]["request_id"] == "change-4711"
    assert len({line["request_id"] for line in lines}) == 4


async def test_refused_writes_are_audited_too(facade: Facade, audit_log: pytest.LogCaptureFixture) -> None:
    host = await facade.register()
    audit_log.clear()
    await facade.call("DELETE", f"/api/v1/hosts/{host['host_id']}", token=VIEWER_TOKEN)
    await facade.call("POST", "/api/v1/hosts", token="stolen-or-guessed", json={})
    await facade.call("PUT", f"/api/v1/hosts/{host['host_id']}", json={"name": "a\x00b"})
    await facade.heartbeat(host["host_id"], ADMIN_TOKEN)
    lines = _lines(audit_log)
    assert [(line["operation"], line["status"], line["code"], line["outcome"], line["caller"]) for line in lines] == [
        ("delete", 403, 40301, "denied", "static:viewer:line-3"),
        ("register", 401, 40102, "denied", None),
        ("update", 400, 40002, "rejected", "static:admin:line-2"),
        ("heartbeat", 403, 40301, "denied", "static:admin:line-2"),
    ]


async def test_no_token_ever_reaches_the_audit_line(facade: Facade, audit_log: pytest.LogCaptureFixture) -> None:
    host = await facade.register()
    await facade.heartbeat(host["host_id"], host["agent_token"])
    await facade.heartbeat(host["host_id"], "gfa_forged-token-value")
    await facade.call("DELETE", f"/api/v1/hosts/{host['host_id']}", token="wrong-admin-token-value")
    text = json.dumps(_lines(audit_log)) + audit_log.text
    for token in (ADMIN_TOKEN, VIEWER_TOKEN, host["agent_token"], "gfa_forged-token-value", "wrong-admin-token-value"):
        assert token not in text


async def test_a_request_id_that_is_not_a_plain_token_is_replaced(
    facade: Facade, audit_log: pytest.LogCaptureFixture
) -> None:
    for given in ("has spaces", "x" * 129, "new\nline"):
        async with facade.http.put(
            f"{facade.url}/api/v1/hosts/host-doesnotexist",
            json={"name": "x"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Request-Id": given.replace("\n", "%0A")},
        ) as response:
            assert response.status == 404
            assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
    assert all(re.fullmatch(r"[0-9a-f]{32}", line["request_id"]) for line in _lines(audit_log))


async def test_heartbeats_can_be_left_out(
    start_facade: StartFacade, settings: Settings, audit_log: pytest.LogCaptureFixture
) -> None:
    facade = await start_facade(settings.model_copy(update={"audit_heartbeats": False}))
    host = await facade.register()
    assert (await facade.heartbeat(host["host_id"], host["agent_token"]))[0] == 200
    assert [line["operation"] for line in _lines(audit_log)] == ["register"]


class Recorder:
    """A proxy in front of the emulated API that notes each request's method, path and user agent."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[tuple[str, str, str]] = []
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        self.seen.append((request.method, request.path, request.headers.get("User-Agent", "")))
        skip = {"host", "content-length", "transfer-encoding"}
        headers = {key: value for key, value in request.headers.items() if key.lower() not in skip}
        body = await request.read()
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    def agents_of(self, method: str, path_end: str) -> list[str]:
        return [agent for m, path, agent in self.seen if m == method and path.endswith(path_end)]


@pytest.fixture
async def recorder(kube: Any, tmp_path: pathlib.Path) -> AsyncIterator[tuple[Recorder, str]]:
    proxy = Recorder(kube.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        proxy.session = session
        server = test_utils.TestServer(app)
        await server.start_server(shutdown_timeout=0.5)
        try:
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(server.make_url("")).rstrip("/"))
            yield proxy, str(kubeconfig)
        finally:
            await server.close()


@pytest.mark.emulator
async def test_the_kubernetes_api_is_told_the_real_caller_of_each_write(
    recorder: tuple[Recorder, str],  # first: set up before the facade, so stopped after it
    start_facade: StartFacade,
    kubernetes_settings: Settings,
    token_reviews: TokenReviews,
) -> None:
    proxy, kubeconfig = recorder
    facade = await start_facade(kubernetes_settings, kubeconfig=kubeconfig)
    status, answer = await facade.call(
        "POST",
        "/api/v1/hosts",
        token="k8s-admin-token",
        json={**REGISTRATION, "ip_address": unique_ip()},
        headers={"X-Request-Id": "reg-1"},
    )
    assert status == 201
    host_id = answer["data"]["host_id"]
    facade.registered.append(host_id)
    await facade.heartbeat(host_id, answer["data"]["agent_token"])
    await facade.call("DELETE", f"/api/v1/hosts/{host_id}", token="k8s-admin-token", headers={"X-Request-Id": "del-1"})

    assert proxy.agents_of("POST", "/hosts") == ["gpufleet-facade (for alice; request reg-1)"]
    assert proxy.agents_of("POST", "/secrets") == []  # the token's digest rides on the Host
    # The first heartbeat writes the host's status, and renews its Lease (a patch, then a create).
    heartbeat = proxy.agents_of("PATCH", f"/hosts/{host_id}/status")
    assert len(heartbeat) == 1 and heartbeat[0].startswith(f"gpufleet-facade (for agent:{host_id}; request ")
    lease = [*proxy.agents_of("PATCH", f"/leases/{host_id}"), *proxy.agents_of("POST", "/leases")]
    assert lease == [heartbeat[0]] * 2
    assert proxy.agents_of("DELETE", f"/hosts/{host_id}") == ["gpufleet-facade (for alice; request del-1)"]
    # The watches and the reviews made before anyone is known say only who the client is.
    assert set(proxy.agents_of("GET", "/hosts")) == {"gpufleet-facade"}
    assert set(proxy.agents_of("POST", "/tokenreviews")) == {"gpufleet-facade (request reg-1)"}
