"""The IP claim of a registration, as kubectl sees it and as it survives failures (one facade).

test_replicas.py races two facade processes; here one facade meets the situations a replica can
leave behind: a claim whose registration died before creating its Host, a registration that
failed half-way, a claim taken over by another replica before this one bound it.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpufleet.api import meta
from gpufleet.facade import claims, errors, routes
from kube_emulator import Emulator, RequestInfo
from kube_emulator.resources import BUILTINS

from .helpers import HOSTS_PATH, REGISTRATION, Facade, K8s, configmap_path, eventually, hosts_with_ip, unique_ip


def _body(ip: str) -> dict[str, Any]:
    return {**REGISTRATION, "ip_address": ip}


async def test_a_registered_ip_is_claimed_by_a_configmap_owned_by_its_host(
    facade: Facade, k8s: K8s, facade_namespace: str
) -> None:
    ip = unique_ip()
    host_id = (await facade.register(ip_address=ip))["host_id"]
    claim = k8s.ok("GET", configmap_path(facade_namespace, "gpufleet-ip-" + ip.replace(".", "-")))
    assert claim["data"] == {"ipAddress": ip, "host": host_id}
    assert claim["metadata"]["labels"][meta.MANAGED_BY_LABEL] == meta.MANAGED_BY
    owner = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")
    assert [(ref["kind"], ref["name"], ref["uid"]) for ref in claim["metadata"]["ownerReferences"]] == [
        ("Host", host_id, owner["metadata"]["uid"])
    ]
    # kubectl deleting the Host takes the claim with it (the garbage collector).
    k8s.ok("DELETE", f"{HOSTS_PATH}/{host_id}")
    path = configmap_path(facade_namespace, claim["metadata"]["name"])
    assert await eventually(lambda: k8s("GET", path)[0] == 404, within=5.0)


async def test_a_claim_without_its_host_holds_the_ip_for_the_grace_period_only(
    facade: Facade, k8s: K8s, facade_namespace: str
) -> None:
    """A replica claimed the IP and died before creating the Host (or is about to create it)."""
    ip = unique_ip()
    k8s.ok("POST", configmap_path(facade_namespace), claims.manifest(ip, "host-inflight01", facade_namespace))
    status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(ip))
    assert (status, answer["code"]) == (409, errors.DUPLICATE_IP.code)
    # Past the grace (30 s in production; no test waits that long) the claim is taken over.
    facade.app[routes.SERVICES].claim_grace_seconds = 0.0
    host_id = (await facade.register(ip_address=ip))["host_id"]
    assert hosts_with_ip(k8s, ip) == [host_id]


@pytest.mark.emulator
@pytest.mark.parametrize(
    ("method", "failing", "status", "code"),
    [("POST", "/hosts", 422, errors.REJECTED.code), ("PATCH", "/configmaps/", 503, errors.KUBERNETES_UNAVAILABLE.code)],
    ids=["host-refused", "claim-binding-failed"],
)
async def test_a_registration_that_fails_leaves_its_ip_free(
    facade: Facade, emulator: Emulator, k8s: K8s, method: str, failing: str, status: int, code: int
) -> None:
    emulator.fail_next(1, status=status, predicate=lambda r: r.method == method and failing in r.path)
    ip = unique_ip()
    answer = await facade.call("POST", "/api/v1/hosts", json=_body(ip))
    assert (answer[0], answer[1]["code"]) == (status, code)
    host_id = (await facade.register(ip_address=ip))["host_id"]  # at once: no claim was left behind
    assert hosts_with_ip(k8s, ip) == [host_id]


@pytest.mark.emulator
async def test_a_registration_whose_claim_is_taken_over_before_it_binds_keeps_no_host(
    facade: Facade, emulator: Emulator, k8s: K8s, facade_namespace: str
) -> None:
    """This registration was slow: past the grace, another replica judged its claim stale and took it.

    A takeover deletes the claim and creates it anew; rewriting it in place, as here, changes its
    resourceVersion all the same, which is what binding is conditional on.
    """
    ip = unique_ip()
    claim_name = claims.name(ip)
    configmaps = next(resource for resource in BUILTINS if resource.plural == "configmaps")

    def take_over_when_the_host_is_created(request: RequestInfo) -> bool:
        if request.method == "POST" and request.path == HOSTS_PATH:
            stolen = emulator.find("", "configmaps", claim_name, facade_namespace)
            if stolen is not None and stolen["data"]["host"] != "host-thief00000":
                replacement = {**stolen, "data": {**stolen["data"], "host": "host-thief00000"}}
                replacement["metadata"] = {k: v for k, v in stolen["metadata"].items() if k != "resourceVersion"}
                emulator.replace_object(configmaps, facade_namespace, claim_name, replacement)
        return False  # the Host is created all the same

    stop = emulator.faults.fail_when(take_over_when_the_host_is_created)
    try:
        status, answer = await facade.call("POST", "/api/v1/hosts", json=_body(ip))
    finally:
        stop()
    assert (status, answer["code"]) == (409, errors.DUPLICATE_IP.code), answer
    assert hosts_with_ip(k8s, ip) == []  # it took its Host back
    assert k8s.ok("GET", configmap_path(facade_namespace, claim_name))["data"]["host"] == "host-thief00000"
    k8s("DELETE", configmap_path(facade_namespace, claim_name))
