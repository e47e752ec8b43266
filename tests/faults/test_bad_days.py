"""The operator survives the cluster's bad days, judged from outside.

Each test plays one scenario of `tests.support.baddays_scenarios` against real `gpufleet operator`
processes behind a TCP fault proxy, with a simulated fleet heartbeating straight to the API (grace
8 s, heartbeat 1 s, 8 hosts, two replicas with leader election). The verdict, whatever the fault:

- no live host is ever written offline (nor a dead one before anyone could know);
- every dead host is offline within grace + 15 s of its death, or of the end of a window in which
  the operators could not see the fleet (a take-over included);
- Host status is written by one replica at a time (the emulator tells replicas apart by token);
- plus each scenario's own checks (Lease take-over, GPU counts after a relist, token re-issue...).

A failure prints the problems, a timeline of every host's state, the Lease holders and each
replica's writes, and the replicas' logs.
"""

from __future__ import annotations

import pytest

from .conftest import Play

pytestmark = pytest.mark.emulator


async def test_a_link_stalled_for_three_grace_periods_flaps_nothing_and_misses_nothing(play: Play) -> None:
    report = await play("stall")
    assert not report.problems, report.describe()


async def test_a_link_reset_and_refused_for_two_grace_periods_flaps_nothing_and_misses_nothing(play: Play) -> None:
    report = await play("reset")
    assert not report.problems, report.describe()


async def test_after_an_api_outage_every_host_gets_a_full_grace_period(play: Play) -> None:
    report = await play("outage")
    assert not report.problems, report.describe()


async def test_an_offline_verdict_cut_in_the_middle_of_its_patch_is_not_lost(play: Play) -> None:
    report = await play("cut-patch")
    assert not report.problems, report.describe()


async def test_a_relist_after_410_sees_gpu_deletions_and_a_token_rotation_made_during_the_gap(play: Play) -> None:
    report = await play("relist")
    assert not report.problems, report.describe()


async def test_a_standby_takes_over_from_a_sigkilled_leader_and_writes_only_what_happened(play: Play) -> None:
    report = await play("leader-kill")
    assert not report.problems, report.describe()
    assert report.takeover is not None, report.describe()


async def test_a_partitioned_leader_falls_silent_and_the_standby_takes_over(play: Play) -> None:
    report = await play("partitioned-leader")
    assert not report.problems, report.describe()
    assert report.takeover is not None, report.describe()
