"""Bad days for the operator, judged black-box: replicas behind fault proxies, a fleet, a referee.

A :class:`Rig` runs, against an emulated API (an :class:`~kube_emulator.Emulator` serving
in this process, so that its fault hooks and request observers are at hand):

- N ``gpufleet operator`` replicas as real processes, configured only by ``GPUFLEET_*`` variables,
  each reaching the API through a :class:`~kube_emulator.faultproxy.FaultProxy` (one shared by
  all, or one each) with a bearer token of its own, so the emulator can tell who wrote what;
- a simulated **fleet**: Hosts (some with GPU objects) whose agents heartbeat every few seconds
  straight to the API, never through the operators' proxy, until a host is killed;
- a **monitor** that watches the Hosts and polls the leader Lease straight on the API, recording
  every change of ``status.state``, ``status.totalGpu`` and ``holderIdentity`` with its time;
- a **writer log** fed by the emulator's request observer: every write each replica made.

:meth:`Rig.report` turns the record into a verdict: live hosts written offline, dead hosts not
offline in time (grace + 15 s after death, or after a blind window in which the operators could not
see the fleet), two replicas writing Host status at once, and the take-over time. Scenarios (see
:mod:`tests.support.baddays_scenarios`) drive a rig and add findings of their own.

All times are ``time.monotonic()`` of this process (the emulator's observer uses the same clock).
The emulator layer imports nothing above it, so the gpufleet API names are spelled out here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp

from kube_emulator.cluster import write_kubeconfig
from kube_emulator.emulator import Emulator
from kube_emulator.faultproxy import FaultProxy
from kube_emulator.faults import RequestRecord

JsonObj = dict[str, Any]

API_VERSION = "gpufleet.io/v1alpha1"
HOSTS = f"/apis/{API_VERSION}/hosts"
GPUS = f"/apis/{API_VERSION}/gpus"
HOST_LABEL = "gpufleet.io/host"
TOKEN_SECRET_PREFIX = "gpufleet-agent-token-"
MERGE = {"Content-Type": "application/merge-patch+json"}
#: A dead host must be offline within grace + this (a leader take-over included).
DETECTION_SLACK = 15.0
#: Offline this much before the earliest moment the operator could know is "premature".
PREMATURE_TOLERANCE = 0.5
_STATUS_WRITE = re.compile(rf"^{re.escape(HOSTS)}/[^/]+/status$")
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def rfc3339(moment: datetime.datetime | None = None) -> str:
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass(frozen=True)
class Timings:
    """The operators' settings and the fleet's rhythm (small, so that a bad day lasts seconds)."""

    grace: float = 8.0
    heartbeat: float = 1.0
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    api_timeout: float = 5.0


# ----- the operator replicas ---------------------------------------------------------------------


class Replica:
    """One ``gpufleet operator`` process with a token and a proxy of its own; output in ``log``."""

    def __init__(
        self, index: int, *, rig_id: str, proxy: FaultProxy, workdir: pathlib.Path, env: dict[str, str]
    ) -> None:
        self.index = index
        self.name = f"replica-{index}"
        self.user = f"gpufleet-operator-{rig_id}-{index}"
        self.token = f"{rig_id}-{index}-{uuid.uuid4().hex}"
        self.proxy = proxy
        self.metrics_port = free_port()
        self.kubeconfig = write_kubeconfig(workdir / f"{self.name}.kubeconfig", proxy.url, token=self.token)
        self.log = workdir / f"{self.name}.log"
        self.env = {**env, "KUBECONFIG": str(self.kubeconfig), "GPUFLEET_METRICS_PORT": str(self.metrics_port)}
        self.process: subprocess.Popen[bytes] | None = None
        self.killed_at: float | None = None

    def start(self, command: list[str]) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def owns(self, identity: str | None) -> bool:
        """Whether a Lease holderIdentity names this replica (``host@pid/...`` or its name)."""
        if not identity or self.pid is None:
            return False
        return bool(re.search(rf"(^|\D){self.pid}(\D|$)", identity)) or self.name in identity

    def kill(self, sig: int = signal.SIGKILL) -> float:
        assert self.process is not None
        self.process.send_signal(sig)
        self.killed_at = time.monotonic()
        if sig == signal.SIGKILL:
            self.process.wait(timeout=10)  # reaped: `alive` is False from here
        return self.killed_at

    async def stop(self, patience: float = 3.0) -> None:
        if not self.alive:
            return
        assert self.process is not None
        self.process.terminate()
        for _ in range(int(patience / 0.05)):
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def output(self, limit: int = 8000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-limit:]

    async def metrics(self, session: aiohttp.ClientSession) -> str | None:
        """Its Prometheus exposition, or None while it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as reply:
                return await reply.text() if reply.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None


# ----- the fleet -----------------------------------------------------------------------------------


@dataclasses.dataclass
class SimHost:
    name: str
    uid: str = ""
    gpus: set[str] = dataclasses.field(default_factory=set)
    beating: bool = True
    killed_at: float | None = None
    last_ack: float | None = None
    """When the API answered the last heartbeat it accepted (the emulator's clock, not this loop's)."""
    sent: int = 0
    failed: int = 0

    @property
    def died(self) -> float | None:
        """Its last sign of life once killed: when the API accepted its last heartbeat (None: alive)."""
        if self.killed_at is None:
            return None
        return self.last_ack if self.last_ack is not None else self.killed_at


class Fleet:
    """Hosts and their agents: each live host merge-patches ``status.lastHeartbeat`` every period."""

    def __init__(self, session: aiohttp.ClientSession, url: str, heartbeat: float, token: str = "") -> None:
        self.session, self.url, self.heartbeat = session, url, heartbeat
        self.hosts: dict[str, SimHost] = {}
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    def acknowledged(self, record: RequestRecord) -> None:
        """A request the emulator answered (an ``Emulator.observe`` callback, for our token only)."""
        if record.method == "PATCH" and record.status < 300 and _STATUS_WRITE.match(record.path):
            host = self.hosts.get(record.path.split("/")[-2])
            if host is not None and (host.last_ack is None or record.at > host.last_ack):
                host.last_ack = record.at

    async def _call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        async with self.session.request(method, f"{self.url}{path}", json=body, headers=headers) as reply:
            found = await reply.json(content_type=None)
            if reply.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {reply.status}: {found}")
            return found

    async def add_host(self, name: str, gpus: int = 0) -> SimHost:
        body = {
            "apiVersion": API_VERSION,
            "kind": "Host",
            "metadata": {"name": name},
            "spec": {
                "displayName": name,
                "ipAddress": "10.0.0.1",
                "osType": "linux",
                "totalCpu": 8,
                "totalMemory": 2**34,
            },
        }
        created = await self._call("POST", HOSTS, body)
        host = self.hosts[name] = SimHost(name, uid=created["metadata"]["uid"])
        for index in range(gpus):
            await self.add_gpu(name, index)
        return host

    async def add_gpu(self, host_name: str, index: int) -> str:
        host = self.hosts[host_name]
        name = f"{host_name}-gpu{index}"
        owner = {"apiVersion": API_VERSION, "kind": "Host", "name": host_name, "uid": host.uid}
        body = {
            "apiVersion": API_VERSION,
            "kind": "GPU",
            "metadata": {"name": name, "labels": {HOST_LABEL: host_name}, "ownerReferences": [owner]},
            "spec": {"hostName": host_name, "index": index},
        }
        await self._call("POST", GPUS, body)
        await self._call("PATCH", f"{GPUS}/{name}/status", {"status": {"state": "free"}}, MERGE)
        host.gpus.add(name)
        return name

    async def delete_gpu(self, host_name: str, name: str) -> None:
        await self._call("DELETE", f"{GPUS}/{name}")
        self.hosts[host_name].gpus.discard(name)

    def kill(self, *names: str) -> float:
        """Stop these hosts' heartbeats now; the time of death."""
        now = time.monotonic()
        for name in names:
            host = self.hosts[name]
            host.beating, host.killed_at = False, now
        return now

    def live(self) -> list[str]:
        return sorted(name for name, host in self.hosts.items() if host.beating)

    def dead(self) -> list[str]:
        return sorted(name for name, host in self.hosts.items() if not host.beating)

    async def _beat(self, host: SimHost) -> None:
        body = {"status": {"lastHeartbeat": rfc3339(), "reportedState": "online"}}
        host.sent += 1
        try:
            async with self.session.patch(
                f"{self.url}{HOSTS}/{host.name}/status",
                json=body,
                headers={**MERGE, **self._auth},
                timeout=aiohttp.ClientTimeout(total=max(2.0, 2 * self.heartbeat)),
            ) as reply:
                await reply.read()
                if reply.status < 300:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        host.failed += 1

    async def run(self) -> None:
        """Heartbeat every live host once per period, all at once, on a fixed schedule."""
        tick = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        while True:
            for host in list(self.hosts.values()):
                if host.beating:
                    task = asyncio.create_task(self._beat(host))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            tick += self.heartbeat
            await asyncio.sleep(max(0.0, tick - time.monotonic()))


# ----- the referee ---------------------------------------------------------------------------------


class Monitor:
    """Every change of the rig's Hosts' ``status.state`` and ``status.totalGpu``, and of the Lease holder."""

    def __init__(self, session: aiohttp.ClientSession, url: str, prefix: str, lease_path: str) -> None:
        self.session, self.url, self.prefix, self.lease_path = session, url, prefix, lease_path
        self.states: dict[str, list[tuple[float, str | None]]] = {}
        self.totals: dict[str, list[tuple[float, int | None]]] = {}
        self.holders: list[tuple[float, str | None]] = []
        self.lease_seen = False
        self.relists = 0

    def state(self, name: str) -> str | None:
        return self.states.get(name, [(0.0, None)])[-1][1]

    def total(self, name: str) -> int | None:
        return self.totals.get(name, [(0.0, None)])[-1][1]

    @property
    def holder(self) -> str | None:
        return self.holders[-1][1] if self.holders else None

    def _record(self, obj: JsonObj, now: float) -> None:
        name = str(obj.get("metadata", {}).get("name", ""))
        if not name.startswith(self.prefix):
            return
        status = obj.get("status") or {}
        for series, value in ((self.states, status.get("state")), (self.totals, status.get("totalGpu"))):
            seen = series.setdefault(name, [])
            if not seen or seen[-1][1] != value:
                seen.append((now, value))

    async def run(self) -> None:
        await asyncio.gather(self._watch_hosts(), self._poll_lease())

    async def _watch_hosts(self) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    async with self.session.get(f"{self.url}{HOSTS}") as reply:
                        listing = await reply.json()
                        if reply.status != 200:
                            raise RuntimeError(listing)
                    now = time.monotonic()
                    for item in listing["items"]:
                        self._record(item, now)
                    version = str(listing["metadata"]["resourceVersion"])
                    self.relists += 1
                params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
                timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
                async with self.session.get(f"{self.url}{HOSTS}", params=params, timeout=timeout) as reply:
                    if reply.status != 200:
                        raise RuntimeError(f"watch: HTTP {reply.status}")
                    async for line in reply.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            version = None if obj.get("code") == 410 else version
                            break
                        version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._record(obj, time.monotonic())
            except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError, KeyError):
                pass
            await asyncio.sleep(0.1)

    async def _poll_lease(self) -> None:
        while True:
            holder: str | None = None
            try:
                async with self.session.get(f"{self.url}{self.lease_path}") as reply:
                    body = await reply.json(content_type=None)
                    if reply.status == 200:
                        self.lease_seen = True
                        holder = (body.get("spec") or {}).get("holderIdentity") or None
                    elif reply.status != 404:
                        raise RuntimeError(body)
                if not self.holders or self.holders[-1][1] != holder:
                    self.holders.append((time.monotonic(), holder))
            except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError):
                pass
            await asyncio.sleep(0.2)


class Writers:
    """Every write a replica made, as the emulator saw it (an ``Emulator.observe`` callback)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users  # username -> replica name
        self.records: list[RequestRecord] = []

    def __call__(self, record: RequestRecord) -> None:  # on the emulator's loop: list.append is atomic
        if record.user in self.users and record.method in _WRITES:
            self.records.append(record)

    def status_writes(self, since: float = float("-inf")) -> list[tuple[float, str, str]]:
        """(time, replica, host) of every accepted write of a Host's status."""
        return [
            (r.at, self.users[r.user or ""], r.path.split("/")[-2])
            for r in list(self.records)
            if r.at >= since and r.status < 300 and r.method in ("PATCH", "PUT") and _STATUS_WRITE.match(r.path)
        ]

    def spans(self) -> dict[str, tuple[float, float, int]]:
        """Per replica: its first and last Host-status write and how many it made."""
        found: dict[str, tuple[float, float, int]] = {}
        for at, replica, _ in self.status_writes():
            first, _, count = found.get(replica, (at, at, 0))
            found[replica] = (first, at, count + 1)
        return found

    def concurrent(self) -> int:
        """Most replicas whose spans of Host-status writes overlap at one moment (1 = one at a time)."""
        spans = self.spans().values()
        edges = [(first, 1) for first, _, _ in spans] + [(last, -1) for _, last, _ in spans]
        edges.sort(key=lambda edge: (edge[0], -edge[1]))  # a span that starts where another ends overlaps it
        most = current = 0
        for _, step in edges:
            current += step
            most = max(most, current)
        return most

    def last_writer(self) -> str | None:
        writes = self.status_writes()
        return writes[-1][1] if writes else None


# ----- the verdict ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Detection:
    """A killed host: when it died, when it could first be called offline, when it was."""

    host: str
    died: float
    due: float
    offline_at: float | None

    @property
    def delay(self) -> float | None:
        return None if self.offline_at is None else self.offline_at - self.died

    @property
    def late(self) -> float | None:
        return None if self.offline_at is None else self.offline_at - self.due


@dataclasses.dataclass
class Report:
    scenario: str
    hosts: int
    wrongly_offline: list[str]
    detections: list[Detection]
    takeover: float | None
    takeover_how: str
    concurrent_writers: int
    problems: list[str]
    timeline: str

    @property
    def max_delay(self) -> float | None:
        delays = [d.delay for d in self.detections if d.delay is not None]
        return max(delays) if delays else None

    @property
    def max_late(self) -> float | None:
        lates = [d.late for d in self.detections if d.late is not None]
        return max(lates) if lates else None

    @property
    def missed(self) -> int:
        return sum(1 for d in self.detections if d.offline_at is None)

    def describe(self) -> str:
        problems = "\n".join(f"  - {p}" for p in self.problems) or "  (none)"
        return f"scenario {self.scenario}: problems:\n{problems}\n{self.timeline}"


# ----- the rig -------------------------------------------------------------------------------------


class Rig:
    """Replicas, proxies, fleet, monitor and writer log for one scenario; ``async with`` runs it."""

    def __init__(
        self,
        url: str,
        emulator: Emulator,
        workdir: pathlib.Path,
        *,
        scenario: str = "bad-day",
        replicas: int = 2,
        shared_proxy: bool = True,
        timings: Timings = Timings(),
        command: list[str] | None = None,
        pythonpath: str | None = None,
    ) -> None:
        self.url, self.emulator, self.scenario, self.timings = url, emulator, scenario, timings
        self.id = uuid.uuid4().hex[:6]
        self.workdir = workdir / f"{scenario}-{self.id}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.namespace = f"bd-{self.id}"
        self.lease_name = f"gpufleet-{scenario}-{self.id}"[:63].rstrip("-")
        self.prefix = f"bd{self.id}-"
        self.command = command or [sys.executable, "-m", "gpufleet", "operator"]
        self._pythonpath = pythonpath
        self._replica_count, self._shared = replicas, shared_proxy
        self.proxies: list[FaultProxy] = []
        self.replicas: list[Replica] = []
        self.windows: list[tuple[str, float, float | None]] = []
        """Blind windows: (label, start, end) during which the operators could not see the fleet."""
        self.marks: list[tuple[float, str]] = []
        self.leader_lost: tuple[Replica, float] | None = None
        """The leader a scenario took away (killed or cut off), and when: take-over is timed from it."""
        self.problems: list[str] = []
        self.t0 = time.monotonic()
        self.t0_wall = datetime.datetime.now()
        self.session: aiohttp.ClientSession | None = None
        self.fleet: Fleet
        self.monitor: Monitor
        self.writers: Writers
        self._tasks: list[asyncio.Task[None]] = []
        self._unobserve: Callable[[], None] | None = None
        self._stopping = False

    @property
    def proxy(self) -> FaultProxy:
        """The proxy of every replica (shared) or of the first one."""
        return self.proxies[0]

    @property
    def lease_path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.lease_name}"

    def rel(self, moment: float | None) -> str:
        return "never" if moment is None else f"+{moment - self.t0:.1f}s"

    def mark(self, what: str) -> float:
        now = time.monotonic()
        self.marks.append((now, what))
        return now

    def problem(self, text: str) -> None:
        self.problems.append(text)

    # ----- lifecycle ----------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        timings = self.timings
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_") and k != "KUBERNETES_SERVICE_HOST"}
        if self._pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self._pythonpath, env.get("PYTHONPATH")]))
        env.update(
            {
                "GPUFLEET_NAMESPACE": self.namespace,
                "GPUFLEET_GRACE_PERIOD_SECONDS": f"{timings.grace:g}",
                "GPUFLEET_HEARTBEAT_INTERVAL_SECONDS": f"{timings.heartbeat:g}",
                "GPUFLEET_LIVENESS_PORT": "0",
                "GPUFLEET_LOG_FORMAT": "text",
                "GPUFLEET_LEADER_ELECTION": "true",
                "GPUFLEET_LEADER_LEASE_NAME": self.lease_name,
                "GPUFLEET_PEERING_NAME": self.lease_name,  # the Kopf peering of operators that predate the Lease
                "GPUFLEET_LEASE_DURATION_SECONDS": f"{timings.lease_duration:g}",
                "GPUFLEET_RENEW_DEADLINE_SECONDS": f"{timings.renew_deadline:g}",
                "GPUFLEET_RETRY_PERIOD_SECONDS": f"{timings.retry_period:g}",
                "GPUFLEET_API_TIMEOUT_SECONDS": f"{timings.api_timeout:g}",
            }
        )
        return env

    async def start(self) -> Rig:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        await self.request("POST", "/api/v1/namespaces", {"metadata": {"name": self.namespace}})
        # Operators that elect through Kopf peering need its object; later ones ignore it (404 without its CRD).
        peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": self.lease_name}}
        with contextlib.suppress(RuntimeError):
            await self.request("POST", f"/apis/kopf.dev/v1/namespaces/{self.namespace}/kopfpeerings", peering)
        upstream = urllib.parse.urlsplit(self.url)
        assert upstream.hostname is not None and upstream.port is not None
        for _ in range(1 if self._shared else self._replica_count):
            self.proxies.append(await FaultProxy(upstream.hostname, upstream.port).start())
        env = self._env()
        for index in range(self._replica_count):
            proxy = self.proxies[0 if self._shared else index]
            replica = Replica(index, rig_id=self.id, proxy=proxy, workdir=self.workdir, env=env)
            self.emulator.add_user(replica.token, replica.user)
            self.replicas.append(replica)
        self.writers = Writers({r.user: r.name for r in self.replicas})
        fleet_token, fleet_user = f"{self.id}-fleet-{uuid.uuid4().hex}", f"gpufleet-fleet-{self.id}"
        self.emulator.add_user(fleet_token, fleet_user)
        self.fleet = Fleet(self.session, self.url, self.timings.heartbeat, token=fleet_token)

        def observe(record: RequestRecord) -> None:
            self.writers(record)
            if record.user == fleet_user:
                self.fleet.acknowledged(record)

        self._unobserve = self.emulator.observe(observe)
        self.monitor = Monitor(self.session, self.url, self.prefix, self.lease_path)
        self._tasks = [asyncio.create_task(self.monitor.run()), asyncio.create_task(self.fleet.run())]
        return self

    async def stop(self) -> None:
        self._stopping = True
        for replica in self.replicas:
            await replica.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._unobserve is not None:
            self._unobserve()
        for proxy in self.proxies:
            await proxy.stop()
        with contextlib.suppress(Exception):
            await self._clean_up()
        if self.session is not None:
            await self.session.close()

    async def _clean_up(self) -> None:
        """Delete the rig's hosts (their finalizers dropped: no operator runs now) and namespace."""
        for name in self.fleet.hosts:
            with contextlib.suppress(RuntimeError):
                await self.request("PATCH", f"{HOSTS}/{name}", {"metadata": {"finalizers": None}}, MERGE)
            with contextlib.suppress(RuntimeError):
                await self.request("DELETE", f"{HOSTS}/{name}")
        with contextlib.suppress(RuntimeError):
            await self.request("DELETE", f"/api/v1/namespaces/{self.namespace}")

    async def __aenter__(self) -> Rig:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        assert self.session is not None
        async with self.session.request(method, f"{self.url}{path}", json=body, headers=headers) as reply:
            found = await reply.json(content_type=None)
            if reply.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {reply.status}: {found}")
            return found

    async def get(self, path: str) -> JsonObj | None:
        """An object straight from the API, or None if it does not exist."""
        assert self.session is not None
        async with self.session.get(f"{self.url}{path}") as reply:
            return await reply.json() if reply.status == 200 else None

    # ----- setting the scene --------------------------------------------------------------------

    async def add_hosts(self, count: int, gpus: dict[int, int] | None = None) -> list[str]:
        """``count`` hosts named ``<prefix><i>``; ``gpus`` maps an index to its number of GPU objects."""
        names = []
        for index in range(count):
            name = f"{self.prefix}{index}"
            await self.fleet.add_host(name, gpus=(gpus or {}).get(index, 0))
            names.append(name)
        return names

    async def start_replicas(self, *, staggered: bool = True, within: float = 45.0) -> None:
        """Start the replicas; staggered: the first alone until the fleet converged, then the standbys."""
        first, *others = self.replicas
        first.start(self.command)
        if staggered:
            await self.converge(within)
        for replica in others:
            replica.start(self.command)
        await self.converge(within)
        for replica in others:
            await self.until(functools.partial(self._warm, replica), 15.0, f"{replica.name} warm", fail=False)

    async def _warm(self, replica: Replica) -> bool:
        """Whether a standby answers metrics and (where it says) sees every host."""
        assert self.session is not None
        text = await replica.metrics(self.session)
        if text is None:
            return False
        counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("gpufleet_hosts{")]
        return not counts or sum(counts) >= len(self.fleet.hosts)

    # ----- waiting ------------------------------------------------------------------------------

    async def until(
        self, check: Callable[[], bool | Awaitable[bool]], within: float, what: str, *, fail: bool = True
    ) -> bool:
        """Poll ``check`` until true or ``within`` seconds passed; False (or AssertionError if ``fail``)."""
        deadline = time.monotonic() + within
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return True
            crashed = [r for r in self.replicas if r.killed_at is None and r.process and r.process.poll() is not None]
            if crashed and not self._stopping:
                codes = ", ".join(f"{r.name} exit code {r.process.returncode}" for r in crashed if r.process)
                raise AssertionError(f"{what}: a replica exited on its own ({codes})\n{self.timeline()}\n{self.logs()}")
            if time.monotonic() > deadline:
                if fail:
                    raise AssertionError(f"{what}: not within {within:g}s\n{self.timeline()}\n{self.logs()}")
                return False
            await asyncio.sleep(0.1)

    def converged(self) -> bool:
        return all(
            self.monitor.state(name) == "online" and self.monitor.total(name) == len(host.gpus)
            for name, host in self.fleet.hosts.items()
            if host.beating
        )

    async def converge(self, within: float = 45.0) -> None:
        """Wait until every live host is online with its GPU count."""
        await self.until(self.converged, within, "every live host online with its GPU count")

    async def leader(self, within: float = 20.0) -> tuple[Replica, str]:
        """The leading replica: the Lease holder, else (no Lease) the last to write a Host's status."""
        found: list[tuple[Replica, str]] = []

        def look() -> bool:
            holder = self.monitor.holder
            for replica in self.replicas:
                if replica.alive and replica.owns(holder):
                    found.append((replica, f"Lease holder {holder}"))
                    return True
            if not self.monitor.lease_seen:
                writer = self.writers.last_writer()
                for replica in self.replicas:
                    if replica.alive and replica.name == writer:
                        found.append((replica, "last writer of a Host's status (no Lease)"))
                        return True
            return False

        await self.until(look, within, "a leader")
        return found[-1]

    async def settle(self, after: float | None = None) -> None:
        """Wait until every dead host is offline (or overdue), and a grace period + 1 s passed since
        ``after`` (default: the end of the last blind window, or now) so late false verdicts show."""
        slack = DETECTION_SLACK
        quiet_from = after if after is not None else max([time.monotonic(), *(b or 0 for _, _, b in self.windows)])
        quiet_until = quiet_from + self.timings.grace + 1.0

        def done() -> bool:
            now = time.monotonic()
            pending = [d for d in self.detections() if d.offline_at is None and now < d.due + slack]
            return not pending and now >= quiet_until

        latest = max([quiet_until, *(d.due + slack for d in self.detections())]) - time.monotonic()
        await self.until(done, max(0.0, latest) + 1.0, "settle", fail=False)

    # ----- faults -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def blind(self, label: str) -> Iterator[None]:
        """A window in which the operators cannot see the fleet: a dead host's due time moves past it."""
        entry = (label, time.monotonic(), None)
        self.windows.append(entry)
        try:
            yield
        finally:
            self.windows[self.windows.index(entry)] = (label, entry[1], time.monotonic())

    def kill_hosts(self, *names: str) -> float:
        moment = self.fleet.kill(*names)
        self.marks.append((moment, f"killed hosts {', '.join(names)}"))
        return moment

    # ----- the verdict --------------------------------------------------------------------------

    def _due(self, died: float) -> float:
        grace, base = self.timings.grace, died
        for _, start, end in self.windows:
            end = end if end is not None else time.monotonic()
            if start <= died + grace + DETECTION_SLACK and end >= died - grace:
                base = max(base, end)
        return base + grace

    def detections(self) -> list[Detection]:
        found = []
        for name, host in sorted(self.fleet.hosts.items()):
            died = host.died
            if died is None:
                continue
            offline_at = next(
                (at for at, state in self.monitor.states.get(name, []) if at >= died and state == "offline"), None
            )
            found.append(Detection(name, died, self._due(died), offline_at))
        return found

    def wrongly_offline(self) -> list[str]:
        """Hosts written offline while alive, or before anyone could know they had died."""
        wrong = []
        for name, transitions in sorted(self.monitor.states.items()):
            host = self.fleet.hosts.get(name)
            if host is None:
                continue
            died = host.died
            due = self._due(died) if died is not None else None
            was_online = False
            for at, state in transitions:
                if state == "online":
                    was_online = True
                elif state == "offline" and was_online:
                    if died is None or due is None or at < died:
                        wrong.append(f"{name} written offline at {self.rel(at)} while heartbeating")
                    elif at < due - PREMATURE_TOLERANCE:
                        wrong.append(f"{name} written offline at {self.rel(at)}, {due - at:.1f}s before it could know")
        return wrong

    def lose_leader(self, replica: Replica) -> float:
        """Record that the scenario takes the leader away now (take-over time is measured from here)."""
        now = time.monotonic()
        self.leader_lost = (replica, now)
        return now

    def kill_replica(self, replica: Replica, sig: int = signal.SIGKILL) -> float:
        now = replica.kill(sig)
        self.marks.append((now, f"{replica.name} (pid {replica.pid}) killed with signal {sig}"))
        return now

    def takeover(self) -> tuple[float | None, str]:
        """Seconds from losing the leader to a new Lease holder (else: to another replica's write)."""
        if self.leader_lost is None:
            return None, ""
        victim, at = self.leader_lost
        for moment, holder in self.monitor.holders:
            if moment >= at and holder and not victim.owns(holder):
                return moment - at, "new Lease holder"
        for moment, replica, _ in self.writers.status_writes(since=at):
            if replica != victim.name:
                return moment - at, "first Host-status write by another replica (no new Lease holder)"
        return None, "no new Lease holder and no write by another replica"

    def report(self) -> Report:
        detections = self.detections()
        wrong = self.wrongly_offline()
        problems = list(self.problems) + wrong
        now = time.monotonic()
        for d in detections:
            if d.offline_at is None and now >= d.due + DETECTION_SLACK:
                problems.append(
                    f"dead host {d.host} (died {self.rel(d.died)}) not offline by {self.rel(d.due + DETECTION_SLACK)}"
                )
            elif d.late is not None and d.late > DETECTION_SLACK:
                problems.append(
                    f"dead host {d.host} (died {self.rel(d.died)}) offline only at {self.rel(d.offline_at)}, "
                    f"{d.late:.1f}s after it was due ({self.rel(d.due)})"
                )
        concurrent = self.writers.concurrent()
        if concurrent > 1:
            spans = ", ".join(
                f"{name} {self.rel(a)}..{self.rel(b)} ({n})" for name, (a, b, n) in sorted(self.writers.spans().items())
            )
            problems.append(f"{concurrent} replicas wrote Host status in overlapping spans: {spans}")
        takeover, how = self.takeover()
        return Report(
            scenario=self.scenario,
            hosts=len(self.fleet.hosts),
            wrongly_offline=wrong,
            detections=detections,
            takeover=takeover,
            takeover_how=how,
            concurrent_writers=concurrent,
            problems=problems,
            timeline=self.timeline(),
        )

    def timeline(self) -> str:
        lines = [
            f"timeline (t0 = rig start, {self.t0_wall:%H:%M:%S.%f} local time as in the logs;"
            f" grace {self.timings.grace:g}s, heartbeat {self.timings.heartbeat:g}s):"
        ]
        events = [(at, what) for at, what in self.marks]
        events += [(a, f"{label} begins") for label, a, _ in self.windows]
        events += [(b, f"{label} ends") for label, _, b in self.windows if b is not None]
        lines += [f"  {self.rel(at)} {what}" for at, what in sorted(events)]
        for name, transitions in sorted(self.monitor.states.items()):
            host = self.fleet.hosts.get(name)
            flag = "" if host is None or host.beating else f" (dead since {self.rel(host.died)})"
            states = ", ".join(f"{state}@{self.rel(at)}" for at, state in transitions)
            totals = ", ".join(f"{total}@{self.rel(at)}" for at, total in self.monitor.totals.get(name, []))
            lines.append(f"  host {name}{flag}: state {states}; totalGpu {totals}")
        sent = sum(h.sent for h in self.fleet.hosts.values())
        failed = sum(h.failed for h in self.fleet.hosts.values())
        lines.append(f"  fleet: {sent} heartbeats sent, {failed} failed; monitor listed {self.monitor.relists}x")
        holders = ", ".join(f"{holder}@{self.rel(at)}" for at, holder in self.monitor.holders)
        lines.append(f"  lease {self.namespace}/{self.lease_name} holders: {holders or '(never read)'}")
        for name, (first, last, count) in sorted(self.writers.spans().items()):
            lines.append(f"  {name} wrote Host status {count}x, {self.rel(first)}..{self.rel(last)}")
        for replica in self.replicas:
            lines.append(f"  {replica.name}: pid {replica.pid}, user {replica.user}, log {replica.log}")
        return "\n".join(lines)

    def logs(self, limit: int = 6000) -> str:
        return "\n".join(f"----- {r.name} (pid {r.pid}) -----\n{r.output(limit)}" for r in self.replicas)
