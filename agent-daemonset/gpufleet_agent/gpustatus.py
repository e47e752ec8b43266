"""What the agent writes into a GPU's status, from a sample and the GPU's allocation.

State: `unhealthy` whenever health says so (whoever allocates must stop handing it out),
`unknown` while NVML does not answer (not handed out either: nobody can vouch for it),
else `allocated`/`free` from the holder when the agent knows it (PodResources). Where
allocation is external, the agent leaves `allocatedTo` alone and only writes `state` to
mark a GPU unhealthy or unknown and to put it back (allocated if it has a holder, else free).
"""

from __future__ import annotations

import dataclasses
import datetime

from gpufleet.api import gpu, meta
from gpufleet_agent import changes, health, nvml, sampling


@dataclasses.dataclass(frozen=True)
class Transition:
    """The Healthy condition's status (True, False or Unknown) and when it last changed."""

    status: meta.ConditionStatus
    since: datetime.datetime


def condition_status(verdict: health.Verdict) -> meta.ConditionStatus:
    """The Healthy condition's status for a verdict: Unknown while nobody can tell."""
    if not verdict.known:
        return meta.ConditionStatus.UNKNOWN
    return meta.ConditionStatus.TRUE if verdict.healthy else meta.ConditionStatus.FALSE


def state(healthy: bool, allocated_to: str | None, *, known: bool = True) -> gpu.GPUState:
    if not known:
        return gpu.GPUState.UNKNOWN
    if not healthy:
        return gpu.GPUState.UNHEALTHY
    return gpu.GPUState.ALLOCATED if allocated_to else gpu.GPUState.FREE


def observe(sample: sampling.Sample, allocated_to: str | None) -> changes.Observed:
    readings = sample.readings
    return changes.Observed(
        state=state(sample.verdict.healthy, allocated_to, known=sample.verdict.known).value,
        healthy=sample.verdict.healthy,
        reason=sample.verdict.reason,
        allocated_to=allocated_to,
        temperature_celsius=readings.temperature_celsius if readings else None,
        utilization_percent=readings.utilization_percent if readings else None,
        memory_used=readings.memory_used if readings else None,
        memory_total=(readings.memory_total if readings else None) or sample.device.memory_total,
        power_watts=readings.power_watts if readings else None,
        mig=sample.mig,
    )


def mig_status(mig: nvml.Mig | None) -> gpu.GPUMig | None:
    """`status.mig` from what discovery read; None (left out, so left as it was) when there is nothing to say."""
    if mig is None:
        return None

    def mode(enabled: bool) -> gpu.MigMode:
        return gpu.MigMode.ENABLED if enabled else gpu.MigMode.DISABLED

    return gpu.GPUMig(
        mode=mode(mig.enabled),
        pending_mode=mode(mig.pending_enabled),
        instances=[
            gpu.MigInstance(
                uuid=instance.uuid,
                profile=instance.profile.name if instance.profile else "",
                profile_id=instance.profile.id if instance.profile else None,
                gpu_instance_id=instance.gpu_instance_id,
                compute_instance_id=instance.compute_instance_id,
                placement=None
                if instance.placement_start is None or instance.placement_size is None
                else gpu.MigPlacement(start=instance.placement_start, size=instance.placement_size),
                slice_count=instance.profile.slice_count if instance.profile else None,
                memory_total=instance.memory_total,
                multiprocessor_count=instance.profile.multiprocessor_count if instance.profile else None,
            )
            for instance in mig.instances
        ],
    )


def patch(
    sample: sampling.Sample,
    observed: changes.Observed,
    *,
    transition: Transition,
    now: datetime.datetime,
    allocation_known: bool,
    state_value: gpu.GPUState | None,
) -> dict[str, object]:
    """The merge patch for the GPU's `/status`; gauges a lost GPU cannot give are left as they were."""
    verdict = sample.verdict
    status = gpu.GPUStatus(
        state=state_value,
        temperature_celsius=observed.temperature_celsius,
        utilization_percent=observed.utilization_percent,
        memory_used=observed.memory_used,
        power_watts=observed.power_watts,
        last_update_time=now,
        mig=mig_status(observed.mig),
        conditions=[
            meta.Condition(
                type=gpu.HEALTHY,
                status=condition_status(verdict),
                reason=verdict.reason,
                message=verdict.message,
                last_transition_time=transition.since,
            )
        ],
    ).to_k8s()
    if allocation_known:
        status["allocatedTo"] = observed.allocated_to  # None clears it: merge-patch null deletes the key
    return {"status": status}
