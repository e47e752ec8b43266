"""The TCP fault proxy: forward, stall, reset and cuts, against a tiny local server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import aiohttp.web
import pytest

from kube_emulator.faultproxy import FaultProxy, match_request


class Upstream:
    """An HTTP server that records what it handled, plus a raw one that records every byte."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, str, bytes]] = []
        self.raw = bytearray()
        self.raw_connections = 0
        self.port = 0
        self.raw_port = 0

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.read()
        self.handled.append((request.method, request.path, body))
        return aiohttp.web.Response(body=body or b"ok")

    async def _raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.raw_connections += 1
        while data := await reader.read(65536):
            self.raw += data
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    raw = await asyncio.start_server(server._raw, "127.0.0.1", 0)
    server.raw_port = raw.sockets[0].getsockname()[1]
    yield server
    raw.close()
    await runner.cleanup()


@pytest.fixture
async def proxy(upstream: Upstream) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", upstream.port) as running:
        yield running


async def _get(session: aiohttp.ClientSession, url: str, patience: float = 2.0) -> tuple[int, bytes]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=patience)) as reply:
        return reply.status, await reply.read()


async def _read_reset(reader: asyncio.StreamReader, within: float = 2.0) -> bool:
    """Whether the connection was reset (a RST, not a clean EOF) within `within` seconds."""
    try:
        await asyncio.wait_for(reader.read(1), within)
    except ConnectionResetError:
        return True
    return False


async def test_forward_copies_both_ways(proxy: FaultProxy, upstream: Upstream) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, several chunks each way
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{proxy.url}/echo", data=payload) as reply:
            assert reply.status == 200 and await reply.read() == payload
        assert await _get(session, f"{proxy.url}/again") == (200, b"ok")
    assert [path for _, path, _ in upstream.handled] == ["/echo", "/again"]


async def test_stall_freezes_open_and_new_connections_and_forward_resets_them(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"ok"), 2)

    proxy.stall()
    writer.write(b"GET /during HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()  # the client's write succeeds: nothing tells it
    new_reader, new_writer = await asyncio.open_connection("127.0.0.1", proxy.port)  # accepted
    new_writer.write(b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
    await new_writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.5)  # no answer, no close
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(new_reader.read(1), 0.1)
    assert [path for _, path, _ in upstream.handled] == ["/before"]  # stalled bytes never arrive
    assert proxy.open_connections == 2

    proxy.forward()
    assert await _read_reset(reader) and await _read_reset(new_reader)
    async with aiohttp.ClientSession() as session:
        assert await _get(session, f"{proxy.url}/after") == (200, b"ok")
    assert [path for _, path, _ in upstream.handled] == ["/before", "/after"]  # stalled bytes are lost
    for w in (writer, new_writer):
        w.close()


async def test_reset_aborts_open_connections_and_refuses_new_ones(proxy: FaultProxy, upstream: Upstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"ok"), 2)
    proxy.reset()
    assert await _read_reset(reader)
    new_reader, new_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _read_reset(new_reader)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await _get(session, f"{proxy.url}/refused")
        proxy.forward()
        assert await _get(session, f"{proxy.url}/after") == (200, b"ok")
    assert [path for _, path, _ in upstream.handled] == ["/before", "/after"]
    writer.close()
    new_writer.close()


async def test_cut_after_n_bytes_delivers_exactly_n(upstream: Upstream) -> None:
    async with FaultProxy("127.0.0.1", upstream.raw_port) as proxy:
        cut = proxy.cut_after(10)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"0123456789abcdefghij")
        await writer.drain()
        assert await _read_reset(reader)
        assert len(cut.fired) == 1
        deadline = time.monotonic() + 2
        while upstream.raw_connections == 0 or len(upstream.raw) < 10:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert bytes(upstream.raw) == b"0123456789"
        writer.close()
        # spent after one connection: the next one goes through whole
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"klmnopqrstuvwxyz")
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        while len(upstream.raw) < 26:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert bytes(upstream.raw) == b"0123456789klmnopqrstuvwxyz"


async def test_a_matching_patch_is_cut_after_its_headers_and_other_requests_pass(
    upstream: Upstream, proxy: FaultProxy
) -> None:
    cut = proxy.cut_after(match_request("PATCH", "/hosts/h1/status", body=b"offline", headers_only=True))
    async with aiohttp.ClientSession() as session:
        async with session.patch(f"{proxy.url}/hosts/h2/status", json={"state": "offline"}) as reply:
            assert reply.status == 200  # another host: untouched
        async with session.patch(f"{proxy.url}/hosts/h1/status", json={"state": "online"}) as reply:
            assert reply.status == 200  # another body: untouched
        with pytest.raises(aiohttp.ClientError):
            async with session.patch(f"{proxy.url}/hosts/h1/status", json={"state": "offline"}) as reply:
                await reply.read()
        assert len(cut.fired) == 1
        async with session.patch(f"{proxy.url}/hosts/h1/status", json={"state": "offline"}) as reply:
            assert reply.status == 200  # the cut is spent: a retry goes through
    assert [(m, p, b) for m, p, b in upstream.handled] == [
        ("PATCH", "/hosts/h2/status", b'{"state": "offline"}'),
        ("PATCH", "/hosts/h1/status", b'{"state": "online"}'),
        ("PATCH", "/hosts/h1/status", b'{"state": "offline"}'),  # only the retry was handled
    ]


async def test_a_cut_before_the_response_lets_the_server_act_but_the_client_never_hears(
    upstream: Upstream, proxy: FaultProxy
) -> None:
    cut = proxy.cut_after(match_request("PATCH", "/hosts/h1/status"), before_response=True)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.patch(f"{proxy.url}/hosts/h1/status", json={"state": "offline"}) as reply:
                await reply.read()
    assert len(cut.fired) == 1
    assert upstream.handled == [("PATCH", "/hosts/h1/status", b'{"state": "offline"}')]


async def test_modes_switch_from_another_thread(upstream: Upstream) -> None:
    proxy = FaultProxy("127.0.0.1", upstream.port).start_in_thread()
    try:
        async with aiohttp.ClientSession() as session:
            assert (await _get(session, f"{proxy.url}/one"))[0] == 200
            await asyncio.to_thread(proxy.reset)
            with pytest.raises(aiohttp.ClientError):
                await _get(session, f"{proxy.url}/refused")
            await asyncio.to_thread(proxy.stall)
            with pytest.raises(TimeoutError):
                await _get(session, f"{proxy.url}/stalled", patience=0.3)
            await asyncio.to_thread(proxy.forward)
            assert (await _get(session, f"{proxy.url}/two"))[0] == 200
            proxy.reset()  # from this thread, whose loop is not the proxy's
            proxy.forward()
            assert (await _get(session, f"{proxy.url}/three"))[0] == 200
    finally:
        proxy.stop_thread()
    assert [path for _, path, _ in upstream.handled] == ["/one", "/two", "/three"]


async def test_a_cut_can_close_instead_of_reset(upstream: Upstream, proxy: FaultProxy) -> None:
    proxy.cut_after(match_request("PATCH", "/hosts/h1/status"), before_response=True, rst=False)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):  # a FIN, not a RST: not an OSError
            async with session.patch(f"{proxy.url}/hosts/h1/status", json={"state": "offline"}) as reply:
                await reply.read()
    assert len(upstream.handled) == 1
