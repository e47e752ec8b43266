"""A TCP fault proxy: put it between a client and the API server to give that link a bad day.

Black-box faults at the transport level, the kind an HTTP-level fault hook cannot fake::

    proxy = FaultProxy("127.0.0.1", api_port)
    await proxy.start()                  # or proxy.start_in_thread() for synchronous callers
    write_kubeconfig(path, proxy.url)    # the client talks to the proxy
    proxy.stall()                        # a half-open link: sockets stay open, no byte moves
    proxy.reset()                        # every connection RST; new ones accepted and RST at once
    proxy.cut_after(match_request("PATCH", "/hosts/h1/status", body=b"offline"))
    proxy.forward()                      # normal again

How each mode models its fault:

- ``forward``: bytes are copied both ways as they come.
- ``stall``: a dead load balancer or a vanished node. Open connections are frozen (nothing more is
  read or delivered either way, nothing is closed, a chunk caught in between is dropped); new
  connections are accepted and frozen the same way, without reaching upstream. Nothing tells the
  client: only its own read timeouts can. Stalled bytes are **lost**, as they are on a real half-open connection: on
  ``forward()`` every frozen connection is aborted with a RST (the client learns then) and new
  connections work.
- ``reset``: every open connection is aborted with a RST to the client (``SO_LINGER`` 0) and closed
  upstream; while in this mode, new connections are accepted and reset at once (a refused link).
- ``cut_after(trigger)``: the next connection(s) whose upstream bytes meet ``trigger`` are dropped
  in the middle of a request: after ``n`` more bytes (an int), or when a predicate over the bytes
  sent upstream since the cut was armed says so (``True``: after that chunk; an int ``k``: after
  its first ``k`` bytes, e.g. just the headers). With ``before_response=True`` the request goes
  through whole and the connection is dropped when the answer starts: the server acted, the client
  never hears of it. The client gets a RST, or a FIN with ``rst=False`` (a server closing the
  connection: aiohttp reports the two differently). Cuts apply in ``forward`` mode only.

Modes may be switched from the proxy's loop or from any other thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import re
import socket
import struct
import threading
import time
from collections.abc import Callable

Trigger = int | Callable[[bytes], "bool | int"]
CHUNK = 65536


_REQUEST_LINE = re.compile(rb"([A-Z]+) (\S+) HTTP/1\.[01]\r\n")


def match_request(method: str | None, path: str, *, body: bytes | None = None, headers_only: bool = False) -> Trigger:
    """A cut trigger: the last request on the connection is ``method`` (None: any) on a target that
    contains ``path`` (and, if given, ``body`` is in its body so far); ``headers_only`` lets the
    headers through and cuts before the body, so the server sees a request that never completes."""

    def trigger(sent: bytes) -> bool | int:
        last = None
        for last in _REQUEST_LINE.finditer(sent):  # noqa: B007 - the last one is wanted
            pass
        if last is None or method not in (None, last.group(1).decode()) or path.encode() not in last.group(2):
            return False
        head_end = sent.find(b"\r\n\r\n", last.start())
        if head_end < 0 or (body is not None and body not in sent[head_end + 4 :]):
            return False
        return head_end + 4 if headers_only else True

    return trigger


@dataclasses.dataclass
class Cut:
    """An armed cut; ``fired`` holds the monotonic time at which each connection it dropped was cut."""

    trigger: Trigger
    before_response: bool
    times: int
    rst: bool = True
    fired: list[float] = dataclasses.field(default_factory=list)
    bases: dict[int, int] = dataclasses.field(default_factory=dict, repr=False)
    """Per connection: how many bytes it had sent upstream when the cut first saw it."""


class _Link:
    """One proxied connection: the client's socket, upstream's, and what crossed upstream."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.frozen = False
        self.cut_on_response = False
        self.cut_rst = True
        self.dead = asyncio.Event()
        self.sent = bytearray()  # the last MiB sent upstream, for cut triggers
        self.sent_total = 0

    def abort(self, *, rst: bool = True) -> None:
        """RST the client (``SO_LINGER`` 0 makes the close send one), or close it (a FIN); drop upstream."""
        sock = self.client.get_extra_info("socket")
        if rst and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if rst:
            self.client.transport.abort()
        else:
            self.client.transport.close()
        if self.upstream is not None:
            self.upstream.transport.abort()
        self.dead.set()


class FaultProxy:
    """Forwards ``host:port`` to upstream; ``stall()``, ``reset()``, ``cut_after()``, ``forward()``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host, self.port = host, port
        self.mode = "forward"
        self.accepted = 0
        """Connections accepted so far (reset ones included)."""
        self._links: set[_Link] = set()
        self._cuts: list[Cut] = []
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._links)

    # ----- running ------------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        """Serve on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for link in list(self._links):
                link.abort()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> FaultProxy:
        """Serve from a thread of its own, for callers that have no loop or block theirs."""
        ready: concurrent.futures.Future[asyncio.Event] = concurrent.futures.Future()

        async def main() -> None:
            stopping = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                ready.set_exception(exc)
                raise
            ready.set_result(stopping)
            await stopping.wait()
            await self.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="fault-proxy", daemon=True)
        self._thread.start()
        self._stopping = ready.result(timeout=10)
        return self

    def stop_thread(self) -> None:
        """Stop a proxy started with ``start_in_thread``."""
        if self._thread is not None and self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=10)
            self._thread = None

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the proxy's loop (at once when called on it) and wait until it ran."""
        loop = self._loop
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or loop is here or not loop.is_running():
            fn()
            return

        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    # ----- modes --------------------------------------------------------------------------------

    def forward(self) -> None:
        """Back to normal; connections frozen by a stall are aborted (what they carried is lost)."""

        def apply() -> None:
            self.mode = "forward"
            for link in [link for link in self._links if link.frozen]:
                link.abort()

        self._call(apply)

    def stall(self) -> None:
        """Freeze every connection, and every new one, until ``forward()`` (which aborts them)."""

        def apply() -> None:
            self.mode = "stall"
            for link in self._links:
                link.frozen = True

        self._call(apply)

    def reset(self) -> None:
        """RST every connection; until ``forward()``, accept new ones only to RST them."""

        def apply() -> None:
            self.mode = "reset"
            for link in list(self._links):
                link.abort()

        self._call(apply)

    def cut_after(self, trigger: Trigger, *, before_response: bool = False, times: int = 1, rst: bool = True) -> Cut:
        """Drop the next ``times`` connections whose upstream bytes meet ``trigger`` (see the module doc);
        the client gets a RST, or a plain close (FIN: what a restarting server sends) with ``rst=False``."""
        cut = Cut(trigger, before_response, times, rst)
        self._call(lambda: self._cuts.append(cut))
        return cut

    # ----- plumbing -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer)
        if self.mode == "reset":
            link.abort()
            return
        self._links.add(link)
        try:
            if self.mode == "stall":  # accepted, never connected upstream
                link.frozen = True
                await link.dead.wait()
                return
            try:
                up_reader, link.upstream = await asyncio.open_connection(*self.upstream)
            except OSError:
                link.abort()
                return
            if link.dead.is_set() or link.frozen:  # the mode changed while connecting
                link.abort() if link.dead.is_set() else await link.dead.wait()
                return
            await asyncio.gather(
                self._pump(link, reader, link.upstream, upstream=True),
                self._pump(link, up_reader, writer, upstream=False),
            )
        finally:
            self._links.discard(link)
            if not link.dead.is_set():
                writer.close()
                if link.upstream is not None:
                    link.upstream.close()
                link.dead.set()

    async def _pump(self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upstream: bool) -> None:
        try:
            while not link.dead.is_set():
                data = await src.read(CHUNK)
                if link.frozen:  # a half-open link: these bytes are lost, nothing more is read
                    await link.dead.wait()
                    return
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if dst.can_write_eof():
                            dst.write_eof()
                    return
                if not upstream and link.cut_on_response:  # the server answered: the client never hears it
                    link.abort(rst=link.cut_rst)
                    return
                keep = self._check_cuts(link, data) if upstream and self._cuts else None
                chunk = data if keep is None else data[:keep]
                if chunk:
                    dst.write(chunk)
                    await dst.drain()
                if upstream:
                    link.sent += chunk
                    link.sent_total += len(chunk)
                    del link.sent[: max(0, len(link.sent) - (1 << 20))]
                if keep is not None and not link.cut_on_response:
                    link.abort(rst=link.cut_rst)
                    return
        except OSError:  # ConnectionResetError and friends: the other side is gone
            link.abort()

    def _check_cuts(self, link: _Link, data: bytes) -> int | None:
        """How many bytes of ``data`` go through before this link is cut (None: it is not cut)."""
        for cut in list(self._cuts):
            base = cut.bases.setdefault(id(link), link.sent_total)
            already = link.sent_total - base
            keep: int | None
            if isinstance(cut.trigger, int):
                keep = cut.trigger - already if already + len(data) >= cut.trigger else None
            else:
                since = bytes(link.sent[len(link.sent) - already :]) if already else b""
                verdict = cut.trigger(since + data)
                keep = None if verdict is False else len(data) if verdict is True else int(verdict) - already
            if keep is None:
                continue
            cut.fired.append(time.monotonic())
            link.cut_rst = cut.rst
            if len(cut.fired) >= cut.times:
                self._cuts.remove(cut)
            if cut.before_response:
                link.cut_on_response = True
                return len(data)
            return max(0, min(keep, len(data)))
        return None
