"""Structural-schema handling of custom objects: pruning, defaulting and validation.

An apiserver prunes fields a CRD's ``openAPIV3Schema`` does not declare, fills in
``default`` values and rejects invalid objects with 422 and one cause per field. This is
a small interpreter of the Kubernetes subset of OpenAPI v3 that words its causes the way
the apiserver does (``spec.x: Invalid value: ...``), which a generic JSON-schema library
does not do. CEL rules (``x-kubernetes-validations``) are evaluated after it, in ``admission.py``.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

JsonObj = dict[str, Any]
_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def prune_and_default(obj: JsonObj, schema: JsonObj, dropped: list[str] | None = None) -> JsonObj:
    """Return a copy of ``obj`` without undeclared fields and with defaults filled in.

    The paths of the dropped fields are appended to ``dropped`` (for fieldValidation=Strict).
    """
    result: JsonObj = {key: obj[key] for key in _ROOT_KEEP if key in obj}
    body = {key: value for key, value in obj.items() if key not in _ROOT_KEEP}
    body_schema = {
        **schema,
        "properties": {k: v for k, v in schema.get("properties", {}).items() if k not in _ROOT_KEEP},
    }
    processed = _prune(body, body_schema, "", dropped if dropped is not None else [])
    result.update(processed)
    return result


def _prune(value: Any, schema: JsonObj, path: str, dropped: list[str]) -> Any:
    if isinstance(value, dict):
        return _prune_object(value, schema, path, dropped)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"], f"{path}[{i}]", dropped) for i, item in enumerate(value)]
    return value


def _prune_object(value: JsonObj, schema: JsonObj, path: str, dropped: list[str]) -> JsonObj:
    properties: JsonObj = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    preserve = (
        bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        or bool(schema.get("x-kubernetes-embedded-resource"))
        or additional is True
    )
    result: JsonObj = {}
    for key, item in value.items():
        child = f"{path}.{key}" if path else key
        sub = properties.get(key, additional if isinstance(additional, dict) else None)
        if item is None and sub is not None and not sub.get("nullable"):
            continue  # the apiserver prunes non-nullable nulls (and defaults them below)
        if key in properties:
            result[key] = _prune(item, properties[key], child, dropped)
        elif isinstance(additional, dict):
            result[key] = _prune(item, additional, child, dropped)
        elif preserve:
            result[key] = item
        else:
            dropped.append(child)
    for key, prop in properties.items():
        if key not in result and "default" in prop:
            result[key] = _prune(copy.deepcopy(prop["default"]), prop, key, [])
    return result


def _show(value: Any) -> str:
    return json.dumps(value)[:200]


def _cause(reason: str, field: str, message: str) -> JsonObj:
    return {"reason": reason, "message": message, "field": field}


def _is_date_time(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return "T" in text.upper()


def _is_ip(version: int) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            return ipaddress.ip_address(text).version == version
        except ValueError:
            return False

    return check


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", re.IGNORECASE)
_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _is_date_time,
    "datetime": _is_date_time,
    "ipv4": _is_ip(4),
    "ipv6": _is_ip(6),
    "uuid": _is_uuid,
    "hostname": lambda text: bool(_HOSTNAME.match(text)) and len(text) <= 253,
}

_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def validate(obj: JsonObj, schema: JsonObj) -> list[JsonObj]:
    """Return the apiserver-style causes of every violation (empty when valid)."""
    causes: list[JsonObj] = []
    for key, sub in schema.get("properties", {}).items():
        if key in _ROOT_KEEP:
            continue
        if key in obj:
            _validate(obj[key], sub, key, causes)
        elif key in schema.get("required", []):
            causes.append(_cause("FieldValueRequired", key, "Required value"))
    return causes


def _validate(value: Any, schema: JsonObj, path: str, causes: list[JsonObj]) -> None:
    if value is None:
        if not schema.get("nullable"):
            expected = schema.get("type", "object")
            causes.append(
                _cause(
                    "FieldValueTypeInvalid",
                    path,
                    f'Invalid value: "null": {path} in body must be of type {expected}: "null"',
                )
            )
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _TYPES["integer"](value)):
            causes.append(
                _cause(
                    "FieldValueTypeInvalid",
                    path,
                    f"Invalid value: {_show(value)}: {path} in body must be of type int-or-string",
                )
            )
        return
    expected = schema.get("type")
    if expected in _TYPES and not _TYPES[expected](value):
        actual = next((name for name, check in _TYPES.items() if check(value)), "null")
        causes.append(
            _cause(
                "FieldValueTypeInvalid",
                path,
                f'Invalid value: "{actual}": {path} in body must be of type {expected}: "{actual}"',
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_show(v) for v in schema["enum"])
        causes.append(
            _cause("FieldValueNotSupported", path, f"Unsupported value: {_show(value)}: supported values: {supported}")
        )
    _validate_bounds(value, schema, path, causes)
    if isinstance(value, str):
        _validate_string(value, schema, path, causes)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, causes)
    elif isinstance(value, list):
        _validate_array(value, schema, path, causes)
    _validate_combinators(value, schema, path, causes)


def _validate_bounds(value: Any, schema: JsonObj, path: str, causes: list[JsonObj]) -> None:
    if not _TYPES["number"](value):
        return
    if "minimum" in schema:
        exclusive = bool(schema.get("exclusiveMinimum"))
        if value < schema["minimum"] or (exclusive and value == schema["minimum"]):
            words = "greater than" if exclusive else "greater than or equal to"
            causes.append(
                _cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {_show(value)}: {path} in body should be {words} {schema['minimum']}",
                )
            )
    if "maximum" in schema:
        exclusive = bool(schema.get("exclusiveMaximum"))
        if value > schema["maximum"] or (exclusive and value == schema["maximum"]):
            words = "less than" if exclusive else "less than or equal to"
            causes.append(
                _cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {_show(value)}: {path} in body should be {words} {schema['maximum']}",
                )
            )


def _validate_string(value: str, schema: JsonObj, path: str, causes: list[JsonObj]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(_cause("FieldValueTooLong", path, f"Too long: may not be more than {schema['maxLength']} bytes"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(
            _cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {_show(value)}: {path} in body should be at least {schema['minLength']} chars long",
            )
        )
    if "pattern" in schema and not re.search(schema["pattern"], value):
        causes.append(
            _cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {_show(value)}: {path} in body should match '{schema['pattern']}'",
            )
        )
    check = _FORMATS.get(schema.get("format", ""))
    if check is not None and not check(value):
        causes.append(
            _cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {_show(value)}: {path} in body must be of type {schema['format']}: {_show(value)}",
            )
        )


def _validate_object(value: JsonObj, schema: JsonObj, path: str, causes: list[JsonObj]) -> None:
    properties: JsonObj = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in value:
            causes.append(_cause("FieldValueRequired", f"{path}.{key}", "Required value"))
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            _validate(item, properties[key], f"{path}.{key}", causes)
        elif isinstance(additional, dict):
            _validate(item, additional, f"{path}.{key}", causes)
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        causes.append(
            _cause(
                "FieldValueTooMany", path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items"
            )
        )


def _validate_array(value: list[Any], schema: JsonObj, path: str, causes: list[JsonObj]) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(
            _cause("FieldValueTooMany", path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(
            _cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items",
            )
        )
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(item, items, f"{path}[{index}]", causes)


def _validate_combinators(value: Any, schema: JsonObj, path: str, causes: list[JsonObj]) -> None:
    for sub in schema.get("allOf", []):
        _validate(value, {"type": schema.get("type"), **sub}, path, causes)
    for keyword in ("anyOf", "oneOf"):
        if keyword not in schema:
            continue
        passing = 0
        failures: list[JsonObj] = []
        for sub in schema[keyword]:
            trial: list[JsonObj] = []
            _validate(value, sub, path, trial)
            passing += not trial
            failures.extend(trial)
        if passing == 0 or (keyword == "oneOf" and passing > 1):
            causes.extend(failures)
            words = "one and only one" if keyword == "oneOf" else "at least one"
            causes.append(
                _cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {_show(value)}: {path} in body must validate {words} schema ({keyword})",
                )
            )
