"""Patch algorithms chosen by Content-Type, as the apiserver chooses them.

Real clients rely on the Content-Type, never on the body's shape (Kopf sends JSON patches
with a ``test`` on resourceVersion to add its finalizer), so each type is implemented here
per its RFC. A malformed patch is the client's error whatever its shape: 400 when the body is
not a patch at all, 422 when an operation does not apply, never a 500.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from .errors import ApiError, bad_request

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")  # RFC 6901 array indexes: ASCII digits, no leading zero


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch  # patch bodies are parsed per request, never shared
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _parse_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise bad_request(f"invalid JSON pointer: {pointer!r}")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _container(doc: Any, tokens: list[str], op: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, op)
    return node


def _index(token: str) -> int | None:
    return int(token) if _INDEX.match(token) else None


def _child(node: Any, token: str, op: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    index = _index(token)
    if isinstance(node, list) and index is not None and index < len(node):
        return node[index]
    raise _unprocessable(f"{op} operation does not apply: doc is missing path: {token}")


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {message}")


def _get(doc: Any, pointer: str, op: str) -> Any:
    node = doc
    for token in _parse_pointer(pointer):
        node = _child(node, token, op)
    return node


def _add(doc: Any, tokens: list[str], value: Any, op: str = "add") -> Any:
    if not tokens:
        raise _unprocessable(f"{op} operation does not apply: doc is missing path: ")
    parent = _container(doc, tokens, "add")
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        found = len(parent) if last == "-" else _index(last)
        index = -1 if found is None else found
        if not 0 <= index <= len(parent):
            raise _unprocessable(f"add operation does not apply: index out of range: {last}")
        parent.insert(index, value)
    else:
        raise _unprocessable("add operation does not apply: parent is not a container")
    return doc


def _remove(doc: Any, tokens: list[str], op: str = "remove") -> Any:
    if not tokens:
        raise _unprocessable(f"{op} operation does not apply: doc is missing path: ")
    parent = _container(doc, tokens, op)
    last = tokens[-1]
    index = _index(last)
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and index is not None and index < len(parent):
        del parent[index]
    else:
        raise _unprocessable(f"{op} operation does not apply: doc is missing path: {last}")
    return doc


def _pointer_of(operation: dict[str, Any], field: str, op: str) -> str:
    pointer = operation.get(field)
    if not isinstance(pointer, str):
        raise _unprocessable(f"{op} operation does not apply: operation missing {field} field")
    return pointer


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 with ``test``; a failed test or a missing path answers 422.

    As in kube-apiserver (evanphx/json-patch), only ``test`` may address the whole document:
    the other operations on the root path ``""`` answer 422.
    """
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    if not all(isinstance(operation, dict) for operation in operations):
        raise bad_request("json: cannot unmarshal a json patch operation that is not an object")
    doc = copy.deepcopy(target)
    for operation in operations:
        op = operation.get("op")
        if op not in ("add", "remove", "replace", "move", "copy", "test"):
            raise bad_request(f"unexpected json patch operation: {op!r}")
        path = _pointer_of(operation, "path", op)
        tokens = _parse_pointer(path)
        if op == "add":
            doc = _add(doc, tokens, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            doc = _remove(doc, tokens)
        elif op == "replace":
            _get(doc, path, "replace")
            doc = _add(_remove(doc, tokens, "replace"), tokens, copy.deepcopy(operation.get("value")), "replace")
        elif op in ("move", "copy"):
            source = _pointer_of(operation, "from", op)
            value = copy.deepcopy(_get(doc, source, op))
            if op == "move":
                doc = _remove(doc, _parse_pointer(source), op)
            doc = _add(doc, tokens, value, op)
        elif _get(doc, path, "test") != operation.get("value"):
            raise _unprocessable(f"testing value {path} failed")
    return doc
