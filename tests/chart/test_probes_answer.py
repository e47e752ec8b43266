"""The chart's containers start with the chart's environment, and answer where its probes look.

`gpufleet operator` and `gpufleet facade` are started as processes with exactly the environment
the rendered Deployment gives them, against the cluster under test, and each probe of the
rendered pod spec is sent to the port it names. A renamed setting, a probe path the code does not
serve, or a peering object the operator cannot use fails here instead of in a crash loop.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any, cast

import kubernetes
import pytest

from . import processes, rendering

NAMESPACE = "gpufleet-probe-smoke"


@pytest.fixture(scope="module")
def deployment(crds_installed: list[str], api_client: Any) -> Iterator[dict[str, Any]]:
    """The rendered Deployment, with its namespace and KopfPeering object present in the cluster."""
    manifests = rendering.objects(rendering.render({}, namespace=NAMESPACE))
    core = kubernetes.client.CoreV1Api(api_client)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    namespace = kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=NAMESPACE))
    try:
        core.create_namespace(namespace)
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
    peering = rendering.find(manifests, "KopfPeering")
    custom.create_namespaced_custom_object("kopf.dev", "v1", NAMESPACE, "kopfpeerings", peering)
    yield rendering.find(manifests, "Deployment")
    custom.delete_namespaced_custom_object("kopf.dev", "v1", NAMESPACE, "kopfpeerings", peering["metadata"]["name"])
    core.delete_namespace(NAMESPACE)


def _container(
    deployment: dict[str, Any], name: str, kube: Any, log: pathlib.Path, ports: dict[str, str]
) -> processes.Container:
    spec = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)
    return processes.Container(
        spec,
        kubeconfig=kube.kubeconfig,
        downward_api={"metadata.namespace": NAMESPACE},
        port_variables=ports,
        log=log,
    )


def test_the_facade_answers_its_readiness_and_liveness_probes(
    kube: Any, deployment: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    with _container(deployment, "facade", kube, tmp_path / "log", {"GPUFLEET_FACADE_PORT": "facade"}) as facade:
        facade.wait_until_answering(facade.probe_url("readinessProbe"))
        assert processes.answers(facade.probe_url("livenessProbe")) == 200


def test_the_operator_answers_its_probes_and_joins_the_peering(
    kube: Any, api_client: Any, deployment: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    ports = {"GPUFLEET_METRICS_PORT": "metrics", "GPUFLEET_LIVENESS_PORT": "healthz"}
    with _container(deployment, "operator", kube, tmp_path / "log", ports) as operator:
        operator.wait_until_answering(operator.probe_url("startupProbe"))
        assert processes.answers(operator.probe_url("livenessProbe")) == 200
        assert processes.answers(operator.url("metrics", "/metrics")) == 200
        custom = kubernetes.client.CustomObjectsApi(api_client)
        peering_name = operator.env["GPUFLEET_PEERING_NAME"]
        deadline = time.monotonic() + 20
        peering: dict[str, Any] = {}
        while time.monotonic() < deadline and not peering.get("status"):
            body = custom.get_namespaced_custom_object("kopf.dev", "v1", NAMESPACE, "kopfpeerings", peering_name)
            peering = cast(dict[str, Any], body)
            time.sleep(0.2)
        assert peering.get("status"), f"the operator never kept the chart's KopfPeering alive:\n{operator.output()}"
