"""IP claims: one registered host per IP address, however many facade replicas register.

Kubernetes has no uniqueness constraint but object names, so a registration first claims its
normalised IP by creating a ConfigMap whose name is derived from the address
(`gpufleet-ip-10-0-0-7`) in the facade's namespace. The API server lets exactly one create of a
name succeed; every other replica gets 409 AlreadyExists, which is the duplicate-IP error. Once
the Host exists, the claim is bound to it (an ownerReference, so the garbage collector removes
the claim with its Host), and the facade deletes it itself when it deletes the host.

A claim outlives its purpose when a replica dies between claiming and binding, or when a Host is
deleted behind the facade's back and the garbage collector has not run yet. `holds` says whether
a claim still stands; one that does not is deleted with a uid + resourceVersion precondition,
so that of two replicas finding the same stale claim only one removes it, and then created anew.
Binding carries the resourceVersion of the claim as created: a registration whose claim was
taken over meanwhile learns it (409) and takes its Host back instead of keeping a duplicate.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
import logging
from typing import Any

from gpufleet.api import formats, host, meta
from gpufleet.facade import errors, kubeapi

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

PREFIX = "gpufleet-ip-"
COMPONENT = "ip-claim"
#: How long a claim without a Host may stand. A registration binds its claim within two API
#: calls of creating it (each bounded by the API timeout, 5 s by default), so a younger unbound
#: claim is most likely another replica's registration in flight, which must not be robbed.
GRACE_SECONDS = 30.0
#: Create, find it stale, take it over, create again: a third round only if others keep racing.
ROUNDS = 3


class Lost(Exception):
    """The claim was taken over (it was found stale) before this registration bound it."""


def name(ip: str) -> str:
    """The claim's object name for a normalised IP: readable, and distinct for distinct addresses.

    IPv4 dots become dashes. IPv6 is written as its 32 hex digits, since its text form can end
    in `::` or embed dotted IPv4, neither of which maps to a name one to one; a zone
    (`fe80::1%eth0`) is appended as a digest, as it may hold any character.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:  # not reachable from the API (the body is validated), but never a bad name
        return f"{PREFIX}x-{hashlib.sha256(ip.encode()).hexdigest()[:40]}"
    if isinstance(address, ipaddress.IPv4Address):
        return PREFIX + str(address).replace(".", "-")
    text = f"{PREFIX}v6-{int(address):032x}"
    if address.scope_id:
        text += "-z" + hashlib.sha256(address.scope_id.encode()).hexdigest()[:16]
    return text


def manifest(ip: str, host_name: str, namespace: str) -> Obj:
    """A new, unbound claim for `ip` by the registration that will create Host `host_name`."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name(ip),
            "namespace": namespace,
            "labels": {meta.MANAGED_BY_LABEL: meta.MANAGED_BY, "app.kubernetes.io/component": COMPONENT},
        },
        "data": {"ipAddress": ip, "host": host_name},
    }


def binding(claim: Obj, owner: Obj) -> Obj:
    """The merge patch binding `claim` to the Host `owner`, valid only on the claim as it was read."""
    return {
        "metadata": {
            # The precondition: a claim deleted and created again by another replica has another version.
            "resourceVersion": claim["metadata"]["resourceVersion"],
            "ownerReferences": [
                {
                    "apiVersion": meta.API_VERSION,
                    "kind": host.KIND,
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    # Blocking the owner's deletion would need `update` on hosts/finalizers; not wanted.
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "data": {"host": owner["metadata"]["name"]},
    }


def _owner(claim: Obj) -> Obj | None:
    for reference in claim["metadata"].get("ownerReferences") or []:
        if reference.get("kind") == host.KIND and str(reference.get("apiVersion", "")).startswith(f"{meta.GROUP}/"):
            found: Obj = reference
            return found
    return None


def holder(claim: Obj) -> str:
    """The name of the Host the claim is for (bound, or about to be created)."""
    owner = _owner(claim)
    if owner is not None:
        return str(owner.get("name", ""))
    return str((claim.get("data") or {}).get("host", ""))


def _age(claim: Obj, now: datetime.datetime) -> float:
    stamp = formats.parse_time(claim["metadata"].get("creationTimestamp"))
    if stamp is None:
        return 0.0  # unreadable: count it as young, i.e. never take it over for that reason
    return (now - stamp).total_seconds()


@dataclasses.dataclass(frozen=True)
class Verdict:
    holds: bool
    why: str


def holds(claim: Obj, ip: str, found: Obj | None, now: datetime.datetime, grace: float) -> Verdict:
    """Whether `claim` on `ip` still stands, given its Host as the API has it now (`found`, None if absent).

    A bound claim stands exactly while its owner lives with this IP: a Host being deleted reads as
    gone everywhere in the facade, and a Host re-created under the same name has another uid. An
    unbound claim stands while the Host it names exists with this IP (its registration has not
    bound it yet), or, failing that, for `grace` seconds after it was created, because its
    registration may be about to create that Host.
    """
    live = (
        found is not None
        and not found["metadata"].get("deletionTimestamp")
        and formats.same_ip_key(str((found.get("spec") or {}).get("ipAddress", ""))) == ip
    )
    owner = _owner(claim)
    if owner is not None:
        if live and found is not None and found["metadata"].get("uid") == owner.get("uid"):
            return Verdict(True, "bound to a live host")
        return Verdict(False, "its host is gone, being deleted, or has another IP")
    if live:
        return Verdict(True, "its host exists and is being bound")
    age = _age(claim, now)
    if age < grace:
        return Verdict(True, f"unbound for {age:.0f}s, within the {grace:g}s grace")
    return Verdict(False, f"unbound for {age:.0f}s, past the {grace:g}s grace")


def _duplicate(ip: str, claim: Obj | None) -> errors.FacadeError:
    who = holder(claim) if claim is not None else ""
    detail = f"{ip} is registered as {who}" if who else f"{ip} is being registered concurrently"
    return errors.FacadeError(errors.DUPLICATE_IP, detail)


async def _read(kube: kubeapi.Kubernetes, claim_name: str) -> Obj | None:
    try:
        return await kube.read_configmap(claim_name)
    except kubeapi.ApiException as error:
        if error.status == 404:
            return None
        raise


async def _read_host(kube: kubeapi.Kubernetes, host_name: str) -> Obj | None:
    if not host_name:
        return None
    try:
        return await kube.read_host(host_name)
    except kubeapi.ApiException as error:
        if error.status == 404:
            return None
        raise


async def acquire(kube: kubeapi.Kubernetes, ip: str, host_name: str, *, grace: float = GRACE_SECONDS) -> Obj:
    """Claim `ip` for the Host `host_name` about to be created; the claim as created.

    Raises the duplicate-IP error when a standing claim holds the address. A stale one is taken
    over: deleted on the condition that it is still the very version judged stale, then created.
    """
    wanted = manifest(ip, host_name, kube.namespace)
    claim_name = wanted["metadata"]["name"]
    seen: Obj | None = None
    for _ in range(ROUNDS):
        try:
            return await kube.create_configmap(wanted)
        except kubeapi.ApiException as error:
            if error.status != 409:
                raise
        seen = await _read(kube, claim_name)
        if seen is None:
            continue  # released between our create and our read: create again
        # The API's word on the Host, not this replica's cache: the cache may lag behind a registration.
        verdict = holds(seen, ip, await _read_host(kube, holder(seen)), datetime.datetime.now(datetime.UTC), grace)
        if verdict.holds:
            raise _duplicate(ip, seen)
        metadata = seen["metadata"]
        try:
            await kube.delete_configmap(claim_name, uid=metadata["uid"], resource_version=metadata["resourceVersion"])
            logger.info("took over the stale claim %s (host %s): %s", claim_name, holder(seen), verdict.why)
        except kubeapi.ApiException as error:
            # 404: someone else removed it; 409: it changed since we judged it. Either way, look again.
            if error.status not in (404, 409):
                raise
    raise _duplicate(ip, seen)


async def bind(kube: kubeapi.Kubernetes, claim: Obj, owner: Obj) -> Obj:
    """Make the Host `owner` the claim's owner; `Lost` if the claim is no longer the one we created."""
    try:
        return await kube.patch_configmap(claim["metadata"]["name"], binding(claim, owner))
    except kubeapi.ApiException as error:
        if error.status in (404, 409):
            raise Lost from None
        raise


async def release(kube: kubeapi.Kubernetes, claim: Obj) -> None:
    """Delete this claim (best effort): only this very version, never one another registration made since."""
    metadata = claim["metadata"]
    try:
        await kube.delete_configmap(metadata["name"], uid=metadata["uid"], resource_version=metadata["resourceVersion"])
    except (errors.FacadeError, kubeapi.ApiException) as error:
        # 404/409: already gone or no longer ours. Otherwise it stays until its Host goes (bound)
        # or its grace ends (unbound), after which the next registration of the IP takes it over.
        if not isinstance(error, kubeapi.ApiException) or error.status not in (404, 409):
            logger.warning("could not release the claim %s: %s", metadata["name"], error)


async def release_for(kube: kubeapi.Kubernetes, deleted: Obj) -> None:
    """After the facade deleted Host `deleted`: free its IP now rather than when the GC gets to it."""
    ip = formats.same_ip_key(str((deleted.get("spec") or {}).get("ipAddress", "")))
    try:
        claim = await _read(kube, name(ip))
    except (errors.FacadeError, kubeapi.ApiException) as error:
        logger.warning("could not read the claim on %s of deleted host %s: %s", ip, deleted["metadata"]["name"], error)
        return
    if claim is None:
        return
    owner = _owner(claim)
    ours = (
        owner.get("uid") == deleted["metadata"].get("uid")
        if owner is not None
        else holder(claim) == deleted["metadata"]["name"]
    )
    if ours:  # a claim already taken over by a newer registration of the IP is left alone
        await release(kube, claim)
