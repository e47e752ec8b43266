"""Running a container of the rendered chart as a local process, with the environment it would get.

The Deployment's and DaemonSet's env is taken as rendered, the downward API resolved to the values
given, and the ports the container listens on moved to free ones (several test runs may share a
machine). Output goes to a file, not a pipe, so that a chatty process never blocks on a full pipe.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from tests.support.ports import free_port  # re-exported: the chart tests call processes.free_port

GPUFLEET = [sys.executable, "-m", "gpufleet"]


def answers(url: str) -> int | None:
    """The HTTP status `url` answers with, or None when nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - http on loopback
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


class Container:
    """One container of a rendered workload, run as `python -m gpufleet <args>`."""

    def __init__(
        self,
        spec: dict[str, Any],
        *,
        kubeconfig: pathlib.Path,
        downward_api: dict[str, str],
        port_variables: dict[str, str],
        log: pathlib.Path,
    ) -> None:
        """`port_variables` maps an env variable to the container port (by name) it sets."""
        self.spec = spec
        self.log = log
        env = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": str(kubeconfig)}
        for var in spec.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                env[var["name"]] = downward_api[var["valueFrom"]["fieldRef"]["fieldPath"]]
        self.ports: dict[str, int] = {p["name"]: p["containerPort"] for p in spec["ports"]}
        for variable, port_name in port_variables.items():
            assert env[variable] == str(self.ports[port_name]), f"{variable} and port {port_name} disagree"
            self.ports[port_name] = free_port()
            env[variable] = str(self.ports[port_name])
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*GPUFLEET, *self.spec["args"]], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def url(self, port_name: str, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[port_name]}{path}"

    def probe_url(self, probe: str) -> str:
        action = self.spec[probe]["httpGet"]
        return self.url(action["port"], action["path"], action.get("scheme", "HTTP").lower())

    def wait_until_answering(self, url: str, *, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers(url) == 200:
                return
            assert self.process is not None and self.process.poll() is None, self.output()
            time.sleep(0.1)
        raise AssertionError(f"{url} did not answer 200 within {timeout:g}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
