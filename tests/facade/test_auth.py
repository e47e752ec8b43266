"""Who may do what: admins write, viewers read, each agent heartbeats its own host only."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gpufleet import tokens
from gpufleet.facade import auth
from gpufleet.settings import Settings

from .conftest import StartFacade, TokenReviews
from .helpers import (
    ADMIN_TOKEN,
    HEARTBEAT,
    HOSTS_PATH,
    MERGE,
    REGISTRATION,
    VIEWER_TOKEN,
    Facade,
    K8s,
    eventually,
    unique_ip,
)

Caller = Callable[[Facade, str | None, dict[str, Any]], Awaitable[int]]


async def _register(facade: Facade, token: str | None, host: dict[str, Any]) -> int:
    status, answer = await facade.call(
        "POST", "/api/v1/hosts", token=token, json={**REGISTRATION, "ip_address": unique_ip()}
    )
    if status == 201:
        facade.registered.append(answer["data"]["host_id"])
    return status


async def _list(facade: Facade, token: str | None, host: dict[str, Any]) -> int:
    return (await facade.call("GET", "/api/v1/hosts", token=token))[0]


async def _detail(facade: Facade, token: str | None, host: dict[str, Any]) -> int:
    return (await facade.call("GET", f"/api/v1/hosts/{host['host_id']}", token=token))[0]


async def _update(facade: Facade, token: str | None, host: dict[str, Any]) -> int:
    return (await facade.call("PUT", f"/api/v1/hosts/{host['host_id']}", token=token, json={"name": "x"}))[0]


async def _delete(facade: Facade, token: str | None, host: dict[str, Any]) -> int:
    return (await facade.call("DELETE", f"/api/v1/hosts/{host['host_id']}", token=token))[0]


async def _gpus(facade: Facade, token: str | None, host: dict[str, Any]) -> int:
    return (await facade.call("GET", f"/api/v1/hosts/{host['host_id']}/gpus", token=token))[0]


async def _heartbeat(facade: Facade, token: str | None, host: dict[str, Any]) -> int:
    return (await facade.heartbeat(host["host_id"], token))[0]


OPERATIONS: dict[str, tuple[Caller, int]] = {
    "register": (_register, 201),
    "list": (_list, 200),
    "detail": (_detail, 200),
    "update": (_update, 200),
    "delete": (_delete, 204),
    "gpus": (_gpus, 200),
    "heartbeat": (_heartbeat, 200),
}
#: Expected status per role; `own` is the host's agent token, `other` another host's.
MATRIX: dict[str, dict[str, int | str]] = {
    "register": {"admin": "ok", "viewer": 403, "own": 403, "other": 403},
    "list": {"admin": "ok", "viewer": "ok", "own": 403, "other": 403},
    "detail": {"admin": "ok", "viewer": "ok", "own": 403, "other": 403},
    "update": {"admin": "ok", "viewer": 403, "own": 403, "other": 403},
    "delete": {"admin": "ok", "viewer": 403, "own": 403, "other": 403},
    "gpus": {"admin": "ok", "viewer": "ok", "own": 403, "other": 403},
    "heartbeat": {"admin": 403, "viewer": 403, "own": "ok", "other": 403},
}


def _token(role: str, host: dict[str, Any], other: dict[str, Any]) -> str | None:
    by_role: dict[str, str | None] = {
        "admin": ADMIN_TOKEN,
        "viewer": VIEWER_TOKEN,
        "own": host["agent_token"],
        "other": other["agent_token"],
        "none": None,
        "unknown": "not-a-token",
    }
    return by_role[role]


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("role", ["admin", "viewer", "own", "other", "none", "unknown"])
async def test_role_matrix(facade: Facade, operation: str, role: str) -> None:
    host, other = await facade.register(), await facade.register()
    call, success = OPERATIONS[operation]
    expected = MATRIX[operation].get(role, 401)
    assert await call(facade, _token(role, host, other), host) == (success if expected == "ok" else expected)


async def test_refusals_say_why_in_the_envelope(facade: Facade) -> None:
    host, other = await facade.register(), await facade.register()
    status, answer = await facade.heartbeat(host["host_id"], other["agent_token"])
    assert (status, answer["code"], answer["message"]) == (403, 40302, "this agent token belongs to another host")
    status, answer = await facade.call("DELETE", f"/api/v1/hosts/{host['host_id']}", token=VIEWER_TOKEN)
    assert (status, answer["code"]) == (403, 40301)
    async with facade.http.get(f"{facade.url}/api/v1/hosts") as response:
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json())["code"] == 40101
    status, answer = await facade.call("GET", "/api/v1/hosts", token=None, headers={"Authorization": "Basic eDp5"})
    assert (status, answer["code"]) == (401, 40101)
    status, answer = await facade.call("GET", "/api/v1/hosts", token="bogus")
    assert (status, answer["code"]) == (401, 40102)


async def test_tokens_never_reach_the_logs(facade: Facade, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    host = await facade.register()
    await facade.heartbeat(host["host_id"], host["agent_token"])
    await facade.heartbeat(host["host_id"], "gfa_forged-token-value")
    await facade.call("GET", "/api/v1/hosts", token="wrong-viewer-token-value")
    await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN)
    for secret in (
        host["agent_token"],
        "gfa_forged-token-value",
        "wrong-viewer-token-value",
        VIEWER_TOKEN,
        ADMIN_TOKEN,
    ):
        assert secret not in caplog.text


async def test_agent_tokens_follow_the_digest_on_their_host(facade: Facade, k8s: K8s) -> None:
    """Rotation as an admin does it: a new digest on the Host retires the old token at once."""
    host = await facade.register()
    rotated = tokens.generate()
    k8s.ok(
        "PATCH",
        f"{HOSTS_PATH}/{host['host_id']}",
        {"metadata": {"annotations": {tokens.DIGEST_ANNOTATION: tokens.digest(rotated).hex()}}},
        MERGE,
    )

    async def rotated_in() -> bool:
        return (await facade.heartbeat(host["host_id"], rotated))[0] == 200

    assert await eventually(rotated_in, within=5.0)
    assert (await facade.heartbeat(host["host_id"], host["agent_token"]))[0] == 401


class TestStaticTokensFile:
    def test_a_malformed_line_fails_start_up_without_echoing_it(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "tokens"
        path.write_text("good-token,admin\nsecret-token-value,superuser\n")
        with pytest.raises(ValueError, match=r"tokens:2: expected `token,role`") as caught:
            auth.StaticTokens.load(path)
        assert "secret-token-value" not in str(caught.value)

    def test_comments_and_blank_lines_are_skipped(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "tokens"
        path.write_text("# who\n\n a-token , viewer \n")
        tokens = auth.StaticTokens.load(path)
        assert tokens.role_of("a-token") is auth.Role.VIEWER and tokens.role_of("b-token") is None


@pytest.mark.emulator
class TestKubernetesMode:
    """TokenReview says who the caller is; RBAC on hosts.gpufleet.io says what they may do."""

    @pytest.fixture
    async def facade(
        self, start_facade: StartFacade, token_reviews: TokenReviews, kubernetes_settings: Settings
    ) -> Facade:
        return await start_facade(kubernetes_settings)

    async def test_rbac_decides_each_operation(self, facade: Facade) -> None:
        status, answer = await facade.call(
            "POST", "/api/v1/hosts", token="k8s-admin-token", json={**REGISTRATION, "ip_address": unique_ip()}
        )
        assert status == 201
        host = answer["data"]
        facade.registered.append(host["host_id"])
        assert (await facade.call("GET", f"/api/v1/hosts/{host['host_id']}", token="k8s-viewer-token"))[0] == 200
        assert (await facade.call("GET", "/api/v1/hosts", token="k8s-viewer-token"))[0] == 200
        assert (
            await facade.call("PUT", f"/api/v1/hosts/{host['host_id']}", token="k8s-viewer-token", json={"name": "y"})
        )[0] == 403
        assert (await facade.call("GET", "/api/v1/hosts", token="k8s-nobody-token"))[0] == 403
        assert (await facade.call("GET", "/api/v1/hosts", token="not-a-k8s-token"))[0] == 401
        assert (
            await facade.call(
                "POST", f"/api/v1/hosts/{host['host_id']}/heartbeat", token="k8s-admin-token", json=HEARTBEAT
            )
        )[0] == 403
        assert (await facade.heartbeat(host["host_id"], host["agent_token"]))[0] == 200
        assert (await facade.call("DELETE", f"/api/v1/hosts/{host['host_id']}", token="k8s-admin-token"))[0] == 204
