"""TokenReview and SubjectAccessReview answered from the emulator's tables."""

from __future__ import annotations

from typing import Any

import pytest

from kube_emulator import Emulator

from .helpers import Api

pytestmark = pytest.mark.emulator


def test_token_review(api: Api, emulator: Emulator) -> None:
    emulator.add_user("secret-token", "alice", ["fleet-admins"])
    review: dict[str, Any] = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": "secret-token"},
    }
    status = api.ok("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review)["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == "alice" and "fleet-admins" in status["user"]["groups"]
    review["spec"]["token"] = "wrong"
    assert api.ok("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review)["status"]["authenticated"] is False


def test_subject_access_review(api: Api, emulator: Emulator) -> None:
    emulator.allow("fleet-admins", "patch", "gpufleet.io", "hosts")

    def allowed(user: str, groups: list[str], verb: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "resourceAttributes": {"verb": verb, "group": "gpufleet.io", "resource": "hosts"},
            },
        }
        answer = api.ok("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(answer["status"]["allowed"])

    assert allowed("bob", ["fleet-admins"], "patch")
    assert not allowed("bob", ["fleet-admins"], "delete")
    assert not allowed("eve", [], "patch")
