"""The emulator's admission in CEL: ValidatingAdmissionPolicies and CRD validation rules.

Each case is a request over HTTP and the answer kube-apiserver gives to it: the code and reason
a denied request gets, the message naming the policy and binding, what a policy sees (object,
oldObject, request with its user's extra), when it applies (rules, subresources, match
conditions, binding actions), what an evaluation error does (failurePolicy), and the CRD rules
of a schema, transition rules included. Policies are scoped to the test's namespace.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kube_emulator import Emulator

from .helpers import GROUP, Api, _crd, widget

pytestmark = pytest.mark.emulator  # tokens with extras, and asserting the emulator's own wording

POLICIES = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
NODE = "authentication.kubernetes.io/node-name"

Policy = Callable[..., str]


@pytest.fixture
def policy(api: Api, namespace: str) -> Iterator[Policy]:
    """Install a policy on configmaps (or `resources`) of the test's namespace, bound with `actions`."""
    made: list[str] = []

    def make(
        validations: list[dict[str, Any]],
        *,
        resources: tuple[str, ...] = ("configmaps",),
        groups: tuple[str, ...] = ("",),
        actions: tuple[str, ...] = ("Deny",),
        **spec: Any,
    ) -> str:
        name = f"p-{uuid.uuid4().hex[:8]}"
        conditions = [{"name": "this-test", "expression": f"request.namespace == '{namespace}'"}]
        body = {
            "metadata": {"name": name},
            "spec": {
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": list(groups),
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE", "DELETE"],
                            "resources": list(resources),
                        }
                    ]
                },
                "matchConditions": [*conditions, *spec.pop("matchConditions", [])],
                "validations": validations,
                **spec,
            },
        }
        api.ok("POST", POLICIES, body)
        api.ok(
            "POST",
            BINDINGS,
            {"metadata": {"name": name}, "spec": {"policyName": name, "validationActions": list(actions)}},
        )
        made.append(name)
        return name

    yield make
    for name in made:
        api("DELETE", f"{BINDINGS}/{name}")
        api("DELETE", f"{POLICIES}/{name}")


@pytest.fixture
def send(kube: Any) -> Callable[..., tuple[int, Any]]:
    """A request with a bearer token of the test's choosing (None: the default administrator)."""

    def call(
        method: str, path: str, body: Any = None, token: str | None = None, content_type: str = ""
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type or "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(kube.url + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    return call


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_a_denial_answers_as_kube_apiserver_does(api: Api, namespace: str, policy: Policy) -> None:
    name = policy([{"expression": "object.data.size == 'small'", "message": "size must be small"}])
    status, body = api("POST", f"/api/v1/namespaces/{namespace}/configmaps", configmap("c1", size="large"))
    text = f"ValidatingAdmissionPolicy '{name}' with binding '{name}' denied request: size must be small"
    assert (status, body["reason"], body["code"]) == (422, "Invalid", 422)
    assert body["message"] == f'configmaps "c1" is forbidden: {text}'
    assert body["details"] == {"name": "c1", "group": "", "kind": "configmaps", "causes": [{"message": text}]}
    api.ok("POST", f"/api/v1/namespaces/{namespace}/configmaps", configmap("c1", size="small"))


@pytest.mark.parametrize(
    ("reason", "code"), [("Forbidden", 403), ("Unauthorized", 401), ("RequestEntityTooLarge", 413), ("Invalid", 422)]
)
def test_the_reason_of_a_validation_sets_the_code(
    api: Api, namespace: str, policy: Policy, reason: str, code: int
) -> None:
    policy([{"expression": "false", "reason": reason}])
    status, body = api("POST", f"/api/v1/namespaces/{namespace}/configmaps", configmap("c1"))
    assert (status, body["reason"]) == (code, reason)
    assert body["message"].endswith("denied request: failed expression: false")


def test_a_message_expression_words_the_denial(api: Api, namespace: str, policy: Policy) -> None:
    policy(
        [
            {
                "expression": "object.data.size == 'small'",
                "messageExpression": "'size ' + object.data.size + ' is not small'",
                "message": "unused while the expression answers",
            }
        ]
    )
    _, body = api("POST", f"/api/v1/namespaces/{namespace}/configmaps", configmap("c1", size="huge"))
    assert body["message"].endswith("denied request: size huge is not small")


def test_a_policy_sees_who_asks_and_the_extra_of_its_token(
    emulator: Emulator, namespace: str, policy: Policy, send: Callable[..., tuple[int, Any]]
) -> None:
    policy(
        [
            {
                "expression": f"has(request.userInfo.extra) && '{NODE}' in request.userInfo.extra",
                "message": "no node",
                "reason": "Forbidden",
            },
            {"expression": f"request.userInfo.extra['{NODE}'][0] == object.data.node", "message": "not your node"},
            {"expression": "'system:serviceaccounts:ns1' in request.userInfo.groups", "message": "groups"},
            {"expression": "request.userInfo.username == 'system:serviceaccount:ns1:agent'", "message": "user"},
        ]
    )
    token = emulator.mint_token("ns1", "agent", node="node-a")
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    assert send("POST", path, configmap("mine", node="node-a"), token)[0] == 201
    status, body = send("POST", path, configmap("theirs", node="node-b"), token)
    assert (status, body["message"].rsplit(": ", 1)[-1]) == (422, "not your node")
    unbound = emulator.mint_token("ns1", "agent")
    status, body = send("POST", path, configmap("nobody", node="node-a"), unbound)
    assert (status, body["message"].rsplit(": ", 1)[-1]) == (403, "no node")
    emulator.add_user("plain-token-0001", "alice")  # no extra at all: the field is absent, has() says so
    assert send("POST", path, configmap("alice", node="node-a"), "plain-token-0001")[0] == 403


def test_match_conditions_and_bindings_without_deny_let_requests_through(
    api: Api, namespace: str, policy: Policy
) -> None:
    policy([{"expression": "false"}], matchConditions=[{"name": "only-c1", "expression": "request.name == 'c1'"}])
    policy([{"expression": "false"}], actions=("Warn", "Audit"))
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    assert api("POST", path, configmap("c2"))[0] == 201
    assert api("POST", path, configmap("c1"))[0] == 422


@pytest.mark.parametrize(("failure_policy", "code"), [("Fail", 422), ("Ignore", 201)])
def test_an_evaluation_error_follows_the_failure_policy(
    api: Api, namespace: str, policy: Policy, failure_policy: str, code: int
) -> None:
    policy([{"expression": "object.data.missing == 'x'"}], failurePolicy=failure_policy)
    status, body = api("POST", f"/api/v1/namespaces/{namespace}/configmaps", configmap("c1"))
    assert status == code
    if code == 422:
        assert body["message"].endswith(
            "expression 'object.data.missing == 'x'' resulted in error: no such key: missing"
        )


def test_variables_and_delete_and_update_see_old_and_new(api: Api, namespace: str, policy: Policy) -> None:
    policy(
        [
            {"expression": "request.operation != 'DELETE' || object == null", "message": "object on delete"},
            {"expression": "request.operation != 'CREATE' || oldObject == null", "message": "old on create"},
            {"expression": "variables.old != 'locked'", "message": "locked"},
        ],
        variables=[{"name": "old", "expression": "oldObject == null ? '' : oldObject.data.state"}],
    )
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    api.ok("POST", path, configmap("c1", state="open"))
    api.ok("PATCH", f"{path}/c1", {"data": {"state": "locked"}}, "application/merge-patch+json")
    status, body = api("PATCH", f"{path}/c1", {"data": {"state": "open"}}, "application/merge-patch+json")
    assert (status, body["message"].rsplit(": ", 1)[-1]) == (422, "locked")
    status, body = api("DELETE", f"{path}/c1")
    assert (status, body["message"].rsplit(": ", 1)[-1]) == (422, "locked")
    assert api("DELETE", f"{path}/c1", dryRun="All")[0] == 422  # a dry run is admitted all the same


@pytest.fixture
def rules_crd(apply_crd: Callable[[dict[str, Any]], None]) -> str:
    """Cluster-scoped `rulers` with a status subresource and CEL rules on their spec."""
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "size": {"type": "integer"},
                    "owner": {"type": "string", "maxLength": 63},
                    "tags": {
                        "type": "array",
                        "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self != 'bad'"}]},
                    },
                },
                "x-kubernetes-validations": [
                    {"rule": "!has(self.size) || self.size <= 10", "message": "size is at most 10"},
                    {"rule": "self.size >= oldSelf.size", "message": "size may only grow", "fieldPath": ".size"},
                    {
                        "rule": "!has(oldSelf.owner) || self.owner == oldSelf.owner",
                        "messageExpression": "'owner stays ' + oldSelf.owner",
                        "reason": "FieldValueForbidden",
                    },
                ],
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    apply_crd(_crd("rulers", "Ruler", "Cluster", schema, status=True))
    return f"/apis/{GROUP}/v1/rulers"


def ruler(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Ruler", "metadata": {"name": name}, "spec": spec}


def test_crd_rules_refuse_what_they_say(api: Api, rules_crd: str) -> None:
    name = f"r-{uuid.uuid4().hex[:8]}"
    status, body = api("POST", rules_crd, ruler(name, size=11, tags=["ok", "bad"]))
    assert (status, body["reason"]) == (422, "Invalid")
    causes = {(c["field"], c["message"]) for c in body["details"]["causes"]}
    assert causes == {
        ("spec", 'Invalid value: "object": size is at most 10'),
        ("spec.tags[1]", "Invalid value: \"string\": failed rule: self != 'bad'"),
    }
    assert body["message"].startswith(f'Ruler.{GROUP} "{name}" is invalid: [spec: Invalid value: "object"')
    api.ok("POST", rules_crd, ruler(name, size=5, owner="alice"))  # transition rules do not run on create
    patch = "application/merge-patch+json"
    status, body = api("PATCH", f"{rules_crd}/{name}", {"spec": {"size": 4}}, patch)
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "field": "spec.size", "message": 'Invalid value: "object": size may only grow'}
    ]
    status, body = api("PATCH", f"{rules_crd}/{name}", {"spec": {"owner": "bob"}}, patch)
    assert body["details"]["causes"] == [
        {"reason": "FieldValueForbidden", "field": "spec", "message": "Forbidden: owner stays alice"}
    ]
    api.ok("PATCH", f"{rules_crd}/{name}", {"spec": {"size": 6}}, patch)
    api.ok("PATCH", f"{rules_crd}/{name}/status", {"status": {"seen": True}}, patch)
    api.ok("DELETE", f"{rules_crd}/{name}")


def test_a_policy_or_crd_that_does_not_compile_is_refused(api: Api) -> None:
    body = {
        "metadata": {"name": f"broken-{uuid.uuid4().hex[:6]}"},
        "spec": {
            "matchConstraints": {"resourceRules": []},
            "validations": [{"expression": "object.spec.("}, {"expression": "quantity('1') == 1"}],
        },
    }
    status, answer = api("POST", POLICIES, body)
    assert status == 422
    fields = [cause["field"] for cause in answer["details"]["causes"]]
    assert fields == ["spec.validations[0].expression", "spec.validations[1].expression"]
    assert "Syntax error" in answer["details"]["causes"][0]["message"]
    crd = _crd(
        "brokens",
        "Broken",
        "Cluster",
        {"type": "object", "x-kubernetes-validations": [{"rule": "self.("}]},
        status=False,
    )
    status, answer = api("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 422
    assert answer["details"]["causes"][0]["field"] == (
        "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule"
    )


def test_status_subresource_rules_apply_to_status_writes_only(
    api: Api, namespace: str, policy: Policy, widgets: str
) -> None:
    policy([{"expression": "false", "message": "no status"}], resources=("widgets/status",), groups=(GROUP,))
    api.ok("POST", widgets, widget("w1"))
    patch = "application/merge-patch+json"
    assert api("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, patch)[0] == 200
    status, body = api("PATCH", f"{widgets}/w1/status", {"status": {"x": 1}}, patch)
    assert (status, body["message"].rsplit(": ", 1)[-1]) == (422, "no status")


def test_minted_tokens_carry_the_claims_of_their_binding(emulator: Emulator) -> None:
    bound = emulator.access.token_review({"spec": {"token": emulator.mint_token("ns", "sa", node="n1", pod="p1")}})
    user = bound["status"]["user"]
    assert user["username"] == "system:serviceaccount:ns:sa"
    assert set(user["groups"]) == {"system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"}
    assert user["extra"][NODE] == ["n1"]
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["p1"]
    unbound = emulator.access.token_review({"spec": {"token": emulator.mint_token("ns", "sa")}})
    assert NODE not in unbound["status"]["user"]["extra"]
