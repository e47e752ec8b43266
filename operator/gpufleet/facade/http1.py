"""A lean HTTP/1.1 client for the facade's hottest call: the Lease renewal of every REST heartbeat.

A heartbeat through the facade is one request in and one Lease merge patch out. Sent through
aiohttp's client, that patch cost about 100 µs of CPU, a quarter of the whole heartbeat: its
request and response objects, timers, trace hooks and cookie handling are made for every call.
What the renewal needs is much less: a kept-alive connection, one write of a request built as
bytes, and a response parsed by llhttp (through `httptools`, the parser uvicorn uses; aiohttp's own
is a fork of the same) — about 30 µs. The headers that every renewal repeats (credentials,
content type) are rendered and checked once (`Headers`); only the user agent is per call.

The pool serves one API server, plain or TLS, and knows no proxies: `kubeapi` uses it only when
the API client it mirrors has none (its other calls keep the generated client). A reused
connection that the server closed while idle is the one expected failure: a request on it that got
no byte of answer is sent again once on a new connection, which a renewal (it sets the same
fields to the same values) allows. Everything else is raised: `OSError` for the connection,
`ConnectionError` for a malformed answer, and a cancelled call (the caller's timeout) discards its
connection, whose answer may still be on the way.
"""

from __future__ import annotations

import asyncio
import ssl
import typing
from collections.abc import Mapping

import httptools
import yarl

#: Characters no header value may hold: they would end the header, or the request, early.
_FORBIDDEN = frozenset("\r\n\0")


class Headers:
    """Header lines rendered and checked once: a request sends `headers + Headers({...})`, so what
    repeats on every call (credentials, content type) is not rendered and checked again each time."""

    __slots__ = ("block",)

    def __init__(self, headers: Mapping[str, str] | None = None, *, _block: bytes = b"") -> None:
        lines = [_block]
        for name, value in (headers or {}).items():
            if _FORBIDDEN.intersection(name) or _FORBIDDEN.intersection(value):
                raise ValueError(f"header {name!r} holds a line break or NUL")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        self.block = b"".join(lines)

    def __add__(self, other: Headers) -> Headers:
        return Headers(_block=self.block + other.block)


class Response:
    """A whole answer: its status, reason and body."""

    __slots__ = ("body", "reason", "status")

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.body = body


class _Connection(asyncio.Protocol):
    """One kept-alive connection, carrying one exchange at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.answered = False  # whether any byte of the current exchange's answer arrived
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[Response] | None = None

    # ----- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's are not asyncio's subclasses

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"malformed answer from the API server: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc if isinstance(exc, OSError) else ConnectionResetError("the API server closed the connection"))

    # ----- httptools callbacks ----------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        response = Response(self._parser.get_status_code(), self._reason.decode("latin-1"), b"".join(self._body))
        self._reason, self._body = b"", []
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # ----- the pool's side --------------------------------------------------------------------------

    async def exchange(self, request: bytes) -> Response:
        assert self.transport is not None and self._waiter is None
        self.answered = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class Pool:
    """Kept-alive connections to one server, at most `size` at once (more callers wait)."""

    def __init__(self, base_url: str, tls: ssl.SSLContext | None, *, size: int) -> None:
        url = yarl.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) server URL: {base_url!r}")
        self._host = url.host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = tls if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")  # an API server behind a path, as kubeconfigs allow
        self._host_header = f"Host: {url.host_port_subcomponent}\r\n".encode("ascii")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(size)
        self._size = size
        self._closed = False

    async def request(self, method: str, path: str, headers: Headers | Mapping[str, str], body: bytes) -> Response:
        """Send one request (`path` already encoded) and return its whole answer."""
        message = self._message(method, path, headers, body)
        async with self._slots:
            reused = self._reusable()
            if reused is not None:
                try:
                    return await self._exchange(reused, message)
                except OSError:
                    if reused.answered:
                        raise
                    # Closed by the server while idle, before any answer: once more, on a new one.
            return await self._exchange(await self._connect(), message)

    def close(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def _reusable(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _exchange(self, connection: _Connection, message: bytes) -> Response:
        try:
            response = await connection.exchange(message)
        except BaseException:
            connection.close()  # its answer, if one is still coming, belongs to nobody
            raise
        if connection.closed or self._closed or len(self._idle) >= self._size:
            connection.close()
        else:
            self._idle.append(connection)
        return response

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self._host, self._port, ssl=self._tls)
        return connection

    def _message(self, method: str, path: str, headers: Headers | Mapping[str, str], body: bytes) -> bytes:
        rendered = headers if isinstance(headers, Headers) else Headers(headers)
        start = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("ascii")
        return b"".join((start, self._host_header, rendered.block, b"Content-Length: %d\r\n\r\n" % len(body), body))


def tls_context(
    *,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    verify: bool,
    strict: bool = True,
) -> ssl.SSLContext:
    """The TLS settings kubernetes_asyncio gives its own connections, for the same configuration."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, keyfile=key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if not strict:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context
