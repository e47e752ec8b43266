"""No input reaches a 500, and bad input changes nothing (docs/facade.md, "Limits").

A legacy caller sending hostile or absurd input gets a 4xx envelope from the documented table:
nesting depth, number length, query-string and header sizes, names with control characters,
label count, unicode. The fleet is the same afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ._client import Api, error, error_fields, ok
from .conftest import host_body


@pytest.mark.parametrize(
    "raw",
    [
        b'{"labels":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"name":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
        b"[" * 100_000,
    ],
    ids=["arrays", "objects", "unclosed"],
)
def test_a_body_nested_100000_levels_deep_is_400(api: Api, raw: bytes) -> None:
    before = api.total()
    body = error(api.request("POST", "/api/v1/hosts", raw=raw), 400, 40002)
    assert body["message"].startswith("invalid request body")
    assert api.total() == before


def test_a_number_of_5000_digits_is_400(api: Api) -> None:
    before = api.total()
    raw = json.dumps(host_body(total_cpu=1)).replace('"total_cpu": 1', '"total_cpu": ' + "9" * 5000).encode()
    error(api.request("POST", "/api/v1/hosts", raw=raw), 400, 40002)
    assert api.total() == before


@pytest.mark.parametrize("query", ["page=" + "9" * 5000, "page_size=" + "9" * 5000, "page=" + "9" * 500])
def test_page_numbers_of_thousands_of_digits_are_400(api: Api, query: str) -> None:
    body = error(api.list(query), 400, 40003)
    assert body["message"].startswith("invalid query parameter")


@pytest.mark.parametrize("name", ["GPU\x00Server", "\x1b[2J\x1b[Hclear", "back\x08space", "rtl\u202etxt.exe"])
def test_names_with_control_characters_are_400_and_nothing_is_registered(api: Api, name: str) -> None:
    before = api.total()
    body = error(api.register(host_body(name=name)), 400, 40002)
    assert "body.name" in error_fields(body)
    assert api.total() == before


def test_10000_labels_are_400_and_nothing_is_registered(api: Api) -> None:
    before = api.total()
    body = error(api.register(host_body(labels={f"k{i}": "v" for i in range(10_000)})), 400, 40002)
    assert "body.labels" in error_fields(body)
    assert api.total() == before


def test_64_labels_and_unicode_names_are_fine(api: Api, new_host: Any) -> None:
    labels = {f"k{i}": "v" for i in range(64)}
    host = new_host(name="节点-🚀-Ωμέγα", labels=labels)
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data["name"] == "节点-🚀-Ωμέγα" and data["labels"] == labels


@pytest.mark.parametrize("host_id", ["%00", "a" * 300, "Host-Upper", "%E2%80%AE"])
def test_host_ids_that_cannot_exist_are_404(api: Api, host_id: str) -> None:
    error(api.detail(host_id), 404, 40401)
    error(api.update(host_id, {"name": "x"}), 404, 40401)
    error(api.delete(host_id), 404, 40401)


def test_a_request_line_over_8_kib_is_an_envelope(api: Api) -> None:
    error(api.list("page=1&x=" + "y" * 10_000), 400, 40004)


def test_a_header_over_8_kib_is_an_envelope(api: Api) -> None:
    error(api.list(headers={"X-Padding": "p" * 10_000}), 400, 40004)


def test_a_long_query_string_is_400(api: Api) -> None:
    error(api.list("page=1&x=" + "y" * 3000), 400, 40003)
