"""Server-side printing: GETs asked for ``as=Table`` answer a ``meta.k8s.io/v1`` Table.

kubectl asks for Tables and prints whatever columns the server sends; without this it falls back
to NAME and AGE. Columns follow the apiserver's rules for custom resources: NAME, then the CRD
version's ``additionalPrinterColumns`` (AGE alone when it declares none), ``date`` cells shown as
an age. Watches asked for Tables get one per event, the column definitions on the first only, as
kube-apiserver sends them, so ``kubectl get -w`` prints the same columns for every update. Column
paths are the simple ``.a.b[0]`` form; one the emulator cannot follow prints ``<none>``, as a
missing field would.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .resources import ResourceDef

JsonObj = dict[str, Any]

_NAME = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
}
_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def wanted(accept: str) -> bool:
    """Whether an Accept header asks for a Table (kubectl lists it first, JSON as the fallback)."""
    return "as=Table" in accept.replace(" ", "")


def _follow(obj: Any, path: str) -> Any:
    position = 0
    for match in _STEP.finditer(path):
        if match.start() != position:
            return None  # a filter or wildcard: beyond this emulator
        position = match.end()
        key, index = match.groups()
        if key is not None:
            obj = obj.get(key) if isinstance(obj, Mapping) else None
        else:
            obj = obj[int(index)] if isinstance(obj, list) and int(index) < len(obj) else None
        if obj is None:
            return None
    return obj if position == len(path) else None


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: the AGE format kubectl users know."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if minutes < 10:
        return f"{minutes}m{whole % 60}s" if whole % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def _cell(column: Mapping[str, Any], obj: JsonObj, now: datetime.datetime) -> Any:
    value = _follow(obj, column["jsonPath"])
    if column["type"] == "date" and isinstance(value, str):
        try:
            stamp = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return human_duration((now - stamp).total_seconds())
    return value


def _columns(resource: ResourceDef) -> list[Mapping[str, Any]]:
    return list(resource.printer_columns) or [_AGE]


def table(
    resource: ResourceDef,
    objects: Iterable[JsonObj],
    list_metadata: JsonObj,
    include_object: str | None,
    now: datetime.datetime | None = None,
) -> JsonObj:
    """The Table of `objects`; `include_object` is the request's ``includeObject`` (default Metadata)."""
    now = now or datetime.datetime.now(datetime.UTC)
    columns = _columns(resource)
    definitions = [
        _NAME,
        *(
            {
                "name": column["name"],
                "type": column["type"],
                "format": column.get("format", ""),
                "description": column.get("description", ""),
                "priority": column.get("priority", 0),
            }
            for column in columns
        ),
    ]
    rows: list[JsonObj] = []
    for obj in objects:
        row: JsonObj = {"cells": [obj["metadata"]["name"], *(_cell(c, obj, now) for c in columns)]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    }


class WatchRows:
    """Renders one watch stream's events as one-row Tables (headers only on the first, as kube does)."""

    def __init__(self, resource: ResourceDef, include_object: str | None) -> None:
        self.resource = resource
        self.include_object = include_object
        self._headers_sent = False

    def line(self, event_type: str, obj: JsonObj) -> bytes:
        shown = {**obj, "apiVersion": self.resource.api_version}
        rv = {"resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")}
        answer = table(self.resource, [shown], rv, self.include_object)
        if self._headers_sent:
            answer["columnDefinitions"] = None
        self._headers_sent = True
        return json.dumps({"type": event_type, "object": answer}).encode() + b"\n"
