"""The error contract: one table of error codes, one exception, one middleware that renders it.

Legacy callers branch on `code`, so every failure, including those aiohttp raises itself (unknown
path, wrong method, body too large) and those nobody planned for, leaves as the same envelope
`{code, message, data?}` with a documented non-zero code and the matching HTTP status. Unplanned
errors are logged here with their trace and answered 500 without one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ErrorKind:
    """One row of the error-code table."""

    code: int
    status: int
    message: str
    when: str


MALFORMED_JSON = ErrorKind(40001, 400, "request body is not valid JSON", "the body does not parse as JSON")
INVALID_BODY = ErrorKind(
    40002,
    400,
    "invalid request body",
    "a field is missing, mistyped, out of range, an unknown enum value, an invalid IP address, name or label, "
    "or the body is over a limit (nesting, number length); `data.errors` lists them",
)
INVALID_QUERY = ErrorKind(
    40003,
    400,
    "invalid query parameter",
    "`page`, `page_size`, `status` or `os_type` is out of range or unknown, or the query string is too long",
)
MALFORMED_REQUEST = ErrorKind(
    40004,
    400,
    "malformed HTTP request",
    "the request line or a header does not parse or is over its limit (8 KiB each, at most 100 headers)",
)
UNAUTHENTICATED = ErrorKind(
    40101, 401, "authentication required", "no `Authorization: Bearer <token>` header, or not a bearer one"
)
INVALID_TOKEN = ErrorKind(40102, 401, "invalid token", "the bearer token is unknown, expired or revoked")
FORBIDDEN = ErrorKind(
    40301,
    403,
    "this token is not allowed to perform this operation",
    "a valid token whose role lacks the operation (viewer writing, agent reading, admin heartbeating)",
)
OTHER_HOST = ErrorKind(
    40302, 403, "this agent token belongs to another host", "a host's agent token on another host's heartbeat"
)
HOST_NOT_FOUND = ErrorKind(40401, 404, "host not found", "no host has this `host_id` (or it is being deleted)")
NO_ROUTE = ErrorKind(40402, 404, "no such API path", "the path is not part of the API")
METHOD_NOT_ALLOWED = ErrorKind(40501, 405, "method not allowed", "the path exists but not with this method")
DUPLICATE_IP = ErrorKind(
    40901, 409, "a host with this IP address is already registered", "register with the IP address of an existing host"
)
CONFLICT = ErrorKind(
    40902, 409, "the host was changed concurrently; retry", "the Kubernetes API reported a conflicting write"
)
BODY_TOO_LARGE = ErrorKind(41301, 413, "request body too large", "the body exceeds the configured limit (1 MiB)")
UNSUPPORTED_MEDIA_TYPE = ErrorKind(
    41501, 415, "Content-Type must be application/json", "a body sent with another content type"
)
REJECTED = ErrorKind(
    42201, 422, "rejected by the Kubernetes API", "the API server refused the object (its validation or admission)"
)
TOO_MANY_FAILURES = ErrorKind(
    42901,
    429,
    "too many failed authentications; retry later",
    "this client's failed authentications exceeded the limit; `Retry-After` says when to try again",
)
INTERNAL = ErrorKind(50001, 500, "internal error", "an unexpected failure (logged on the server, never echoed)")
KUBERNETES_UNAVAILABLE = ErrorKind(
    50301, 503, "Kubernetes API unavailable", "the Kubernetes API is unreachable, failing or slower than the timeout"
)
NOT_READY = ErrorKind(50302, 503, "not ready: caches are still syncing", "a read before the first list completed")

TABLE: tuple[ErrorKind, ...] = (
    MALFORMED_JSON,
    INVALID_BODY,
    INVALID_QUERY,
    MALFORMED_REQUEST,
    UNAUTHENTICATED,
    INVALID_TOKEN,
    FORBIDDEN,
    OTHER_HOST,
    HOST_NOT_FOUND,
    NO_ROUTE,
    METHOD_NOT_ALLOWED,
    DUPLICATE_IP,
    CONFLICT,
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    REJECTED,
    TOO_MANY_FAILURES,
    INTERNAL,
    KUBERNETES_UNAVAILABLE,
    NOT_READY,
)


class FacadeError(Exception):
    """A failure the caller is told about: its row of the table, and what exactly went wrong.

    The message always starts with the table's text, so a caller may match on that prefix; the
    `detail` follows after a colon.
    """

    def __init__(
        self,
        kind: ErrorKind,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.message = f"{kind.message}: {detail}" if detail else kind.message
        super().__init__(self.message)
        self.errors = errors
        self.headers = dict(headers or {})
        if kind.status == 401:
            self.headers["WWW-Authenticate"] = "Bearer"

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.kind.code, "message": self.message}
        if self.errors is not None:
            body["data"] = {"errors": self.errors}
        return json_response(body, status=self.kind.status, headers=self.headers or None)


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with non-ASCII kept as is (the Chinese messages travel as UTF-8).

    Text that cannot be UTF-8 (a lone surrogate echoed from a caller's input) is escaped instead.
    """
    try:
        encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        encoded = json.dumps(body, separators=(",", ":")).encode("ascii")
    return web.Response(
        body=encoded,
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _from_http_exception(exc: web.HTTPException) -> FacadeError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return FacadeError(BODY_TOO_LARGE)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        # RFC 9110: a 405 names the methods the resource does allow.
        return FacadeError(METHOD_NOT_ALLOWED, f"{exc.method} (allowed: {allowed})", headers={"Allow": allowed})
    if isinstance(exc, web.HTTPNotFound):
        return FacadeError(NO_ROUTE)
    return FacadeError(INTERNAL)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The error code a request was answered with (for the audit line), set where errors become responses.
ERROR_CODE = web.RequestKey("error_code", int)


def echo(value: str, limit: int = 40) -> str:
    """A caller's value as it may be quoted back in a message: repr, escaped, at most `limit` characters."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


@web.middleware
async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as the envelope; the only place where errors become responses."""
    try:
        return await handler(request)
    except FacadeError as error:
        failure = error
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        failure = _from_http_exception(exc)
    except Exception:
        # The method and path only: headers may carry tokens, and the query is the caller's text.
        logger.exception("unexpected error on %s %s", request.method, echo(request.path, 200))
        failure = FacadeError(INTERNAL)
    request[ERROR_CODE] = failure.kind.code
    return failure.response()
