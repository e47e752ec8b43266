"""The ordinary clients work through the kubeconfig: typed sync, kubernetes_asyncio, raw aiohttp."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from kube_emulator import EmulatedCluster, emulated_api

from .helpers import GROUP, WIDGET_CRD, Api, widget


def test_typed_sync_client(api_client: Any, namespace: str, widgets: str) -> None:
    import kubernetes

    objects = kubernetes.client.CustomObjectsApi(api_client)
    objects.create_namespaced_custom_object(GROUP, "v1", namespace, "widgets", widget("w1"))
    patched = objects.patch_namespaced_custom_object(GROUP, "v1", namespace, "widgets", "w1", {"spec": {"size": 3}})
    assert patched["spec"]["size"] == 3
    status = objects.patch_namespaced_custom_object_status(
        GROUP, "v1", namespace, "widgets", "w1", {"status": {"ok": 1}}
    )
    assert status["status"] == {"ok": 1}
    with pytest.raises(kubernetes.client.ApiException) as err:
        objects.get_namespaced_custom_object(GROUP, "v1", namespace, "widgets", "missing")
    assert err.value.status == 404
    core = kubernetes.client.CoreV1Api(api_client)
    cm: Any = {"metadata": {"name": "cm"}, "data": {"a": "b"}}
    core.create_namespaced_config_map(namespace, cm)
    assert core.read_namespaced_config_map("cm", namespace).data == {"a": "b"}


async def test_async_client(async_api_client: Any, namespace: str) -> None:
    import kubernetes_asyncio

    core = kubernetes_asyncio.client.CoreV1Api(async_api_client)
    names = {ns.metadata.name for ns in (await core.list_namespace()).items}
    assert namespace in names
    leases = kubernetes_asyncio.client.CoordinationV1Api(async_api_client)
    body: Any = {"metadata": {"name": "l1"}, "spec": {"holderIdentity": "me"}}
    created = await leases.create_namespaced_lease(namespace, body)
    assert created.spec.holder_identity == "me"


@pytest.mark.emulator
async def test_in_loop_form_and_crd_reapply(tmp_path: Any, emulator: Any) -> None:
    async with emulated_api(kubeconfig=tmp_path / "kubeconfig") as cluster:
        assert isinstance(cluster, EmulatedCluster)
        assert "server: " + cluster.url in (tmp_path / "kubeconfig").read_text()
        cluster.apply_crd(WIDGET_CRD)
        cluster.apply_crd(WIDGET_CRD)
        async with aiohttp.ClientSession(cluster.url) as session, session.get(f"/apis/{GROUP}/v1") as response:
            names = {r["name"] for r in (await response.json())["resources"]}
        assert names == {"widgets", "widgets/status"}


def test_project_crds_install(api: Api, crds_installed: list[str]) -> None:
    if not crds_installed:
        pytest.skip("crds/ holds no CustomResourceDefinitions yet")
    for name in crds_installed:
        crd = api.ok("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        group = crd["spec"]["group"]
        version = crd["spec"]["versions"][0]["name"]
        plurals = {r["name"] for r in api.ok("GET", f"/apis/{group}/{version}")["resources"]}
        assert crd["spec"]["names"]["plural"] in plurals
