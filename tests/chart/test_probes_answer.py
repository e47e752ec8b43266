"""The chart's containers start with the chart's environment, and answer where its probes look.

`gpufleet operator` and `gpufleet facade` are started as processes with exactly the environment
the rendered Deployment gives them, against the cluster under test, and each probe of the
rendered pod spec is sent to the port it names. A renamed setting, a probe path the code does not
serve, or a leader-election Lease the operator cannot take fails here instead of in a crash loop.
"""

from __future__ import annotations

import contextlib
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from . import processes, rendering

NAMESPACE = "gpufleet-probe-smoke"


@pytest.fixture(scope="module")
def chart_objects(crds_installed: list[str], api_client: Any) -> Iterator[list[dict[str, Any]]]:
    """The rendered objects (the facade in a Deployment of its own, the default), with their namespace
    present in the cluster (the operator creates its Lease)."""
    manifests = rendering.objects(rendering.render({}, namespace=NAMESPACE))
    core = kubernetes.client.CoreV1Api(api_client)
    namespace = kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=NAMESPACE))
    try:
        core.create_namespace(namespace)
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
    yield manifests
    operator = rendering.container_of(manifests, "operator")
    lease = next(var["value"] for var in operator["env"] if var["name"] == "GPUFLEET_LEADER_LEASE_NAME")
    with contextlib.suppress(kubernetes.client.ApiException):
        kubernetes.client.CoordinationV1Api(api_client).delete_namespaced_lease(lease, NAMESPACE)
    core.delete_namespace(NAMESPACE)


def _container(
    chart_objects: list[dict[str, Any]], name: str, kube: Any, log: pathlib.Path, ports: dict[str, str]
) -> processes.Container:
    return processes.Container(
        rendering.container_of(chart_objects, name),
        kubeconfig=kube.kubeconfig,
        downward_api={"metadata.namespace": NAMESPACE},
        port_variables=ports,
        log=log,
    )


def test_the_facade_answers_its_readiness_and_liveness_probes(
    kube: Any, chart_objects: list[dict[str, Any]], tmp_path: pathlib.Path
) -> None:
    with _container(chart_objects, "facade", kube, tmp_path / "log", {"GPUFLEET_FACADE_PORT": "facade"}) as facade:
        facade.wait_until_answering(facade.probe_url("readinessProbe"))
        assert processes.answers(facade.probe_url("livenessProbe")) == 200


def _holder(api_client: Any, name: str) -> str | None:
    try:
        lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease(name, NAMESPACE)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return lease.spec.holder_identity if lease.spec else None


def test_the_operator_answers_its_probes_and_takes_the_lease(
    kube: Any, api_client: Any, chart_objects: list[dict[str, Any]], tmp_path: pathlib.Path
) -> None:
    ports = {"GPUFLEET_METRICS_PORT": "metrics", "GPUFLEET_LIVENESS_PORT": "healthz"}
    with _container(chart_objects, "operator", kube, tmp_path / "log", ports) as operator:
        lease = operator.env["GPUFLEET_LEADER_LEASE_NAME"]
        operator.wait_until_answering(operator.probe_url("startupProbe"))
        assert processes.answers(operator.probe_url("livenessProbe")) == 200
        # /readyz answers 200 once the operator's watches have synced (503 until then)
        operator.wait_until_answering(operator.probe_url("readinessProbe"))
        assert processes.answers(operator.url("metrics", "/metrics")) == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _holder(api_client, lease):
            time.sleep(0.2)
        assert _holder(api_client, lease), f"the operator never took the Lease {lease}:\n{operator.output()}"
    # a graceful stop (SIGTERM, as the kubelet sends) gives the Lease up, so a standby need not wait it out
    assert not _holder(api_client, lease), f"the stopped operator kept the Lease:\n{operator.output()}"
