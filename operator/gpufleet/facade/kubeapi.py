"""The facade's calls to the Kubernetes API, each bounded by the configured timeout.

A caller must get an answer quickly even when the API server is down or hanging, so every call
here either returns within `api_timeout_seconds` or becomes a 503 in the envelope. API errors a
handler can act on (404 Not Found, 409 Already Exists or Conflict) are raised as
`kubernetes_asyncio` ApiExceptions for it to translate; the API's own validation refusing an
object becomes a 422 carrying the API's message.

Every call carries a `User-Agent` naming the REST caller it is made for and the request's id
(`gpufleet-facade (for alice; request 5f0c...)`): the Kubernetes audit log records the user agent
of each request, so its entries for the facade's ServiceAccount show who asked for each write,
without the facade needing the power to impersonate anyone (docs/facade.md, "Audit").
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import orjson
import yarl
from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import informer
from gpufleet.api import gpu, host, hostlease, meta
from gpufleet.facade import errors, http1

T = TypeVar("T")
Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"

ApiException = exceptions.ApiException

logger = logging.getLogger(__name__)

USER_AGENT = "gpufleet-facade"
#: The REST caller the facade acts for in this request (set once authenticated), and the request's id.
ACTING_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("acting_for", default=None)
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
#: Characters kept as they are in the user agent; the rest are percent-encoded (no `(`, `)`, `;`, spaces).
_SAFE = "@:/._-+=~!$&'*,"


def user_agent() -> str:
    """The `User-Agent` of API calls made now: the facade, and for whom and which request, if any."""
    caller, request_id = ACTING_FOR.get(), REQUEST_ID.get()
    details = []
    if caller is not None:
        details.append(f"for {urllib.parse.quote(caller, safe=_SAFE)}")
    if request_id is not None:
        details.append(f"request {request_id}")
    return f"{USER_AGENT} ({'; '.join(details)})" if details else USER_AGENT


def api_message(exc: exceptions.ApiException) -> str:
    """The message of the API's Status body, or its reason."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except ValueError:
        message = None
    return str(message or exc.reason or f"HTTP {exc.status}")


class Kubernetes:
    """Hosts, GPUs, host Leases, IP claims and auth reviews, through one API client (no Secrets: see `auth`)."""

    # Typed as Any: dict bodies and `_content_type`/`_preload_content` are sent as is, which the
    # generated signatures (typed for model objects) do not describe.
    objects: Any
    core: Any
    coordination: Any
    _authn: Any
    _authz: Any

    def __init__(self, *, timeout: float, namespace: str, lease_namespace: str = hostlease.NAMESPACE) -> None:
        self.timeout = timeout
        self.namespace = namespace
        self.lease_namespace = lease_namespace
        self._audience_warned: float | None = None
        self._api: client.ApiClient | None = None
        self._renewals: http1.Pool | None = None
        self._lease_path = hostlease.path(urllib.parse.quote(lease_namespace, safe=""), "")
        #: The renewals' headers but the user agent, for the credentials they were made with.
        self._renewal_headers: tuple[dict[str, str], http1.Headers] | None = None

    def connect(self, api: client.ApiClient) -> None:
        """Use this API client from now on (the app connects at start-up, once the kubeconfig is read)."""
        self.objects = _WithUserAgent(client.CustomObjectsApi(api))
        self.core = _WithUserAgent(client.CoreV1Api(api))
        self.coordination = _WithUserAgent(client.CoordinationV1Api(api))
        self._authn = _WithUserAgent(client.AuthenticationV1Api(api))
        self._authz = _WithUserAgent(client.AuthorizationV1Api(api))
        # The client's default headers win over a call's own, and each call sets its own user agent.
        api.default_headers.pop("User-Agent", None)
        _stop_consulting_the_environment(api)
        self._api = api
        self._renewals = _renewal_pool(api)

    def close(self) -> None:
        """Close the renewals' connections (the API client closes its own)."""
        if self._renewals is not None:
            self._renewals.close()

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError:
            raise errors.FacadeError(errors.KUBERNETES_UNAVAILABLE, f"no answer within {self.timeout:g}s") from None
        except (aiohttp.ClientError, OSError):
            raise errors.FacadeError(errors.KUBERNETES_UNAVAILABLE, "unreachable") from None
        except exceptions.ApiException as exc:
            if exc.status == 429 or exc.status >= 500:
                raise errors.FacadeError(errors.KUBERNETES_UNAVAILABLE, api_message(exc)) from None
            if exc.status == 422:
                raise errors.FacadeError(errors.REJECTED, api_message(exc)) from None
            raise

    async def _json(self, call: Awaitable[aiohttp.ClientResponse]) -> Obj:
        """`_call` for a request made with `_preload_content=False`: the body as JSON, untouched.

        Raw, because the generated models would turn timestamps into datetimes and drop fields;
        the client raises for error statuses only when it preloads, so this does it instead.
        """

        async def fetch() -> Obj:
            response = await call
            async with response:
                return _object_or_raise(response.status, response.reason, await response.read())

        return await self._call(fetch())

    # ----- lists for the informers (raw responses, not bounded: informers bound them themselves) -------

    def list_hosts(self, **kwargs: Any) -> Awaitable[aiohttp.ClientResponse]:
        response: Awaitable[aiohttp.ClientResponse] = self.objects.list_cluster_custom_object(
            meta.GROUP, meta.VERSION, host.PLURAL, **kwargs
        )
        return response

    def list_gpus(self, **kwargs: Any) -> Awaitable[aiohttp.ClientResponse]:
        response: Awaitable[aiohttp.ClientResponse] = self.objects.list_cluster_custom_object(
            meta.GROUP, meta.VERSION, gpu.PLURAL, **kwargs
        )
        return response

    def list_leases(self, **kwargs: Any) -> Awaitable[aiohttp.ClientResponse]:
        """The host Leases of `lease_namespace` (the heartbeats of every host, not the operator's Lease)."""
        response: Awaitable[aiohttp.ClientResponse] = self.coordination.list_namespaced_lease(
            self.lease_namespace, **kwargs
        )
        return response

    # ----- writes ----------------------------------------------------------------------------------------

    async def create_host(self, body: Obj) -> Obj:
        result: Obj = await self._call(
            self.objects.create_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL, body)
        )
        return result

    async def patch_host(self, name: str, patch: Obj) -> Obj:
        result: Obj = await self._call(
            self.objects.patch_cluster_custom_object(
                meta.GROUP, meta.VERSION, host.PLURAL, name, patch, _content_type=MERGE_PATCH
            )
        )
        return result

    async def patch_host_status(self, name: str, patch: Obj) -> Obj:
        result: Obj = await self._call(
            self.objects.patch_cluster_custom_object_status(
                meta.GROUP, meta.VERSION, host.PLURAL, name, patch, _content_type=MERGE_PATCH
            )
        )
        return result

    async def delete_host(self, name: str) -> Obj:
        result: Obj = await self._call(
            self.objects.delete_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL, name)
        )
        return result

    async def read_host(self, name: str) -> Obj:
        """A Host as the API has it now (not as the cache has it)."""
        result: Obj = await self._call(
            self.objects.get_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL, name)
        )
        return result

    # ----- host Leases (heartbeats): raw JSON in and out, as the hot path of every heartbeat --------------

    async def patch_lease(self, name: str, patch: Obj) -> Obj:
        """Merge-patch a host Lease: a renewal is one small write, with no read and no conflict.

        The hot path of every heartbeat, so it goes through `http1` (same server, TLS settings and
        credentials, which `update_params_for_auth` refreshes as the generated calls do) rather
        than the generated call on aiohttp's client, which costs three times the CPU. Where the
        API client goes through a proxy or names a TLS server, the generated call is made instead.
        """
        if self._renewals is None or self._api is None:
            return await self._json(
                self.coordination.patch_namespaced_lease(
                    name, self.lease_namespace, patch, _content_type=MERGE_PATCH, _preload_content=False
                )
            )
        headers = await self._lease_headers(self._api) + http1.Headers({"User-Agent": user_agent()})
        path = self._lease_path + urllib.parse.quote(name, safe="")
        return await self._call(self._renew(path, headers, orjson.dumps(patch)))

    async def _lease_headers(self, api: client.ApiClient) -> http1.Headers:
        """The renewals' headers but the user agent: rendered again only when the credentials change.

        `update_params_for_auth` is asked every time, as the generated calls do, since it is what
        refreshes credentials that expire (a projected ServiceAccount token, an exec plugin's).
        """
        credentials: dict[str, str] = {}
        await api.update_params_for_auth(credentials, [], ["BearerToken"])
        if self._renewal_headers is None or self._renewal_headers[0] != credentials:
            rendered = http1.Headers({**api.default_headers, **_LEASE_PATCH_HEADERS, **credentials})
            self._renewal_headers = (credentials, rendered)
        return self._renewal_headers[1]

    async def _renew(self, path: str, headers: http1.Headers, data: bytes) -> Obj:
        assert self._renewals is not None
        response = await self._renewals.request("PATCH", path, headers, data)
        return _object_or_raise(response.status, response.reason, response.body)

    async def create_lease(self, body: Obj) -> Obj:
        return await self._json(
            self.coordination.create_namespaced_lease(self.lease_namespace, body, _preload_content=False)
        )

    # ----- IP claims (claims.py): ConfigMaps of the namespace ----------------------------------------------

    async def create_configmap(self, body: Obj) -> Obj:
        return await self._json(self.core.create_namespaced_config_map(self.namespace, body, _preload_content=False))

    async def read_configmap(self, name: str) -> Obj:
        return await self._json(self.core.read_namespaced_config_map(name, self.namespace, _preload_content=False))

    async def patch_configmap(self, name: str, patch: Obj) -> Obj:
        return await self._json(
            self.core.patch_namespaced_config_map(
                name, self.namespace, patch, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    async def delete_configmap(self, name: str, *, uid: str, resource_version: str | None = None) -> None:
        """Delete only if the ConfigMap still has this uid (and resourceVersion, if given): else 409."""
        preconditions = {"uid": uid, **({"resourceVersion": resource_version} if resource_version else {})}
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
        await self._json(
            self.core.delete_namespaced_config_map(name, self.namespace, body=options, _preload_content=False)
        )

    # ----- reviews -------------------------------------------------------------------------------------------

    async def token_review(self, token: str, *, audience: str, implicit: bool = False) -> Obj | None:
        """The user a token authenticates as (username, uid, groups, extra) for `audience`, or None.

        The audience is asked for in `spec.audiences` and must come back in `status.audiences`.
        The API's documented exception: an empty `status.audiences` means the API server's own
        audience, accepted only when that is the one asked for (`implicit`). API servers fill
        the field whenever audiences are asked for; only authenticators that know nothing of
        audiences leave it empty.
        """
        spec = {"token": token, "audiences": [audience]}
        review = await self._call(
            self._authn.create_token_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
            )
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        audiences = status.audiences or []
        if audience not in audiences and (audiences or not implicit):
            self._warn_audience(audience, audiences)
            return None
        user = status.user
        return {"user": user.username, "uid": user.uid, "groups": user.groups or [], "extra": user.extra or {}}

    def _warn_audience(self, audience: str, audiences: list[str]) -> None:
        now = time.monotonic()
        if self._audience_warned is not None and now - self._audience_warned < 60:
            return  # once a minute at most: a caller may retry in a loop
        self._audience_warned = now
        logger.warning(
            "a Kubernetes token was refused: the TokenReview did not confirm the audience %r (it answered %s); "
            "if callers' tokens are for another audience, set GPUFLEET_AUTH_AUDIENCE",
            audience,
            audiences or "none",
        )

    async def access_review(self, user: Obj, *, verb: str, group: str, resource: str) -> bool:
        """Whether RBAC lets this user `verb` the `group` `resource`."""
        spec = {
            **{k: v for k, v in user.items() if v},
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource},
        }
        review = await self._call(
            self._authz.create_subject_access_review(
                {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
            )
        )
        return bool(review.status is not None and review.status.allowed)


_LEASE_PATCH_HEADERS = {"Content-Type": MERGE_PATCH, "Accept": "application/json"}


class _WithUserAgent:
    """An API object of the client whose every call carries this moment's `user_agent()`."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("_headers", {"User-Agent": user_agent()})
            return method(*args, **kwargs)

        return call


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NETRC")


def _object_or_raise(status: int, reason: str | None, body: bytes) -> Obj:
    """The object an API answer carries, or the ApiException its status means (the Status body kept for api_message)."""
    if not 200 <= status <= 299:
        error = exceptions.ApiException(status=status, reason=reason)
        error.body = body
        raise error
    result: Obj = informer.parse_json(body)
    return result


def _proxy_variables_set() -> bool:
    """Whether a proxy variable is set, which the API client's session (`trust_env=True`) would heed."""
    return any(os.environ.get(name) for name in _PROXY_VARIABLES)


def _renewal_pool(api: client.ApiClient) -> http1.Pool | None:
    """A pool for Lease renewals to the API client's server, or None where that needs a proxy or a TLS server name."""
    config = api.configuration
    if config.proxy or config.tls_server_name or _proxy_variables_set():
        return None
    url = yarl.URL(str(config.host))
    tls = None
    if url.scheme == "https":
        tls = http1.tls_context(
            ca_file=config.ssl_ca_cert,
            cert_file=config.cert_file,
            key_file=config.key_file,
            verify=config.verify_ssl,
            strict=not config.disable_strict_ssl_verification,
        )
    return http1.Pool(str(config.host), tls, size=max(1, int(config.connection_pool_maxsize or 1)))


def _stop_consulting_the_environment(api: client.ApiClient) -> None:
    """Skip aiohttp's per-request netrc and proxy-variable lookups when no proxy is configured.

    kubernetes_asyncio opens its session with `trust_env=True`, which makes every request hop to
    a thread twice (netrc, then proxy variables): about 1 ms added to each heartbeat. Without
    proxy variables those lookups find nothing, so they are skipped.
    """
    session = getattr(api.rest_client, "pool_manager", None)
    if isinstance(session, aiohttp.ClientSession) and not _proxy_variables_set():
        session._trust_env = False
