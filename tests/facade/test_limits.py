"""No input reaches a 500, and bad input changes nothing: each limit answers a documented 4xx envelope.

Nesting depth and number length (checked before any JSON parser runs), query-string and header
sizes, names (no control characters; host ids that can be Kubernetes names), label count and
syntax, unicode. Valid input of the legacy API stays as it was: same codes, same messages.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gpufleet.facade import limits, schemas

from .helpers import GPUS_PATH, HOSTS_PATH, REGISTRATION, VIEWER_TOKEN, Facade, K8s, unique_ip


def _body(**changes: Any) -> dict[str, Any]:
    return {**REGISTRATION, "ip_address": unique_ip(), **changes}


def _host_names(k8s: K8s) -> set[str]:
    return {item["metadata"]["name"] for item in k8s.ok("GET", HOSTS_PATH)["items"]}


async def _post_raw(facade: Facade, raw: bytes, path: str = "/api/v1/hosts") -> tuple[int, Any]:
    return await facade.call("POST", path, data=raw, headers={"Content-Type": "application/json"})


def _envelope(answer: Any, status: int, code: int, expected_status: int, prefix: str) -> None:
    assert status == expected_status, answer
    assert answer["code"] == code, answer
    assert answer["message"].startswith(prefix), answer
    assert len(answer["message"]) < 400, "a message quotes at most a little of the caller's input"


class TestBodies:
    @pytest.mark.parametrize(
        "raw",
        [
            b'{"labels":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b'{"labels":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
            b"[" * 100_000,  # never closed
            b"[" * 33 + b"]" * 33,
        ],
        ids=["arrays-100000-deep", "objects-100000-deep", "unclosed-100000-deep", "33-deep"],
    )
    async def test_nesting_deeper_than_32_levels_is_400_and_creates_nothing(
        self, facade: Facade, k8s: K8s, raw: bytes
    ) -> None:
        before = _host_names(k8s)
        status, answer = await _post_raw(facade, raw)
        _envelope(answer, status, 40002, 400, "invalid request body: JSON may nest at most 32 levels deep")
        assert answer["data"]["errors"] == [{"field": "body", "message": "JSON may nest at most 32 levels deep"}]
        assert _host_names(k8s) == before

    @pytest.mark.parametrize(
        "raw",
        [
            b"[" * 40 + b'"\\' * 500_000,
            b"[" * 40 + b'"' * 1_000_000,
            b"[" * 1_000_000,
            b"[]," * 340_000,
            b"[" * 40 + b'"' + b"\\" * 999_990 + b'"',
            b"[" * 40 + b"1e" * 500_000,
        ],
        ids=["unterminated-escapes", "quotes", "brackets", "flat", "one-long-string", "digits"],
    )
    async def test_a_mebibyte_of_hostile_json_is_judged_in_linear_time(self, facade: Facade, raw: bytes) -> None:
        started = time.monotonic()
        status, answer = await _post_raw(facade, raw)
        assert status == 400 and answer["code"] in (40001, 40002)
        assert time.monotonic() - started < 10  # a quadratic scan of these would take hours

    async def test_32_levels_and_brackets_inside_strings_are_fine(self, facade: Facade) -> None:
        nested = json.loads("[" * 31 + "]" * 31)
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(colour=nested))
        assert (status, answer["code"]) == (400, 40002)
        assert [error["field"] for error in answer["data"]["errors"]] == ["body.colour"]  # not the nesting
        host = await facade.register(name="[" * 200 + "{" * 53)
        assert (await facade.detail(host["host_id"]))["name"] == "[" * 200 + "{" * 53

    async def test_a_heartbeat_nested_too_deep_is_400_and_changes_nothing(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register()
        raw = b'{"status":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        status, answer = await facade.call(
            "POST",
            f"/api/v1/hosts/{host['host_id']}/heartbeat",
            token=host["agent_token"],
            data=raw,
            headers={"Content-Type": "application/json"},
        )
        assert (status, answer["code"]) == (400, 40002)
        assert "status" not in k8s.ok("GET", f"{HOSTS_PATH}/{host['host_id']}")

    @pytest.mark.parametrize("number", ["9" * 5000, "1" + "0" * 64, "1." + "5" * 70, "1e" + "9" * 70])
    async def test_numbers_longer_than_64_characters_are_400(self, facade: Facade, k8s: K8s, number: str) -> None:
        before = _host_names(k8s)
        raw = json.dumps(_body(total_cpu=0)).replace('"total_cpu": 0', f'"total_cpu": {number}').encode()
        status, answer = await _post_raw(facade, raw)
        _envelope(answer, status, 40002, 400, "invalid request body: numbers may have at most 64 characters")
        assert _host_names(k8s) == before

    @pytest.mark.parametrize(
        ("field", "number"), [("total_cpu", "1e999"), ("total_memory", "-0"), ("total_disk", "18446744073709551616")]
    )
    async def test_numbers_out_of_range_are_400_naming_the_field(self, facade: Facade, field: str, number: str) -> None:
        raw = json.dumps(_body(**{field: 0})).replace(f'"{field}": 0', f'"{field}": {number}').encode()
        status, answer = await _post_raw(facade, raw)
        if number == "-0":  # -0 is 0, a valid count
            assert status == 201, answer
            facade.registered.append(answer["data"]["host_id"])
            return
        assert (status, answer["code"]) == (400, 40002)
        assert f"body.{field}" in [error["field"] for error in answer["data"]["errors"]]

    async def test_a_lone_surrogate_is_400_not_500(self, facade: Facade) -> None:
        raw = json.dumps(_body(name="x")).replace('"name": "x"', '"name": "\\ud800"').encode()
        status, answer = await _post_raw(facade, raw)
        assert (status, answer["code"]) == (400, 40002)


class TestNames:
    @pytest.mark.parametrize(
        "name",
        ["GPU\x00Server", "\x1b[31mred", "tab\there", "line\nbreak", "del\x7f", "c1\x85", "\u202egnp.exe", "a\u2028b"],
        ids=["nul", "escape", "tab", "newline", "del", "c1", "bidi-override", "line-separator"],
    )
    @pytest.mark.parametrize("field", ["name", "hostname", "os_version"])
    async def test_control_characters_are_refused(self, facade: Facade, k8s: K8s, field: str, name: str) -> None:
        before = _host_names(k8s)
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(**{field: name}))
        _envelope(answer, status, 40002, 400, f"invalid request body: body.{field}: ")
        assert "control or bidirectional formatting characters" in answer["message"]
        assert _host_names(k8s) == before

    async def test_a_control_character_in_a_new_name_changes_nothing(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register()
        before = k8s.ok("GET", f"{HOSTS_PATH}/{host['host_id']}")["metadata"]["resourceVersion"]
        status, answer = await facade.call("PUT", f"/api/v1/hosts/{host['host_id']}", json={"name": "a\x00b"})
        assert (status, answer["code"]) == (400, 40002)
        assert k8s.ok("GET", f"{HOSTS_PATH}/{host['host_id']}")["metadata"]["resourceVersion"] == before

    @pytest.mark.parametrize("name", ["GPU服务器-01", "训练节点 🚀", "Ünïcödé-Ωμέγα", "n" * 253, "👨‍👩‍👧"])
    async def test_unicode_names_round_trip(self, facade: Facade, name: str) -> None:
        host = await facade.register(name=name, hostname="gpu01.example.com", os_version="统信 UOS 20")
        detail = await facade.detail(host["host_id"])
        assert (detail["name"], detail["os_version"]) == (name, "统信 UOS 20")

    async def test_a_name_over_253_characters_is_400(self, facade: Facade) -> None:
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(name="n" * 254))
        assert (status, answer["code"]) == (400, 40002)

    async def test_generated_host_ids_fit_in_label_values(
        self, facade: Facade, k8s: K8s, facade_namespace: str
    ) -> None:
        host = await facade.register(name="a-display-name-" + "x" * 200)
        assert len(host["host_id"]) <= 63
        # The id labels the host's GPUs (gpufleet.io/host): the API takes it as a label value.
        assert k8s.ok("GET", f"{GPUS_PATH}?labelSelector=gpufleet.io/host={host['host_id']}")["items"] == []


class TestHostIdsInPaths:
    @pytest.mark.parametrize(
        "host_id",
        ["%00", "HOST-UPPER", "host_underscore", "-leading", "a" * 254, "%E2%80%AE", "host%0Aid", "a..b"],
        ids=["nul", "upper", "underscore", "leading-dash", "254-chars", "bidi", "newline", "empty-dns-label"],
    )
    @pytest.mark.parametrize(
        ("method", "suffix", "body"),
        [("GET", "", None), ("PUT", "", {"name": "x"}), ("DELETE", "", None), ("GET", "/gpus", None)],
    )
    async def test_an_id_no_host_can_have_is_404(
        self, facade: Facade, host_id: str, method: str, suffix: str, body: Any
    ) -> None:
        status, answer = await facade.call(method, f"/api/v1/hosts/{host_id}{suffix}", json=body)
        _envelope(answer, status, 40401, 404, "host not found")

    async def test_a_heartbeat_to_such_an_id_is_404(self, facade: Facade) -> None:
        host = await facade.register()
        status, answer = await facade.heartbeat("%00" * 10, host["agent_token"])
        _envelope(answer, status, 40401, 404, "host not found")


class TestLabels:
    async def test_64_labels_are_accepted(self, facade: Facade) -> None:
        labels = {f"label-{i}": f"value-{i}" for i in range(schemas.MAX_LABELS)}
        host = await facade.register(labels=labels)
        assert (await facade.detail(host["host_id"]))["labels"] == labels

    @pytest.mark.parametrize("count", [65, 10_000])
    async def test_more_than_64_labels_are_400(self, facade: Facade, k8s: K8s, count: int) -> None:
        before = _host_names(k8s)
        labels = {f"label-{i}": "v" for i in range(count)}
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(labels=labels))
        _envelope(answer, status, 40002, 400, "invalid request body: body.labels: ")
        assert _host_names(k8s) == before

    async def test_an_update_with_too_many_labels_changes_nothing(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register(labels={"a": "b"})
        labels = {f"label-{i}": "v" for i in range(65)}
        status, answer = await facade.call("PUT", f"/api/v1/hosts/{host['host_id']}", json={"labels": labels})
        assert (status, answer["code"]) == (400, 40002)
        assert k8s.ok("GET", f"{HOSTS_PATH}/{host['host_id']}")["metadata"]["labels"] == {"a": "b"}

    async def test_thousands_of_bad_labels_are_reported_in_part(self, facade: Facade) -> None:
        labels = {f"-bad-{i}": "v" for i in range(5000)}
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(labels=labels))
        assert (status, answer["code"]) == (400, 40002)
        assert len(answer["data"]["errors"]) == 20
        assert answer["message"].endswith("; and 4980 more")

    @pytest.mark.parametrize(
        "labels",
        [
            {"a" * 254 + "/zone": "x"},
            {"zone": "x" * 64},
            {"zo ne": "x"},
            {"zone": "a\x00b"},
            {"ゾーン": "x"},
            {"example.com/" + "n" * 64: "x"},
        ],
        ids=["long-prefix", "long-value", "space", "nul-value", "unicode-key", "long-name"],
    )
    async def test_labels_outside_kubernetes_syntax_are_400(self, facade: Facade, labels: dict[str, str]) -> None:
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(labels=labels))
        assert (status, answer["code"]) == (400, 40002)
        assert all(error["field"].startswith("body.labels") for error in answer["data"]["errors"])


class TestQueries:
    @pytest.mark.parametrize("name", ["page", "page_size"])
    async def test_5000_digits_are_400(self, facade: Facade, name: str) -> None:
        status, answer = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={name: "9" * 5000})
        _envelope(answer, status, 40003, 400, "invalid query parameter: ")

    @pytest.mark.parametrize(
        "query",
        [{"page": "9" * 1000}, {"page_size": "9" * 1000}, {"page": "2147483648"}, {"page": "0" * 1000 + "1x"}],
        ids=["page-1000-digits", "page-size-1000-digits", "page-beyond-int32", "zeros-then-junk"],
    )
    async def test_absurd_page_numbers_are_400(self, facade: Facade, query: dict[str, str]) -> None:
        status, answer = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN, params=query)
        name = next(iter(query))
        _envelope(answer, status, 40003, 400, f"invalid query parameter: {name} must be an integer between 1 and ")

    async def test_the_largest_page_is_an_empty_page(self, facade: Facade) -> None:
        for page in (str(limits.MAX_PAGE), "0000000001"):
            status, answer = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"page": page})
            assert status == 200, answer
            assert answer["data"]["pagination"]["page"] == int(page)

    async def test_a_query_string_over_2048_bytes_is_400(self, facade: Facade) -> None:
        status, answer = await facade.call(
            "GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"page": "1", "x": "y" * 3000}
        )
        _envelope(answer, status, 40003, 400, "invalid query parameter: the query string is longer than 2048 bytes")

    async def test_a_filter_quoting_control_characters_is_quoted_safely(self, facade: Facade) -> None:
        status, answer = await facade.call(
            "GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"status": "\x00\x1b" + "x" * 500}
        )
        _envelope(answer, status, 40003, 400, "invalid query parameter: status must be one of online, offline")
        assert "\x00" not in answer["message"] and "(502 characters)" in answer["message"]


class TestHttpLimits:
    """What aiohttp's parser refuses before the application sees it is answered in the envelope too."""

    async def _raw(self, facade: Facade, request: bytes) -> tuple[int, Any]:
        import asyncio
        import urllib.parse

        url = urllib.parse.urlsplit(facade.url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(request)
        await writer.drain()
        response = await reader.read()
        writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert b"content-type: application/json" in head.lower(), head
        return status, json.loads(body)

    @pytest.mark.parametrize(
        "request_bytes",
        [
            b"GET /api/v1/hosts?page=" + b"1" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
            b"GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
            b"GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # TLS spoken to plain HTTP
        ],
        ids=["request-line-10k", "header-10k", "150-headers", "malformed-header", "not-http"],
    )
    async def test_unparsable_requests_get_the_envelope(self, facade: Facade, request_bytes: bytes) -> None:
        status, answer = await self._raw(facade, request_bytes)
        _envelope(answer, status, 40004, 400, "malformed HTTP request")

    async def test_a_big_authorization_header_is_refused_the_same_way(self, facade: Facade) -> None:
        status, answer = await self._raw(
            facade, b"GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"t" * 9000 + b"\r\n\r\n"
        )
        _envelope(answer, status, 40004, 400, "malformed HTTP request")
        assert "ttttt" not in answer["message"]

    @pytest.mark.parametrize(
        "token",
        [b"\xff\xfe", "caf\u00e9-token".encode(), b"tab\there", b"\xe2\x80\xae-rtl"],
        ids=["latin1", "utf8", "tab", "bidi"],
    )
    async def test_a_token_with_control_characters_or_bytes_not_utf8_is_an_invalid_token(
        self, facade: Facade, token: bytes
    ) -> None:
        status, answer = await self._raw(
            facade,
            b"GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
            + token
            + b"\r\n\r\n",
        )
        _envelope(answer, status, 40102, 401, "invalid token")
