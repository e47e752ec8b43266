"""Label and field selectors, parsed once per request and matched per object.

Lists and watches both filter with them, so a selector is compiled into a predicate
instead of being re-parsed for each of the (up to tens of thousands of) objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Predicate = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_.\-/]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_OP_RE = re.compile(r"^\s*([A-Za-z0-9_.\-/]+)\s*(==|!=|=)\s*([A-Za-z0-9_.\-]*)\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    terms: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    op_match = _OP_RE.match(term)
    if op_match:
        key, op, value = op_match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    set_match = _SET_RE.match(term)
    if not set_match:
        raise bad_request(f"unable to parse requirement: {term!r}")
    negated, key, set_op, values_text = set_match.groups()
    if set_op:
        if negated:
            raise bad_request(f"unable to parse requirement: {term!r}")
        values = {v.strip() for v in values_text.split(",") if v.strip()}
        if set_op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if negated:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def label_selector(text: str | None) -> Predicate | None:
    """Compile ``labelSelector`` (``= == != in notin exists !key``); None matches everything."""
    if not text:
        return None
    terms = [_label_term(t) for t in _split_terms(text)]

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(term(labels) for term in terms)

    return matches


#: Every resource can be selected by these; others only where the resource declares them.
COMMON_FIELDS = ("metadata.name", "metadata.namespace")


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_selector(text: str | None, fields: tuple[str, ...] = ()) -> Predicate | None:
    """Compile ``fieldSelector`` (= == !=) on the common fields plus a resource's own `fields`."""
    if not text:
        return None
    supported = {*COMMON_FIELDS, *fields}
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(text):
        match = _OP_RE.match(term)
        if not match or match.group(1) not in supported:
            raise bad_request(f'field label not supported: "{term.strip()}"')
        path, op, value = match.groups()
        checks.append((path, op != "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) is wanted for path, wanted, value in checks)

    return matches


def combine(*predicates: Predicate | None) -> Predicate | None:
    active = [p for p in predicates if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(p(obj) for p in active)
