"""The facade Service: reachable from outside the cluster only over TLS, unless asked for in so many words.

Bearer tokens (admin, viewer, agent) travel in every request, so a NodePort or LoadBalancer
Service in front of a plain-HTTP facade sends them across the network in the clear. The chart
refuses to render one unless `facade.tls.enabled`, or `facade.service.allowPlaintext: true`.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from . import rendering

TLS = {"enabled": True, "secretName": "gpufleet-facade-tls"}


def _facade_service(values: dict[str, Any]) -> dict[str, Any]:
    manifests = rendering.objects(rendering.render(values))
    return next(m for m in manifests if m["kind"] == "Service" and m["metadata"]["name"].endswith("-facade"))


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_an_exposed_service_without_tls_is_refused(service_type: str) -> None:
    with pytest.raises(helm.HelmError, match=rf"facade.service.type={service_type} .* without TLS") as refused:
        rendering.render({"facade": {"service": {"type": service_type}}})
    assert "facade.tls.enabled=true" in str(refused.value)
    assert "facade.service.allowPlaintext=true" in str(refused.value)


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_an_exposed_service_with_tls_renders(service_type: str) -> None:
    service = _facade_service({"facade": {"tls": TLS, "service": {"type": service_type}}})
    assert service["spec"]["type"] == service_type
    assert service["spec"]["ports"][0]["port"] == 443


def test_plaintext_outside_the_cluster_must_be_asked_for_explicitly() -> None:
    service = _facade_service({"facade": {"service": {"type": "NodePort", "nodePort": 30080, "allowPlaintext": True}}})
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 30080


def test_a_cluster_ip_service_needs_no_tls() -> None:
    service = _facade_service({})
    assert service["spec"]["type"] == "ClusterIP"
    assert rendering.values_of(rendering.CHART / "values.yaml")["facade"]["service"]["allowPlaintext"] is False


def test_allow_plaintext_must_be_a_boolean() -> None:
    with pytest.raises(helm.HelmError, match="/facade/service/allowPlaintext"):
        rendering.render({"facade": {"service": {"type": "NodePort", "allowPlaintext": "yes"}}})
