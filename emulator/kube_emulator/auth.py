"""TokenReview, SubjectAccessReview and SelfSubjectAccessReview answered from a small table.

The REST facade's Kubernetes-native auth mode asks the API server who a bearer token
belongs to and whether that user may do something; ``kubectl auth can-i`` asks the same about
the caller. A real cluster answers from its authenticators and RBAC; here tests declare users and
rules directly. ``system:masters`` may do anything, as kube-apiserver's authorizer lets it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from typing import Any

JsonObj = dict[str, Any]
SUPERUSERS = "system:masters"


@dataclasses.dataclass(frozen=True)
class User:
    username: str
    groups: tuple[str, ...]
    extra: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """What an authenticator adds, e.g. ``authentication.kubernetes.io/node-name`` of a pod-bound token."""


@dataclasses.dataclass(frozen=True)
class Rule:
    subject: str  # a username or a group name
    verb: str
    group: str
    resource: str

    def grants(self, subjects: set[str], verb: str, group: str, resource: str) -> bool:
        return (
            self.subject in subjects
            and self.verb in ("*", verb)
            and self.group in ("*", group)
            and self.resource in ("*", resource)
        )


class AccessTable:
    """Users by token and allow-rules; safe to change from the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, User] = {}
        self._rules: list[Rule] = []

    def add_user(
        self,
        token: str,
        username: str,
        groups: tuple[str, ...] | list[str] = (),
        extra: dict[str, list[str]] | dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        with self._lock:
            self._users[token] = User(username, tuple(groups), {k: tuple(v) for k, v in (extra or {}).items()})

    def allow(self, subject: str, verb: str = "*", group: str = "*", resource: str = "*") -> None:
        with self._lock:
            self._rules.append(Rule(subject, verb, group, resource))

    def token_review(self, review: JsonObj) -> JsonObj:
        token = (review.get("spec") or {}).get("token", "")
        with self._lock:
            user = self._users.get(token)
        status: JsonObj = {"authenticated": False}
        if user is not None:
            status = {
                "authenticated": True,
                "user": {"username": user.username, "groups": [*user.groups, "system:authenticated"]},
            }
            if user.extra:
                status["user"]["extra"] = {key: list(values) for key, values in user.extra.items()}
        else:
            status["error"] = "invalid bearer token"
        return {**review, "status": status}

    def access_review(self, review: JsonObj) -> JsonObj:
        spec = review.get("spec") or {}
        attributes = spec.get("resourceAttributes") or spec.get("nonResourceAttributes") or {}
        subjects = {spec.get("user", ""), *(spec.get("groups") or [])}
        verb = attributes.get("verb", "")
        group = attributes.get("group", "")
        resource = attributes.get("resource", attributes.get("path", ""))
        with self._lock:
            granted = any(rule.grants(subjects, verb, group, resource) for rule in self._rules)
        allowed = SUPERUSERS in subjects or granted
        # RBAC gives a denial no reason (kubectl auth can-i then prints a bare "no").
        status: JsonObj = {"allowed": allowed, "reason": "allowed by emulator rule"} if allowed else {"allowed": False}
        return {**review, "status": status}

    def self_access_review(self, review: JsonObj, username: str, groups: Iterable[str]) -> JsonObj:
        """A SelfSubjectAccessReview: the SubjectAccessReview of the user who sent it."""
        spec = review.get("spec") or {}
        as_subject = {"spec": {**spec, "user": username, "groups": list(groups)}}
        return {**review, "status": self.access_review(as_subject)["status"]}
