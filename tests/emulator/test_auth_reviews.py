"""TokenReview, SubjectAccessReview and SelfSubjectAccessReview answered from the emulator's tables."""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import pytest

from kube_emulator import EmulatedCluster, Emulator

from .helpers import GROUP, Api, kubectl

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

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


def _self_review(verb: str, resource: str = "widgets") -> dict[str, Any]:
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": verb, "group": GROUP, "resource": resource, "namespace": "default"}},
    }


def test_self_subject_access_review_of_the_admin(api: Api) -> None:
    """The suite's own credentials may do anything (system:masters on the emulator, admin on a test cluster)."""
    answer = api.ok("POST", SSAR, _self_review("delete"))
    assert answer["kind"] == "SelfSubjectAccessReview" and answer["status"]["allowed"] is True
    assert answer["spec"]["resourceAttributes"]["verb"] == "delete"


def test_self_subject_access_review_answers_for_the_caller(
    emulated_cluster: EmulatedCluster, emulator: Emulator, tmp_path: pathlib.Path, test_crds: None
) -> None:
    import kubernetes

    emulator.add_user("carol-token", "carol", ["widget-readers"])
    emulator.allow("widget-readers", "get", GROUP, "widgets")
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig", token="carol-token")
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        carol = Api(client)
        assert carol.ok("POST", SSAR, _self_review("get"))["status"]["allowed"] is True
        assert carol.ok("POST", SSAR, _self_review("delete"))["status"]["allowed"] is False
        assert carol.ok("POST", SSAR, _self_review("get", "gadgets"))["status"]["allowed"] is False
    finally:
        client.close()
    if shutil.which("kubectl") is None:
        return
    # kubectl sends no bearer token over plain HTTP: it asks for another user by impersonation.
    admin = emulated_cluster.write_kubeconfig(tmp_path / "admin")
    as_carol = ["--as", "carol", "--as-group", "widget-readers"]
    allowed = kubectl(admin, "auth", "can-i", "get", "widgets", *as_carol)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "yes"), allowed.stderr
    denied = kubectl(admin, "auth", "can-i", "delete", "widgets", *as_carol)
    assert (denied.returncode, denied.stdout.strip()) == (1, "no"), denied.stderr
    assert kubectl(admin, "auth", "can-i", "delete", "widgets").stdout.strip() == "yes"


def test_impersonation_needs_permission(
    emulated_cluster: EmulatedCluster, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    import kubernetes

    emulator.add_user("dave-token", "dave", [])
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig", token="dave-token")
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        dave = Api(client)
        headers = {"Content-Type": "application/json", "Impersonate-User": "erin"}
        response = dave._send("POST", SSAR, _self_review("get"), headers, {})
        assert response.status == 403
        assert json.loads(response.read())["message"] == (
            'users "erin" is forbidden: User "dave" cannot impersonate resource "users" in API group "" '
            "at the cluster scope"
        )
        emulator.allow("dave", "impersonate", "", "users")
        response = dave._send("POST", SSAR, _self_review("get"), headers, {})
        assert response.status == 201 and json.loads(response.read())["status"]["allowed"] is False
    finally:
        client.close()
