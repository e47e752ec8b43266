"""Errors: every failure is an envelope {code != 0, message}; bad input changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from ._client import Api, error, error_fields
from .conftest import host_body

REQUIRED = ["name", "ip_address", "os_type", "total_cpu", "total_memory"]


def rejected(
    api: Api,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str | None = "application/json",
    status: int = 400,
    code: int | None = 40002,
) -> dict[str, Any]:
    before = api.total()
    if raw is not None:
        resp = api.request("POST", "/api/v1/hosts", raw=raw, content_type=content_type)
    else:
        resp = api.request("POST", "/api/v1/hosts", body, content_type=content_type)
    envelope = error(resp, status, code)
    assert api.total() == before, "a rejected register changed the host list"
    return envelope


def test_malformed_json_is_400(api: Api) -> None:
    rejected(api, raw=b'{"name": "x", ', code=40001)
    rejected(api, raw=b"\xff\xfe not utf-8", code=40001)
    rejected(api, raw=b"", code=(40001, 40002))  # type: ignore[arg-type]


def test_wrong_content_type_is_415(api: Api) -> None:
    import json

    raw = json.dumps(host_body()).encode()
    rejected(api, raw=raw, content_type="text/plain", status=415, code=41501)
    rejected(api, raw=raw, content_type="application/x-www-form-urlencoded", status=415, code=41501)
    rejected(api, raw=raw, content_type=None, status=415, code=41501)


def test_json_with_charset_is_accepted(api: Api) -> None:
    import json

    resp = api.request(
        "POST", "/api/v1/hosts", raw=json.dumps(host_body()).encode(), content_type="application/json; charset=utf-8"
    )
    assert resp.status == 201, resp
    api.delete(resp.json()["data"]["host_id"])


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_required_field_is_400(api: Api, field: str) -> None:
    envelope = rejected(api, host_body(**{field: ...}))
    fields = error_fields(envelope)
    assert any(field in f for f in fields), f"data.errors should name {field}: {envelope}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", 5),
        ("name", None),
        ("name", "x" * 254),
        ("ip_address", "300.1.1.1"),
        ("ip_address", "abc"),
        ("ip_address", ""),
        ("ip_address", "10.0.0"),
        ("ip_address", 167772161),
        ("ip_address", "10.0.0.1/24"),
        ("os_type", "macos"),
        ("os_type", "Linux"),
        ("os_type", 1),
        ("deployment_mode", "cloud"),
        ("deployment_mode", ""),
        ("total_cpu", "32"),
        ("total_cpu", 32.5),
        ("total_cpu", True),
        ("total_cpu", -1),
        ("total_cpu", None),
        ("total_memory", -1),
        ("total_memory", "137438953472"),
        ("total_memory", 1.5),
        ("total_disk", -1),
        ("total_disk", "1"),
        ("os_version", 20.04),
        ("labels", {"bad key!": "v"}),
        ("labels", {"zone": "has space"}),
        ("labels", {"zone": "x" * 64}),
        ("labels", {"zone": 1}),
        ("labels", ["zone"]),
        ("labels", {"": "v"}),
        ("labels", {"gpufleet.io/status": "online"}),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_invalid_field_is_400(api: Api, field: str, value: Any) -> None:
    rejected(api, host_body(**{field: value}))


def test_unknown_field_is_400(api: Api) -> None:
    rejected(api, {**host_body(), "gpu_count": 4})


@pytest.mark.parametrize("body", [[], None, "host", 42, [{"name": "x"}]], ids=repr)
def test_non_object_body_is_400(api: Api, body: Any) -> None:
    rejected(api, body)


def test_validation_errors_list_fields(api: Api) -> None:
    envelope = rejected(api, host_body(total_cpu=-1, ip_address="nope"))
    errors = (envelope.get("data") or {}).get("errors")
    assert isinstance(errors, list) and errors, envelope
    for item in errors:
        assert isinstance(item.get("field"), str) and isinstance(item.get("message"), str)
    fields = " ".join(error_fields(envelope))
    assert "ip_address" in fields and "total_cpu" in fields


def test_body_over_1_mib_is_413(api: Api) -> None:
    body = host_body(os_version="x" * (1024 * 1024 + 10))
    rejected(api, body, status=413, code=41301)


def test_duplicate_ip_is_409(api: Api, new_host: Any) -> None:
    host = new_host()
    rejected(api, host_body(ip_address=host.body["ip_address"]), status=409, code=40901)


def test_unknown_host_is_404(api: Api) -> None:
    for resp in (
        api.detail("host-zzzzzzzzzz"),
        api.gpus("host-zzzzzzzzzz"),
        api.update("host-zzzzzzzzzz", {"name": "x"}),
        api.delete("host-zzzzzzzzzz"),
    ):
        error(resp, 404, 40401)


def test_unknown_path_is_404_envelope(api: Api) -> None:
    error(api.request("GET", "/api/v1/nothing-here"), 404, 40402)
    error(api.request("GET", "/api/v1/hosts/x/y/z"), 404, 40402)


def test_wrong_method_is_405_envelope(api: Api) -> None:
    error(api.request("PATCH", "/api/v1/hosts", {}), 405, 40501)
    error(api.request("GET", "/api/v1/hosts/host-zzzzzzzzzz/heartbeat"), 405, 40501)


@pytest.mark.parametrize("query", ["page=0", "page_size=101", "status=x", "os_type=x"])
def test_bad_query_is_400_envelope(api: Api, query: str) -> None:
    error(api.list(query), 400, 40003)


# docs/facade.md "Errors": code -> (HTTP status, message). The message column is checked as a
# prefix, so a server may add detail after it (e.g. "host not found: host-x").
ERROR_TABLE = {
    40001: (400, "request body is not valid JSON"),
    40002: (400, "invalid request body"),
    40003: (400, "invalid query parameter"),
    40004: (400, "malformed HTTP request"),
    40101: (401, "authentication required"),
    40102: (401, "invalid token"),
    40301: (403, "this token is not allowed to perform this operation"),
    40302: (403, "this agent token belongs to another host"),
    40401: (404, "host not found"),
    40402: (404, "no such API path"),
    40501: (405, "method not allowed"),
    40901: (409, "a host with this IP address is already registered"),
    41301: (413, "request body too large"),
    41501: (415, "Content-Type must be application/json"),
}


def _trigger(api: Api, code: int, host: Any, other: Any) -> Any:
    import json

    beat = {"status": "online", "health_status": "healthy", "used_cpu": 1, "used_memory": 1, "used_gpu": 0}
    return {
        40001: lambda: api.request("POST", "/api/v1/hosts", raw=b"{"),
        40002: lambda: api.register({}),
        40003: lambda: api.list("page=0"),
        40004: lambda: api.list(headers={"X-Padding": "p" * 10_000}),
        40101: lambda: api.list(token=None),
        40102: lambda: api.list(token="unknown-token"),
        40301: lambda: api.register(host_body(), token=api.viewer),
        40302: lambda: api.heartbeat(host.host_id, beat, token=other.agent_token),
        40401: lambda: api.detail("host-zzzzzzzzzz"),
        40402: lambda: api.request("GET", "/api/v1/nothing"),
        40501: lambda: api.request("PATCH", "/api/v1/hosts", {}),
        40901: lambda: api.register(host_body(ip_address=host.body["ip_address"])),
        41301: lambda: api.request("POST", "/api/v1/hosts", raw=json.dumps({"x": "y" * (1024 * 1024 + 1)}).encode()),
        41501: lambda: api.request("POST", "/api/v1/hosts", raw=b"{}", content_type="text/plain"),
    }[code]()


@pytest.mark.parametrize("code", sorted(ERROR_TABLE))
def test_error_codes_and_messages_follow_the_table(api: Api, new_host: Any, code: int) -> None:
    host, other = new_host(), new_host()
    status, message = ERROR_TABLE[code]
    envelope = error(_trigger(api, code, host, other), status, code)
    assert envelope["message"].startswith(message), (
        f"code {code}: message {envelope['message']!r} does not start with the documented {message!r}"
    )


def test_405_names_the_allowed_methods(api: Api) -> None:
    """RFC 9110 15.5.6: a 405 response MUST carry an Allow header."""
    resp = api.request("PATCH", "/api/v1/hosts", {})
    error(resp, 405, 40501)
    allow = {m.strip().upper() for m in (resp.headers.get("Allow") or "").split(",") if m.strip()}
    assert {"GET", "POST"} <= allow, f"Allow header: {resp.headers.get('Allow')!r}"
