"""``metadata.managedFields``: who set which field, in kube's ``FieldsV1`` format.

Server-side apply decides conflicts from field ownership, and tools read it back (``kubectl
apply --server-side`` migrates client-side-apply owners, controllers check what they own), so
every write records ownership the way kube-apiserver's field manager does:

- a field set is a set of paths; a path is a tuple of ``FieldsV1`` keys (``f:spec``,
  ``k:{"name":"a"}`` for an item of a map list, ``v:"x"`` for an item of a set list), so
  encoding is a trie and decoding its inverse;
- an **Apply** set is structured-merge-diff's ``ToFieldSet`` of the applied configuration:
  leaves, list items, and map keys that are not declared fields (labels, ``data``,
  preserve-unknown-fields subtrees), never intermediate structs;
- an **Update** (create, PUT, non-apply PATCH) takes what it added or changed, intermediate
  maps that did not exist included (the ``.: {}`` entries kube shows), away from every other
  manager; fields a write removes leave every manager's set;
- ``apiVersion``, ``kind`` and server-owned metadata are never owned (kube strips them), and a
  resource with a status subresource keeps status ownership and the rest apart.

Lists are atomic unless the CRD schema says ``x-kubernetes-list-type: map`` (with
``x-kubernetes-list-map-keys``) or ``set``; ``metadata.finalizers`` is a set and
``metadata.ownerReferences`` a map keyed by ``uid``, as in ObjectMeta. Built-in resources have
no schema here: their keys count as declared fields, except the string maps ``data``,
``binaryData`` and ``stringData`` of ConfigMaps and Secrets.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import invalid
from .resources import ResourceDef

JsonObj = dict[str, Any]
Path = tuple[str, ...]
FieldSet = frozenset[Path]

MAX_MANAGER_LENGTH = 128
_STRING_MAP: JsonObj = {"type": "object", "additionalProperties": {"type": "string"}}
_STRUCT = "x-emulator-struct"
"""Marks a schema whose every key is a declared field (built-ins, whose Go types kube knows)."""
_STRUCT_SCHEMA: JsonObj = {_STRUCT: True}
_DEDUCED: JsonObj = {"x-kubernetes-preserve-unknown-fields": True}
METADATA_SCHEMA: JsonObj = {
    _STRUCT: True,
    "properties": {
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "x-kubernetes-list-type": "set"},
        "ownerReferences": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["uid"],
            "items": _STRUCT_SCHEMA,
        },
    },
}
_BUILTIN_ROOT: JsonObj = {
    _STRUCT: True,
    "properties": {"data": _STRING_MAP, "binaryData": _STRING_MAP, "stringData": _STRING_MAP},
}
_STRIPPED: frozenset[Path] = frozenset(
    {("f:apiVersion",), ("f:kind",), ("f:metadata",)}
    | {
        ("f:metadata", f"f:{name}")
        for name in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "selfLink",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        )
    }
)
_CONTAINER = object()
"""The value of a non-leaf node in :func:`nodes` (its children carry the values)."""


# ----- schemas ---------------------------------------------------------------------------------------------------


def root_schema(resource: ResourceDef) -> JsonObj:
    """The schema field sets follow: the CRD's, or the built-in stand-in, with ObjectMeta's list types."""
    base = resource.schema if resource.schema is not None else _BUILTIN_ROOT
    return {**base, "properties": {**(base.get("properties") or {}), "metadata": METADATA_SCHEMA}}


def field_schema(schema: JsonObj, key: str) -> tuple[JsonObj, bool]:
    """The schema of ``key`` in an object of ``schema``, and whether it is a declared field."""
    properties = schema.get("properties") or {}
    if key in properties and isinstance(properties[key], dict):
        return properties[key], True
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        return additional, False
    if schema.get(_STRUCT):
        return _STRUCT_SCHEMA, True
    if schema.get("x-kubernetes-preserve-unknown-fields") or additional is True:
        return _DEDUCED, False
    return _STRUCT_SCHEMA, True  # unknown to a structural schema: pruned before it is stored


def is_atomic_map(schema: JsonObj) -> bool:
    return schema.get("x-kubernetes-map-type") == "atomic"


def list_type(schema: JsonObj) -> tuple[str, tuple[str, ...]]:
    """``("map", keys)``, ``("set", ())`` or ``("atomic", ())``, the default of CRDs and built-ins."""
    kind = schema.get("x-kubernetes-list-type")
    keys = tuple(str(k) for k in schema.get("x-kubernetes-list-map-keys") or ())
    if kind == "map" and keys:
        return "map", keys
    if kind == "set":
        return "set", ()
    return "atomic", ()


def items_schema(schema: JsonObj) -> JsonObj:
    items = schema.get("items")
    if isinstance(items, dict):
        return items
    return _STRUCT_SCHEMA if schema.get(_STRUCT) else _DEDUCED


def item_key(kind: str, keys: tuple[str, ...], item: Any, index: int) -> str:
    """The FieldsV1 key of a list item: ``k:{...}`` in a map list, ``v:...`` in a set, else ``i:N``."""
    if kind == "map" and isinstance(item, dict):
        return "k:" + json.dumps({k: item.get(k) for k in sorted(keys)}, separators=(",", ":"))
    if kind == "set":
        return "v:" + json.dumps(item, separators=(",", ":"), sort_keys=True)
    return f"i:{index}"


# ----- field sets of objects --------------------------------------------------------------------------------------


def applied_set(config: JsonObj, schema: JsonObj) -> FieldSet:
    """structured-merge-diff's ``ToFieldSet`` of an applied configuration, stripped."""
    found: set[Path] = set()
    _collect(config, schema, (), found)
    return strip(found)


def _collect(value: Any, schema: JsonObj, path: Path, found: set[Path]) -> None:
    if isinstance(value, dict) and not is_atomic_map(schema):
        for key, item in value.items():
            sub, declared = field_schema(schema, key)
            child = (*path, f"f:{key}")
            _collect(item, sub, child, found)
            if item is None or item == {} or not declared:
                found.add(child)
        return
    if isinstance(value, list):
        kind, keys = list_type(schema)
        if kind != "atomic":
            sub = items_schema(schema)
            for index, item in enumerate(value):
                child = (*path, item_key(kind, keys, item, index))
                _collect(item, sub, child, found)
                found.add(child)
            return
    if path:
        found.add(path)


def nodes(value: Any, schema: JsonObj, path: Path = (), found: dict[Path, Any] | None = None) -> dict[Path, Any]:
    """Every path of an object, leaves with their values and inner nodes with a marker."""
    found = {} if found is None else found
    if isinstance(value, dict) and not is_atomic_map(schema) and (value or not path):
        if path:
            found[path] = _CONTAINER
        for key, item in value.items():
            nodes(item, field_schema(schema, key)[0], (*path, f"f:{key}"), found)
        return found
    if isinstance(value, list):
        kind, keys = list_type(schema)
        if kind != "atomic" and value:
            found[path] = _CONTAINER
            sub = items_schema(schema)
            for index, item in enumerate(value):
                nodes(item, sub, (*path, item_key(kind, keys, item, index)), found)
            return found
    if path:
        found[path] = value
    return found


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What a write did to an object: paths it added, changed (leaves) and removed."""

    added: FieldSet
    modified: FieldSet
    removed: FieldSet

    @property
    def changed(self) -> FieldSet:
        return self.added | self.modified


def compare(old: Mapping[Path, Any], new: Mapping[Path, Any]) -> Comparison:
    added = frozenset(path for path in new if path not in old)
    removed = frozenset(path for path in old if path not in new)
    modified = frozenset(
        path
        for path, value in new.items()
        if path in old and (value is not _CONTAINER or old[path] is not _CONTAINER) and old[path] != value
    )
    return Comparison(added, modified, removed)


def strip(paths: Iterable[Path]) -> FieldSet:
    """Without what nobody owns: apiVersion, kind, server-owned metadata (and the bare roots)."""
    return frozenset(path for path in paths if path[:2] not in _STRIPPED and path not in _STRIPPED)


def scope(paths: Iterable[Path], resource: ResourceDef, subresource: str | None) -> FieldSet:
    """The paths one endpoint may own: only ``status`` for /status, all but it where status is apart."""
    if subresource == "status":
        return frozenset(path for path in paths if path[:1] == ("f:status",))
    if resource.status_subresource:
        return frozenset(path for path in paths if path[:1] != ("f:status",))
    return frozenset(paths)


def without_managed_fields(obj: JsonObj) -> JsonObj:
    meta = {key: value for key, value in (obj.get("metadata") or {}).items() if key != "managedFields"}
    return {**obj, "metadata": meta}


# ----- entries -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One ``ManagedFieldsEntry``: kube keys them by manager, operation, subresource (and an Update's version)."""

    manager: str
    operation: str  # "Apply" or "Update"
    api_version: str
    fields: FieldSet
    time: str | None = None
    subresource: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        version = self.api_version if self.operation == "Update" else ""
        return (self.manager, self.operation, self.subresource, version)

    def described(self) -> str:
        """How kube's conflict messages name a manager (``printManager``)."""
        shown = json.dumps(self.manager)
        if self.subresource:
            shown += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            shown += f" using {self.api_version}" + (f" at {self.time}" if self.time else "")
        return shown


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode_fields(node: Any, path: Path = (), found: set[Path] | None = None) -> set[Path]:
    found = set() if found is None else found
    if not isinstance(node, dict):
        return found
    for key, child in node.items():
        if key == ".":
            if path:
                found.add(path)
        elif isinstance(child, dict) and child:
            decode_fields(child, (*path, key), found)
        else:
            found.add((*path, key))
    return found


def encode_fields(fields: Iterable[Path]) -> JsonObj:
    """The ``fieldsV1`` trie: ``{}`` for a leaf, ``".": {}`` for an owned node with owned children."""
    owned = set(fields)
    root: JsonObj = {}
    for path in sorted(owned):
        node = root
        for key in path:
            node = node.setdefault(key, {})
    return _render(root, (), owned)


def _render(node: JsonObj, path: Path, owned: set[Path]) -> JsonObj:
    children = {key: _render(child, (*path, key), owned) for key, child in sorted(node.items())}
    if children and path in owned:
        return {".": {}, **children}
    return children


def decode(entries: Any) -> list[Entry]:
    """Entries as stored (or sent by a client); malformed ones are skipped."""
    decoded: list[Entry] = []
    for raw in entries if isinstance(entries, list) else []:
        if not isinstance(raw, dict):
            continue
        time = raw.get("time")
        decoded.append(
            Entry(
                manager=str(raw.get("manager") or ""),
                operation="Apply" if raw.get("operation") == "Apply" else "Update",
                api_version=str(raw.get("apiVersion") or ""),
                fields=frozenset(decode_fields(raw.get("fieldsV1"))),
                time=time if isinstance(time, str) else None,
                subresource=str(raw.get("subresource") or ""),
            )
        )
    return decoded


def encode(entries: Iterable[Entry]) -> list[JsonObj]:
    """Stored form, in kube's order: Apply before Update, then by time, manager and subresource."""
    ordered = sorted(
        (e for e in entries if e.fields),
        key=lambda e: (e.operation != "Apply", e.time or "", e.manager, e.subresource),
    )
    encoded: list[JsonObj] = []
    for entry in ordered:
        raw: JsonObj = {"manager": entry.manager, "operation": entry.operation, "apiVersion": entry.api_version}
        if entry.time:
            raw["time"] = entry.time
        raw["fieldsType"] = "FieldsV1"
        raw["fieldsV1"] = encode_fields(entry.fields)
        if entry.subresource:
            raw["subresource"] = entry.subresource
        encoded.append(raw)
    return encoded


def with_entries(obj: JsonObj, entries: list[JsonObj]) -> JsonObj:
    meta = {key: value for key, value in obj["metadata"].items() if key != "managedFields"}
    if entries:
        meta["managedFields"] = entries
    return {**obj, "metadata": meta}


# ----- what writes record -----------------------------------------------------------------------------------------


def manager_of(query: Mapping[str, str], user_agent: str) -> str:
    """``fieldManager`` if given, else what kube derives from the User-Agent (up to its first ``/``)."""
    manager = query.get("fieldManager") or user_agent.split("/")[0]
    return manager[:MAX_MANAGER_LENGTH]


def check_manager(query: Mapping[str, str], options: str = "PatchOptions") -> None:
    """422 for a fieldManager kube's Create/Update/PatchOptions validation refuses."""
    manager = query.get("fieldManager", "")
    if len(manager) > MAX_MANAGER_LENGTH:
        raise invalid(
            f"{options}.meta.k8s.io",
            "",
            [
                {
                    "reason": "FieldValueTooLong",
                    "field": "fieldManager",
                    "message": f"Too long: may not be more than {MAX_MANAGER_LENGTH} bytes",
                }
            ],
        )


def record_update(
    resource: ResourceDef,
    old: JsonObj | None,
    new: JsonObj,
    manager: str | None,
    subresource: str | None,
    sent: Any = None,
) -> JsonObj:
    """``new`` with the managedFields an Update by ``manager`` leaves (None: a write nobody owns).

    ``sent`` is the managedFields of the request body: kube takes a non-empty, changed list as
    the new starting point (how ``kubectl apply --server-side`` migrates client-side-apply owners
    and how ``[{}]`` clears them); otherwise a client cannot touch them.
    """
    old_raw = (old or {}).get("metadata", {}).get("managedFields")
    base = decode(old_raw)
    if subresource is None and isinstance(sent, list) and sent and sent != old_raw:
        base = decode(sent)
    schema = root_schema(resource)
    old_nodes = nodes(without_managed_fields(old), schema) if old is not None else {}
    diff = compare(old_nodes, nodes(without_managed_fields(new), schema))
    contributed = scope(strip(diff.changed), resource, subresource)
    entries = [dataclasses.replace(e, fields=e.fields - diff.removed) for e in base]
    if manager is not None and contributed:
        mine = Entry(manager, "Update", resource.api_version, frozenset(), None, subresource or "")
        previous = next((e for e in entries if e.key == mine.key), None)
        entries = [dataclasses.replace(e, fields=e.fields - contributed) for e in entries if e.key != mine.key]
        fields = (previous.fields if previous is not None else frozenset()) | contributed
        entries.append(dataclasses.replace(mine, fields=fields, time=now()))
    return with_entries(new, encode(entries))
