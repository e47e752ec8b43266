"""Validating admission in the emulator: ValidatingAdmissionPolicies and CRD validation rules, in CEL.

A kube-apiserver runs every create, update (patch included) and delete through two CEL checks
after the schema: the ``x-kubernetes-validations`` rules of a CRD's schema (``self``, and
``oldSelf`` in transition rules, which run on updates only), then every stored
``ValidatingAdmissionPolicy`` that a ``ValidatingAdmissionPolicyBinding`` puts to work and whose
``matchConstraints`` select the request. This module does both, with the semantics tests can
observe over HTTP:

- a policy sees ``object`` (null on DELETE), ``oldObject`` (null on CREATE), ``request`` (an
  AdmissionRequest as unstructured JSON: empty fields such as ``subResource`` or
  ``userInfo.extra`` are absent, as on a cluster), ``namespaceObject`` and ``variables``;
  ``params`` (``paramKind``) and ``authorizer`` are not emulated and fail loudly;
- ``matchConstraints``/``matchResources``: resource rules (``hosts``, ``hosts/status``, ``*``,
  ``hosts/*``, ``*/*``), exclusions, ``resourceNames``, ``scope``, namespace and object selectors;
  ``matchConditions`` skip a policy; ``failurePolicy`` decides what an evaluation error does;
- a denial answers like kube-apiserver: the code from the failing validation's ``reason``
  (Invalid 422 by default, Forbidden 403, Unauthorized 401, RequestEntityTooLarge 413) and the
  message ``<resource> "<name>" is forbidden: ValidatingAdmissionPolicy '<policy>' with binding
  '<binding>' denied request: <message>``; only bindings with the ``Deny`` action deny;
- policies, bindings and CRDs whose expressions do not compile are refused on write (422).

The requesting user comes from the bearer token (:class:`~kube_emulator.auth.AccessTable`,
``Emulator.add_user`` and ``Emulator.mint_token``); a request without a known token is the
emulator's administrator, ``system:masters``. Policies never apply to the policy resources
themselves, as on a cluster.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from . import cel
from .auth import AccessTable
from .errors import ApiError, invalid
from .resources import CRDS, NAMESPACES, ResourceDef
from .store import Store

JsonObj = dict[str, Any]

GROUP = "admissionregistration.k8s.io"
POLICIES = "validatingadmissionpolicies"
BINDINGS = "validatingadmissionpolicybindings"
#: The extra of a ServiceAccount token bound to a pod (Kubernetes 1.30+) that names the pod's node.
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"

_CODES = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413, "Invalid": 422}


@dataclasses.dataclass(frozen=True)
class UserInfo:
    """Who sent a request, as ``request.userInfo`` shows it to a policy."""

    username: str
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    uid: str = ""

    def as_json(self) -> JsonObj:
        """``authentication.k8s.io/v1`` UserInfo with empty fields left out (omitempty)."""
        found: JsonObj = {"username": self.username}
        if self.uid:
            found["uid"] = self.uid
        if self.groups:
            found["groups"] = list(self.groups)
        if self.extra:
            found["extra"] = {key: list(values) for key, values in self.extra.items()}
        return found


#: The identity of requests without a known bearer token (the tests' kubeconfig, in-process calls).
ADMIN = UserInfo("emulator:admin", ("system:masters", "system:authenticated"))
#: The user of the request being served (set per request task, so concurrent requests do not mix).
CURRENT_USER: contextvars.ContextVar[UserInfo] = contextvars.ContextVar("gpufleet_emulator_user", default=ADMIN)


def user_of(access: AccessTable, authorization: str) -> UserInfo:
    """The user an ``Authorization`` header authenticates as (ADMIN for none or an unknown token)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return ADMIN
    review = access.token_review({"spec": {"token": token.strip()}})["status"]
    if not review.get("authenticated"):
        return ADMIN
    user = review["user"]
    extra = {key: tuple(values) for key, values in (user.get("extra") or {}).items()}
    return UserInfo(user["username"], tuple(user.get("groups") or ()), extra, user.get("uid", ""))


def impersonated(access: AccessTable, user: UserInfo, users: list[str], groups: list[str]) -> UserInfo:
    """The user named by ``Impersonate-User``/``Impersonate-Group`` headers (``kubectl --as``).

    kubectl sends no bearer token over plain HTTP, so impersonation is how a test asks what
    another user may do (``kubectl auth can-i --as``). As in kube-apiserver, the caller needs
    ``impersonate`` on ``users`` (system:masters has it); otherwise 403.
    """
    if not users:
        return user
    name = users[0]
    review = {"spec": {"user": user.username, "groups": list(user.groups), "resourceAttributes": {}}}
    review["spec"]["resourceAttributes"] = {"verb": "impersonate", "group": "", "resource": "users", "name": name}
    if not access.access_review(review)["status"]["allowed"]:
        raise ApiError(
            403,
            "Forbidden",
            f'users "{name}" is forbidden: User "{user.username}" cannot impersonate resource "users" '
            'in API group "" at the cluster scope',
            {"name": name, "kind": "users"},
        )
    return UserInfo(name, (*groups, "system:authenticated"))


@dataclasses.dataclass(frozen=True)
class Attributes:
    """One write as admission sees it."""

    operation: str  # CREATE, UPDATE or DELETE
    resource: ResourceDef
    subresource: str | None
    namespace: str | None
    name: str
    obj: JsonObj | None
    old: JsonObj | None
    dry_run: bool = False


@dataclasses.dataclass(frozen=True)
class _Denial:
    message: str
    reason: str


class Admission:
    """Runs the CEL checks of one emulator's writes against the objects in its store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._policy_cel = cel.Environment(cel.POLICY_VARIABLES)
        self._rule_cel = cel.Environment(cel.RULE_VARIABLES)
        self._rule_cache: dict[int, tuple[JsonObj, bool]] = {}

    # ----- the hook -----------------------------------------------------------------------------------

    def check(self, attrs: Attributes) -> None:
        """Raise the API server's error when CRD rules or a policy refuse this write."""
        if attrs.obj is not None:
            self._check_definitions(attrs)
            if attrs.resource.schema is not None:
                causes = self.rule_causes(attrs.resource.schema, attrs.obj, attrs.old)
                if causes:
                    raise invalid(attrs.resource.kind_group, attrs.name, causes)
        if attrs.resource.group != GROUP:
            self._run_policies(attrs, CURRENT_USER.get())

    # ----- CRD validation rules -------------------------------------------------------------------------

    def rule_causes(self, schema: JsonObj, new: JsonObj, old: JsonObj | None) -> list[JsonObj]:
        """The causes of every failing ``x-kubernetes-validations`` rule (transition rules on updates only)."""
        if not self._has_rules(schema):
            return []
        causes: list[JsonObj] = []
        self._walk(schema, new, old, old is not None, "", causes, root=True)
        return causes

    def _has_rules(self, schema: Any) -> bool:
        cached = self._rule_cache.get(id(schema))
        if cached is not None and cached[0] is schema:
            return cached[1]
        found = _contains_rules(schema)
        if isinstance(schema, dict):
            self._rule_cache[id(schema)] = (schema, found)
        return found

    def _walk(
        self, schema: JsonObj, value: Any, old: Any, has_old: bool, path: str, causes: list[JsonObj], root: bool = False
    ) -> None:
        if value is None or not self._has_rules(schema):
            return
        for rule in schema.get("x-kubernetes-validations") or []:
            cause = self._rule_cause(rule, schema, value, old, has_old, path)
            if cause is not None:
                causes.append(cause)
        if isinstance(value, dict):
            properties: JsonObj = schema.get("properties") or {}
            additional = schema.get("additionalProperties")
            for key, item in value.items():
                if root and key in ("apiVersion", "kind", "metadata"):
                    continue
                sub = properties.get(key, additional if isinstance(additional, dict) else None)
                if sub is None:
                    continue
                child_old = has_old and isinstance(old, dict) and key in old
                child = f"{path}.{key}" if path else key
                self._walk(sub, item, old[key] if child_old else None, child_old, child, causes)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            # Items of atomic lists have no old counterpart: their transition rules do not run.
            for index, item in enumerate(value):
                self._walk(schema["items"], item, None, False, f"{path}[{index}]", causes)

    def _rule_cause(
        self, rule: JsonObj, schema: JsonObj, value: Any, old: Any, has_old: bool, path: str
    ) -> JsonObj | None:
        text = str(rule.get("rule", ""))
        if cel.is_transition_rule(text) and not has_old and not rule.get("optionalOldSelf"):
            return None
        field = path + str(rule.get("fieldPath") or "")
        field = field.lstrip(".")
        shown = schema.get("type", "object")
        try:
            passed = self._rule_cel.evaluate(text, {"self": value, "oldSelf": old if has_old else None})
        except cel.CelError as error:
            return _cause("FieldValueInvalid", field, f'Invalid value: "{shown}": {error} evaluating rule: {text}')
        if passed is True:
            return None
        message = _rule_message(self._rule_cel, rule, {"self": value, "oldSelf": old if has_old else None})
        reason = rule.get("reason") or "FieldValueInvalid"
        if reason == "FieldValueForbidden":
            return _cause(reason, field, f"Forbidden: {message}")
        if reason == "FieldValueRequired":
            return _cause(reason, field, f"Required value: {message}")
        if reason == "FieldValueDuplicate":
            return _cause(reason, field, f'Duplicate value: "{shown}"')
        return _cause("FieldValueInvalid", field, f'Invalid value: "{shown}": {message}')

    # ----- what may be stored ----------------------------------------------------------------------------

    def _check_definitions(self, attrs: Attributes) -> None:
        """Policies, bindings and CRDs whose CEL does not compile are refused, as kube-apiserver does."""
        obj = attrs.obj or {}
        spec = obj.get("spec") or {}
        causes: list[JsonObj] = []
        if attrs.resource.group == GROUP and attrs.resource.plural == POLICIES:
            for field, expression in _policy_expressions(spec):
                self._compiles(self._policy_cel, expression, field, causes)
            if spec.get("paramKind"):
                unsupported = "Unsupported value: params are not emulated"
                causes.append(_cause("FieldValueNotSupported", "spec.paramKind", unsupported))
        elif attrs.resource.group == GROUP and attrs.resource.plural == BINDINGS:
            if not spec.get("policyName"):
                causes.append(_cause("FieldValueRequired", "spec.policyName", "Required value"))
            actions = spec.get("validationActions") or []
            if not actions:
                causes.append(_cause("FieldValueRequired", "spec.validationActions", "Required value"))
            for index, action in enumerate(actions):
                if action not in ("Deny", "Warn", "Audit"):
                    causes.append(
                        _cause(
                            "FieldValueNotSupported",
                            f"spec.validationActions[{index}]",
                            f'Unsupported value: "{action}": supported values: "Audit", "Deny", "Warn"',
                        )
                    )
        elif attrs.resource == CRDS:
            for index, version in enumerate(spec.get("versions") or []):
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                base = f"spec.versions[{index}].schema.openAPIV3Schema"
                for field, expression in _schema_rules(schema, base):
                    self._compiles(self._rule_cel, expression, field, causes)
        if causes:
            raise invalid(attrs.resource.kind_group, attrs.name, causes)

    @staticmethod
    def _compiles(env: cel.Environment, expression: str, field: str, causes: list[JsonObj]) -> None:
        try:
            env.compile(expression)
        except cel.CelError as error:
            causes.append(
                _cause("FieldValueInvalid", field, f"Invalid value: {expression!r}: compilation failed: {error}")
            )

    # ----- ValidatingAdmissionPolicies -------------------------------------------------------------------

    def _run_policies(self, attrs: Attributes, user: UserInfo) -> None:
        bindings = self._store.collections.get((GROUP, BINDINGS))
        policies = self._store.collections.get((GROUP, POLICIES))
        if bindings is None or policies is None or not bindings.objects:
            return
        data: JsonObj | None = None
        for _, binding in sorted(bindings.objects.items()):
            binding_spec = binding.get("spec") or {}
            policy = policies.objects.get(("", str(binding_spec.get("policyName", ""))))
            if policy is None or "Deny" not in (binding_spec.get("validationActions") or []):
                continue  # Warn and Audit bindings never refuse a request
            policy_spec = policy.get("spec") or {}
            if not self._matches(policy_spec.get("matchConstraints") or {}, attrs, rules_required=True):
                continue
            if binding_spec.get("matchResources") and not self._matches(
                binding_spec["matchResources"], attrs, rules_required=False
            ):
                continue
            if data is None:
                data = {
                    "object": attrs.obj,
                    "oldObject": attrs.old,
                    "request": _request(attrs, user),
                    "params": None,
                    "namespaceObject": self._namespace(attrs.namespace),
                    "variables": {},
                }
            denial = self._evaluate(policy_spec, data)
            if denial is not None:
                raise _denied(attrs, policy["metadata"]["name"], binding["metadata"]["name"], denial)

    def _evaluate(self, spec: JsonObj, data: JsonObj) -> _Denial | None:
        fail = spec.get("failurePolicy", "Fail") != "Ignore"
        for condition in spec.get("matchConditions") or []:
            try:
                matched = self._policy_cel.evaluate(condition["expression"], {**data, "variables": {}})
                if not isinstance(matched, bool):
                    raise cel.CelError(f"expected a bool, got {type(matched).__name__}")
            except cel.CelError as error:
                if fail:
                    name = condition.get("name", "")
                    return _Denial(f"failed to evaluate match condition '{name}': {error}", "")
                return None
            if not matched:
                return None
        variables: JsonObj = {}
        broken: dict[str, cel.CelError] = {}
        for variable in spec.get("variables") or []:
            try:
                variables[variable["name"]] = self._policy_cel.evaluate(
                    variable["expression"], {**data, "variables": variables}
                )
            except cel.CelError as error:
                broken[variable["name"]] = error
        scope = {**data, "variables": variables}
        for validation in spec.get("validations") or []:
            expression = str(validation["expression"])
            try:
                for name, problem in broken.items():
                    if re.search(rf"\bvariables\.{re.escape(name)}\b", expression):
                        raise problem
                passed = self._policy_cel.evaluate(expression, scope)
                if not isinstance(passed, bool):
                    raise cel.CelError(f"expected a bool, got {type(passed).__name__}")
            except cel.CelError as error:
                if fail:
                    return _Denial(f"expression '{expression}' resulted in error: {error}", "")
                continue
            if not passed:
                default = f"failed expression: {expression.strip()}"
                return _Denial(_message(self._policy_cel, validation, scope, default), validation.get("reason") or "")
        return None

    def _matches(self, match: JsonObj, attrs: Attributes, *, rules_required: bool) -> bool:
        rules = match.get("resourceRules") or []
        if (rules or rules_required) and not any(_rule_matches(rule, attrs) for rule in rules):
            return False
        if any(_rule_matches(rule, attrs) for rule in match.get("excludeResourceRules") or []):
            return False
        if not self._namespace_selected(match.get("namespaceSelector"), attrs):
            return False
        return _either_selected(match.get("objectSelector"), attrs)

    def _namespace_selected(self, selector: JsonObj | None, attrs: Attributes) -> bool:
        if not selector:
            return True
        if attrs.resource == NAMESPACES:
            return _either_selected(selector, attrs)
        if not attrs.resource.namespaced:
            return True  # other cluster-scoped objects are never skipped by a namespace selector
        namespace = self._namespace(attrs.namespace) or {}
        return selector_matches(selector, (namespace.get("metadata") or {}).get("labels") or {})

    def _namespace(self, name: str | None) -> JsonObj | None:
        if not name:
            return None
        coll = self._store.collections.get(NAMESPACES.storage_key)
        return coll.objects.get(("", name)) if coll is not None else None


# ----- helpers ---------------------------------------------------------------------------------------------


def _cause(reason: str, field: str, message: str) -> JsonObj:
    return {"reason": reason, "message": message, "field": field}


def _contains_rules(node: Any) -> bool:
    if isinstance(node, dict):
        return "x-kubernetes-validations" in node or any(_contains_rules(v) for v in node.values())
    if isinstance(node, list):
        return any(_contains_rules(v) for v in node)
    return False


def _schema_rules(schema: Any, path: str) -> Iterable[tuple[str, str]]:
    """(field path, rule) of every rule (and messageExpression) in a CRD schema."""
    if not isinstance(schema, dict):
        return
    for index, rule in enumerate(schema.get("x-kubernetes-validations") or []):
        yield f"{path}.x-kubernetes-validations[{index}].rule", str(rule.get("rule", ""))
        if rule.get("messageExpression"):
            yield f"{path}.x-kubernetes-validations[{index}].messageExpression", str(rule["messageExpression"])
    for key, sub in (schema.get("properties") or {}).items():
        yield from _schema_rules(sub, f"{path}.properties[{key}]")
    for key in ("items", "additionalProperties"):
        yield from _schema_rules(schema.get(key), f"{path}.{key}")


def _policy_expressions(spec: JsonObj) -> Iterable[tuple[str, str]]:
    for index, validation in enumerate(spec.get("validations") or []):
        yield f"spec.validations[{index}].expression", str(validation.get("expression", ""))
        if validation.get("messageExpression"):
            yield f"spec.validations[{index}].messageExpression", str(validation["messageExpression"])
    for key in ("matchConditions", "variables"):
        for index, item in enumerate(spec.get(key) or []):
            yield f"spec.{key}[{index}].expression", str(item.get("expression", ""))
    for index, item in enumerate(spec.get("auditAnnotations") or []):
        yield f"spec.auditAnnotations[{index}].valueExpression", str(item.get("valueExpression", ""))


def _message(env: cel.Environment, item: JsonObj, data: JsonObj, default: str) -> str:
    """messageExpression when it yields a non-empty one-line string, else message, else ``default``."""
    if item.get("messageExpression"):
        try:
            text = env.evaluate(item["messageExpression"], data)
        except cel.CelError:
            text = None
        if isinstance(text, str) and text.strip() and "\n" not in text.strip():
            return text.strip()
    message = str(item.get("message") or "").strip()
    return message or default


def _rule_message(env: cel.Environment, rule: JsonObj, data: JsonObj) -> str:
    return _message(env, rule, data, f"failed rule: {str(rule.get('rule', '')).strip()}")


def selector_matches(selector: JsonObj | None, labels: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels and matchExpressions) against labels; empty matches all."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key", ""), expression.get("operator"), expression.get("values") or []
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and key in labels and labels[key] in values)
            or (operator == "Exists" and key not in labels)
            or (operator == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def _either_selected(selector: JsonObj | None, attrs: Attributes) -> bool:
    """An object selector matches when the new or the old object matches it."""
    if not selector:
        return True
    return any(
        selector_matches(selector, (obj.get("metadata") or {}).get("labels") or {})
        for obj in (attrs.obj, attrs.old)
        if obj is not None
    )


def _rule_matches(rule: JsonObj, attrs: Attributes) -> bool:
    """One ``NamedRuleWithOperations``, matched as kube-apiserver's rules.Matcher does."""
    resource = attrs.resource
    operations = rule.get("operations") or []
    if "*" not in operations and attrs.operation not in operations:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and resource.group not in groups:
        return False
    versions = rule.get("apiVersions") or []
    if "*" not in versions and resource.version not in versions:
        return False
    scope = rule.get("scope") or "*"
    if scope != "*" and scope != ("Namespaced" if resource.namespaced else "Cluster"):
        return False
    names = rule.get("resourceNames") or []
    if names and attrs.name not in names:
        return False
    subresource = attrs.subresource or ""
    for entry in rule.get("resources") or []:
        plural, _, sub = str(entry).partition("/")
        if plural in ("*", resource.plural) and sub in ("*", subresource):
            return True
    return False


def _request(attrs: Attributes, user: UserInfo) -> JsonObj:
    """The AdmissionRequest a policy sees as ``request``, empty fields left out as in its JSON."""
    resource = attrs.resource
    kind = {"group": resource.group, "version": resource.version, "kind": resource.kind}
    gvr = {"group": resource.group, "version": resource.version, "resource": resource.plural}
    options = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}[attrs.operation]
    request: JsonObj = {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": gvr,
        "requestKind": kind,
        "requestResource": gvr,
        "operation": attrs.operation,
        "userInfo": user.as_json(),
        "dryRun": attrs.dry_run,
        "options": {"kind": options, "apiVersion": "meta.k8s.io/v1"},
    }
    if attrs.subresource:
        request["subResource"] = request["requestSubResource"] = attrs.subresource
    if attrs.name:
        request["name"] = attrs.name
    if attrs.namespace:
        request["namespace"] = attrs.namespace
    return request


def _denied(attrs: Attributes, policy: str, binding: str, denial: _Denial) -> ApiError:
    """kube-apiserver's answer to a request a policy denies."""
    text = f"ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {denial.message}"
    reason = denial.reason or "Invalid"
    qualified = attrs.resource.qualified
    message = f'{qualified} "{attrs.name}" is forbidden: {text}' if attrs.name else f"{qualified} is forbidden: {text}"
    details = {
        "name": attrs.name,
        "group": attrs.resource.group,
        "kind": attrs.resource.plural,
        "causes": [{"message": text}],
    }
    return ApiError(_CODES.get(reason, 422), reason, message, details)
