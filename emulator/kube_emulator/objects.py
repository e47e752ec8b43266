"""Server-side object semantics shared by create, update, patch and delete.

These are the rules an apiserver applies to every write: server-owned metadata
(uid, creationTimestamp, generation, resourceVersion) cannot be set by clients,
``generation`` moves only when the desired state changes, and a resource with a
status subresource keeps ``.status`` and the rest of the object apart.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import uuid
from typing import Any

from .errors import bad_request
from .resources import ResourceDef

JsonObj = dict[str, Any]

_SERVER_OWNED = (
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_name(prefix: str) -> str:
    return prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))


def name_problem(resource: ResourceDef, name: str) -> str | None:
    """Why a name is invalid for this resource, worded like the apiserver, or None."""
    if resource.plural == "namespaces":
        if len(name) > 63 or not _LABEL.match(name):
            return "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
        return None
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character"
        )
    return None


def _desired(resource: ResourceDef, obj: JsonObj) -> JsonObj:
    skipped = {"metadata", "apiVersion", "kind"} | ({"status"} if resource.status_subresource else set())
    return {key: value for key, value in obj.items() if key not in skipped}


def new_object(resource: ResourceDef, body: JsonObj, namespace: str | None, name: str) -> JsonObj:
    """The stored form of a created object (resourceVersion is set when committed)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_OWNED}
    meta.pop("managedFields", None)
    meta["name"] = name
    if resource.namespaced:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    meta["generation"] = 1
    obj = {key: value for key, value in body.items() if key not in ("metadata", "apiVersion", "kind")}
    if resource.status_subresource:
        obj.pop("status", None)
    return {"apiVersion": resource.api_version, "kind": resource.kind, "metadata": meta, **obj}


def merged_update(resource: ResourceDef, old: JsonObj, body: JsonObj, subresource: str | None) -> JsonObj:
    """Combine a client's full new state with what the client may not change."""
    old_meta = old["metadata"]
    if subresource == "status":
        result = {key: value for key, value in old.items() if key != "status"}
        if "status" in body:
            result["status"] = body["status"]
        return result
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_OWNED}
    meta.pop("managedFields", None)
    for key in ("name", "namespace", *_SERVER_OWNED):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    result = {key: value for key, value in body.items() if key not in ("metadata", "apiVersion", "kind")}
    if resource.status_subresource:
        result.pop("status", None)
        if "status" in old:
            result["status"] = old["status"]
    result = {"apiVersion": old["apiVersion"], "kind": old["kind"], "metadata": meta, **result}
    if _desired(resource, result) != _desired(resource, old):
        meta["generation"] = old_meta.get("generation", 1) + 1
    return result


def rv_conflicts(old: JsonObj, body: JsonObj) -> bool:
    """A client-sent resourceVersion that is not the current one means a lost update."""
    sent = (body.get("metadata") or {}).get("resourceVersion")
    return bool(sent) and sent != old["metadata"].get("resourceVersion")


def is_released(obj: JsonObj) -> bool:
    """Marked for deletion and no finalizer left: the object must go now."""
    meta = obj["metadata"]
    return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")


def check_metadata(body: JsonObj) -> None:
    """400 for metadata of the wrong shape, as kube's decoding into ObjectMeta answers.

    Patches can produce any JSON; without this a ``metadata`` string or a label list would be
    stored and break every later reader (selectors, garbage collection), or fail with a 500.
    """
    meta = body.get("metadata")
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise bad_request(f"metadata: expected an object, got {json.dumps(meta)[:100]}")
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())):
            raise bad_request(f"metadata.{key}: expected a map of strings")
    for key in ("name", "generateName", "namespace", "resourceVersion"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad_request(f"metadata.{key}: expected a string")
    finalizers = meta.get("finalizers")
    if finalizers is not None and (not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)):
        raise bad_request("metadata.finalizers: expected a list of strings")
    owners = meta.get("ownerReferences")
    if owners is not None and (not isinstance(owners, list) or not all(isinstance(o, dict) for o in owners)):
        raise bad_request("metadata.ownerReferences: expected a list of objects")


def missing_version(resource: ResourceDef, body: JsonObj) -> JsonObj | None:
    """The 422 cause of a PUT without resourceVersion where kube forbids unconditional updates (CRs)."""
    if resource.unconditional_update or (body.get("metadata") or {}).get("resourceVersion"):
        return None
    return {
        "reason": "FieldValueInvalid",
        "field": "metadata.resourceVersion",
        "message": "Invalid value: 0x0: must be specified for an update",
    }


def new_finalizers_while_deleting(old: JsonObj, new: JsonObj) -> JsonObj | None:
    """The 422 cause kube's ObjectMeta update validation gives a finalizer added after deletion began."""
    if not old["metadata"].get("deletionTimestamp"):
        return None
    added = sorted(set(new["metadata"].get("finalizers") or ()) - set(old["metadata"].get("finalizers") or ()))
    if not added:
        return None
    shown = ", ".join(json.dumps(name) for name in added)  # Go's %#v of a []string
    return {
        "reason": "FieldValueForbidden",
        "field": "metadata.finalizers",
        "message": "Forbidden: no new finalizers can be added if the object is being deleted, "
        f"found new finalizers []string{{{shown}}}",
    }
