"""The OpenAPI 3.1 document of the REST API, generated from the pydantic schemas.

Written once, in `schemas`, the shapes cannot drift from what is served: the same models
validate requests, and the tests validate responses against this document (schemathesis fuzzes
every operation from it). Error responses and the bearer-token security scheme are part of it,
since callers rely on them as much as on the successes.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import json_schema

from gpufleet.api import host
from gpufleet.facade import errors, limits, schemas
from gpufleet.settings import Settings

PATH = "/api/v1/openapi.json"
Obj = dict[str, Any]

_MODELS: tuple[type[pydantic.BaseModel], ...] = (
    schemas.RegisterHost,
    schemas.UpdateHost,
    schemas.Heartbeat,
    schemas.RegisterResponse,
    schemas.HostPageResponse,
    schemas.HostDetailResponse,
    schemas.GPUListResponse,
    schemas.MessageResponse,
    schemas.ErrorResponse,
)


def _ref(model: type[pydantic.BaseModel]) -> Obj:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[pydantic.BaseModel], description: str) -> Obj:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*kinds: errors.ErrorKind) -> dict[str, Obj]:
    """Responses for these error kinds, grouped by HTTP status, naming their codes."""
    by_status: dict[int, list[errors.ErrorKind]] = {}
    for kind in (*kinds, errors.MALFORMED_REQUEST, errors.INTERNAL, errors.METHOD_NOT_ALLOWED):
        by_status.setdefault(kind.status, []).append(kind)
    return {
        str(status): _json(schemas.ErrorResponse, "; ".join(f"{k.code}: {k.message}" for k in group))
        for status, group in sorted(by_status.items())
    }


_USER = (errors.UNAUTHENTICATED, errors.INVALID_TOKEN, errors.FORBIDDEN, errors.TOO_MANY_FAILURES)
_UNAVAILABLE = (errors.KUBERNETES_UNAVAILABLE,)
_BODY = (errors.MALFORMED_JSON, errors.INVALID_BODY, errors.BODY_TOO_LARGE, errors.UNSUPPORTED_MEDIA_TYPE)
_HOST_ID: Obj = {
    "name": "host_id",
    "in": "path",
    "required": True,
    "description": "The host's id (its Kubernetes name); anything that cannot be one is 404.",
    "schema": {"type": "string", "maxLength": 253, "pattern": limits.HOST_ID_PATTERN},
}


#: What a registration's answer leads to: the operations on the host it made (its id in the path).
_HOST_LINKS: Obj = {
    name: {
        "operationId": operation,
        "parameters": {"path.host_id": "$response.body#/data/host_id"},
        "description": f"{description} the host just registered.",
    }
    for name, operation, description in (
        ("GetHost", "getHost", "Read"),
        ("UpdateHost", "updateHost", "Rename or relabel"),
        ("ListHostGpus", "listHostGpus", "List the GPUs of"),
        ("Heartbeat", "heartbeat", "Heartbeat (with the `agent_token` of the answer) for"),
        ("DeleteHost", "deleteHost", "Delete"),
    )
}


def document(settings: Settings) -> Obj:
    """The OpenAPI document for a facade running with `settings` (the page size limits come from them)."""
    _, definitions = json_schema.models_json_schema(
        [
            (model, "validation" if model.__name__ in ("RegisterHost", "UpdateHost", "Heartbeat") else "serialization")
            for model in _MODELS
        ],
        ref_template="#/components/schemas/{model}",
    )
    security: list[Obj] = [{"bearer": []}]

    def body(model: type[pydantic.BaseModel]) -> Obj:
        return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}

    list_parameters: list[Obj] = [
        {
            "name": "page",
            "in": "query",
            "required": False,
            "description": "Page number, from 1.",
            "schema": {"type": "integer", "minimum": 1, "maximum": limits.MAX_PAGE, "default": 1},
        },
        {
            "name": "page_size",
            "in": "query",
            "required": False,
            "description": "Hosts per page.",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": settings.page_size_max,
                "default": settings.page_size_default,
            },
        },
        {
            "name": "status",
            "in": "query",
            "required": False,
            "description": "Only hosts in this state.",
            "schema": {"type": "string", "enum": [s.value for s in host.HostState]},
        },
        {
            "name": "os_type",
            "in": "query",
            "required": False,
            "description": "Only hosts of this OS family.",
            "schema": {"type": "string", "enum": [s.value for s in host.OSType]},
        },
    ]
    paths: Obj = {
        "/api/v1/hosts": {
            "post": {
                "operationId": "registerHost",
                "summary": "Register a host (admin).",
                "security": security,
                "requestBody": body(schemas.RegisterHost),
                "responses": {
                    "201": {
                        **_json(schemas.RegisterResponse, "Registered; message `主机注册成功`."),
                        "links": _HOST_LINKS,
                    },
                    **_errors(*_BODY, *_USER, errors.DUPLICATE_IP, errors.REJECTED, *_UNAVAILABLE),
                },
            },
            "get": {
                "operationId": "listHosts",
                "summary": "List hosts (any role but agent).",
                "security": security,
                "parameters": list_parameters,
                "responses": {
                    "200": _json(schemas.HostPageResponse, "A page of hosts; message `success`."),
                    **_errors(errors.INVALID_QUERY, *_USER, errors.NOT_READY),
                },
            },
        },
        "/api/v1/hosts/{host_id}": {
            "parameters": [_HOST_ID],
            "get": {
                "operationId": "getHost",
                "summary": "Host detail (any role but agent).",
                "security": security,
                "responses": {
                    "200": _json(schemas.HostDetailResponse, "The host; message `success`."),
                    **_errors(*_USER, errors.HOST_NOT_FOUND, errors.NOT_READY),
                },
            },
            "put": {
                "operationId": "updateHost",
                "summary": "Update a host's name and labels (admin).",
                "security": security,
                "requestBody": body(schemas.UpdateHost),
                "responses": {
                    "200": _json(schemas.MessageResponse, "Updated; message `更新成功`."),
                    **_errors(*_BODY, *_USER, errors.HOST_NOT_FOUND, errors.CONFLICT, errors.REJECTED, *_UNAVAILABLE),
                },
            },
            "delete": {
                "operationId": "deleteHost",
                "summary": "Delete a host (admin).",
                "security": security,
                "responses": {
                    "204": {"description": "Deleted; no body."},
                    **_errors(*_USER, errors.HOST_NOT_FOUND, *_UNAVAILABLE),
                },
            },
        },
        "/api/v1/hosts/{host_id}/gpus": {
            "parameters": [_HOST_ID],
            "get": {
                "operationId": "listHostGpus",
                "summary": "The host's GPUs (any role but agent).",
                "security": security,
                "responses": {
                    "200": _json(schemas.GPUListResponse, "The GPUs, by index; message `success`."),
                    **_errors(*_USER, errors.HOST_NOT_FOUND, errors.NOT_READY),
                },
            },
        },
        "/api/v1/hosts/{host_id}/heartbeat": {
            "parameters": [_HOST_ID],
            "post": {
                "operationId": "heartbeat",
                "summary": "Heartbeat (the host's own agent token).",
                "security": security,
                "requestBody": body(schemas.Heartbeat),
                "responses": {
                    "200": _json(schemas.MessageResponse, "Received; message `心跳上报成功`."),
                    **_errors(*_BODY, *_USER, errors.OTHER_HOST, errors.HOST_NOT_FOUND, errors.REJECTED, *_UNAVAILABLE),
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gpufleet host management API (主机管理 API)",
            "version": "v1",
            "description": "The legacy host API served on top of the Host and GPU custom resources. Every "
            "response is the envelope `{code, message, data}`; `code` 0 is success. Error codes: "
            + ", ".join(f"{k.code} ({k.status}) {k.message}" for k in errors.TABLE)
            + ".",
        },
        "paths": paths,
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Admin/viewer token, or the host's agent token for heartbeats.",
                }
            },
        },
    }
