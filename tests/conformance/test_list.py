"""2. GET /api/v1/hosts — 获取主机列表 (any authenticated caller)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ._client import Api, error, is_int, ok, parse_ts

LIST_ITEM_KEYS = {
    "host_id",
    "name",
    "ip_address",
    "os_type",
    "status",
    "total_cpu",
    "used_cpu",
    "total_memory",
    "used_memory",
    "total_gpu",
    "used_gpu",
    "last_heartbeat",
}
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 20, 100


def test_list_envelope_and_item_shape(api: Api, new_host: Any) -> None:
    new_host()
    payload = ok(api.list(), 200, "success")
    data = payload["data"]
    assert set(data) == {"items", "pagination"}, data.keys()
    assert set(data["pagination"]) == {"page", "page_size", "total", "total_pages"}
    assert all(is_int(v) for v in data["pagination"].values()), data["pagination"]
    assert data["items"], "a registered host must be listed"
    for item in data["items"]:
        assert set(item) == LIST_ITEM_KEYS, sorted(set(item) ^ LIST_ITEM_KEYS)
        for key in ("host_id", "name", "ip_address", "os_type", "status"):
            assert isinstance(item[key], str), (key, item)
        for key in ("total_cpu", "total_memory", "used_memory", "total_gpu", "used_gpu"):
            assert is_int(item[key]), (key, item)
        assert type(item["used_cpu"]) in (int, float), item
        assert item["last_heartbeat"] is None or parse_ts(item["last_heartbeat"])
        assert item["status"] in ("online", "offline")


def test_list_defaults_page_1_and_page_size_20(api: Api) -> None:
    pagination = ok(api.list(), 200, "success")["data"]["pagination"]
    assert pagination["page"] == 1
    assert pagination["page_size"] == PAGE_SIZE_DEFAULT


def test_list_item_matches_detail(api: Api, new_host: Any) -> None:
    host = new_host(name="List-vs-Detail")
    detail = ok(api.detail(host.host_id), 200, "success")["data"]
    item = next(i for i in api.all_hosts() if i["host_id"] == host.host_id)
    assert item == {k: detail[k] for k in LIST_ITEM_KEYS}


def test_pagination_walks_every_host_once_in_a_stable_order(api: Api, new_host: Any) -> None:
    for i in range(7):
        new_host(name=f"Page-{i}")
    total = api.total()
    assert total >= 7
    everything = api.all_hosts()
    assert len(everything) == total
    ids = [i["host_id"] for i in everything]
    assert len(set(ids)) == total, "a host appears twice"
    # small pages give the same sequence
    pages: list[str] = []
    size = 3
    resp = ok(api.list(f"page=1&page_size={size}"), 200, "success")["data"]
    assert resp["pagination"] == {"page": 1, "page_size": size, "total": total, "total_pages": math.ceil(total / size)}
    for page in range(1, resp["pagination"]["total_pages"] + 1):
        data = ok(api.list(f"page={page}&page_size={size}"), 200, "success")["data"]
        assert data["pagination"]["page"] == page
        assert len(data["items"]) == (size if page * size <= total else total - (page - 1) * size)
        pages.extend(i["host_id"] for i in data["items"])
    assert pages == ids
    assert [i["host_id"] for i in api.all_hosts()] == ids, "order changes between calls"


def test_list_order_is_by_creation_time_then_name(api: Api, new_host: Any) -> None:
    new_host(name="Order-b")
    new_host(name="Order-a")
    items = api.all_hosts()
    created = {
        i["host_id"]: parse_ts(ok(api.detail(i["host_id"]), 200, "success")["data"]["created_at"]) for i in items
    }
    by_host_id = sorted(items, key=lambda i: (created[i["host_id"]], i["host_id"]))
    by_name = sorted(items, key=lambda i: (created[i["host_id"]], i["name"], i["host_id"]))
    assert items in (by_host_id, by_name), "hosts are not ordered by creation time, then name"


def test_page_size_maximum_is_100(api: Api) -> None:
    data = ok(api.list(f"page_size={PAGE_SIZE_MAX}"), 200, "success")["data"]
    assert data["pagination"]["page_size"] == PAGE_SIZE_MAX
    error(api.list(f"page_size={PAGE_SIZE_MAX + 1}"), 400, 40003)


def test_page_past_the_end_is_empty(api: Api, new_host: Any) -> None:
    new_host()
    total = api.total()
    data = ok(api.list("page=1000&page_size=1"), 200, "success")["data"]
    assert data["items"] == []
    assert data["pagination"] == {"page": 1000, "page_size": 1, "total": total, "total_pages": total}


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=abc",
        "page=1.5",
        "page=",
        "page_size=0",
        "page_size=-5",
        "page_size=abc",
        "page_size=101",
        "page_size=100000",
    ],
)
def test_bad_page_parameters_are_400(api: Api, query: str) -> None:
    error(api.list(query), 400, 40003)


@pytest.mark.parametrize("query", ["status=busy", "status=ONLINE", "os_type=macos", "os_type="])
def test_unknown_filter_values_are_400(api: Api, query: str) -> None:
    error(api.list(query), 400, 40003)


def test_filter_by_os_type(api: Api, new_host: Any) -> None:
    win = new_host(os_type="windows")
    lin = new_host(os_type="linux")
    windows = api.all_hosts("os_type=windows")
    linux = api.all_hosts("os_type=linux")
    assert {i["os_type"] for i in windows} == {"windows"}
    assert {i["os_type"] for i in linux} == {"linux"}
    assert win.host_id in {i["host_id"] for i in windows}
    assert lin.host_id in {i["host_id"] for i in linux}
    assert len(windows) + len(linux) == api.total()
    assert ok(api.list("os_type=windows"), 200, "success")["data"]["pagination"]["total"] == len(windows)


def test_filter_by_status_offline(api: Api, new_host: Any) -> None:
    host = new_host()
    offline = api.all_hosts("status=offline")
    assert {i["status"] for i in offline} <= {"offline"}
    assert host.host_id in {i["host_id"] for i in offline}
    online = api.all_hosts("status=online")
    assert {i["status"] for i in online} <= {"online"}
    assert host.host_id not in {i["host_id"] for i in online}
    assert len(online) + len(offline) == api.total()


def test_filters_combine(api: Api, new_host: Any) -> None:
    host = new_host(os_type="windows")
    items = api.all_hosts("status=offline&os_type=windows")
    assert host.host_id in {i["host_id"] for i in items}
    assert all(i["status"] == "offline" and i["os_type"] == "windows" for i in items)


def test_empty_result_has_zero_pages(api: Api, new_host: Any) -> None:
    new_host(os_type="windows")  # never heartbeats: no online windows host exists in this suite
    data = ok(api.list("status=online&os_type=windows"), 200, "success")["data"]
    assert data["items"] == []
    assert data["pagination"] == {"page": 1, "page_size": 20, "total": 0, "total_pages": 0}


def test_viewer_can_list(api: Api) -> None:
    ok(api.list(token=api.viewer), 200, "success")
