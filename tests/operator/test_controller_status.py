"""The status, labels and Events a Host should get, from what the operator knows."""

from __future__ import annotations

import datetime
from typing import Any

from gpufleet.api import meta
from gpufleet.controller import events, rollup, status

NOW = datetime.datetime(2026, 11, 25, 12, 0, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=1)


def _host(status_: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "h", "generation": 3, "labels": labels or {}},
        "spec": {"osType": "linux"},
        "status": status_ or {},
    }


def _apply(body: dict[str, Any], plan: status.Plan) -> dict[str, Any]:
    return {
        "metadata": {**body["metadata"], "labels": {**body["metadata"]["labels"], **(plan.labels_patch or {})}},
        "spec": body["spec"],
        "status": {**body["status"], **(plan.status_patch or {})},
    }


def _conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body["status"]["conditions"]}


def test_a_new_host_starts_offline_with_unknown_health_and_no_events() -> None:
    plan = status.plan(_host(), online=False, gpus=None, grace_seconds=50, now=NOW)
    assert plan.status_patch is not None
    assert plan.status_patch["state"] == "offline"
    assert (plan.status_patch["totalGpu"], plan.status_patch["usedGpu"], plan.status_patch["gpus"]) == (0, 0, "0/0")
    assert plan.status_patch["observedGeneration"] == 3
    conditions = {c["type"]: c for c in plan.status_patch["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", status.NEVER_HEARTBEATED)
    assert (conditions["Healthy"]["status"], conditions["Healthy"]["reason"]) == ("Unknown", status.NOT_REPORTED)
    assert plan.labels_patch == {meta.STATUS_LABEL: "offline", meta.OS_TYPE_LABEL: "linux"}
    assert plan.events == ()


def test_nothing_is_written_when_nothing_changed() -> None:
    body = _apply(_host(), status.plan(_host(), online=False, gpus=None, grace_seconds=50, now=NOW))
    again = status.plan(body, online=False, gpus=None, grace_seconds=50, now=LATER)
    assert again == status.Plan()


def test_going_online_moves_ready_and_posts_host_online() -> None:
    body = _apply(_host(), status.plan(_host(), online=False, gpus=None, grace_seconds=50, now=NOW))
    body["status"].update(lastHeartbeat="2026-11-25T12:00:30Z", healthStatus="healthy")
    plan = status.plan(body, online=True, gpus=None, grace_seconds=50, now=LATER)
    after = _apply(body, plan)
    ready, healthy = _conditions(after)["Ready"], _conditions(after)["Healthy"]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "True",
        status.HEARTBEATING,
        "2026-11-25T12:01:00Z",
    )
    assert healthy["status"] == "True"
    assert [e.reason for e in plan.events] == [status.HOST_ONLINE, status.HOST_HEALTHY]
    assert plan.new_state == "online"
    assert plan.labels_patch == {meta.STATUS_LABEL: "online"}


def test_a_changed_reason_with_the_same_status_keeps_the_transition_time() -> None:
    body = _apply(_host(), status.plan(_host(), online=False, gpus=None, grace_seconds=50, now=NOW))
    body["status"].update(lastHeartbeat="2026-11-25T12:00:30Z", reportedState="offline")
    plan = status.plan(body, online=False, gpus=None, grace_seconds=50, now=LATER)
    ready = _conditions(_apply(body, plan))["Ready"]
    assert (ready["reason"], ready["lastTransitionTime"]) == (status.REPORTED_OFFLINE, "2026-11-25T12:00:00Z")
    assert plan.events == ()


def test_expiry_posts_host_offline_as_a_warning() -> None:
    body = _apply(_host(), status.plan(_host(), online=False, gpus=None, grace_seconds=50, now=NOW))
    body["status"]["lastHeartbeat"] = "2026-11-25T12:00:30Z"
    body = _apply(body, status.plan(body, online=True, gpus=None, grace_seconds=50, now=NOW))
    plan = status.plan(body, online=False, gpus=None, grace_seconds=50, now=LATER)
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", status.HOST_OFFLINE)]
    assert _conditions(_apply(body, plan))["Ready"]["reason"] == status.HEARTBEAT_EXPIRED


def test_gpu_resources_win_over_the_reported_figure() -> None:
    body = _host({"reportedUsedGpu": 5})
    assert status.plan(body, online=False, gpus=None, grace_seconds=50, now=NOW).status_patch["gpus"] == "5/0"
    assert status.plan(body, online=False, gpus=(4, 1), grace_seconds=50, now=NOW).status_patch["gpus"] == "1/4"


def test_rollup_counts_allocated_gpus_per_host_through_moves_and_deletes() -> None:
    counts = rollup.Rollup()
    version = iter(range(1, 100))

    def gpu(name: str, host: str, state: str) -> dict[str, Any]:
        metadata = {"name": name, "labels": {meta.HOST_LABEL: host}, "resourceVersion": str(next(version))}
        return {"metadata": metadata, "status": {"state": state}}

    def apply(body: dict[str, Any]) -> set[str]:
        old = counts.store.get(body["metadata"]["name"])
        return counts.hosts_touched(counts.store.apply(body), old)

    assert apply(gpu("a-gpu0", "a", "free")) == {"a"}
    apply(gpu("a-gpu1", "a", "allocated"))
    assert counts.counts("a", "a") == (2, 1)
    assert apply(gpu("a-gpu1", "b", "allocated")) == {"a", "b"}  # relabelled to another host
    assert (counts.counts("a", "a"), counts.counts("b", "b")) == ((1, 0), (1, 1))
    gone = counts.store.remove(gpu("a-gpu0", "a", "free"))
    assert counts.hosts_touched(None, gone) == {"a"}
    assert counts.counts("a", "a") is None
    assert counts.by_state() == {"allocated": 1}


def test_rollup_counts_a_gpu_only_for_a_host_on_the_node_it_names() -> None:
    """An agent may label its GPUs with any host's name; they count only where their node is."""
    counts = rollup.Rollup()
    for index, node in enumerate(["node-a", "node-b", None]):
        labels = {meta.HOST_LABEL: "host-1", **({meta.NODE_LABEL: node} if node else {})}
        counts.store.apply({"metadata": {"name": f"g{index}", "labels": labels}, "status": {"state": "allocated"}})
    assert counts.counts("host-1", "node-a") == (2, 2)  # its own GPU, and the unlabelled one
    assert counts.counts("host-1", "node-c") == (1, 1)


def test_rollup_keeps_only_host_node_state_and_held_state_of_a_gpu() -> None:
    counts = rollup.Rollup()
    body = {
        "metadata": {"name": "g", "resourceVersion": "7", "labels": {meta.HOST_LABEL: "a"}, "annotations": {"x": "y"}},
        "spec": {"uuid": "GPU-1", "model": "H100"},
        "status": {"state": "free", "temperature": 70},
    }
    kept = {"metadata": {"name": "g", "resourceVersion": "7"}, "host": "a", "node": "", "state": "free", "held": ""}
    assert counts.store.apply(body) == kept


def test_events_beyond_the_burst_wait_for_the_steady_rate() -> None:
    now = [0.0]
    bucket = events.Bucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5
    assert [bucket.take() for _ in range(2)] == [True, False]
