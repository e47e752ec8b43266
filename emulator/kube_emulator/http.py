"""The loopback HTTP listener that feeds requests to the emulator.

A plain aiohttp low-level server: no routing table, no middleware, nothing installed into
the process, so the operator can run beside it in one process with its HTTP clients untouched.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp.web

from .emulator import Emulator

MAX_BODY = 3 * 1024 * 1024  # the apiserver's request size limit


class Listener:
    """Serves one emulator on host:port; can be stopped and started again on the same port."""

    def __init__(self, emulator: Emulator, host: str, port: int) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._web: aiohttp.web.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def request_factory(
            message: Any, payload: Any, protocol: Any, writer: Any, task: Any
        ) -> aiohttp.web.BaseRequest:
            return aiohttp.web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY)

        self._web = aiohttp.web.Server(
            self.emulator, handler_cancellation=True, access_log=None, request_factory=request_factory
        )
        self.emulator.bind(loop)
        self._server = await loop.create_server(
            self._web,
            self.host,
            self.port,
            reuse_address=True,
            family=socket.AF_INET6 if ":" in self.host else socket.AF_INET,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.emulator.drop_watches()
        if self._server is not None:
            self._server.close()
        if self._web is not None:
            await self._web.shutdown(timeout=1.0)
            self._web = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
