"""A deliberately small HTTP client for the conformance suite (stdlib only).

It plays a legacy caller: it sends exactly the bytes it is given, with exactly the headers it
is given, and hands back the raw status, headers and body so the tests can check them byte for
byte. Nothing here knows how the facade is built.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import json
import re
import time
from collections.abc import Callable
from typing import Any

JSON = "application/json"
_UNSET: Any = object()


@dataclasses.dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes
    request: str

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        try:
            return json.loads(self.raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise AssertionError(f"{self.request}: body is not JSON ({error}): {self.raw[:300]!r}") from None

    def __repr__(self) -> str:
        return f"<{self.request} -> {self.status} {self.raw[:400]!r}>"


class Api:
    """The facade as a legacy caller sees it."""

    def __init__(self, host: str, port: int, *, admin: str, viewer: str) -> None:
        self.host, self.port = host, port
        self.admin, self.viewer = admin, viewer

    def request(
        self,
        method: str,
        path: str,
        body: Any = _UNSET,
        *,
        token: str | None = _UNSET,
        raw: bytes | None = None,
        content_type: str | None = JSON,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """``token`` defaults to the admin token; pass None for no Authorization header."""
        if token is _UNSET:
            token = self.admin
        sent: dict[str, str] = {"Accept": JSON}
        data: bytes | None = None
        if raw is not None:
            data = raw
        elif body is not _UNSET:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if data is not None and content_type is not None:
            sent["Content-Type"] = content_type
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            payload = resp.read()
            return Response(resp.status, resp.headers, payload, f"{method} {path}")
        finally:
            conn.close()

    # the seven operations -------------------------------------------------------------------
    def register(self, body: Any, **kw: Any) -> Response:
        return self.request("POST", "/api/v1/hosts", body, **kw)

    def list(self, query: str = "", **kw: Any) -> Response:
        return self.request("GET", "/api/v1/hosts" + (f"?{query}" if query else ""), **kw)

    def detail(self, host_id: str, **kw: Any) -> Response:
        return self.request("GET", f"/api/v1/hosts/{host_id}", **kw)

    def update(self, host_id: str, body: Any, **kw: Any) -> Response:
        return self.request("PUT", f"/api/v1/hosts/{host_id}", body, **kw)

    def delete(self, host_id: str, **kw: Any) -> Response:
        return self.request("DELETE", f"/api/v1/hosts/{host_id}", **kw)

    def gpus(self, host_id: str, **kw: Any) -> Response:
        return self.request("GET", f"/api/v1/hosts/{host_id}/gpus", **kw)

    def heartbeat(self, host_id: str, body: Any, *, token: str | None, **kw: Any) -> Response:
        return self.request("POST", f"/api/v1/hosts/{host_id}/heartbeat", body, token=token, **kw)

    # conveniences ----------------------------------------------------------------------------
    def all_hosts(self, query: str = "") -> list[dict[str, Any]]:
        """Every host, by walking the pages at the maximum page size."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            q = f"page={page}&page_size=100" + (f"&{query}" if query else "")
            resp = self.list(q)
            assert resp.status == 200, resp
            data = resp.json()["data"]
            items.extend(data["items"])
            if page >= data["pagination"]["total_pages"]:
                return items
            page += 1

    def total(self, query: str = "") -> int:
        resp = self.list(query)
        assert resp.status == 200, resp
        total: int = resp.json()["data"]["pagination"]["total"]
        return total


# assertions ---------------------------------------------------------------------------------


def ok(resp: Response, status: int, message: str) -> Any:
    """A success envelope: HTTP status, JSON, code 0, the exact message; returns the body."""
    assert resp.status == status, f"expected HTTP {status}: {resp!r}"
    assert resp.content_type == JSON, f"Content-Type {resp.headers.get('Content-Type')!r}: {resp!r}"
    body = resp.json()
    assert isinstance(body, dict), resp
    assert body.get("code") == 0 and type(body.get("code")) is int, resp
    assert body.get("message") == message, f"message {body.get('message')!r} != {message!r}: {resp!r}"
    # byte for byte: the UTF-8 of the message is in the raw body, either literally or escaped
    literal = json.dumps(message, ensure_ascii=False).encode("utf-8")
    escaped = json.dumps(message).encode("ascii")
    assert literal in resp.raw or escaped in resp.raw, resp
    return body


def error(resp: Response, status: int | tuple[int, ...], code: int | tuple[int, ...] | None = None) -> dict[str, Any]:
    """An error envelope: the HTTP status, JSON, a non-zero integer code, a non-empty message."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status in statuses, f"expected HTTP {statuses}: {resp!r}"
    assert resp.content_type == JSON, f"error Content-Type {resp.headers.get('Content-Type')!r}: {resp!r}"
    body = resp.json()
    assert isinstance(body, dict), resp
    assert type(body.get("code")) is int and body["code"] != 0, f"code must be a non-zero int: {resp!r}"
    assert isinstance(body.get("message"), str) and body["message"].strip(), f"message must be non-empty: {resp!r}"
    if code is not None:
        codes = (code,) if isinstance(code, int) else code
        assert body["code"] in codes, f"expected code {codes}: {resp!r}"
    return body


def error_fields(body: dict[str, Any]) -> list[str]:
    data = body.get("data") or {}
    return [str(e.get("field")) for e in data.get("errors") or [] if isinstance(e, dict)]


RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def parse_ts(value: Any) -> dt.datetime:
    assert isinstance(value, str) and RFC3339_Z.match(value), f"not an RFC 3339 UTC timestamp ending in Z: {value!r}"
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def is_int(value: Any) -> bool:
    return type(value) is int


def is_number(value: Any) -> bool:
    return type(value) in (int, float)


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)
