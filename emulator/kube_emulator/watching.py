"""Watch streams: newline-delimited JSON events, resumable from a resourceVersion.

A watch first catches up (synthetic ADDED events for a watch without a version, or
the log's events after the given version; 410 Expired if the log no longer reaches that
far), then streams live events from its subscription. Catch-up and subscription happen
without yielding to the loop, so no event can fall in between.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web

from .errors import ApiError, expired
from .store import Collection, Event, Predicate, Watcher

JsonObj = dict[str, Any]
Render = Callable[[str, JsonObj], bytes]
"""How a watch shows an event other than the plain object (e.g. :class:`tables.WatchRows`)."""
BOOKMARK_INTERVAL = 5.0
# The spellings Go's strconv.ParseBool takes as true: clients send "true", "1" or Python's "True".
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})


def query_flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter read the way the API server reads it."""
    return query.get(name, "") in _TRUE


def _error_line(error: ApiError) -> bytes:
    return json.dumps({"type": "ERROR", "object": error.body()}).encode() + b"\n"


def _catch_up(coll: Collection, watcher: Watcher, since: str | None) -> list[Event]:
    if not since or since == "0":
        return [Event(0, "ADDED", obj) for _, obj in sorted(coll.objects.items()) if watcher.accepts(obj)]
    try:
        rv = int(since)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid resource version: {since!r}") from None
    if rv < coll.compacted:
        raise expired(f"too old resource version: {rv} ({coll.compacted})")
    return [seen for event in coll.events_since(rv) if (seen := watcher.view(event)) is not None]


async def stream(
    request: aiohttp.web.BaseRequest,
    coll: Collection,
    namespace: str | None,
    predicate: Predicate | None,
    query: Mapping[str, str],
    current_rv: Callable[[], int],
    render: Render | None = None,
) -> aiohttp.web.StreamResponse:
    """Serve one watch request until timeoutSeconds, a dropped watch or a disconnect."""
    response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    watcher = Watcher(namespace, predicate)
    try:
        backlog = _catch_up(coll, watcher, query.get("resourceVersion"))
    except ApiError as error:
        await response.write(_error_line(error))
        await response.write_eof()
        return response
    coll.watchers.add(watcher)
    try:
        await _pump(response, watcher, backlog, query, coll, current_rv, render)
    finally:
        coll.watchers.discard(watcher)
    await response.write_eof()
    return response


async def _pump(
    response: aiohttp.web.StreamResponse,
    watcher: Watcher,
    backlog: list[Event],
    query: Mapping[str, str],
    coll: Collection,
    current_rv: Callable[[], int],
    render: Render | None,
) -> None:
    def line(event: Event) -> bytes:
        return event.line if render is None else render(event.type, event.obj)

    if backlog:
        await response.write(b"".join(line(event) for event in backlog))
    timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
    deadline = time.monotonic() + timeout if timeout is not None else None
    bookmarks = query_flag(query, "allowWatchBookmarks")
    while True:
        remaining = deadline - time.monotonic() if deadline is not None else None
        if remaining is not None and remaining <= 0:
            return
        wait = (
            min(remaining, BOOKMARK_INTERVAL)
            if bookmarks and remaining is not None
            else (BOOKMARK_INTERVAL if bookmarks else remaining)
        )
        try:
            first = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
        except TimeoutError:
            if bookmarks:
                await response.write(_bookmark(coll, current_rv()))
            continue
        batch = [first]
        while not watcher.queue.empty():
            batch.append(watcher.queue.get_nowait())
        lines = [line(event) for event in batch if event is not None]
        if lines:
            await response.write(b"".join(lines))
        if None in batch:
            return


def _bookmark(coll: Collection, rv: int) -> bytes:
    res = coll.resource
    obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": {"resourceVersion": str(rv)}}
    return json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"
