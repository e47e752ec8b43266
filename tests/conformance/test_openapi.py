"""GET /api/v1/openapi.json: a valid OpenAPI 3 document listing the seven operations."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from ._client import Api

OPERATIONS = {
    ("/api/v1/hosts", "post"): "201",
    ("/api/v1/hosts", "get"): "200",
    ("/api/v1/hosts/{host_id}", "get"): "200",
    ("/api/v1/hosts/{host_id}", "put"): "200",
    ("/api/v1/hosts/{host_id}", "delete"): "204",
    ("/api/v1/hosts/{host_id}/gpus", "get"): "200",
    ("/api/v1/hosts/{host_id}/heartbeat", "post"): "200",
}
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def document(api: Api) -> dict[str, Any]:
    resp = api.request("GET", "/api/v1/openapi.json", token=None)
    assert resp.status == 200, resp
    assert resp.content_type == "application/json"
    doc = resp.json()
    assert isinstance(doc, dict)
    return doc


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external $ref {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


def _full_path(doc: dict[str, Any], path: str) -> str:
    servers = [s.get("url", "") for s in doc.get("servers") or []]
    prefix = next((s.rstrip("/") for s in servers if s.rstrip("/").endswith("/api/v1")), "")
    prefix = "/" + prefix.split("://", 1)[-1].split("/", 1)[1] if "://" in prefix else prefix
    return path if path.startswith("/api/v1") else prefix + path


def test_openapi_version_and_info(document: dict[str, Any]) -> None:
    assert isinstance(document.get("openapi"), str) and document["openapi"].startswith("3."), document.get("openapi")
    info = document.get("info")
    assert isinstance(info, dict) and isinstance(info.get("title"), str) and isinstance(info.get("version"), str)
    assert isinstance(document.get("paths"), dict)


def test_openapi_lists_the_seven_operations(document: dict[str, Any]) -> None:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path, item in document["paths"].items():
        assert path.startswith("/"), path
        for method, op in item.items():
            if method in METHODS:
                found[(_full_path(document, path), method)] = op
    missing = set(OPERATIONS) - set(found)
    assert not missing, f"operations missing from the OpenAPI document: {sorted(missing)}"
    for key, success in OPERATIONS.items():
        op = found[key]
        assert isinstance(op.get("responses"), dict) and op["responses"], key
        assert success in {str(code) for code in op["responses"]}, f"{key} does not document {success}"
        assert any(str(code).startswith(("4", "5")) or code == "default" for code in op["responses"]), (
            f"{key} documents no error response"
        )


def test_openapi_declares_bearer_security(document: dict[str, Any]) -> None:
    schemes = (document.get("components") or {}).get("securitySchemes") or {}
    assert any(s.get("type") == "http" and str(s.get("scheme", "")).lower() == "bearer" for s in schemes.values()), (
        schemes
    )


def test_openapi_structure_is_valid(document: dict[str, Any]) -> None:
    """Structural checks of OpenAPI 3: every $ref resolves, every operation has valid parts."""
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for ref in refs:
        _resolve(document, ref)
    validator = jsonschema.Draft202012Validator if document["openapi"].startswith("3.1") else jsonschema.Draft7Validator
    for name, schema in ((document.get("components") or {}).get("schemas") or {}).items():
        try:
            validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise AssertionError(f"components.schemas.{name} is not a valid JSON Schema: {exc.message}") from None
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            ids = op.get("operationId")
            assert ids is None or isinstance(ids, str)
            for param in op.get("parameters", []) + item.get("parameters", []):
                param = _resolve(document, param["$ref"]) if "$ref" in param else param
                assert param.get("in") in {"query", "header", "path", "cookie"}, param
                assert isinstance(param.get("name"), str)
                if param["in"] == "path":
                    assert param.get("required") is True, f"path parameter must be required: {param}"
                    assert "{" + param["name"] + "}" in path
            for code, response in op["responses"].items():
                assert code == "default" or (len(str(code)) == 3 and str(code)[0] in "12345"), code
                response = _resolve(document, response["$ref"]) if "$ref" in response else response
                assert isinstance(response.get("description"), str), f"{method} {path} {code} needs a description"
        for name in __import__("re").findall(r"{([^}]+)}", path):
            declared = [
                p
                for op in item.values()
                if isinstance(op, dict)
                for p in op.get("parameters", [])
                if isinstance(p, dict)
            ]
            declared += item.get("parameters", [])
            declared = [_resolve(document, p["$ref"]) if "$ref" in p else p for p in declared]
            assert any(p.get("in") == "path" and p.get("name") == name for p in declared), (
                f"path parameter {name} of {path} is not declared"
            )


def test_openapi_loads_in_schemathesis(document: dict[str, Any]) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(document)
    assert schema is not None


def test_openapi_needs_no_token(api: Api) -> None:
    assert api.request("GET", "/api/v1/openapi.json", token=None).status == 200


def _validator_for(document: dict[str, Any], path: str, method: str, status: str) -> Any:
    pointer_path = path.replace("~", "~0").replace("/", "~1")
    responses = document["paths"][path][method]["responses"]
    key = next((k for k in (status, status[0] + "XX", "default") if k in responses), None)
    assert key is not None, f"{method.upper()} {path} does not document {status}"
    response = responses[key]
    if "$ref" in response:
        response = _resolve(document, response["$ref"])
    content = (response.get("content") or {}).get("application/json")
    if content is None:
        return None
    assert "schema" in content, f"{method.upper()} {path} {status}: no schema"
    pointer = f"#/paths/{pointer_path}/{method}/responses/{key}/content/application~1json/schema"
    if "$ref" in responses[key]:
        pointer = responses[key]["$ref"] + "/content/application~1json/schema"
    root = {"$ref": pointer, "paths": document["paths"], "components": document.get("components", {})}
    return jsonschema.Draft202012Validator(root)


def _check(document: dict[str, Any], path: str, method: str, resp: Any) -> None:
    validator = _validator_for(document, path, method, str(resp.status))
    if validator is None:
        assert resp.raw == b"", f"{method.upper()} {path} {resp.status}: the document declares no body"
        return
    errors = sorted(validator.iter_errors(resp.json()), key=lambda e: list(e.path))
    assert not errors, f"{method.upper()} {path} {resp.status} does not match its OpenAPI schema: " + "; ".join(
        f"{list(e.path)}: {e.message}" for e in errors[:5]
    )


def test_responses_match_the_served_openapi_document(api: Api, custom: Any, document: dict[str, Any]) -> None:
    from .conftest import host_body
    from .test_gpus import make_gpu

    hosts, host, gpus, beat = (
        "/api/v1/hosts",
        "/api/v1/hosts/{host_id}",
        "/api/v1/hosts/{host_id}/gpus",
        "/api/v1/hosts/{host_id}/heartbeat",
    )
    resp = api.register(host_body(labels={"zone": "a"}))
    _check(document, hosts, "post", resp)
    host_id, token = resp.json()["data"]["host_id"], resp.json()["data"]["agent_token"]
    try:
        make_gpu(
            custom,
            host_id,
            0,
            {"state": "allocated", "allocatedTo": "env-1", "temperatureCelsius": 60.5, "utilizationPercent": 10},
        )
        make_gpu(custom, host_id, 1)
        hb = {"status": "online", "health_status": "healthy", "used_cpu": 1.5, "used_memory": 1, "used_gpu": 0}
        _check(document, beat, "post", api.heartbeat(host_id, hb, token=token))
        _check(document, hosts, "get", api.list())
        _check(document, host, "get", api.detail(host_id))
        _check(document, host, "put", api.update(host_id, {"name": "schema"}))
        _check(document, gpus, "get", api.gpus(host_id))
        # errors are documented too
        _check(document, hosts, "post", api.register({}))
        _check(document, hosts, "get", api.list(token=None))
        _check(document, hosts, "get", api.list("page=0"))
        _check(document, host, "get", api.detail("host-zzzzzzzzzz"))
        _check(document, beat, "post", api.heartbeat(host_id, hb, token=api.admin))
    finally:
        _check(document, host, "delete", api.delete(host_id))
