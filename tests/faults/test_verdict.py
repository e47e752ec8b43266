"""The bad-days referee on paper: the verdict from recorded transitions, writes and deaths."""

from __future__ import annotations

import pathlib
from typing import Any

from gpufleet import tokens
from gpufleet.api import gpu, host, meta
from kube_emulator import RequestRecord
from tests.support import baddays
from tests.support.baddays import Fleet, Monitor, Rig, SimHost, Timings, Writers


def test_the_spelled_out_api_names_are_gpufleets() -> None:
    assert baddays.API_VERSION == meta.API_VERSION
    assert f"/apis/{meta.API_VERSION}/{host.PLURAL}" == baddays.HOSTS
    assert f"/apis/{meta.API_VERSION}/{gpu.PLURAL}" == baddays.GPUS
    assert baddays.HOST_LABEL == meta.HOST_LABEL
    assert tokens.secret_name("h1") == f"{baddays.TOKEN_SECRET_PREFIX}h1"


def _write(at: float, user: str | None, path: str, status: int = 200, method: str = "PATCH") -> RequestRecord:
    return RequestRecord(method, path, {}, user, status, at)


STATUS = f"{baddays.HOSTS}/h1/status"


def test_writers_count_accepted_host_status_writes_per_replica() -> None:
    writers = Writers({"u0": "replica-0", "u1": "replica-1"})
    for record in (
        _write(1, "u0", STATUS),
        _write(2, "u0", f"{baddays.HOSTS}/h1"),  # labels: not status
        _write(3, "u1", STATUS, status=409),  # refused
        _write(4, "someone", STATUS),  # not a replica
        _write(5, "u0", STATUS, method="GET"),  # not a write
        _write(6, "u0", STATUS),
        _write(7, "u1", STATUS),
        _write(9, "u1", STATUS),
    ):
        writers(record)
    assert writers.spans() == {"replica-0": (1, 6, 2), "replica-1": (7, 9, 2)}
    assert writers.concurrent() == 1
    assert writers.last_writer() == "replica-1"
    writers(_write(8, "u0", STATUS))  # the old leader again, after the new one began
    assert writers.concurrent() == 2


def _paper_rig(tmp_path: pathlib.Path) -> Rig:
    rig = Rig("http://127.0.0.1:1", None, tmp_path, timings=Timings(grace=8, heartbeat=1))  # type: ignore[arg-type]
    rig.t0 = 0.0
    rig.fleet = Fleet(None, "", 1.0)  # type: ignore[arg-type]
    rig.monitor = Monitor(None, "", rig.prefix, rig.lease_path)  # type: ignore[arg-type]
    rig.writers = Writers({})
    return rig


def _host(rig: Rig, name: str, states: list[tuple[float, Any]], killed: float | None = None) -> None:
    sim = rig.fleet.hosts[name] = SimHost(name)
    if killed is not None:
        sim.beating, sim.killed_at, sim.last_ack = False, killed + 0.5, killed  # its last heartbeat at `killed`
    rig.monitor.states[name] = states


def test_a_live_host_written_offline_is_wrong_and_a_dead_one_in_time_is_right(tmp_path: pathlib.Path) -> None:
    rig = _paper_rig(tmp_path)
    _host(rig, "live", [(0, None), (1, "offline"), (2, "online"), (30, "offline"), (31, "online")])
    _host(rig, "dead", [(0, None), (2, "online"), (18.5, "offline")], killed=10)
    _host(rig, "early", [(0, None), (2, "online"), (15, "offline")], killed=10)
    _host(rig, "late", [(0, None), (2, "online"), (34, "offline")], killed=10)
    _host(rig, "never", [(0, None), (2, "online")], killed=10)
    report = rig.report()
    assert report.wrongly_offline == [
        "early written offline at +15.0s, 3.0s before it could know",
        "live written offline at +30.0s while heartbeating",  # the first offline, before any heartbeat, is fine
    ]
    by_host = {d.host: d for d in report.detections}
    assert by_host["dead"].delay == 8.5 and by_host["dead"].late == 0.5
    assert by_host["late"].late == 16.0
    assert by_host["never"].offline_at is None
    assert any(p.startswith("dead host late ") for p in report.problems)
    assert any(p.startswith("dead host never ") for p in report.problems)
    assert not any(p.startswith("dead host dead ") for p in report.problems)


def test_a_blind_window_moves_a_dead_hosts_due_time_past_its_end(tmp_path: pathlib.Path) -> None:
    rig = _paper_rig(tmp_path)
    rig.windows.append(("stall", 5.0, 30.0))
    _host(rig, "before", [(0, None), (2, "online"), (39, "offline")], killed=4)  # deadline fell in the window
    _host(rig, "after", [(0, None), (2, "online"), (40, "offline")], killed=31)  # plainly after it
    _host(rig, "hasty", [(0, None), (2, "online"), (31, "offline")], killed=4)  # called before a full grace
    report = rig.report()
    by_host = {d.host: d for d in report.detections}
    assert by_host["before"].due == 38 and by_host["after"].due == 39
    assert report.wrongly_offline == ["hasty written offline at +31.0s, 7.0s before it could know"]
    assert rig.timeline().count("host ") == 3


def test_a_heartbeat_counts_when_the_api_answered_it() -> None:
    fleet = Fleet(None, "", 1.0)  # type: ignore[arg-type]
    fleet.hosts["h1"] = SimHost("h1")
    fleet.acknowledged(_write(5.0, "fleet", STATUS))
    fleet.acknowledged(_write(4.0, "fleet", STATUS))  # answered out of order: the later one stands
    fleet.acknowledged(_write(6.0, "fleet", STATUS, status=503))  # refused: no sign of life
    fleet.acknowledged(_write(7.0, "fleet", f"{baddays.HOSTS}/h2/status"))  # not ours
    assert fleet.hosts["h1"].last_ack == 5.0
    fleet.kill("h1")
    assert fleet.hosts["h1"].died == 5.0 and fleet.dead() == ["h1"] and fleet.live() == []
