"""What belongs to a Host: its GPU counts, its agent token, and clean deletion of both."""

from __future__ import annotations

from typing import Any

import pytest
from controller_support import GRACE, Fleet, eventually
from kubernetes_asyncio.client import exceptions

from gpufleet import tokens
from gpufleet.api import host, meta


async def _gpus_are(fleet: Fleet, name: str, used: int, total: int) -> bool:
    status = await fleet.status(name)
    return (status.get("usedGpu"), status.get("totalGpu"), status.get("gpus")) == (used, total, f"{used}/{total}")


async def test_gpu_counts_follow_gpu_resources(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    first = await fleet.create_gpu(name, 0)
    second = await fleet.create_gpu(name, 1, state="allocated")
    await eventually(lambda: _gpus_are(fleet, name, used=1, total=2))

    await fleet.set_gpu_state(first, "allocated")
    await eventually(lambda: _gpus_are(fleet, name, used=2, total=2))

    await fleet.delete_gpu(second)
    await eventually(lambda: _gpus_are(fleet, name, used=1, total=1))


async def test_host_without_gpu_resources_counts_what_its_agent_reports(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    await fleet.heartbeat(name, reportedUsedGpu=3)
    await eventually(lambda: _gpus_are(fleet, name, used=3, total=0))


def _digest_on(body: dict[str, Any]) -> str | None:
    return (body["metadata"].get("annotations") or {}).get(tokens.DIGEST_ANNOTATION)


async def test_applied_host_gets_an_agent_token_secret_and_its_digest(fleet: Fleet) -> None:
    name = await fleet.apply_host()

    async def published() -> bool:
        return _digest_on(await fleet.get(name)) is not None

    await eventually(published)
    secret = await fleet.token_secret(name)
    assert secret.type == tokens.SECRET_TYPE
    assert secret.metadata.labels == {meta.HOST_LABEL: name, meta.MANAGED_BY_LABEL: meta.MANAGED_BY}
    owner = secret.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("Host", name, (await fleet.get(name))["metadata"]["uid"])
    token = tokens.token_from_secret({"data": secret.data})
    assert token is not None and token.startswith(tokens.PREFIX) and len(token) == len(tokens.PREFIX) + 43
    assert _digest_on(await fleet.get(name)) == tokens.digest(token).hex()
    [issued] = [e for e in await fleet.events_of(name) if e.reason == "TokenIssued"]
    assert token not in issued.message


async def test_a_host_bound_to_a_node_gets_no_token(fleet: Fleet) -> None:
    bound = await fleet.apply_host(node_name="gpu-node-7")
    unbound = await fleet.apply_host()

    async def looked_at() -> bool:
        # The token comes right after the finalizer, in the same pass over the host.
        finalized = meta.CLEANUP_FINALIZER in ((await fleet.get(bound))["metadata"].get("finalizers") or [])
        return finalized and _digest_on(await fleet.get(unbound)) is not None

    await eventually(looked_at)
    assert _digest_on(await fleet.get(bound)) is None
    assert await fleet.token_secret(bound) is None


async def test_removing_the_digest_and_the_secret_rotates_the_token(fleet: Fleet) -> None:
    name = await fleet.apply_host()

    async def digest() -> str | None:
        return _digest_on(await fleet.get(name))

    await eventually(digest)
    old = await digest()
    await fleet.core.delete_namespaced_secret(tokens.secret_name(name), fleet.namespace)
    await fleet.custom.patch_cluster_custom_object(
        meta.GROUP,
        meta.VERSION,
        host.PLURAL,
        name,
        {"metadata": {"annotations": {tokens.DIGEST_ANNOTATION: None}}},
        _content_type="application/merge-patch+json",
    )

    async def rotated() -> bool:
        return (await digest()) not in (None, old)

    await eventually(rotated)
    token = tokens.token_from_secret({"data": (await fleet.token_secret(name)).data})
    assert token is not None and tokens.digest(token).hex() == await digest()


async def test_a_token_secret_from_before_the_digest_keeps_its_token(fleet: Fleet) -> None:
    """Upgrading from releases that kept tokens in Secrets only: agents keep working."""
    name = fleet.new_name()
    manifest = tokens.secret_manifest(host_name=name, host_uid="", namespace=fleet.namespace, token="gfa_earlier")
    await fleet.core.create_namespaced_secret(fleet.namespace, manifest)
    await fleet.apply_host(name)

    async def published() -> bool:
        return _digest_on(await fleet.get(name)) == tokens.digest("gfa_earlier").hex()

    await eventually(published)
    secret = await fleet.token_secret(name)
    assert tokens.token_from_secret({"data": secret.data}) == "gfa_earlier"
    assert not [e for e in await fleet.events_of(name) if e.reason == "TokenIssued"]


async def test_deleting_a_host_removes_its_gpus_and_token_and_nothing_resurrects_it(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    await fleet.create_gpu(name, 0)
    await fleet.create_gpu(name, 1)
    await fleet.heartbeat(name)
    await eventually(lambda: _gpus_are(fleet, name, used=0, total=2))
    await eventually(lambda: _has_finalizer(fleet, name))

    await fleet.delete_host(name)

    async def gone() -> bool:
        return not await fleet.exists(name)

    await eventually(gone)
    assert await fleet.gpu_names(name) == []
    assert await fleet.token_secret(name) is None
    with pytest.raises(exceptions.ApiException) as late:
        await fleet.heartbeat(name)
    assert late.value.status in (404, 410)
    assert not await fleet.exists(name)


async def test_host_deleted_before_the_operator_saw_it_leaves_nothing_behind(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    await fleet.create_gpu(name, 0)
    await fleet.delete_host(name)

    async def nothing_left() -> bool:
        return not await fleet.exists(name) and not await fleet.gpu_names(name) and not await fleet.token_secret(name)

    await eventually(nothing_left)


async def _state_is(fleet: Fleet, name: str, state: str) -> bool:
    return (await fleet.status(name)).get("state") == state


async def _state_is_set(fleet: Fleet, name: str) -> bool:
    return (await fleet.status(name)).get("state") is not None


async def _has_finalizer(fleet: Fleet, name: str) -> bool:
    return meta.CLEANUP_FINALIZER in (await fleet.get(name))["metadata"].get("finalizers", [])


async def _gpu_states(fleet: Fleet, names: list[str]) -> list[tuple[str, str | None]]:
    found = []
    for name in names:
        body = await fleet.custom.get_cluster_custom_object(meta.GROUP, meta.VERSION, "gpus", name)
        held = (body["metadata"].get("annotations") or {}).get(meta.REPORTED_STATE_ANNOTATION)
        found.append(((body.get("status") or {}).get("state"), held))
    return found


async def test_gpus_of_an_offline_host_are_unknown_until_it_is_back(fleet: Fleet) -> None:
    """Anything that picks free GPUs must not pick a dead host's: they are unknown, not free."""
    name = await fleet.apply_host()
    gpus = [await fleet.create_gpu(name, 0), await fleet.create_gpu(name, 1, state="allocated")]
    await fleet.heartbeat(name)
    await eventually(lambda: _state_is(fleet, name, "online"))
    assert await _gpu_states(fleet, gpus) == [("free", None), ("allocated", None)]

    async def masked() -> bool:  # silence: offline one grace period later
        return await _gpu_states(fleet, gpus) == [("unknown", "free"), ("unknown", "allocated")]

    await eventually(masked, within=10 * GRACE)

    async def counted_as_neither_free_nor_in_use() -> bool:  # the Host's count follows the GPUs' writes
        return (await fleet.status(name))["gpus"] == "0/2"

    await eventually(counted_as_neither_free_nor_in_use, within=5 * GRACE)

    await fleet.heartbeat(name)

    async def restored() -> bool:
        return await _gpu_states(fleet, gpus) == [("free", None), ("allocated", None)]

    await eventually(restored, within=5 * GRACE)


async def test_gpus_of_a_host_never_seen_online_are_left_as_reported(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    gpu_name = await fleet.create_gpu(name, 0)
    await eventually(lambda: _gpus_are(fleet, name, used=0, total=1))
    assert await _gpu_states(fleet, [gpu_name]) == [("free", None)]
