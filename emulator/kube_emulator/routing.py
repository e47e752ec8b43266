"""URL parsing: which endpoint a path addresses.

The real layout, including the cluster-scoped namespaces themselves:
``/api/v1/[namespaces/<ns>/]<plural>[/<name>[/<sub>]]`` and the same under
``/apis/<group>/<version>``, with ``namespaces/<name>/status``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Route:
    endpoint: str  # "version", "api", "apis", "group", "groupversion", "resource", "health", "openapi"
    group: str = ""
    version: str = ""
    namespace: str | None = None
    plural: str = ""
    name: str | None = None
    subresource: str | None = None


_HEALTH = {"/healthz", "/readyz", "/livez"}


def parse(path: str) -> Route | None:
    path = path.rstrip("/") or "/"
    if path == "/version":
        return Route("version")
    if path in _HEALTH:
        return Route("health")
    if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
        group_version = path.removeprefix("/openapi/v3").strip("/")
        return Route("openapi", group=group_version)
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        if len(parts) == 1:
            return Route("api")
        return _resource_route("", parts[1], parts[2:])
    if parts[0] == "apis":
        if len(parts) == 1:
            return Route("apis")
        if len(parts) == 2:
            return Route("group", group=parts[1])
        return _resource_route(parts[1], parts[2], parts[3:])
    return None


def _resource_route(group: str, version: str, rest: list[str]) -> Route | None:
    if not rest:
        return Route("groupversion", group=group, version=version)
    namespace: str | None = None
    is_namespace_sub = group == "" and len(rest) == 3 and rest[0] == "namespaces" and rest[2] in ("status", "finalize")
    if rest[0] == "namespaces" and len(rest) >= 3 and not is_namespace_sub:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    return Route(
        "resource",
        group=group,
        version=version,
        namespace=namespace,
        plural=rest[0],
        name=rest[1] if len(rest) > 1 else None,
        subresource=rest[2] if len(rest) > 2 else None,
    )
