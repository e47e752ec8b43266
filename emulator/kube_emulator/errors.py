"""Kubernetes ``Status`` error bodies.

Clients (kubernetes, kubernetes_asyncio, Kopf, kubectl) decide what to do from the
``reason`` and ``code`` of a ``Status`` object, not from the HTTP status line alone, so
every failure the emulator produces is an :class:`ApiError` rendered exactly like an
API server renders it.
"""

from __future__ import annotations

from typing import Any

JsonObj = dict[str, Any]


class ApiError(Exception):
    """A failure answered to the client as a ``kind: Status`` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: JsonObj | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> JsonObj:
        status: JsonObj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _details(qualified: str, name: str) -> JsonObj:
    """Status details for ``plural.group``: the apiserver puts the plural under ``kind``."""
    plural, _, group = qualified.partition(".")
    return {"name": name, "group": group, "kind": plural}


def not_found(qualified: str, name: str) -> ApiError:
    """404 for an object, worded like ``hosts.gpufleet.io "x" not found``."""
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', _details(qualified, name))


def conflict(qualified: str, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, _details(qualified, name))


def already_exists(qualified: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists', _details(qualified, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind_group: str, name: str, causes: list[JsonObj]) -> ApiError:
    """422 Invalid with one cause per offending field, as the apiserver words it."""
    texts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    kind, _, group = kind_group.partition(".")
    return ApiError(
        422,
        "Invalid",
        f'{kind_group} "{name}" is invalid: {joined}',
        {"name": name, "group": group, "kind": kind, "causes": causes},
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)
