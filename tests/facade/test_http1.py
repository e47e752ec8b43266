"""The Lease renewals' HTTP/1.1 pool (gpufleet.facade.http1) against a server scripted byte by byte.

What the facade's heartbeats rely on, shown over real sockets: connections are kept and reused,
a connection the server closed (while idle, or as a request arrived) costs no failed heartbeat,
an answer that comes too late never becomes the answer to a later request, answers in chunks or
with `Connection: close` are read whole, and nothing can smuggle a header line into a request.
The facade's own tests run every heartbeat through this pool against the emulated API.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from kubernetes_asyncio import client

from gpufleet.api import hostlease
from gpufleet.facade import http1, kubeapi

from .helpers import self_signed

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]
LEASE = "/apis/coordination.k8s.io/v1/namespaces/gpufleet-host-leases/leases/h1"


def _answer(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        status.encode(),
        extra,
        len(body),
        body,
    )


async def _ok(request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(_answer(b'{"echo":"%s"}' % request.split(b" ", 2)[1]))


class Server:
    """Accepts connections; answers each request with the next scripted answer (then `_ok`)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.script: list[Answer] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.ended = 0  # connections that the client closed, or this server did
        self.tls = tls
        self.writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self._server is not None:
            self._server.close()

    def close_idle(self) -> None:
        """Close every connection from this side, as a server's idle timeout does."""
        for writer in self.writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.script.pop(0) if self.script else _ok
                await answer(request, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        finally:
            self.ended += 1


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = await Server().start()
    yield running
    await running.stop()


@pytest.fixture
async def pool(server: Server) -> AsyncIterator[http1.Pool]:
    made = http1.Pool(server.url, None, size=4)
    yield made
    made.close()


async def _renew(pool: http1.Pool, path: str = LEASE) -> http1.Response:
    return await pool.request("PATCH", path, {"Content-Type": "application/merge-patch+json"}, b'{"spec":{}}')


async def test_requests_share_one_kept_alive_connection(pool: http1.Pool, server: Server) -> None:
    for _ in range(5):
        answer = await _renew(pool)
        assert (answer.status, answer.body) == (200, b'{"echo":"%s"}' % LEASE.encode())
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(f"PATCH {LEASE} HTTP/1.1\r\n".encode())
    assert b'\r\nContent-Length: 11\r\n\r\n{"spec":{}}' in first and b"\r\nHost: 127.0.0.1:" in first


async def test_an_error_answer_is_returned_with_its_status_reason_and_body(pool: http1.Pool, server: Server) -> None:
    async def not_found(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(b'{"kind":"Status","code":404}', status="404 Not Found"))

    server.script.append(not_found)
    answer = await _renew(pool)
    assert (answer.status, answer.reason, answer.body) == (404, "Not Found", b'{"kind":"Status","code":404}')
    assert (await _renew(pool)).status == 200 and server.connections == 1  # an error answer keeps the connection


async def test_a_connection_the_server_closed_while_idle_is_not_used_again(pool: http1.Pool, server: Server) -> None:
    await _renew(pool)
    server.close_idle()
    await asyncio.sleep(0.05)
    assert (await _renew(pool)).status == 200
    assert server.connections == 2


async def test_a_reused_connection_dropped_before_any_answer_is_retried_once_on_a_new_one(
    pool: http1.Pool, server: Server
) -> None:
    async def drop(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()  # the request arrived; no byte of answer will

    await _renew(pool)
    server.script.append(drop)
    assert (await _renew(pool)).status == 200
    assert len(server.requests) == 3 and server.connections == 2


async def test_a_new_connection_dropped_before_any_answer_fails(pool: http1.Pool, server: Server) -> None:
    async def drop(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    server.script.append(drop)
    with pytest.raises(OSError):
        await _renew(pool)
    assert len(server.requests) == 1  # not sent twice: nothing says the server did not act on it


async def test_a_connection_dropped_in_the_middle_of_an_answer_fails_and_is_not_retried(
    pool: http1.Pool, server: Server
) -> None:
    async def half(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(b'{"kind":"Lease"}')[:-5])
        await writer.drain()
        writer.transport.abort()

    await _renew(pool)
    server.script.append(half)
    with pytest.raises(OSError):
        await _renew(pool)
    assert len(server.requests) == 2
    assert (await _renew(pool)).status == 200


async def test_an_answer_that_comes_after_the_caller_gave_up_is_never_taken_for_the_next_one(
    pool: http1.Pool, server: Server
) -> None:
    async def late(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)
        writer.write(_answer(b'{"late":true}'))

    server.script.append(late)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await _renew(pool, "/first")
    await asyncio.sleep(0.4)  # the late answer arrives meanwhile, on the connection given up
    assert server.ended == 1  # given up with its request: closed, not left open
    answer = await _renew(pool, "/second")
    assert answer.body == b'{"echo":"/second"}'


async def test_a_chunked_answer_is_read_whole(pool: http1.Pool, server: Server) -> None:
    async def chunked(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n12}\r\n0\r\n\r\n')

    server.script.append(chunked)
    assert (await _renew(pool)).body == b'{"a":12}'
    assert (await _renew(pool)).status == 200 and server.connections == 1


async def test_connection_close_in_an_answer_closes_the_connection_after_it(pool: http1.Pool, server: Server) -> None:
    async def closing(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(b"{}", extra=b"Connection: close\r\n"))
        await writer.drain()
        writer.close()

    server.script.append(closing)
    assert (await _renew(pool)).body == b"{}"
    assert (await _renew(pool)).status == 200 and server.connections == 2


async def test_a_malformed_answer_fails_the_request_and_the_connection(pool: http1.Pool, server: Server) -> None:
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SMTP ready\r\n\r\n")

    server.script.append(garbage)
    with pytest.raises(ConnectionError, match="malformed answer"):
        await _renew(pool)
    assert (await _renew(pool)).status == 200 and server.connections == 2


@pytest.mark.parametrize("value", ["agent\r\nX-Injected: 1", "agent\nX-Injected: 1", "agent\0"])
async def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent(
    pool: http1.Pool, server: Server, value: str
) -> None:
    with pytest.raises(ValueError, match="line break or NUL"):
        await pool.request("PATCH", LEASE, {"User-Agent": value}, b"{}")
    with pytest.raises(ValueError, match="line break or NUL"):
        http1.Headers({"Accept": "application/json", "User-Agent": value})
    assert server.requests == []


async def test_headers_rendered_once_are_sent_with_each_request_and_its_own(pool: http1.Pool, server: Server) -> None:
    common = http1.Headers({"Content-Type": "application/merge-patch+json", "authorization": "Bearer t0ken"})
    for caller in ("agent:h1", "agent:h2"):
        await pool.request("PATCH", LEASE, common + http1.Headers({"User-Agent": caller}), b"{}")
    for request, caller in zip(server.requests, ("agent:h1", "agent:h2"), strict=True):
        head = request.split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[2:] == [
            b"Content-Type: application/merge-patch+json",
            b"authorization: Bearer t0ken",
            b"User-Agent: " + caller.encode(),
            b"Content-Length: 2",
        ]


async def test_at_most_size_connections_are_open_at_once(server: Server) -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(_answer(b"{}"))

    server.script.extend([slow] * 12)
    pool = http1.Pool(server.url, None, size=3)
    try:
        answers = await asyncio.gather(*(_renew(pool) for _ in range(12)))
    finally:
        pool.close()
    assert [answer.status for answer in answers] == [200] * 12
    assert server.connections == 3


async def test_the_server_url_may_carry_a_path_prefix(server: Server) -> None:
    pool = http1.Pool(server.url + "/k8s/", None, size=1)
    try:
        assert (await _renew(pool)).body == b'{"echo":"/k8s%s"}' % LEASE.encode()
    finally:
        pool.close()


@pytest.mark.parametrize("url", ["ftp://example.com", "127.0.0.1:6443", "https://"])
def test_a_url_that_is_not_an_http_server_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        http1.Pool(url, None, size=1)


@pytest.fixture
def certificate(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    return self_signed(tmp_path)


async def test_tls_is_verified_against_the_configured_ca(certificate: tuple[pathlib.Path, pathlib.Path]) -> None:
    cert, key = certificate
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)
    server = await Server(tls=serving).start()
    trusting = http1.Pool(
        server.url, http1.tls_context(ca_file=str(cert), cert_file=None, key_file=None, verify=True), size=1
    )
    strangers = http1.Pool(
        server.url, http1.tls_context(ca_file=None, cert_file=None, key_file=None, verify=True), size=1
    )
    try:
        assert (await _renew(trusting)).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            await _renew(strangers)
    finally:
        trusting.close()
        strangers.close()
        await server.stop()


async def test_the_facade_renews_with_credentials_rotated_since_its_last_renewal(server: Server) -> None:
    """kubeapi renders the renewals' headers once per credentials: a rotated token (a projected
    ServiceAccount token is replaced every hour) is sent from the next renewal on."""
    configuration = client.Configuration(
        host=server.url, api_key={"BearerToken": "first"}, api_key_prefix={"BearerToken": "Bearer"}
    )
    async with client.ApiClient(configuration) as api:
        kube = kubeapi.Kubernetes(timeout=5, namespace="gpufleet", lease_namespace="host leases")
        kube.connect(api)
        renewal = hostlease.renewal(holder=hostlease.FACADE_HOLDER, duration_seconds=40)
        try:
            await kube.patch_lease("h1", renewal)
            configuration.api_key["BearerToken"] = "second"
            await kube.patch_lease("h1", renewal)
        finally:
            kube.close()
    first, second = server.requests
    assert first.startswith(b"PATCH /apis/coordination.k8s.io/v1/namespaces/host%20leases/leases/h1 HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer first\r\n" in first and b"Bearer second" not in first
    assert b"\r\nauthorization: Bearer second\r\n" in second and b"Bearer first" not in second
    assert json.loads(second.split(b"\r\n\r\n", 1)[1]) == renewal
