"""Running the facade: `gpufleet facade` (`run`), or inside another program's loop (`serve`).

`serve` is the one way it starts: it listens (HTTPS when a certificate is configured, read
again whenever it changes on disk), says it is ready once its caches are synced, and on `stop`
stops accepting connections and lets the requests in flight finish before it closes the caches
and the API client.

`Runner` is aiohttp's AppRunner with the facade's limits on request lines and headers, whose
connections answer a request that does not even parse (a request line or header over its limit,
a malformed one) with the envelope (40004) like every other error, not aiohttp's plain text.

`gpufleet facade` runs on uvloop where it is installed (it is a dependency on Linux and macOS):
its event loop and transports in C took 11 to 34% off the CPU of each REST heartbeat in three
alternating runs (docs/facade.md, "Tests and benchmark").
`serve` runs on whatever loop it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import pathlib
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic
from aiohttp import http_exceptions, web, web_protocol, web_request

from gpufleet import logs
from gpufleet.facade import app as app_
from gpufleet.facade import errors, limits, reload
from gpufleet.settings import Settings

logger = logging.getLogger(__name__)

#: How long requests in flight may take to finish after a stop was asked for.
SHUTDOWN_GRACE_SECONDS = 10.0


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse with the envelope."""

    __slots__ = ()

    def handle_error(
        self,
        request: web_request.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # too late for an answer: aiohttp drops the connection
            return super().handle_error(request, status, exc, message)
        if status == 400:
            # Not the parser's message: it may quote the offending line, which may hold a token.
            detail = "a line is too long" if isinstance(exc, http_exceptions.LineTooLong) else None
            logger.debug("unparsable request from %s: %s", request.remote, type(exc).__name__)
            error = errors.FacadeError(errors.MALFORMED_REQUEST, detail)
        else:
            logger.error("error handling a request from %s", request.remote, exc_info=exc)
            error = errors.FacadeError(errors.INTERNAL)
        response = error.response()
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        handler = super().__call__()
        handler.__class__ = _Protocol  # same layout (no slots of its own): only handle_error differs
        return handler


class Runner(web.AppRunner):
    """The facade's AppRunner: its limits on request lines and headers, its answer to unparsable requests."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", limits.MAX_LINE_BYTES)
        kwargs.setdefault("max_field_size", limits.MAX_LINE_BYTES)
        kwargs.setdefault("max_headers", limits.MAX_HEADERS)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server
        return server


class Certificates:
    """The TLS context the facade listens with, which gives each new connection the latest good certificate.

    A certificate that changed on disk is loaded into a new context, and only once that load
    succeeded does it replace the one in use: a failed load (a new certificate with the old key,
    halfway through a rotation) leaves connections served as before. The listening context's
    SNI callback, called on every handshake (with or without SNI), switches the connection to
    the context in use. Connections already open keep the certificate they were made with.
    """

    def __init__(self, cert: pathlib.Path, key: pathlib.Path) -> None:
        self.cert, self.key = cert, key
        self.current = self._load()
        self.listener = self._load()
        self.listener.sni_callback = self._select

    def _load(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def reload(self) -> None:
        self.current = self._load()

    def _select(self, connection: ssl.SSLObject, server_name: str | None, listener: ssl.SSLContext) -> None:
        connection.context = self.current


def _tls(settings: Settings) -> tuple[ssl.SSLContext, reload.FileWatch] | None:
    """The listening TLS context, and the watch that reloads a changed certificate."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    certificates = Certificates(settings.tls_cert_file, settings.tls_key_file)
    paths = [settings.tls_cert_file, settings.tls_key_file]
    return certificates.listener, reload.FileWatch("TLS certificate", paths, certificates.reload)


async def serve(settings: Settings, *, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serve the REST API until `stop` is set; `ready` is set once it listens with synced caches."""
    app = app_.create_app(settings)
    tls = _tls(settings)
    runner = Runner(app, shutdown_timeout=SHUTDOWN_GRACE_SECONDS, access_log=None)
    await runner.setup()
    watching: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, settings.facade_host, settings.facade_port, ssl_context=tls[0] if tls else None)
        await site.start()
        if tls is not None:
            watching = asyncio.create_task(tls[1].run(settings.reload_interval_seconds), name="facade watch TLS")
        scheme = "https" if settings.tls_cert_file else "http"
        logger.info("facade listening on %s://%s:%d", scheme, settings.facade_host, settings.facade_port)
        synced = asyncio.create_task(app_.wait_synced(app))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        if ready is not None and not stop.is_set():
            ready.set()
        await stopped
    finally:
        logger.info("facade stopping")
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        await runner.cleanup()


async def _main(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop=stop)
    return 0


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """`uvloop.run` where uvloop is installed, else `asyncio.run`."""
    try:
        import uvloop  # optional: there are no wheels for Windows
    except ImportError:
        return asyncio.run
    return uvloop.run


def run(args: argparse.Namespace) -> int:
    """`gpufleet facade`: settings from `GPUFLEET_*`; exit 0 after a clean stop, 2 on bad settings."""
    try:
        settings = Settings()
    except pydantic.ValidationError as error:
        print(f"gpufleet facade: invalid settings: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format.value)
    try:
        return _event_loop_runner()(_main(settings))
    except (OSError, ValueError) as error:
        print(f"gpufleet facade: {error}", file=sys.stderr)
        return 1
