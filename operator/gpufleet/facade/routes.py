"""The seven operations of the legacy API, as thin handlers over the caches and the API calls.

Each handler checks access first, then the input (within limits.py's bounds), then does one thing: reads come from the
informer caches, writes go to the Kubernetes API and their results are applied to the caches at
once, so the caller reads its own writes. Success messages are the API document's, byte for byte.

Several replicas serve at once, each with its own caches, so nothing a write relies on may live
only in one of them: duplicate IPs are refused by a claim in the API (claims.py), and a write
to a host this replica's cache has not seen yet (another replica registered it a moment ago)
asks the API before answering 404.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import secrets
import string
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pydantic
from aiohttp import web

from gpufleet import informer, tokens
from gpufleet.api import formats, host, meta
from gpufleet.facade import audit, auth, claims, errors, heartbeats, kubeapi, limits, ratelimit, schemas, translate
from gpufleet.settings import Settings

M = TypeVar("M", bound=pydantic.BaseModel)

REGISTERED = "主机注册成功"
UPDATED = "更新成功"
HEARTBEAT_RECEIVED = "心跳上报成功"
SUCCESS = "success"

HOST_ID_ALPHABET = string.ascii_lowercase + string.digits
HOST_ID_ATTEMPTS = 5
#: Most entries of `data.errors` in one answer (a body may have thousands of bad labels).
MAX_REPORTED_ERRORS = 20


@dataclasses.dataclass
class Services:
    """What the handlers work with; built at start-up by `app`."""

    settings: Settings
    kube: kubeapi.Kubernetes
    hosts: informer.Store
    gpus: informer.Store
    informers: list[informer.Informer]
    guard: auth.Guard
    limiter: ratelimit.FailureLimiter
    #: The host Leases (compact: see heartbeats.compact_lease), renewed by heartbeats and read for `last_heartbeat`.
    leases: heartbeats.Leases
    #: How long an IP claim without its Host stands (claims.GRACE_SECONDS; tests shorten it).
    claim_grace_seconds: float = claims.GRACE_SECONDS
    _order: tuple[int, list[str]] = (-1, [])
    _selections: dict[tuple[str | None, str | None], tuple[int, list[str]]] = dataclasses.field(default_factory=dict)

    def synced(self) -> bool:
        return all(view.synced.is_set() for view in self.informers)

    def host_names(self, status: str | None = None, os_type: str | None = None) -> list[str]:
        """Names of the hosts matching the filters, by creation time then name.

        The full order only changes when hosts come or go; a filtered selection whenever a host
        changes. Both are cached, so a page costs a slice, not a sort or a scan of the fleet.
        """
        if self._order[0] != self.hosts.membership:
            keys = sorted(
                (obj["metadata"].get("creationTimestamp") or "", obj["metadata"]["name"]) for obj in self.hosts.values()
            )
            self._order = (self.hosts.membership, [name for _, name in keys])
        if status is None and os_type is None:
            return self._order[1]
        cached = self._selections.get((status, os_type))
        if cached is not None and cached[0] == self.hosts.generation:
            return cached[1]
        selected = []
        for name in self._order[1]:
            obj = self.hosts.get(name)
            if (
                obj is not None
                and (status is None or translate.state(obj) == status)
                and (os_type is None or translate.os_type(obj) == os_type)
            ):
                selected.append(name)
        self._selections[(status, os_type)] = (self.hosts.generation, selected)
        return selected


SERVICES = web.AppKey("services", Services)


def envelope(data: Any = None, message: str = SUCCESS, *, status: int = 200) -> web.Response:
    body: dict[str, Any] = {"code": 0, "message": message}
    if data is not None:
        body["data"] = data
    return errors.json_response(body, status=status)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


async def read_body(request: web.Request, model: type[M], max_bytes: int) -> M:
    """The body as `model`: 415 unless JSON, 413 when too large, 400 when malformed or invalid."""
    if request.content_type != "application/json":
        raise errors.FacadeError(errors.UNSUPPORTED_MEDIA_TYPE)
    if request.content_length is not None and request.content_length > max_bytes:
        raise errors.FacadeError(errors.BODY_TOO_LARGE, f"the limit is {max_bytes} bytes")
    raw = await request.read()
    problem = limits.body_problem(raw)  # before any parser: nesting and number length
    if problem is not None:
        raise errors.FacadeError(errors.INVALID_BODY, problem, errors=[{"field": "body", "message": problem}])
    if b"NaN" not in raw and b"Infinity" not in raw:
        # The usual, valid body is parsed once. pydantic's parser accepts no JSON that `json.loads`
        # refuses but these constants, so a body it accepts would pass the checks below unchanged;
        # anything else goes through them, and is refused exactly as they refuse it.
        with contextlib.suppress(pydantic.ValidationError):
            return model.model_validate_json(raw)
    try:
        json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise errors.FacadeError(errors.MALFORMED_JSON, str(error)) from None
    except RecursionError:  # cannot happen within the depth limit; never a 500 all the same
        raise errors.FacadeError(errors.INVALID_BODY, "too deeply nested") from None
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as error:
        raise invalid_body(error) from None


def invalid_body(error: pydantic.ValidationError) -> errors.FacadeError:
    """40002 naming each bad field (at most MAX_REPORTED_ERRORS of them; keys quoted back are cut short)."""
    found = error.errors(include_url=False, include_input=False)
    problems = [
        {"field": ".".join(["body", *(_field_part(part) for part in problem["loc"])]), "message": problem["msg"]}
        for problem in found[:MAX_REPORTED_ERRORS]
    ]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    if len(found) > MAX_REPORTED_ERRORS:
        summary += f"; and {len(found) - MAX_REPORTED_ERRORS} more"
    return errors.FacadeError(errors.INVALID_BODY, summary, errors=problems)


def _field_part(part: str | int) -> str:
    text = str(part)
    return text if len(text) <= 320 else text[:320] + "..."  # a label key is at most 317 characters


def _check_query_string(request: web.Request) -> None:
    if len(request.query_string.encode("utf-8", "surrogateescape")) > limits.MAX_QUERY_BYTES:
        raise errors.FacadeError(
            errors.INVALID_QUERY, f"the query string is longer than {limits.MAX_QUERY_BYTES} bytes"
        )


def _query_int(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() would also take " 2", "+2", "1_0" and full-width digits; and no
    # more digits than the maximum has, so that int() never works on thousands of them.
    digits = raw.lstrip("0") or "0"
    ok = raw.isascii() and raw.isdigit() and len(digits) <= len(str(maximum))
    value = int(digits) if ok else 0
    if not 1 <= value <= maximum:
        raise errors.FacadeError(
            errors.INVALID_QUERY, f"{name} must be an integer between 1 and {maximum}, not {errors.echo(raw)}"
        )
    return value


def _query_choice(request: web.Request, name: str, choices: list[str]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in choices:
        raise errors.FacadeError(
            errors.INVALID_QUERY, f"{name} must be one of {', '.join(choices)}, not {errors.echo(raw)}"
        )
    return raw


def _host_id(request: web.Request) -> str:
    """The path's host id; one that cannot be a Host's name is 404 at once, without asking the API."""
    value = request.match_info["host_id"]
    if not limits.valid_host_id(value):
        raise errors.FacadeError(errors.HOST_NOT_FOUND, errors.echo(value, 64))
    return value


def _ready(services: Services) -> None:
    if not services.synced():
        raise errors.FacadeError(errors.NOT_READY)


def _host_or_404(services: Services, host_id: str) -> informer.Obj:
    obj = services.hosts.get(host_id)
    if obj is None:
        raise errors.FacadeError(errors.HOST_NOT_FOUND, host_id)
    return obj


async def _current_host_or_404(services: Services, host_id: str) -> informer.Obj:
    """The host from the cache, or else from the API: for writes, which must not 404 a host that
    another replica registered a moment ago and whose watch event has not reached this cache."""
    obj = services.hosts.get(host_id)
    if obj is not None:
        return obj
    return await _read_host_or_404(services, host_id)


async def _read_host_or_404(services: Services, host_id: str) -> informer.Obj:
    try:
        obj = await services.kube.read_host(host_id)
    except kubeapi.ApiException as error:
        raise _not_found_or(error, host_id) from None
    if obj["metadata"].get("deletionTimestamp"):  # being deleted reads as gone, as in the cache
        raise errors.FacadeError(errors.HOST_NOT_FOUND, host_id)
    services.hosts.apply(obj)
    return obj


# ----- the seven operations -------------------------------------------------------------------------------


async def register_host(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.guard.require(request, auth.Access.CREATE)
    body = await read_body(request, schemas.RegisterHost, services.settings.max_body_bytes)
    try:
        spec = translate.host_spec(body)
    except pydantic.ValidationError as error:
        raise invalid_body(error) from None
    await _refuse_cached_duplicate(services, spec.ip_address)
    # The claim is what makes the check hold across replicas: one create of its name succeeds.
    claim = await claims.acquire(services.kube, spec.ip_address, _new_host_id(), grace=services.claim_grace_seconds)
    # The token is born here and leaves only in the answer: the Host keeps its digest.
    token = tokens.generate()
    try:
        created = await _create_host(services, spec, body.labels, claim["data"]["host"], tokens.digest(token))
    except Exception:
        await claims.release(services.kube, claim)
        raise
    name = created["metadata"]["name"]
    request[audit.HOST] = name
    try:
        claim = await claims.bind(services.kube, claim, created)
    except claims.Lost:
        # Judged stale and taken over by another registration while this one was slow: that one
        # holds the IP now, so this one is the duplicate, and takes its Host back (not the claim).
        await _undo_registration(services, name, None)
        raise errors.FacadeError(errors.DUPLICATE_IP, f"{spec.ip_address} is being registered concurrently") from None
    except Exception:
        await _undo_registration(services, name, claim)
        raise
    services.hosts.apply(created)
    data = {"host_id": name, "name": body.name, "status": host.HostState.OFFLINE.value, "agent_token": token}
    return envelope(data, REGISTERED, status=201)


async def _refuse_cached_duplicate(services: Services, ip: str) -> None:
    """The duplicate check of the cache, which also sees Hosts that carry no claim (applied with
    kubectl, or by an agent's --register). What it finds is confirmed with the API first: another
    replica may have deleted that host a moment ago, and its IP is free as soon as it did."""
    for existing in list(services.hosts.by("ip", ip)):
        name = existing["metadata"]["name"]
        try:
            current = await services.kube.read_host(name)
        except kubeapi.ApiException as error:
            if error.status != 404:
                raise
            services.hosts.remove(existing)
            continue
        services.hosts.apply(current)  # drops it if it is being deleted, re-indexes it if its IP changed
        moved = formats.same_ip_key(str((current.get("spec") or {}).get("ipAddress", ""))) != ip
        if not current["metadata"].get("deletionTimestamp") and not moved:
            raise errors.FacadeError(errors.DUPLICATE_IP, f"{ip} is registered as {name}")


def _new_host_id() -> str:
    return "host-" + "".join(secrets.choice(HOST_ID_ALPHABET) for _ in range(10))


async def _create_host(
    services: Services, spec: host.HostSpec, labels: dict[str, str], name: str, token_digest: bytes
) -> informer.Obj:
    """Create the Host, as `name` (the name its claim announces) unless that is taken."""
    for _ in range(HOST_ID_ATTEMPTS):
        try:
            return await services.kube.create_host(translate.host_manifest(name, spec, labels, token_digest))
        except kubeapi.ApiException as error:
            if error.status != 409:
                raise
        # Binding the claim records the name finally used; until then `claims.holds` checks the IP too.
        name = _new_host_id()
    raise errors.FacadeError(errors.CONFLICT, "no free host id was found")


async def _undo_registration(services: Services, name: str, claim: informer.Obj | None) -> None:
    """A registration that cannot finish takes its Host back rather than leave it half-registered.

    Its claim goes only once the API has taken the Host's deletion: while the Host may still
    live, the claim (bound to it, or naming it) must keep its IP taken.
    """
    try:
        services.hosts.remove(await services.kube.delete_host(name))
    except kubeapi.ApiException as error:
        services.hosts.remove({"metadata": {"name": name}})
        if error.status != 404:
            return
    except errors.FacadeError:
        services.hosts.remove({"metadata": {"name": name}})
        return
    if claim is not None:
        await claims.release(services.kube, claim)


async def list_hosts(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.guard.require(request, auth.Access.READ_LIST)
    settings = services.settings
    _check_query_string(request)
    page = _query_int(request, "page", 1, limits.MAX_PAGE)
    page_size = _query_int(request, "page_size", settings.page_size_default, settings.page_size_max)
    status = _query_choice(request, "status", [s.value for s in host.HostState])
    os_type = _query_choice(request, "os_type", [s.value for s in host.OSType])
    _ready(services)
    names = services.host_names(status, os_type)
    total = len(names)
    start = (page - 1) * page_size
    renewed = services.leases.renew_time
    page_hosts = ((name, services.hosts.get(name)) for name in names[start : start + page_size])
    data = {
        "items": [translate.host_summary(obj, renewed(name)) for name, obj in page_hosts if obj is not None],
        "pagination": {
            "page": page,
            "page_size": page_size,
            "total": total,
            "total_pages": math.ceil(total / page_size),
        },
    }
    return envelope(data)


async def get_host(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.guard.require(request, auth.Access.READ_GET)
    _ready(services)
    host_id = _host_id(request)
    return envelope(translate.host_detail(_host_or_404(services, host_id), services.leases.renew_time(host_id)))


async def update_host(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.guard.require(request, auth.Access.UPDATE)
    body = await read_body(request, schemas.UpdateHost, services.settings.max_body_bytes)
    host_id = _host_id(request)
    if body.labels is None:
        current = await _current_host_or_404(services, host_id)
    else:
        # Which labels to remove is read off the Host as the API has it: another replica may have
        # changed them a moment ago and this cache not have seen it yet.
        current = await _read_host_or_404(services, host_id)
    try:
        updated = await services.kube.patch_host(host_id, translate.update_patch(current, body))
    except kubeapi.ApiException as error:
        raise _not_found_or(error, host_id) from None
    services.hosts.apply(updated)
    return envelope(message=UPDATED)


async def delete_host(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.guard.require(request, auth.Access.DELETE)
    host_id = _host_id(request)
    current = await _current_host_or_404(services, host_id)
    try:
        result = await services.kube.delete_host(host_id)
    except kubeapi.ApiException as error:
        raise _not_found_or(error, host_id) from None
    if result.get("kind") == host.KIND:
        services.hosts.remove(result)
        current = result
    else:  # a Status: the object is gone and its last version unknown
        services.hosts.remove({"metadata": {"name": host_id}})
    # Frees the IP now; should this fail, the claim no longer holds (its Host is going) and the
    # next registration of the IP takes it over.
    await claims.release_for(services.kube, current)
    return web.Response(status=204)


async def list_gpus(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.guard.require(request, auth.Access.READ_LIST)
    _ready(services)
    host_id = _host_id(request)
    _host_or_404(services, host_id)
    gpus = sorted(services.gpus.by("host", host_id), key=lambda obj: (obj.get("spec") or {}).get("index", 0))
    return envelope({"items": [translate.gpu_item(obj) for obj in gpus]})


async def heartbeat(request: web.Request) -> web.Response:
    """Renew the host's Lease; write its status only when it says something new (heartbeats.py)."""
    services = request.app[SERVICES]
    # A deleted host's agent learns that its host is gone (404) even once its token was revoked
    # with it; the check needs a token, but no valid one, so host ids are all it can reveal.
    auth.bearer_token(request)
    host_id = _host_id(request)
    if services.synced() and services.hosts.get(host_id) is None:
        raise errors.FacadeError(errors.HOST_NOT_FOUND, host_id)
    await services.guard.require_agent(request, host_id)
    body = await read_body(request, schemas.Heartbeat, services.settings.max_body_bytes)
    current = await _current_host_or_404(services, host_id)  # deleted while the body was read: 404
    try:
        renewed = await services.leases.renew(current)
        now = formats.now()
        if not renewed or heartbeats.status_reason(current, body, now, services.settings.status_resync_seconds):
            updated = await services.kube.patch_host_status(
                host_id, translate.heartbeat_patch(body, formats.rfc3339(now))
            )
            services.hosts.apply(updated)
    except kubeapi.ApiException as error:
        raise _not_found_or(error, host_id) from None
    return _heartbeat_received()


#: The answer to every heartbeat, rendered once: the bytes `envelope(message=HEARTBEAT_RECEIVED)` renders.
_HEARTBEAT_BODY = json.dumps(
    {"code": 0, "message": HEARTBEAT_RECEIVED}, ensure_ascii=False, separators=(",", ":")
).encode("utf-8")


def _heartbeat_received() -> web.Response:
    return web.Response(body=_HEARTBEAT_BODY, content_type="application/json", charset="utf-8")


def _not_found_or(error: kubeapi.ApiException, host_id: str) -> Exception:
    if error.status == 404:
        return errors.FacadeError(errors.HOST_NOT_FOUND, host_id)
    if error.status == 409:
        return errors.FacadeError(errors.CONFLICT)
    return error


#: The handler of each operation of the OpenAPI document, by operationId.
HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "registerHost": register_host,
    "listHosts": list_hosts,
    "getHost": get_host,
    "updateHost": update_host,
    "deleteHost": delete_host,
    "listHostGpus": list_gpus,
    "heartbeat": heartbeat,
}
_METHODS = ("get", "put", "post", "delete", "patch")


def add_routes(app: web.Application, document: dict[str, Any]) -> None:
    """Route every operation of the OpenAPI document to its handler: the document is the one
    route table, so a path cannot be served without being documented, nor documented unserved."""
    # aiohttp tries the routes under one prefix in the order they were added: the heartbeat,
    # nearly every request of a fleet, is added first (its path cannot match another route's).
    paths = sorted(document["paths"].items(), key=lambda entry: not entry[0].endswith("/heartbeat"))
    for path, item in paths:
        for method in _METHODS:
            if method in item:
                handler = HANDLERS[item[method]["operationId"]]  # KeyError: an operation without a handler
                app.router.add_route(method.upper(), path, handler)


def host_indexers() -> dict[str, informer.Indexer]:
    """Hosts by normalised IP address (for the duplicate check) and by agent-token digest."""
    name, by_digest = auth.TOKEN_INDEX
    return {
        "ip": lambda obj: [formats.same_ip_key(str((obj.get("spec") or {}).get("ipAddress", "")))],
        name: by_digest,
    }


def gpu_indexers() -> dict[str, informer.Indexer]:
    """GPUs by the host they belong to."""

    def host_of(obj: informer.Obj) -> list[str]:
        label = (obj["metadata"].get("labels") or {}).get(meta.HOST_LABEL)
        return [label] if label else []

    return {"host": host_of}
