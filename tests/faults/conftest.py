"""Fixtures of the bad-days suite: play a scenario against the session's emulator; logs on failure.

`GPUFLEET_FAULTS_SOURCE=/path/to/a/tree` runs the operator replicas from another source tree (its
`operator/` first on `PYTHONPATH`, its `crds/` installed as well), e.g. `git archive` of an older
commit unpacked somewhere, to see how that code fares on the same bad days.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml

from kube_emulator import Emulator
from tests.support.baddays import Report, Rig
from tests.support.baddays_scenarios import play as play_scenario

RIGS = pytest.StashKey[list[Rig]]()
Play = Callable[[str], Awaitable[Report]]


@pytest.fixture(scope="session")
def operator_source(kube: Any, crds_installed: list[str]) -> str | None:
    """The `operator/` folder of GPUFLEET_FAULTS_SOURCE (its CRDs applied), or None: this tree."""
    source = os.environ.get("GPUFLEET_FAULTS_SOURCE")
    if not source or kube.cluster is None:
        return None
    root = pathlib.Path(source).resolve()
    for file in sorted((root / "crds").glob("*.y*ml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                kube.cluster.apply_crd(doc)
    return str(root / "operator")


@pytest.fixture
def play(
    request: pytest.FixtureRequest,
    kube: Any,
    emulator: Emulator,
    crds_installed: list[str],
    operator_source: str | None,
    tmp_path: pathlib.Path,
) -> Play:
    """`await play("stall")`: run that scenario on a fresh rig; its report (replica logs kept for failures)."""
    rigs: list[Rig] = []
    request.node.stash[RIGS] = rigs

    async def run(name: str) -> Report:
        return await play_scenario(name, kube.url, emulator, tmp_path, pythonpath=operator_source, on_rig=rigs.append)

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach every replica's log (its tail) to a failed scenario."""
    report = yield
    if report.when == "call" and report.failed:
        for rig in item.stash.get(RIGS, []):
            for replica in rig.replicas:
                report.sections.append(
                    (f"{rig.scenario}: {replica.name} (pid {replica.pid}) log {replica.log}", replica.output(20000))
                )
    return report
