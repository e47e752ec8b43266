"""The informer every component shares: list + watch, relists that replace, freshness, stall detection.

Run over HTTP against the API under test with ConfigMaps in a namespace of their own, so what is
asserted is what a consumer sees: the objects, the changes it is told about, and whether it is
told its view is stale.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from gpufleet import informer
from tests.support.waiting import eventually


class Recorder:
    """A consumer: what it was told, in order."""

    def __init__(self) -> None:
        self.upserts: list[str] = []
        self.deletes: list[str] = []
        self.freshness: list[str] = []

    def upsert(self, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.upserts.append(new["metadata"]["name"])

    def delete(self, old: dict[str, Any]) -> None:
        self.deletes.append(old["metadata"]["name"])


def configmaps(
    async_api_client: client.ApiClient, namespace: str, recorder: Recorder, **extra: Any
) -> informer.Informer:
    core = client.CoreV1Api(async_api_client)
    return informer.Informer(
        "configmaps",
        lambda **kwargs: core.list_namespaced_config_map(namespace, **kwargs),
        on_upsert=recorder.upsert,
        on_delete=recorder.delete,
        on_fresh=lambda: recorder.freshness.append("fresh"),
        on_stale=lambda: recorder.freshness.append("stale"),
        timeout=2.0,
        **extra,
    )


async def create(async_api_client: client.ApiClient, namespace: str, name: str) -> None:
    core = client.CoreV1Api(async_api_client)
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": {"k": "v"}})


async def delete(async_api_client: client.ApiClient, namespace: str, name: str) -> None:
    await client.CoreV1Api(async_api_client).delete_namespaced_config_map(name, namespace)


@contextlib.asynccontextmanager
async def running(view: informer.Informer) -> AsyncIterator[informer.Informer]:
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.synced.wait(), 10)
        yield view
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_it_lists_in_pages_then_follows_every_change(async_api_client: client.ApiClient, namespace: str) -> None:
    for index in range(informer.PAGE_SIZE + 3):  # more than one page
        await create(async_api_client, namespace, f"before-{index}")
    seen = Recorder()
    async with running(configmaps(async_api_client, namespace, seen)) as view:
        assert len(view.store) == informer.PAGE_SIZE + 3 and view.fresh and seen.freshness == ["fresh"]
        await create(async_api_client, namespace, "after")
        await delete(async_api_client, namespace, "before-0")
        await eventually(lambda: f"{namespace}/after" in view.store and f"{namespace}/before-0" not in view.store)
    assert seen.upserts[-1] == "after" and seen.deletes == ["before-0"]


async def test_an_object_holding_an_unpaired_surrogate_is_listed_and_watched_like_any_other(
    async_api_client: client.ApiClient, namespace: str
) -> None:
    """JSON may escape an unpaired surrogate; kube-apiserver stores U+FFFD instead, the emulated
    API keeps it. Either way the object is seen, and the changes after it too."""
    core = client.CoreV1Api(async_api_client)
    odd = {"k": "half a pair: \ud800"}
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "listed"}, "data": odd})
    seen = Recorder()
    async with running(configmaps(async_api_client, namespace, seen)) as view:
        assert seen.upserts == ["listed"]
        await core.create_namespaced_config_map(namespace, {"metadata": {"name": "watched"}, "data": odd})
        await create(async_api_client, namespace, "after")
        await eventually(lambda: f"{namespace}/after" in view.store)
        assert seen.upserts == ["listed", "watched", "after"] and view.fresh
        for name in ("listed", "watched"):
            stored = view.store.get(f"{namespace}/{name}")
            assert stored is not None and stored["data"]["k"] in ("half a pair: \ud800", "half a pair: \ufffd")


@pytest.mark.emulator
async def test_a_relist_after_a_gap_reports_what_was_deleted_meanwhile(
    async_api_client: client.ApiClient, namespace: str, emulator: Any
) -> None:
    for name in ("kept", "deleted-in-the-gap"):
        await create(async_api_client, namespace, name)
    seen = Recorder()
    view = configmaps(async_api_client, namespace, seen)
    async with running(view):
        pass  # stopped: nobody watches now
    await delete(async_api_client, namespace, "deleted-in-the-gap")
    await create(async_api_client, namespace, "created-in-the-gap")
    await asyncio.to_thread(emulator.compact)  # the watch cannot resume: 410 Gone, so it lists again
    async with running(view):
        await eventually(lambda: f"{namespace}/created-in-the-gap" in view.store)
        assert sorted(view.store.names()) == [f"{namespace}/created-in-the-gap", f"{namespace}/kept"]
    assert seen.deletes == ["deleted-in-the-gap"]  # a plain event stream after a relist never says so


@pytest.mark.emulator
async def test_an_unreachable_api_turns_the_view_stale_and_a_new_watch_fresh_again(
    async_api_client: client.ApiClient, namespace: str, emulator: Any
) -> None:
    seen = Recorder()
    async with running(configmaps(async_api_client, namespace, seen)) as view:
        with emulator.unavailable("error"):  # watches dropped, every request 503
            await eventually(lambda: not view.fresh)
            assert view.stale_since is not None and view.stale_since <= view.last_contact + 0.001
        await eventually(lambda: view.fresh)
        await create(async_api_client, namespace, "after-the-outage")
        await eventually(lambda: f"{namespace}/after-the-outage" in view.store)
    assert seen.freshness == ["fresh", "stale", "fresh"]


async def test_a_watch_that_falls_quiet_after_a_burst_is_reconnected_but_never_called_stale(
    async_api_client: client.ApiClient, namespace: str
) -> None:
    seen = Recorder()
    quick = informer.Inactivity(floor=0.2, cap=90.0)
    async with running(configmaps(async_api_client, namespace, seen, inactivity=quick)) as view:
        for index in range(20):  # a burst: the usual gap becomes milliseconds
            await create(async_api_client, namespace, f"burst-{index}")
        await eventually(lambda: len(view.store) == 20)
        first_limit = quick.limit()
        await asyncio.sleep(1.5)  # then silence, several times the limit the burst taught
        assert quick.limit() > first_limit  # each silence ended by a new watch counted as one long gap
        await create(async_api_client, namespace, "after-the-silence")
        await eventually(lambda: f"{namespace}/after-the-silence" in view.store)
        assert view.fresh
    assert seen.freshness == ["fresh"]  # quiet is not blind: no liveness verdict was suspended


def test_a_busy_watch_is_suspect_sooner_than_a_quiet_one() -> None:
    busy, quiet = informer.Inactivity(floor=1.0, cap=90.0), informer.Inactivity(floor=1.0, cap=90.0)
    for tick in range(200):
        busy.contact(tick * 0.01)  # a fleet's heartbeats: 100 events a second
        quiet.contact(tick * 60.0)  # only the API server's bookmarks, once a minute
    assert busy.limit() == 1.0  # the floor: 20 usual gaps would be 0.2 s
    assert quiet.limit() == 90.0  # the cap: a bookmark is due about every minute
    busy.restart()
    busy.contact(1000.0)  # the first byte of a new connection is no gap
    assert busy.limit() == 1.0


class TestStore:
    def test_an_older_version_never_replaces_a_newer_one(self) -> None:
        store = informer.Store()
        assert store.apply({"metadata": {"name": "a", "resourceVersion": "5"}, "v": 2}) is not None
        assert store.apply({"metadata": {"name": "a", "resourceVersion": "4"}, "v": 1}) is None
        assert store.get("a") == {"metadata": {"name": "a", "resourceVersion": "5"}, "v": 2}

    def test_news_older_than_a_deletion_does_not_bring_the_object_back(self) -> None:
        store = informer.Store()
        store.apply({"metadata": {"name": "a", "resourceVersion": "5"}})
        store.remove({"metadata": {"name": "a", "resourceVersion": "7"}})
        assert store.apply({"metadata": {"name": "a", "resourceVersion": "6"}}) is None and "a" not in store

    def test_objects_being_deleted_are_gone_unless_the_consumer_finalizes_them(self) -> None:
        deleting = {"metadata": {"name": "a", "resourceVersion": "5", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
        plain, finalizing = informer.Store(), informer.Store(keep_deleting=True)
        assert plain.apply(deleting) is None and "a" not in plain
        assert finalizing.apply(deleting) is not None and "a" in finalizing

    def test_replace_says_what_changed_and_what_went(self) -> None:
        store = informer.Store(indexers={"colour": lambda obj: [obj["colour"]]})
        store.apply({"metadata": {"name": "a", "resourceVersion": "1"}, "colour": "red"})
        store.apply({"metadata": {"name": "b", "resourceVersion": "1"}, "colour": "red"})
        changed, removed = store.replace(
            [
                {"metadata": {"name": "a", "resourceVersion": "1"}, "colour": "red"},  # unchanged
                {"metadata": {"name": "c", "resourceVersion": "2"}, "colour": "blue"},
            ]
        )
        assert [(new["metadata"]["name"], old) for new, old in changed] == [("c", None)]
        assert [obj["metadata"]["name"] for obj in removed] == ["b"]
        assert [obj["metadata"]["name"] for obj in store.by("colour", "red")] == ["a"]


def test_a_store_can_drop_managed_fields_that_no_reader_needs() -> None:
    store = informer.Store(transform=informer.drop_managed_fields)
    body = {"metadata": {"name": "a", "resourceVersion": "1", "managedFields": [{"manager": "kubectl"}]}, "spec": {}}
    assert store.apply(body) == {"metadata": {"name": "a", "resourceVersion": "1"}, "spec": {}}
    assert "managedFields" in body["metadata"]  # the object given is not changed
