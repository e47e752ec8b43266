"""Running the emulator: in a background thread, inside a running loop, or in the foreground.

The thread form (``EmulatedCluster().start()``) lets synchronous clients (kubectl, the
``kubernetes`` library) and other event loops talk to it; ``async with emulated_api(...)``
runs it on the caller's loop, for asynchronous clients only; ``serve()`` runs it alone until
interrupted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import os
import pathlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import yaml

from .emulator import Emulator
from .http import Listener
from .resources import CRDS

JsonObj = dict[str, Any]


class EmulatedCluster:
    """Runs the emulated API server in a background thread with its own event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, emulator: Emulator | None = None) -> None:
        self.host = host
        self.port = port
        self.emulator = emulator if emulator is not None else Emulator()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: Listener | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ----- background thread --------------------------------------------------------------------

    def start(self) -> EmulatedCluster:
        """Start serving in a background thread; returns once the port accepts connections."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run_thread, args=(ready,), name="emulated-api", daemon=True)
        self._thread.start()
        ready.result(timeout=30)
        return self

    def _run_thread(self, ready: concurrent.futures.Future[None]) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            try:
                await self._open()
            except BaseException as exc:
                ready.set_exception(exc)
                raise
            ready.set_result(None)
            await self._stopping.wait()
            await self._close()

        asyncio.run(main())

    def stop(self) -> None:
        """Stop serving (the objects are kept: ``start()`` again serves them on the same port)."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)
        self._thread = None
        self._loop = None

    def restart(self) -> None:
        """Like an API server restart: watches break, state survives, same URL."""
        self.stop()
        self.start()

    def __enter__(self) -> EmulatedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- inside a running loop ------------------------------------------------------------------

    async def __aenter__(self) -> EmulatedCluster:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _open(self) -> None:
        self._listener = Listener(self.emulator, self.host, self.port)
        await self._listener.start()
        self.port = self._listener.port

    async def _close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None

    # ----- helpers ----------------------------------------------------------------------------------

    def apply_crd(self, crd: JsonObj) -> None:
        """Create the CRD (or replace its spec), as POSTing/PUTting it to apiextensions would."""
        crd = copy.deepcopy(crd)

        def apply() -> None:
            name = crd["metadata"]["name"]
            old = self.emulator.find(CRDS.group, CRDS.plural, name)
            if old is None:
                self.emulator.create_object(CRDS, None, crd)
            else:
                self.emulator.replace_object(CRDS, None, name, crd)

        self.emulator.run_on_loop(apply)

    def write_kubeconfig(self, path: str | os.PathLike[str], token: str | None = None) -> pathlib.Path:
        """Write a kubeconfig for kubectl, Kopf, kubernetes and kubernetes_asyncio."""
        return write_kubeconfig(path, self.url, token)


def write_kubeconfig(path: str | os.PathLike[str], url: str, token: str | None = None) -> pathlib.Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gpufleet-emulator", "cluster": {"server": url}}],
        "users": [{"name": "gpufleet-emulator", "user": {"token": token or "emulator-token"}}],
        "contexts": [
            {
                "name": "gpufleet-emulator",
                "context": {"cluster": "gpufleet-emulator", "user": "gpufleet-emulator", "namespace": "default"},
            }
        ],
        "current-context": "gpufleet-emulator",
        "preferences": {},
    }
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


@contextlib.asynccontextmanager
async def emulated_api(
    host: str = "127.0.0.1", port: int = 0, kubeconfig: str | os.PathLike[str] | None = None
) -> AsyncIterator[EmulatedCluster]:
    """Serve the emulated API on the current loop for the duration of the block."""
    cluster = EmulatedCluster(host, port)
    async with cluster:
        if kubeconfig is not None:
            cluster.write_kubeconfig(kubeconfig)
        yield cluster


def load_crds(cluster: EmulatedCluster, folder: str | os.PathLike[str]) -> int:
    """Apply every CustomResourceDefinition found in the YAML files of a folder."""
    count = 0
    for file in sorted(pathlib.Path(folder).glob("*.y*ml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                cluster.apply_crd(doc)
                count += 1
    return count


async def _serve_forever(
    host: str, port: int, kubeconfig_path: str | os.PathLike[str] | None, crds: str | os.PathLike[str] | None
) -> None:
    async with emulated_api(host, port, kubeconfig_path) as cluster:
        if crds is not None:
            load_crds(cluster, crds)
        print(f"emulated Kubernetes API serving at {cluster.url}", flush=True)
        await asyncio.Event().wait()


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    kubeconfig_path: str | os.PathLike[str] | None = None,
    crds: str | os.PathLike[str] | None = None,
) -> None:
    """Run the emulated API in the foreground until interrupted (``gpufleet dev``)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(host, port, kubeconfig_path, crds))
