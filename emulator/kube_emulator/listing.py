"""Lists: the objects of a collection in key order, filtered, in pages.

A real server pages with an opaque ``continue`` token; here the token carries the last
key served, so the next page starts right after it even if objects came or went.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from .errors import bad_request
from .resources import ResourceDef
from .selectors import Predicate
from .store import Collection

JsonObj = dict[str, Any]


def present(resource: ResourceDef, obj: JsonObj) -> JsonObj:
    """Show an object in the requested version (all versions share one storage)."""
    if obj.get("apiVersion") == resource.api_version:
        return obj
    return {**obj, "apiVersion": resource.api_version}


def _start_after(query: Mapping[str, str]) -> tuple[str, str] | None:
    if not query.get("continue"):
        return None
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(query["continue"]))["start"]
    except (ValueError, KeyError, TypeError):
        raise bad_request("invalid continue token") from None
    return (namespace, name)


def page(
    coll: Collection,
    resource: ResourceDef,
    namespace: str | None,
    predicate: Predicate | None,
    query: Mapping[str, str],
    rv: int,
) -> JsonObj:
    """One page of a list (all of it without ``limit``), as ``<Kind>List``."""
    start = _start_after(query)
    limit = int(query.get("limit") or 0)
    items: list[JsonObj] = []
    more = False
    for key in sorted(coll.objects):
        if (namespace is not None and key[0] != namespace) or (start is not None and key <= start):
            continue
        obj = coll.objects[key]
        if predicate is not None and not predicate(obj):
            continue
        if limit and len(items) >= limit:
            more = True
            break
        items.append(present(resource, obj))
    metadata: JsonObj = {"resourceVersion": str(rv)}
    if more:
        last = items[-1]["metadata"]
        token = json.dumps({"start": [last.get("namespace", ""), last["name"]]}).encode()
        metadata["continue"] = base64.urlsafe_b64encode(token).decode()
    return {"apiVersion": resource.api_version, "kind": f"{resource.kind}List", "metadata": metadata, "items": items}
