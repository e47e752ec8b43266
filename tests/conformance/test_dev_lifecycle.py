"""`gpufleet dev` stops cleanly on SIGINT (Ctrl+C, as its banner says) and on SIGTERM."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import tempfile
import time

from tests.support.ports import free_port

from .conftest import READY_LINE, STOP_TIMEOUT, clean_env, dev_command


def _start(workdir: pathlib.Path) -> tuple[subprocess.Popen[bytes], int]:
    port, api_port = free_port(), free_port()
    proc = subprocess.Popen(
        dev_command(port, api_port, workdir / "kubeconfig"),
        stdout=subprocess.PIPE,
        stderr=(workdir / "log").open("wb"),
        env=clean_env(),
        cwd=workdir,
    )
    return proc, port


def _wait_banner(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 45
    for line in iter(proc.stdout.readline, b""):
        if READY_LINE.encode() in line:
            return
        assert time.monotonic() < deadline, "no banner"
    raise AssertionError(f"gpufleet dev exited with {proc.wait()} before its banner")


def _serving(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_dev_stops_on_sigint_and_sigterm() -> None:
    procs = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        procs[signum] = _start(pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-conformance-stop-")))
    try:
        for proc, _ in procs.values():
            _wait_banner(proc)
        for signum, (proc, _) in procs.items():
            proc.send_signal(signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        results = {}
        for signum, (proc, port) in procs.items():
            try:
                results[signum.name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                results[signum.name] = f"still running after {STOP_TIMEOUT:g} s (facade serving: {_serving(port)})"
        assert results == {"SIGINT": 0, "SIGTERM": 0}, results
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
