"""The emulated API server: one object that answers Kubernetes API requests from memory.

It began as a subclass of kmock's ``KubernetesEmulator``; kmock 0.8 records every request and
matches each new one against all recorded ones, guesses patch types from body shapes and lacks
resourceVersions, conflicts, selectors and garbage collection, so every part of it ended up
overridden and the base class was dropped. Each request costs the same however many came before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import aiohttp.web

from . import (
    admission,
    applying,
    discovery,
    listing,
    managedfields,
    objects,
    patching,
    routing,
    satokens,
    selectors,
    tables,
    validation,
    watching,
)
from .auth import AccessTable
from .errors import ApiError, already_exists, bad_request, conflict, invalid, not_found
from .faults import FaultPredicate, Faults, RequestInfo, RequestObserver, RequestRecord
from .lifecycle import Lifecycle
from .resources import BUILTINS, CRDS, NAMESPACES, ResourceDef, crd_problems, established, from_crd
from .store import Collection, ObjectKey, Store

JsonObj = dict[str, Any]
T = TypeVar("T")
logger = logging.getLogger(__name__)
_FORCE_FORBIDDEN = "Forbidden: may not be specified for non-apply patch"
_OPTIONS = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}
_DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json")


class Emulator:
    """Serves the Kubernetes API from memory; fault hooks and auth tables for tests.

    ``history`` is how many past versions watches can resume from before answering 410.
    """

    def __init__(self, *, history: int = 10_000) -> None:
        self.history = history
        self.store = Store(history)
        self.access = AccessTable()
        self.faults = Faults()
        self.observers: list[RequestObserver] = []
        """Called on the serving loop with a :class:`RequestRecord` of every answered request."""
        self._defs: dict[tuple[str, str, str], ResourceDef] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._life = Lifecycle(self.store, self._register_crd, self._unregister_crd)
        self._admission = admission.Admission(self.store)  # CEL: CRD rules, ValidatingAdmissionPolicies
        self.faults.on_outage = self.drop_watches
        for resource in BUILTINS:
            self._register(resource)
        for name in _DEFAULT_NAMESPACES:
            self.create_object(NAMESPACES, None, {"metadata": {"name": name}})

    # ----- test-facing helpers ------------------------------------------------------------------------

    def __repr__(self) -> str:
        count = sum(len(coll.objects) for coll in self.store.collections.values())
        return f"<Emulator: {len(self._defs)} resources, {count} objects, resourceVersion {self.store.rv}>"

    def add_user(
        self, token: str, username: str, groups: Iterable[str] = (), extra: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        """A bearer token of ``username``; ``extra`` is what admission policies see in ``request.userInfo.extra``."""
        self.access.add_user(token, username, tuple(groups), {k: tuple(v) for k, v in (extra or {}).items()})

    def mint_token(
        self, namespace: str, service_account: str, *, node: str | None = None, pod: str | None = None
    ) -> str:
        """A new ServiceAccount token; with ``node``, bound to a pod on that node (the node-name claim)."""
        return satokens.mint(self.access, namespace, service_account, node=node, pod=pod)

    def allow(self, subject: str, verb: str = "*", group: str = "*", resource: str = "*") -> None:
        self.access.allow(subject, verb, group, resource)

    def fail_next(self, n: int = 1, status: int = 503, predicate: FaultPredicate | None = None) -> None:
        """The next ``n`` requests (matching ``predicate`` if given) answer ``status``."""
        self.faults.fail_next(n, status, predicate)

    def unavailable(self, mode: str = "error") -> contextlib.AbstractContextManager[None]:
        """A block during which every request answers 503 (``error``) or hangs (``hang``)."""
        return self.faults.unavailable(mode)

    def observe(self, observer: RequestObserver) -> Callable[[], None]:
        """Call ``observer`` for every request from now on (on the serving loop: keep it quick);
        returns the function that stops it."""
        self.observers.append(observer)
        return lambda: self.observers.remove(observer) if observer in self.observers else None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the serving loop, so that other threads' calls are run on it."""
        self._loop = loop

    def run_on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the serving loop and wait for it (state is not thread-safe)."""
        loop = self._loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is None or not loop.is_running() or current is loop:
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)

    def compact(self) -> None:
        """Forget the watch history: resuming from any version seen so far answers 410."""
        self.run_on_loop(self.store.compact)

    def drop_watches(self) -> None:
        """End every open watch stream, as an API server restart does."""
        self.run_on_loop(self.store.drop_watches)

    def find(self, group: str, plural: str, name: str, namespace: str | None = None) -> JsonObj | None:
        """The stored object, or None (for assertions; do not mutate it)."""
        coll = self.store.collections.get((group, plural))
        return coll.objects.get((namespace or "", name)) if coll is not None else None

    # ----- registration -----------------------------------------------------------------------------

    def _register(self, resource: ResourceDef) -> None:
        self._defs[(resource.group, resource.version, resource.plural)] = resource
        coll = self.store.collection(resource)
        coll.resource = resource if resource.version == coll.resource.version else coll.resource

    def _register_crd(self, crd: JsonObj) -> None:
        for resource in from_crd(crd):
            self._register(resource)

    def _unregister_crd(self, crd: JsonObj) -> None:
        for resource in from_crd(crd):
            self._defs.pop((resource.group, resource.version, resource.plural), None)
        spec = crd.get("spec", {})
        coll = self.store.collections.pop((spec.get("group", ""), spec.get("names", {}).get("plural", "")), None)
        if coll is not None:
            for key in list(coll.objects):
                self._life.remove(coll, key)
            coll.close_watchers()

    # ----- HTTP entry point -------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Answer one request (the aiohttp handler of every path)."""
        if not self.observers:
            return await self._answer(raw_request)
        status = 499  # nginx's "client closed request": the handler was cancelled before answering
        try:
            response = await self._answer(raw_request)
            status = response.status
            return response
        finally:
            self._notify(raw_request, status)

    def _notify(self, request: aiohttp.web.BaseRequest, status: int) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = None
        if scheme.lower() == "bearer" and token:
            review = self.access.token_review({"spec": {"token": token}})["status"]
            user = review["user"]["username"] if review.get("authenticated") else None
        record = RequestRecord(request.method, request.path, request.query, user, status, time.monotonic())
        for observer in list(self.observers):
            try:
                observer(record)
            except Exception:
                logger.exception("request observer %r failed", observer)

    async def _answer(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            info = RequestInfo(raw_request.method, raw_request.path, raw_request.query)
            # The flag is flipped from the test's thread, which cannot set an asyncio.Event here.
            while self.faults.outage == "hang":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            fault = self.faults.check(info)
            if fault is not None:
                raise fault
            return await self._dispatch(raw_request)
        except ApiError as error:
            return _json(error.body(), error.code)
        except Exception as exc:
            logger.exception("emulator failed on %s %s", raw_request.method, raw_request.path)
            return _json(ApiError(500, "InternalError", f"emulator error: {exc!r}").body(), 500)

    async def _dispatch(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        user = admission.user_of(self.access, request.headers.get("Authorization", ""))
        users, groups = request.headers.getall("Impersonate-User", []), request.headers.getall("Impersonate-Group", [])
        admission.CURRENT_USER.set(admission.impersonated(self.access, user, users, groups))
        route = routing.parse(request.path)
        method = request.method
        if route is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if route.endpoint != "resource":
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {request.path}")
            return self._discovery(route)
        resource = self._defs.get((route.group, route.version, route.plural))
        if resource is None or (route.namespace is not None and not resource.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if route.subresource not in (None, "status") or (
            route.subresource == "status" and not resource.status_subresource
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        coll = self.store.collection(resource)
        query = request.query
        if method == "GET" and route.name is None:
            predicate = selectors.combine(
                selectors.label_selector(query.get("labelSelector")),
                selectors.field_selector(query.get("fieldSelector"), resource.field_labels),
            )
            if watching.query_flag(query, "watch"):
                rows = tables.WatchRows(resource, query.get("includeObject"))
                render = rows.line if tables.wanted(request.headers.get("Accept", "")) else None
                return await watching.stream(
                    request, coll, route.namespace, predicate, query, lambda: self.store.rv, render
                )
            found = listing.page(coll, resource, route.namespace, predicate, query, self.store.rv)
            if tables.wanted(request.headers.get("Accept", "")):
                found = tables.table(resource, found["items"], found["metadata"], query.get("includeObject"))
            return _json(found)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = await self._body(request, content_type) if method in ("POST", "PUT", "PATCH") else None
        manager = managedfields.manager_of(query, request.headers.get("User-Agent", ""))
        if method in ("POST", "PUT", "PATCH"):
            managedfields.check_manager(query, _OPTIONS[method])
        if method == "POST" and route.name is None:
            return self._create(resource, route.namespace, body, query, manager)
        if route.name is None:
            if method == "DELETE":
                return _json(self._delete_collection(coll, resource, route.namespace, query))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        key = (route.namespace or "", route.name)
        if method == "GET":
            obj = listing.present(resource, self._life.get(coll, key))
            if tables.wanted(request.headers.get("Accept", "")):
                rv = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                return _json(tables.table(resource, [obj], rv, query.get("includeObject")))
            return _json(obj)
        if method == "PUT":
            return _json(self._write(coll, resource, key, route.subresource, body, query, None, manager))
        if method == "PATCH" and content_type == patching.APPLY:
            return self._apply(coll, resource, key, route.subresource, body, query)
        if method == "PATCH":
            if "force" in query:
                cause = {"reason": "FieldValueForbidden", "field": "force", "message": _FORCE_FORBIDDEN}
                raise invalid("PatchOptions.meta.k8s.io", "", [cause])
            return _json(self._write(coll, resource, key, route.subresource, body, query, content_type, manager))
        if method == "DELETE":
            options = await self._delete_options(request)
            self._check_delete(resource, coll, key)
            return _json(listing.present(resource, self._life.delete(coll, key, options)))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    async def _body(self, request: aiohttp.web.BaseRequest, content_type: str) -> Any:
        raw = await request.read()
        if content_type == patching.APPLY:
            return applying.parse(raw)
        try:
            return json.loads(raw) if raw else {}
        except (ValueError, RecursionError) as exc:
            raise bad_request(f"the request body is not JSON: {exc}") from None

    async def _delete_options(self, request: aiohttp.web.BaseRequest) -> JsonObj:
        raw = await request.read()
        try:
            options = json.loads(raw) if raw else {}
        except (ValueError, RecursionError) as exc:
            raise bad_request(f"the request body is not JSON: {exc}") from None
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be a JSON object")
        return options

    def _discovery(self, route: routing.Route) -> aiohttp.web.Response:
        doc: JsonObj | None
        if route.endpoint == "version":
            doc = discovery.VERSION_INFO
        elif route.endpoint == "health":
            return aiohttp.web.Response(text="ok")
        elif route.endpoint == "openapi":
            doc = discovery.openapi(self._defs.values(), route.group)
        elif route.endpoint == "api":
            doc = discovery.core_versions()
        elif route.endpoint == "apis":
            doc = discovery.group_list(self._defs.values())
        elif route.endpoint == "group":
            doc = discovery.group(self._defs.values(), route.group)
        else:
            doc = discovery.resource_list(self._defs.values(), route.group, route.version)
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    # ----- writes ---------------------------------------------------------------------------------------

    def create_object(
        self,
        resource: ResourceDef,
        namespace: str | None,
        body: JsonObj,
        dry_run: bool = False,
        strict: bool = False,
        manager: str | None = None,
        applied: list[JsonObj] | None = None,
    ) -> JsonObj:
        """Create as a POST does (also used by :meth:`EmulatedCluster.apply_crd`).

        ``manager`` owns the new fields (an Update entry); ``applied`` is the managedFields of a
        server-side apply that creates the object instead.
        """
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        objects.check_metadata(body)
        meta = body.get("metadata") or {}
        if resource.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if ("", namespace) not in self.store.collection(NAMESPACES).objects:
                raise not_found("namespaces", namespace)
        name = meta.get("name") or (objects.generate_name(meta["generateName"]) if meta.get("generateName") else "")
        if not name:
            raise invalid(
                resource.kind_group,
                "",
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "metadata.name",
                        "message": "Required value: name or generateName is required",
                    }
                ],
            )
        problem = objects.name_problem(resource, name)
        if problem:
            raise invalid(
                resource.kind_group,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.name",
                        "message": f'Invalid value: "{name}": {problem}',
                    }
                ],
            )
        coll = self.store.collection(resource)
        key = (namespace or "", name)
        if key in coll.objects:
            raise already_exists(resource.qualified, name)
        obj = self._admit(resource, objects.new_object(resource, body, namespace, name), name, strict)
        if applied is not None:
            obj = managedfields.with_entries(obj, applied)
        elif manager is not None:
            obj = managedfields.record_update(resource, None, obj, manager, None)
        self._admission.check(admission.Attributes("CREATE", resource, None, namespace, name, obj, None, dry_run))
        return obj if dry_run else self._life.commit(coll, key, obj, None, "ADDED")

    def _create(
        self, resource: ResourceDef, namespace: str | None, body: Any, query: Mapping[str, str], manager: str
    ) -> aiohttp.web.Response:
        if not resource.stored and not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        if resource.plural == "tokenreviews":
            return _json(self.access.token_review(body), 201)
        if resource.plural == "subjectaccessreviews":
            return _json(self.access.access_review(body), 201)
        if resource.plural == "selfsubjectaccessreviews":
            user = admission.CURRENT_USER.get()
            return _json(self.access.self_access_review(body, user.username, user.groups), 201)
        obj = self.create_object(
            resource,
            namespace,
            body,
            dry_run=bool(query.get("dryRun")),
            strict=query.get("fieldValidation") == "Strict",
            manager=manager,
        )
        return _json(listing.present(resource, obj), 201)

    def _apply(
        self,
        coll: Collection,
        resource: ResourceDef,
        key: ObjectKey,
        subresource: str | None,
        body: Any,
        query: Mapping[str, str],
    ) -> aiohttp.web.Response:
        """Server-side apply: create the object if missing, else merge into it (see applying.py)."""
        if not resource.stored:
            raise ApiError(405, "MethodNotAllowed", f"{resource.qualified} can only be created")
        applying.check_request(resource, key[1], body, query)
        manager = query["fieldManager"]
        if key in coll.objects:
            return _json(self._write(coll, resource, key, subresource, body, query, patching.APPLY, manager))
        if subresource is not None:
            raise not_found(resource.qualified, key[1])
        obj = applying.apply(resource, None, body, manager, watching.query_flag(query, "force"), None)
        obj = {**obj, "metadata": {**obj["metadata"], "name": key[1]}}
        created = self.create_object(
            resource,
            key[0] or None,
            obj,
            dry_run=bool(query.get("dryRun")),
            strict=query.get("fieldValidation") == "Strict",
            applied=obj["metadata"].get("managedFields") or [],
        )
        return _json(listing.present(resource, created), 201)

    def _admit(self, resource: ResourceDef, obj: JsonObj, name: str, strict: bool = False) -> JsonObj:
        """Prune, default and validate a custom object; establish a CRD."""
        if resource.schema is not None:
            dropped: list[str] = []
            obj = validation.prune_and_default(obj, resource.schema, dropped)
            if strict and dropped:
                unknown = ", ".join(f'unknown field "{path}"' for path in dropped)
                raise bad_request(
                    f'{resource.kind} in version "{resource.version}" cannot be handled as a '
                    f"{resource.kind}: strict decoding error: {unknown}"
                )
            causes = validation.validate(obj, resource.schema)
            if causes:
                raise invalid(resource.kind_group, name, causes)
        if resource == NAMESPACES and "phase" not in (obj.get("status") or {}):
            obj = {**obj, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        if resource == CRDS:
            causes = crd_problems(obj)
            if causes:
                raise invalid(resource.kind_group, name, causes)
            obj = established(obj)
        return obj

    def _patched(self, resource: ResourceDef, old: JsonObj, body: Any, patch_type: str) -> JsonObj:
        if patch_type == patching.JSON_PATCH:
            result = patching.json_patch(old, body)
        elif patch_type == patching.MERGE or (patch_type == patching.STRATEGIC and resource in BUILTINS):
            if not isinstance(body, dict):
                raise bad_request("a merge patch must be a JSON object")
            result = patching.merge_patch(old, body)
        else:
            accepted = [patching.JSON_PATCH, patching.MERGE, patching.APPLY]
            if resource in BUILTINS:
                accepted.insert(2, patching.STRATEGIC)
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(accepted),
            )
        if not isinstance(result, dict):
            raise bad_request("the patch did not produce an object")
        return result

    def _write(
        self,
        coll: Collection,
        resource: ResourceDef,
        key: ObjectKey,
        subresource: str | None,
        body: Any,
        query: Mapping[str, str],
        patch_type: str | None,
        manager: str | None = None,
    ) -> JsonObj:
        """PUT (``patch_type`` None), PATCH or server-side apply of an object or of its status."""
        if not resource.stored:
            raise ApiError(405, "MethodNotAllowed", f"{resource.qualified} can only be created")
        old = self._life.get(coll, key)
        if patch_type is None:
            if not isinstance(body, dict):
                raise bad_request("the request body must be a JSON object")
            objects.check_metadata(body)
            sent_name = (body.get("metadata") or {}).get("name")
            if sent_name and sent_name != key[1]:
                raise bad_request(f"the name of the object ({sent_name}) does not match the name on the URL ({key[1]})")
            missing = objects.missing_version(resource, body)
            if missing is not None:
                raise invalid(resource.kind_group, key[1], [missing])
            candidate = body
        elif patch_type == patching.APPLY:
            force = watching.query_flag(query, "force")
            candidate = applying.apply(resource, old, body, manager or "", force, subresource)
        else:
            candidate = self._patched(resource, old, body, patch_type)
        objects.check_metadata(candidate)
        if objects.rv_conflicts(old, body if patch_type == patching.APPLY else candidate):
            raise conflict(resource.qualified, key[1])
        strict = query.get("fieldValidation") == "Strict"
        new = self._admit(resource, objects.merged_update(resource, old, candidate, subresource), key[1], strict)
        forbidden = objects.new_finalizers_while_deleting(old, new)
        if forbidden is not None:
            raise invalid(resource.kind_group, key[1], [forbidden])
        sent_fields = (candidate.get("metadata") or {}).get("managedFields")
        if patch_type == patching.APPLY:
            new = managedfields.with_entries(new, sent_fields or [])
        else:
            new = managedfields.record_update(resource, old, new, manager, subresource, sent_fields)
        dry_run = bool(query.get("dryRun"))
        self._admission.check(
            admission.Attributes("UPDATE", resource, subresource, key[0] or None, key[1], new, old, dry_run)
        )
        if new == old or query.get("dryRun"):
            return listing.present(resource, new)
        if objects.is_released(new):
            return listing.present(resource, self._life.remove(coll, key, new))
        return listing.present(resource, self._life.commit(coll, key, new, old, "MODIFIED"))

    def replace_object(self, resource: ResourceDef, namespace: str | None, name: str, body: JsonObj) -> JsonObj:
        """Replace as a PUT does (unconditionally unless the body carries a resourceVersion)."""
        coll = self.store.collection(resource)
        return self._write(coll, resource, (namespace or "", name), None, body, {}, patch_type=None)

    def _delete_collection(
        self, coll: Collection, resource: ResourceDef, namespace: str | None, query: Mapping[str, str]
    ) -> JsonObj:
        predicate = selectors.combine(
            selectors.label_selector(query.get("labelSelector")), selectors.field_selector(query.get("fieldSelector"))
        )
        doomed = [
            key
            for key, obj in sorted(coll.objects.items())
            if (namespace is None or key[0] == namespace) and (predicate is None or predicate(obj))
        ]
        for key in doomed:
            self._check_delete(resource, coll, key)
        items = [listing.present(resource, self._life.delete(coll, key, {})) for key in doomed]
        return {
            "apiVersion": resource.api_version,
            "kind": f"{resource.kind}List",
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }

    def _check_delete(self, resource: ResourceDef, coll: Collection, key: ObjectKey) -> None:
        """Admission of a DELETE: the policies see the object as ``oldObject``."""
        old = self._life.get(coll, key)
        self._admission.check(admission.Attributes("DELETE", resource, None, key[0] or None, key[1], None, old))
