"""Who did what: one structured line per REST write, and a request id on every answer.

Every register, update, delete and heartbeat, allowed or not, is logged by the logger
`gpufleet.facade.audit` at INFO, once it is answered, with these fields (top-level keys of the
JSON log line; `GPUFLEET_LOG_FORMAT=text` shows the message only):

- `request_id`: the caller's `X-Request-Id` when it is a plain token (letters, digits, `._:-`, at
  most 128), else a new one; every answer carries it back in `X-Request-Id`, and the Kubernetes
  API calls made for the request carry it in their user agent (kubeapi.py);
- `operation` (`register`, `update`, `delete`, `heartbeat`), `method` and `path`;
- `host`: the host id (for a registration, the id it was given; null when none was);
- `caller`: who the token belongs to (`auth.Identity.name`: a Kubernetes username, `static:admin:line-2`,
  `agent:host-...`), null when the token was missing or nobody's; `caller_kind`;
- `client`: the peer address; `status` (HTTP), `code` (the envelope's, 0 on success) and
  `outcome`: `success`, `denied` (401, 403, 429), `rejected` (another 4xx) or `failed` (5xx).

Tokens are never part of it. Heartbeats can be left out with `GPUFLEET_AUDIT_HEARTBEATS=false`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
from typing import Any

from aiohttp import web

from gpufleet.facade import auth, errors, kubeapi, limits

logger = logging.getLogger("gpufleet.facade.audit")

REQUEST_ID_HEADER = "X-Request-Id"
#: The host a registration created (the others name theirs in the path).
HOST = web.RequestKey("audited_host", str)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_WRITES = {
    ("POST", "/api/v1/hosts"): "register",
    ("PUT", "/api/v1/hosts/{host_id}"): "update",
    ("DELETE", "/api/v1/hosts/{host_id}"): "delete",
    ("POST", "/api/v1/hosts/{host_id}/heartbeat"): "heartbeat",
}


#: New request ids are this process's random half and a count: unique across replicas and restarts
#: alike (64 random bits each), in the 32 hex digits of a UUID, without a call for random bytes
#: on every request.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if _REQUEST_ID.match(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER) % 2**64:016x}"


def _outcome(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403, 429):
        return "denied"
    return "rejected" if status < 500 else "failed"


def _operation(request: web.Request) -> str | None:
    if request.match_info.http_exception is not None:
        return None
    resource = request.match_info.route.resource
    return _WRITES.get((request.method, resource.canonical)) if resource is not None else None


def middleware(*, heartbeats: bool) -> Any:
    """The audit middleware; it must sit outside `errors.envelope`, to see the answers it renders."""

    @web.middleware
    async def audit(request: web.Request, handler: errors.Handler) -> web.StreamResponse:
        request_id = _request_id(request)
        kubeapi.REQUEST_ID.set(request_id)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers[REQUEST_ID_HEADER] = request_id
            return response
        except asyncio.CancelledError:
            status = 499  # the caller went away before the answer (nginx's "client closed request")
            raise
        finally:
            # Skipped when INFO is off: building the line costs as much as a tenth of a heartbeat.
            operation = _operation(request) if logger.isEnabledFor(logging.INFO) else None
            if operation is not None and (heartbeats or operation != "heartbeat"):
                _log(request, request_id, operation, status)

    return audit


def _log(request: web.Request, request_id: str, operation: str, status: int) -> None:
    caller = request.get(auth.CALLER)
    host = request.get(HOST) or request.match_info.get("host_id")
    if host is not None and not limits.valid_host_id(host):
        host = errors.echo(host, 64)
    fields = {
        "request_id": request_id,
        "operation": operation,
        "method": request.method,
        "path": request.path[:300],
        "host": host,
        "caller": caller.name if caller else None,
        "caller_kind": caller.kind if caller else None,
        "client": request.remote,
        "status": status,
        "code": request.get(errors.ERROR_CODE, 0) if status >= 400 else 0,
        "outcome": _outcome(status),
    }
    logger.info(
        "%s of %s by %s: %d (request %s)",
        operation,
        host or "a new host",
        fields["caller"] or "an unauthenticated caller",
        status,
        request_id,
        extra=fields,
    )
