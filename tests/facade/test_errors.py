"""Errors are part of the contract: the envelope, a documented code, the right status, no side effects."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gpufleet.facade import errors, translate
from kube_emulator import Emulator, RequestInfo

from .helpers import HOSTS_PATH, REGISTRATION, VIEWER_TOKEN, Facade, K8s, unique_ip, unique_ipv6_groups


def _hosts_with_ip(k8s: K8s, ip: str) -> list[str]:
    items = k8s.ok("GET", HOSTS_PATH)["items"]
    return [item["metadata"]["name"] for item in items if item["spec"]["ipAddress"] == ip]


def _body(**changes: Any) -> dict[str, Any]:
    body = {**REGISTRATION, "ip_address": unique_ip(), **changes}
    return {key: value for key, value in body.items() if value is not ...}


class TestRegistrationInput:
    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"name": ...}, "body.name"),
            ({"ip_address": ...}, "body.ip_address"),
            ({"total_cpu": "32"}, "body.total_cpu"),
            ({"total_cpu": 3.5}, "body.total_cpu"),
            ({"total_memory": True}, "body.total_memory"),
            ({"ip_address": "192.168.1.300"}, "body.ip_address"),
            ({"ip_address": "gpu01.example.com"}, "body.ip_address"),
            ({"total_disk": -1}, "body.total_disk"),
            ({"total_cpu": 2**63}, "body.total_cpu"),
            ({"os_type": "macos"}, "body.os_type"),
            ({"deployment_mode": "cloud"}, "body.deployment_mode"),
            ({"name": ""}, "body.name"),
            ({"labels": {"-bad": "x"}}, "body.labels.-bad.[key]"),
            ({"labels": {"zone": "a b"}}, "body.labels.zone"),
            ({"labels": {"zone": "x" * 64}}, "body.labels.zone"),
            ({"labels": {"gpufleet.io/status": "online"}}, "body.labels.gpufleet.io/status.[key]"),
            ({"labels": {"zone": 1}}, "body.labels.zone"),
            ({"colour": "blue"}, "body.colour"),
        ],
    )
    async def test_is_rejected_with_the_field_named_and_nothing_created(
        self, facade: Facade, k8s: K8s, changes: dict[str, Any], field: str
    ) -> None:
        body = _body(**changes)
        status, answer = await facade.call("POST", "/api/v1/hosts", json=body)
        assert (status, answer["code"]) == (400, 40002)
        assert field in [error["field"] for error in answer["data"]["errors"]], answer
        assert field.split(".")[1] in answer["message"]
        if isinstance(body.get("ip_address"), str):
            assert _hosts_with_ip(k8s, body["ip_address"]) == []

    async def test_a_body_that_is_not_an_object_is_invalid(self, facade: Facade) -> None:
        status, answer = await facade.call("POST", "/api/v1/hosts", json=[1, 2])
        assert (status, answer["code"]) == (400, 40002)

    @pytest.mark.parametrize("raw", [b"{", b"", b'{"name": NaN}', b"\xff\xfe"])
    async def test_malformed_json_is_400(self, facade: Facade, raw: bytes) -> None:
        status, answer = await facade.call(
            "POST", "/api/v1/hosts", data=raw, headers={"Content-Type": "application/json"}
        )
        assert (status, answer["code"]) == (400, 40001)

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
    async def test_other_content_types_are_415(self, facade: Facade, content_type: str | None) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        status, answer = await facade.call("POST", "/api/v1/hosts", data=b'{"name": "x"}', headers=headers)
        assert (status, answer["code"]) == (415, 41501)

    async def test_a_body_over_one_mebibyte_is_413(self, facade: Facade) -> None:
        body = _body(name="x" * (1024 * 1024 + 1))
        status, answer = await facade.call("POST", "/api/v1/hosts", json=body)
        assert (status, answer["code"]) == (413, 41301)

    async def test_a_second_host_with_the_same_ip_is_409(self, facade: Facade, k8s: K8s) -> None:
        a, b = unique_ipv6_groups()
        first = await facade.register(ip_address=f"fd00::{a:x}:{b:x}")
        ip = k8s.ok("GET", f"{HOSTS_PATH}/{first['host_id']}")["spec"]["ipAddress"]
        same = ip.replace("fd00::", "fd00:0::")  # the same address, spelled differently
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(ip_address=same))
        assert (status, answer["code"]) == (409, 40901)
        assert first["host_id"] in answer["message"]
        assert _hosts_with_ip(k8s, ip) == [first["host_id"]]


class TestOtherInput:
    @pytest.mark.parametrize(
        "query",
        [
            {"page": "0"},
            {"page": "-1"},
            {"page": "abc"},
            {"page": "1.5"},
            {"page_size": "0"},
            {"page_size": "101"},
            {"page_size": ""},
            {"status": "busy"},
            {"os_type": "macos"},
            {"status": "ONLINE"},
        ],
    )
    async def test_bad_list_parameters_are_400(self, facade: Facade, query: dict[str, str]) -> None:
        status, answer = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN, params=query)
        assert (status, answer["code"]) == (400, 40003)
        assert next(iter(query)) in answer["message"]

    async def test_the_largest_page_size_is_accepted(self, facade: Facade) -> None:
        status, _ = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"page_size": "100"})
        assert status == 200

    @pytest.mark.parametrize("body", [{}, {"name": ""}, {"labels": {"a": "b c"}}, {"name": "x", "extra": 1}])
    async def test_bad_updates_are_400_and_change_nothing(self, facade: Facade, k8s: K8s, body: dict[str, Any]) -> None:
        host_id = (await facade.register(labels={"a": "b"}))["host_id"]
        before = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")
        status, answer = await facade.call("PUT", f"/api/v1/hosts/{host_id}", json=body)
        assert (status, answer["code"]) == (400, 40002)
        assert (
            k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")["metadata"]["resourceVersion"]
            == before["metadata"]["resourceVersion"]
        )

    @pytest.mark.parametrize(
        ("changes"),
        [
            {"status": "busy"},
            {"health_status": "fine"},
            {"used_cpu": -1},
            {"used_memory": "1"},
            {"used_gpu": None},
        ],
    )
    async def test_bad_heartbeats_are_400_and_change_nothing(
        self, facade: Facade, k8s: K8s, changes: dict[str, Any]
    ) -> None:
        host = await facade.register()
        status, answer = await facade.heartbeat(host["host_id"], host["agent_token"], **changes)
        assert (status, answer["code"]) == (400, 40002)
        assert "status" not in k8s.ok("GET", f"{HOSTS_PATH}/{host['host_id']}")

    async def test_a_heartbeat_missing_a_field_is_400(self, facade: Facade) -> None:
        host = await facade.register()
        status, answer = await facade.call(
            "POST", f"/api/v1/hosts/{host['host_id']}/heartbeat", token=host["agent_token"], json={"status": "online"}
        )
        assert (status, answer["code"]) == (400, 40002)
        assert {error["field"] for error in answer["data"]["errors"]} == {
            "body.health_status",
            "body.used_cpu",
            "body.used_memory",
            "body.used_gpu",
        }


class TestUnknownThings:
    @pytest.mark.parametrize(
        ("method", "suffix", "body"),
        [
            ("GET", "", None),
            ("PUT", "", {"name": "x"}),
            ("DELETE", "", None),
            ("GET", "/gpus", None),
        ],
    )
    async def test_an_unknown_host_is_404(self, facade: Facade, method: str, suffix: str, body: Any) -> None:
        status, answer = await facade.call(method, f"/api/v1/hosts/host-doesnotexist{suffix}", json=body)
        assert (status, answer["code"]) == (404, 40401)
        assert "host-doesnotexist" in answer["message"]

    async def test_an_unknown_path_is_404_in_the_envelope(self, facade: Facade) -> None:
        status, answer = await facade.call("GET", "/api/v2/hosts")
        assert (status, answer["code"]) == (404, 40402)

    async def test_a_wrong_method_is_405_in_the_envelope(self, facade: Facade) -> None:
        status, answer = await facade.call("PATCH", "/api/v1/hosts/host-x", json={})
        assert (status, answer["code"]) == (405, 40501)


class TestFailures:
    async def test_an_unexpected_error_is_500_without_details(
        self, facade: Facade, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        host_id = (await facade.register())["host_id"]

        def broken(obj: Any) -> Any:
            raise RuntimeError("internal detail that must not leak")

        monkeypatch.setattr(translate, "host_detail", broken)
        async with facade.http.get(
            f"{facade.url}/api/v1/hosts/{host_id}", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}
        ) as response:
            text = await response.text()
            assert response.status == 500
        assert "internal detail" not in text and "Traceback" not in text
        assert text == '{"code":50001,"message":"internal error"}'

    @pytest.mark.emulator
    @pytest.mark.parametrize("mode", ["error", "hang"])
    async def test_an_unavailable_api_is_503_within_the_timeout(
        self, facade: Facade, emulator: Emulator, mode: str
    ) -> None:
        host = await facade.register()
        with emulator.unavailable(mode):
            started = time.monotonic()
            register = await facade.call("POST", "/api/v1/hosts", json=_body())
            heartbeat = await facade.heartbeat(host["host_id"], host["agent_token"])
            elapsed = time.monotonic() - started
            listing = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN)
        assert (register[0], register[1]["code"]) == (503, 50301)
        assert (heartbeat[0], heartbeat[1]["code"]) == (503, 50301)
        assert elapsed < 2 * 1.0 + 1  # two calls, each bounded by api_timeout_seconds=1
        assert listing[0] == 200  # reads keep being served from the caches

    @pytest.mark.emulator
    async def test_the_api_refusing_the_object_is_422(self, facade: Facade, emulator: Emulator) -> None:
        emulator.fail_next(1, status=422, predicate=lambda r: r.method == "POST" and r.path.endswith("/hosts"))
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body())
        assert (status, answer["code"]) == (422, 42201)

    @pytest.mark.emulator
    async def test_a_failed_claim_binding_takes_the_registration_back(
        self, facade: Facade, emulator: Emulator, k8s: K8s
    ) -> None:
        def binding(request: RequestInfo) -> bool:  # the last write of a registration, after the Host
            return request.method == "PATCH" and "/configmaps/" in request.path

        emulator.fail_next(1, status=503, predicate=binding)
        body = _body()
        status, answer = await facade.call("POST", "/api/v1/hosts", json=body)
        assert (status, answer["code"]) == (503, 50301)
        assert _hosts_with_ip(k8s, body["ip_address"]) == []


def test_every_error_code_is_documented() -> None:
    import pathlib

    doc = (pathlib.Path(__file__).parents[2] / "docs" / "facade.md").read_text()
    for kind in errors.TABLE:
        assert f"| {kind.code} | {kind.status} |" in doc, kind
