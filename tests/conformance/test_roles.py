"""Roles: admin writes, viewer reads, no token is 401 everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from ._client import Api, error, ok
from .conftest import host_body

OPERATIONS = [
    ("POST", "/api/v1/hosts", True),
    ("GET", "/api/v1/hosts", False),
    ("GET", "/api/v1/hosts/{id}", False),
    ("PUT", "/api/v1/hosts/{id}", True),
    ("DELETE", "/api/v1/hosts/{id}", False),
    ("GET", "/api/v1/hosts/{id}/gpus", False),
    ("POST", "/api/v1/hosts/{id}/heartbeat", True),
]


@pytest.mark.parametrize(("method", "path", "has_body"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
@pytest.mark.parametrize("auth", ["none", "basic", "unknown-bearer", "empty-bearer"])
def test_unauthenticated_is_401_everywhere(
    api: Api, new_host: Any, method: str, path: str, has_body: bool, auth: str
) -> None:
    host = new_host()
    headers = {
        "none": {},
        "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "unknown-bearer": {"Authorization": "Bearer not-a-known-token"},
        "empty-bearer": {"Authorization": "Bearer "},
    }[auth]
    body = host_body() if has_body else None
    kw: dict[str, Any] = {"token": None, "headers": headers}
    if body is not None:
        kw["body"] = body
    resp = api.request(method, path.format(id=host.host_id), **kw)
    err = error(resp, 401, 40102 if auth == "unknown-bearer" else (40101, 40102))
    assert err["code"] in (40101, 40102)
    assert (resp.headers.get("WWW-Authenticate") or "").lower().startswith("bearer"), resp.headers
    ok(api.detail(host.host_id), 200, "success")


def test_viewer_cannot_register(api: Api) -> None:
    before = api.total()
    error(api.register(host_body(), token=api.viewer), 403, 40301)
    assert api.total() == before


def test_viewer_cannot_update(api: Api, new_host: Any) -> None:
    host = new_host()
    error(api.update(host.host_id, {"name": "viewer-was-here"}, token=api.viewer), 403, 40301)
    assert ok(api.detail(host.host_id), 200, "success")["data"]["name"] == host.body["name"]


def test_viewer_cannot_delete(api: Api, new_host: Any) -> None:
    host = new_host()
    error(api.delete(host.host_id, token=api.viewer), 403, 40301)
    ok(api.detail(host.host_id), 200, "success")


def test_viewer_reads(api: Api, new_host: Any) -> None:
    host = new_host()
    ok(api.list(token=api.viewer), 200, "success")
    ok(api.detail(host.host_id, token=api.viewer), 200, "success")
    ok(api.gpus(host.host_id, token=api.viewer), 200, "success")


def test_token_scheme_is_case_insensitive(api: Api) -> None:
    """RFC 7235: the auth scheme is case-insensitive (`bearer x` is a bearer token)."""
    ok(api.list(token=None, headers={"Authorization": f"bearer {api.admin}"}), 200, "success")
