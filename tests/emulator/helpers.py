"""Helpers for the API contract suite: raw HTTP through the kubernetes client and test CRDs.

Requests go through ``kubernetes.client.ApiClient.call_api`` so that the same tests run
against a real cluster (TLS, tokens) and the emulator alike; the CRDs are test-only.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

GROUP = "testing.gpufleet.io"
WIDGETS = f"/apis/{GROUP}/v1/namespaces/{{ns}}/widgets"
GADGETS = f"/apis/{GROUP}/v1/gadgets"

WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 64},
                "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                "address": {"type": "string", "format": "ipv4"},
                "name": {"type": "string", "maxLength": 8, "pattern": "^[a-z]+$"},
                "seenAt": {"type": "string", "format": "date-time", "nullable": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                # List types for server-side apply: merged by key, merged by value, replaced whole.
                "ports": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
                    },
                },
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "hosts": {"type": "array", "items": {"type": "string"}},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


WIDGET_COLUMNS: list[dict[str, Any]] = [
    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode", "priority": 1},
    {"name": "Seen", "type": "date", "jsonPath": ".spec.seenAt"},
]


def _crd(
    plural: str,
    kind: str,
    scope: str,
    schema: dict[str, Any],
    status: bool,
    columns: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    version: dict[str, Any] = {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
    if status:
        version["subresources"] = {"status": {}}
    if columns:
        version["additionalPrinterColumns"] = columns
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "versions": [version],
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
        },
    }


WIDGET_CRD = _crd("widgets", "Widget", "Namespaced", WIDGET_SCHEMA, status=True, columns=WIDGET_COLUMNS)
GADGET_CRD = _crd(
    "gadgets", "Gadget", "Cluster", {"type": "object", "x-kubernetes-preserve-unknown-fields": True}, status=False
)


APPLY = "application/apply-patch+yaml"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
AUTH = ["BearerToken"]


class Api:
    """Raw calls answering ``(status, body)``, errors included, through the kubernetes client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        query: dict[str, Any],
        timeout: float | None = None,
    ) -> Any:
        params = [
            (key, str(value).lower() if isinstance(value, bool) else str(value))
            for key, value in query.items()
            if value is not None
        ]
        method_, url, headers_, body_, post = self.client.param_serialize(
            method, path, query_params=params, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        return self.client.call_api(method_, url, headers_, body_, post, _request_timeout=timeout)

    def __call__(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json", **query: Any
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        response = self._send(method, path, body, headers, query)
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json", **query: Any) -> Any:
        status, answer = self(method, path, body, content_type, **query)
        assert 200 <= status < 300, (status, answer)
        return answer

    def raw(self, method: str, path: str, data: bytes, content_type: str | None, **query: Any) -> tuple[int, Any]:
        """Send ``data`` byte for byte (the client would re-encode a str body for JSON content types)."""
        params = [(key, str(value)) for key, value in query.items() if value is not None]
        _, url, headers, _, _ = self.client.param_serialize(
            method, path, query_params=params, header_params={"Accept": "application/json"}, auth_settings=AUTH
        )
        if content_type:
            headers["Content-Type"] = content_type
        response = self.client.rest_client.pool_manager.request(method, url, body=data, headers=headers)
        return response.status, json.loads(response.data) if response.data else None

    def apply(self, path: str, config: dict[str, Any], manager: str | None, **query: Any) -> tuple[int, Any]:
        """A server-side apply of ``config`` (sent as JSON, which is YAML), as kubectl sends it."""
        data = json.dumps(config).encode()
        return self.raw("PATCH", path, data, APPLY, fieldManager=manager, **query)

    def table(self, path: str, **query: Any) -> Any:
        """A GET answered as a meta.k8s.io/v1 Table, asked for as kubectl asks."""
        response = self._send("GET", path, None, {"Accept": TABLE}, query)
        assert response.status == 200, response.read()
        return json.loads(response.read())

    def watch(
        self, path: str, count: int, timeout: float = 5, accept: str = "application/json", **query: Any
    ) -> list[dict[str, Any]]:
        """The first ``count`` events of a watch (fewer if it ends first)."""
        from kubernetes.watch.watch import iter_resp_lines

        query = {"watch": "true", "timeoutSeconds": int(timeout), **query}
        response = self._send("GET", path, None, {"Accept": accept}, query, timeout + 5).response
        events: list[dict[str, Any]] = []
        try:
            for line in iter_resp_lines(response):
                events.append(json.loads(line))
                if len(events) >= count:
                    break
        finally:
            response.close()
        return events


def widget(name: str, size: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size, **spec}}


def kubectl(kubeconfig: pathlib.Path | str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the cluster under test; the caller checks the return code."""
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
    )
