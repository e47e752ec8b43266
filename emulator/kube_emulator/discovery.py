"""API discovery documents (/api, /apis, /apis/<group>/<version>) and /version.

Kopf and kubectl find resources, their scope, verbs and subresources only through
discovery (Kopf does not start watching until it sees v1/namespaces and v1/events), so
these documents are built from the live resource table, CRDs included.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .resources import ResourceDef

JsonObj = dict[str, Any]

VERSION_INFO: JsonObj = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "9edcffcde5595e8a5b1a35f88c421764e575afce",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T07:28:49Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _gv_path(res: ResourceDef) -> str:
    return f"apis/{res.group}/{res.version}" if res.group else f"api/{res.version}"


def openapi(resources: Iterable[ResourceDef], group_version: str) -> JsonObj | None:
    """OpenAPI v3 just deep enough for kubectl to see server-side field validation.

    kubectl validates manifests itself unless the server's OpenAPI shows that PATCH takes
    ``fieldValidation``; without this it would download /openapi/v2 as protobuf.
    """
    resources = list(resources)
    if not group_version:
        listing: JsonObj = {_gv_path(res): {"serverRelativeURL": f"/openapi/v3/{_gv_path(res)}"} for res in resources}
        return {"paths": listing}
    served = [res for res in resources if _gv_path(res) == group_version and "patch" in res.verbs]
    if not served:
        return None
    param: JsonObj = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    paths: JsonObj = {
        f"/{group_version}/{'namespaces/{namespace}/' if res.namespaced else ''}{res.plural}/{{name}}": {
            "patch": {
                "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": res.kind},
                "parameters": [param],
                "responses": {"200": {"description": "OK"}},
            },
        }
        for res in served
    }
    # kubectl explain finds a kind's schema by its x-kubernetes-group-version-kind extension.
    schemas: JsonObj = {
        _schema_name(res): {
            **res.schema,
            "x-kubernetes-group-version-kind": [{"group": res.group, "version": res.version, "kind": res.kind}],
        }
        for res in served
        if res.schema is not None
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION_INFO["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _schema_name(res: ResourceDef) -> str:
    """``io.gpufleet.v1alpha1.Host``: the apiserver's reversed-domain naming of a CRD's schema."""
    return ".".join([*reversed(res.group.split(".")), res.version, res.kind])


def core_versions() -> JsonObj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _versions(resources: Iterable[ResourceDef], group: str) -> list[str]:
    versions: list[str] = []
    for res in resources:
        if res.group == group and res.version not in versions:
            versions.append(res.version)
    return versions


def _group_doc(group: str, versions: list[str]) -> JsonObj:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def group_list(resources: Iterable[ResourceDef]) -> JsonObj:
    resources = list(resources)
    groups = sorted({res.group for res in resources if res.group})
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, _versions(resources, g)) for g in groups],
    }


def group(resources: Iterable[ResourceDef], name: str) -> JsonObj | None:
    versions = _versions(resources, name)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(name, versions)}


def resource_list(resources: Iterable[ResourceDef], group: str, version: str) -> JsonObj | None:
    entries: list[JsonObj] = []
    for res in resources:
        if res.group != group or res.version != version:
            continue
        entries.append(
            {
                "name": res.plural,
                "singularName": res.singular,
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": list(res.verbs),
                **({"shortNames": list(res.shortnames)} if res.shortnames else {}),
                **({"categories": list(res.categories)} if res.categories else {}),
            }
        )
        if res.status_subresource:
            entries.append(
                {
                    "name": f"{res.plural}/status",
                    "singularName": "",
                    "namespaced": res.namespaced,
                    "kind": res.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    if not entries:
        return None
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}
