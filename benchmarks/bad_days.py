"""The operator on the cluster's bad days: stalls, resets, outages, cut writes, relists, a killed leader.

Usage: python -m benchmarks.bad_days [--scenario NAME]... [--grace 8] [--heartbeat 1] [--source TREE]

Plays the scenarios of `tests.support.baddays_scenarios` (the ones `tests/faults` asserts on)
against an emulated API in this process: two `gpufleet operator` processes behind a TCP fault
proxy, 8 simulated hosts heartbeating straight to the API. Per scenario it prints the hosts
wrongly marked offline (live ones, or dead ones before they were due), how long dead hosts took
to go offline (after their death, and after the moment they were due: death + grace, or the end
of a blind window + grace; the bound is 15 s), the take-over time where the leader is taken
away, and how many replicas wrote Host status at once. `--source` runs the operators from another
source tree (e.g. an older commit unpacked).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import tempfile

from tests.support.baddays import DETECTION_SLACK, Report, Timings
from tests.support.baddays_scenarios import SCENARIOS, play

from benchmarks import _support
from kube_emulator import EmulatedCluster, load_crds


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _row(report: Report) -> list[str]:
    detected = sum(1 for d in report.detections if d.offline_at is not None)
    return [
        report.scenario,
        str(len(report.wrongly_offline)),
        f"{detected}/{len(report.detections)}",
        _seconds(report.max_delay),
        _seconds(report.max_late),
        _seconds(report.takeover) if report.takeover_how != "" else "n/a",
        str(report.concurrent_writers),
        "ok" if not report.problems else f"{len(report.problems)} problem(s)",
    ]


HEADER = [
    "scenario",
    "wrongly offline (live, or dead too early)",
    "dead hosts offline",
    "max delay after death",
    f"max after due (bound {DETECTION_SLACK:g} s)",
    "take-over",
    "concurrent writers",
    "verdict",
]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [HEADER, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


async def run(args: argparse.Namespace, source: pathlib.Path | None, workdir: pathlib.Path) -> list[Report]:
    pythonpath = str(source / "operator") if source is not None else None
    crds = (source or _support.REPO) / "crds"
    timings = Timings(grace=args.grace, heartbeat=args.heartbeat)
    reports = []
    with EmulatedCluster(port=_support.free_port()) as cluster:
        load_crds(cluster, crds)
        for name in args.scenario or list(SCENARIOS):
            print(f"playing {name}: {SCENARIOS[name].title}", file=sys.stderr, flush=True)
            report = await play(name, cluster.url, cluster.emulator, workdir, timings=timings, pythonpath=pythonpath)
            cluster.emulator.faults.clear()
            for problem in report.problems:
                print(f"  {name}: {problem}", file=sys.stderr, flush=True)
            reports.append(report)
    print(f"replica logs under {workdir}", file=sys.stderr)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="play only this one (repeatable; default: all)"
    )
    parser.add_argument("--grace", type=float, default=8.0, help="grace period, s (default: %(default)s)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat interval, s (default: %(default)s)")
    parser.add_argument("--source", metavar="TREE", help="run the operators from this source tree instead")
    args = parser.parse_args()
    source = pathlib.Path(args.source).resolve() if args.source else None
    reports = asyncio.run(run(args, source, pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-bad-days-"))))
    print(_table([_row(report) for report in reports]))


if __name__ == "__main__":
    main()
