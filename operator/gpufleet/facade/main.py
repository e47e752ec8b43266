"""Running the facade: `gpufleet facade` (`run`), or inside another program's loop (`serve`).

`serve` is the one way it starts: it listens (HTTPS when a certificate is configured), says it
is ready once its caches are synced, and on `stop` stops accepting connections and lets the
requests in flight finish before it closes the caches and the API client.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

import pydantic
from aiohttp import web

from gpufleet import logs
from gpufleet.facade import app as app_
from gpufleet.settings import Settings

logger = logging.getLogger(__name__)

#: How long requests in flight may take to finish after a stop was asked for.
SHUTDOWN_GRACE_SECONDS = 10.0


def _tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


async def serve(settings: Settings, *, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serve the REST API until `stop` is set; `ready` is set once it listens with synced caches."""
    app = app_.create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE_SECONDS, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.facade_host, settings.facade_port, ssl_context=_tls(settings))
        await site.start()
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
        await runner.cleanup()


async def _main(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop=stop)
    return 0


def run(args: argparse.Namespace) -> int:
    """`gpufleet facade`: settings from `GPUFLEET_*`; exit 0 after a clean stop, 2 on bad settings."""
    try:
        settings = Settings()
    except pydantic.ValidationError as error:
        print(f"gpufleet facade: invalid settings: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format.value)
    try:
        return asyncio.run(_main(settings))
    except (OSError, ValueError) as error:
        print(f"gpufleet facade: {error}", file=sys.stderr)
        return 1
