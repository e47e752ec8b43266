"""Server-side apply (``PATCH`` with ``application/apply-patch+yaml``), as kube-apiserver does it.

An apply sends the fields its manager wants and nothing else. The server merges them into the
live object (creating it if missing), refuses with 409 and one ``FieldManagerConflict`` cause
per field when another manager owns a field the apply would change (``force=true`` takes the
field over instead), records the manager's new field set, and removes the fields the same
manager applied last time but no longer does, unless another manager still owns them. That
last rule is what makes apply declarative, and why tools rely on it rather than on patches.

Field sets and their format are :mod:`managedfields`' job; this module merges and decides.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import yaml

from . import managedfields
from .errors import ApiError, bad_request, invalid
from .managedfields import Entry, Path
from .resources import ResourceDef

JsonObj = dict[str, Any]
_SERVER_OWNED = frozenset(
    {
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)


class _JsonishLoader(yaml.SafeLoader):
    """YAML as kube reads it: timestamps stay strings (PyYAML would make datetimes of them)."""


_JsonishLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse(raw: bytes) -> Any:
    """An apply body: JSON (what kubectl sends) or YAML, as plain JSON values."""
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        pass
    try:
        value = yaml.load(raw, Loader=_JsonishLoader)  # noqa: S506 - a SafeLoader subclass
        return json.loads(json.dumps(value, default=str))
    except (yaml.YAMLError, ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise bad_request(f"error decoding YAML: {exc}") from None


def check_request(resource: ResourceDef, name: str, config: Any, query: Mapping[str, str]) -> None:
    """Refuse what kube refuses before looking at the object: no manager, not an object, wrong kind."""
    if not query.get("fieldManager"):
        cause = {
            "reason": "FieldValueRequired",
            "field": "fieldManager",
            "message": "Required value: is required for apply patch",
        }
        raise invalid("PatchOptions.meta.k8s.io", "", [cause])
    managedfields.check_manager(query)
    if not isinstance(config, dict):
        raise bad_request(
            f"error decoding YAML: json: cannot unmarshal {type(config).__name__} into Go value "
            "of type map[string]interface {}"
        )
    if config.get("apiVersion") != resource.api_version:
        raise bad_request(
            "Incorrect version specified in apply patch. "
            f"Specified patch version: {config.get('apiVersion', '')}, expected: {resource.api_version}"
        )
    if config.get("kind") != resource.kind:
        raise bad_request(f"Object 'Kind' is {config.get('kind')!r} in the apply patch, expected {resource.kind!r}")
    meta = config.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    sent_name = (meta or {}).get("name")
    if sent_name and sent_name != name:
        raise bad_request(f"the name of the object ({sent_name}) does not match the name on the URL ({name})")


def _scoped(config: JsonObj, resource: ResourceDef, subresource: str | None) -> JsonObj:
    """What the endpoint lets the apply set: only status on /status, all but status where it is apart."""
    meta = {k: v for k, v in (config.get("metadata") or {}).items() if k not in _SERVER_OWNED}
    head = {"apiVersion": config["apiVersion"], "kind": config["kind"]}
    if subresource == "status":
        return {**head, **({"status": config["status"]} if "status" in config else {})}
    body = {k: v for k, v in config.items() if k not in ("apiVersion", "kind", "metadata")}
    if resource.status_subresource:
        body.pop("status", None)
    return {**head, "metadata": meta, **body}


def apply(
    resource: ResourceDef,
    live: JsonObj | None,
    config: JsonObj,
    manager: str,
    force: bool,
    subresource: str | None,
) -> JsonObj:
    """The live object (or a new one) with ``config`` applied by ``manager``, managedFields included.

    Raises the 409 kube answers when the apply would change fields other managers own.
    """
    schema = managedfields.root_schema(resource)
    config = _scoped(config, resource, subresource)
    base = (
        managedfields.without_managed_fields(live)
        if live is not None
        else {"apiVersion": resource.api_version, "kind": resource.kind, "metadata": {}}
    )
    merged = merge(base, config, schema)
    diff = managedfields.compare(managedfields.nodes(base, schema), managedfields.nodes(merged, schema))
    changed = managedfields.scope(managedfields.strip(diff.changed), resource, subresource)
    entries = managedfields.decode((live or {}).get("metadata", {}).get("managedFields"))
    mine = Entry(manager, "Apply", resource.api_version, frozenset(), None, subresource or "")
    previous = next((e for e in entries if e.key == mine.key), None)
    others = [e for e in entries if e.key != mine.key]
    conflicts = [(entry, path) for entry in others for path in sorted(entry.fields & changed)]
    if conflicts and not force:
        raise conflict_error(conflicts)
    others = [dataclasses.replace(e, fields=e.fields - changed) for e in others]
    applied = managedfields.scope(managedfields.applied_set(config, schema), resource, subresource)
    before = previous.fields if previous is not None else frozenset()
    owned_by_others: set[Path] = set().union(*(e.fields for e in others))
    dropped = [path for path in before - applied if not _owned_below(path, owned_by_others)]
    if dropped:
        merged = copy.deepcopy(merged)
        for path in sorted(dropped, key=len, reverse=True):
            _remove(merged, path, owned_by_others | applied)
    unchanged = previous is not None and previous.fields == applied and merged == base
    time = previous.time if unchanged and previous is not None else managedfields.now()
    entries = [*others, dataclasses.replace(mine, fields=applied, time=time)]
    return managedfields.with_entries(merged, managedfields.encode(entries))


def merge(live: Any, config: Any, schema: JsonObj) -> Any:
    """structured-merge-diff's merge: maps recursively, map lists by key, sets by value, the rest replaced."""
    if isinstance(config, dict) and not managedfields.is_atomic_map(schema):
        result = dict(live) if isinstance(live, dict) else {}
        for key, value in config.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge(result.get(key), value, managedfields.field_schema(schema, key)[0])
        return result
    if isinstance(config, list) and isinstance(live, list):
        kind, keys = managedfields.list_type(schema)
        if kind == "map":
            return _merge_map_list(live, config, keys, managedfields.items_schema(schema))
        if kind == "set":
            return [*live, *(copy.deepcopy(item) for item in config if item not in live)]
    return copy.deepcopy(config)


def _merge_map_list(live: list[Any], config: list[Any], keys: tuple[str, ...], schema: JsonObj) -> list[Any]:
    result = list(live)
    for item in config:
        index = _find_keyed(result, keys, item) if isinstance(item, dict) else None
        if index is None:
            result.append(merge(None, item, schema))
        else:
            result[index] = merge(result[index], item, schema)
    return result


def _find_keyed(items: list[Any], keys: tuple[str, ...], wanted: Mapping[str, Any]) -> int | None:
    target = [wanted.get(k) for k in keys]
    for index, item in enumerate(items):
        if isinstance(item, dict) and [item.get(k) for k in keys] == target:
            return index
    return None


def _owned_below(path: Path, owned: set[Path]) -> bool:
    return any(other[: len(path)] == path for other in owned)


def _remove(obj: JsonObj, path: Path, keep: set[Path]) -> None:
    """Delete ``path`` from ``obj`` in place, then parents it leaves empty that nobody owns."""
    trail: list[tuple[Any, Any]] = []  # (container, key or index) down to the path
    node: Any = obj
    for element in path:
        found = _step(node, element)
        if found is None:
            return
        trail.append((node, found))
        node = node[found]
    for depth in range(len(trail) - 1, -1, -1):
        container, where = trail[depth]
        if depth < len(trail) - 1 and (container[where] not in ({}, []) or path[: depth + 1] in keep):
            return
        del container[where]


def _step(node: Any, element: str) -> Any:
    kind, _, rest = element.partition(":")
    if kind == "f" and isinstance(node, dict) and rest in node:
        return rest
    if isinstance(node, list):
        try:
            wanted = json.loads(rest) if kind in ("k", "v") else int(rest)
        except ValueError:
            return None
        if kind == "k" and isinstance(wanted, dict):
            return _find_keyed(node, tuple(wanted), wanted)
        if kind == "v":
            return next((i for i, item in enumerate(node) if item == wanted), None)
        if kind == "i" and isinstance(wanted, int) and 0 <= wanted < len(node):
            return wanted
    return None


# ----- conflicts ---------------------------------------------------------------------------------------------------


def path_string(path: Path) -> str:
    """structured-merge-diff's ``Path.String()``: ``.spec.ports[port=80].name``."""
    shown: list[str] = []
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            shown.append(f".{rest}")
        elif kind == "k":
            keys = json.loads(rest)
            shown.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]")
        elif kind == "v":
            shown.append(f"[={rest}]")
        else:
            shown.append(f"[{rest}]")
    return "".join(shown)


def conflict_error(conflicts: list[tuple[Entry, Path]]) -> ApiError:
    """kube's ``NewConflictError``: the message names the managers, the causes name the fields."""
    causes: list[JsonObj] = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {entry.described()}", "field": path_string(path)}
        for entry, path in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.described()}: {path_string(path)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(entry.described(), []).append(path_string(path))
        lines: list[str] = []
        for described in sorted(by_manager):
            lines.append(f"conflicts with {described}:")
            lines.extend(f"- {shown}" for shown in by_manager[described])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})
