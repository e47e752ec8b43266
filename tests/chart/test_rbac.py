"""Each component is granted exactly what its code uses, nothing more.

The expected grants are written out here, per component, with the code path that needs each:
a template that grants more (or less) fails, and so does a code change that needs a new verb
until both this table and the template say why. Rules are flattened to
(scope, apiGroup, resource, verb, resourceName) so that how a template groups them does not matter.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from . import rendering

Grant = rendering.Grant
NS = rendering.NAMESPACE
LEASES = "gpufleet-host-leases"  # hostLeases.namespace: the hosts' heartbeat Leases


def _expand(scope: str, group: str, resource: str, verbs: str, name: str = "") -> set[Grant]:
    return {(scope, group, resource, verb, name) for verb in verbs.split()}


OPERATOR: set[Grant] = (
    # Kopf: resource observer watches CRDs (kopf/_core/reactor/observation.py resource_observer)
    _expand("cluster", "apiextensions.k8s.io", "customresourcedefinitions", "list watch")
    # Kopf: namespace observer (observation.py namespace_observer)
    | _expand("cluster", "", "namespaces", "list watch")
    # Host informer (list, watch); fleet.Fleet re-reads (get), finalizer add/remove and labels (patch)
    | _expand("cluster", "gpufleet.io", "hosts", "get list watch patch")
    # fleet.Fleet status writes (patch_cluster_custom_object_status)
    | _expand("cluster", "gpufleet.io", "hosts/status", "patch")
    # GPU informer (list, watch) for the roll-up; cleanup.release lists and deletes a host's GPUs;
    # writer.mask_gpu / unmask_gpu annotate (patch) and set the state of (gpus/status) an offline host's GPUs
    | _expand("cluster", "gpufleet.io", "gpus", "list watch delete patch")
    | _expand("cluster", "gpufleet.io", "gpus/status", "patch")
    # agent_tokens.ensure: creates a host's token Secret, reads it when create answers 409 (get), fills
    # an empty one (update); cleanup.release deletes it. No informer on Secrets: no list, no watch.
    | _expand(NS, "", "secrets", "create get update delete")
    # leaderelection.LeaderElector: reads its Lease on every try (get), renews it, takes it over and
    # releases it on shutdown (update, with resourceVersion), by name; creates it when absent (create
    # cannot be narrowed by name)
    | _expand(NS, "coordination.k8s.io", "leases", "get update", "gpufleet-operator")
    | _expand(NS, "coordination.k8s.io", "leases", "create")
    # host Leases: the informer (controller.main.informers) lists and watches them; fleet.Fleet._read_lease
    # reads one (get) before declaring a silent host offline. Nothing written: agents and the facade renew them
    | _expand(LEASES, "coordination.k8s.io", "leases", "get list watch")
    # events.post, in events.EVENTS_NAMESPACE ("default"): Events about cluster-scoped Hosts
    | _expand("default", "", "events", "create")
)

FACADE: set[Grant] = (
    # the facade's Host informer (list, watch); kubeapi.create_host, patch_host, delete_host; kubeapi.read_host
    # (register confirming a duplicate, claims.acquire judging a claim's Host, update/delete past the cache)
    _expand("cluster", "gpufleet.io", "hosts", "get list watch create patch delete")
    # kubeapi.patch_host_status: legacy heartbeats
    | _expand("cluster", "gpufleet.io", "hosts/status", "patch")
    # the facade's GPU informer
    | _expand("cluster", "gpufleet.io", "gpus", "list watch")
    # nothing on Secrets: agent tokens are checked against the Host's gpufleet.io/agent-token-sha256 digest
    # claims.py IP claims: kubeapi.create_configmap, read_configmap, patch_configmap, delete_configmap
    | _expand(NS, "", "configmaps", "create get patch delete")
    # heartbeats.Leases.renew: kubeapi.patch_lease (merge patch), kubeapi.create_lease on 404 (patch again on
    # 409); the Lease informer (app.py, kubeapi.list_leases) for last_heartbeat. No get, update or delete
    | _expand(LEASES, "coordination.k8s.io", "leases", "list watch create patch")
)
FACADE_KUBERNETES_AUTH: set[Grant] = (
    # kubeapi.token_review, kubeapi.access_review (auth.py, auth mode kubernetes only)
    _expand("cluster", "authentication.k8s.io", "tokenreviews", "create")
    | _expand("cluster", "authorization.k8s.io", "subjectaccessreviews", "create")
)

AGENT: set[Grant] = (
    # binding.py: the node's Host by name (get) or by spec.nodeName (list)
    _expand("cluster", "gpufleet.io", "hosts", "get list")
    # heartbeat.py: Host status merge patch
    | _expand("cluster", "gpufleet.io", "hosts/status", "patch")
    # reconcile.py: list by label, create, get, patch, delete GPUs
    | _expand("cluster", "gpufleet.io", "gpus", "get list create patch delete")
    # agent.py: GPU status merge patch
    | _expand("cluster", "gpufleet.io", "gpus/status", "patch")
    # heartbeat.renew: merge-patches its Host's Lease; on 404 reads the Host (hosts get) and creates the
    # Lease, patching again on 409. It never reads a Lease
    | _expand(LEASES, "coordination.k8s.io", "leases", "create patch")
)
AGENT_REGISTER = _expand("cluster", "gpufleet.io", "hosts", "create")  # binding.py with --register


def _values(name: str) -> list[dict[str, Any]]:
    return rendering.objects_of_file(rendering.CHART / "ci" / name)


def test_the_operator_gets_exactly_what_it_uses() -> None:
    assert rendering.component_grants(_values("default-values.yaml"), "operator") == OPERATOR


def test_without_leader_election_the_operator_gets_no_lease() -> None:
    """No leader-election Lease in the release namespace; the hosts' Leases are still read."""
    expected = {g for g in OPERATOR if g[1] != "coordination.k8s.io" or g[0] == LEASES}
    assert expected < OPERATOR
    assert rendering.component_grants(_values("minimal-values.yaml"), "operator") == expected


def test_the_lease_grants_follow_the_lease_name() -> None:
    """hardened-values.yaml names its Lease gpufleet-leader: get and update follow it, nothing else moves."""
    renamed = {
        (scope, group, resource, verb, "gpufleet-leader" if name == "gpufleet-operator" else name)
        for scope, group, resource, verb, name in OPERATOR
    }
    assert rendering.component_grants(_values("hardened-values.yaml"), "operator") == renamed


@pytest.mark.parametrize("component", ["operator", "facade", "agent"])
def test_the_host_lease_grants_follow_the_host_lease_namespace(component: str) -> None:
    """hostLeases.namespace moves each component's Role on host Leases there, and nothing else."""
    moved = rendering.objects(rendering.render({"hostLeases": {"namespace": "fleet-heartbeats"}}))
    expected = {
        ("fleet-heartbeats" if scope == LEASES else scope, group, resource, verb, name)
        for scope, group, resource, verb, name in rendering.component_grants(_values("default-values.yaml"), component)
    }
    assert any(scope == "fleet-heartbeats" for scope, *_ in expected)
    assert rendering.component_grants(moved, component) == expected


def test_the_facade_gets_exactly_what_it_uses() -> None:
    assert rendering.component_grants(_values("default-values.yaml"), "facade") == FACADE | FACADE_KUBERNETES_AUTH


def test_static_auth_drops_the_review_grants() -> None:
    assert rendering.component_grants(_values("minimal-values.yaml"), "facade") == FACADE


def test_the_agent_gets_exactly_what_it_uses() -> None:
    assert rendering.component_grants(_values("default-values.yaml"), "agent") == AGENT


def test_agent_registration_adds_only_host_creation() -> None:
    assert rendering.component_grants(_values("hardened-values.yaml"), "agent") == AGENT | AGENT_REGISTER


def test_no_agent_no_agent_rbac() -> None:
    assert rendering.component_grants(_values("minimal-values.yaml"), "agent") == set()


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
def test_no_role_grants_wildcards_or_escalation(values_file: pathlib.Path) -> None:
    dangerous_verbs = {"*", "escalate", "bind", "impersonate"}
    for manifest in rendering.objects_of_file(values_file):
        if manifest["kind"] not in ("Role", "ClusterRole"):
            continue
        for scope, group, resource, verb, _ in rendering.grants(manifest):
            assert "*" not in (group, resource), manifest["metadata"]["name"]
            assert verb not in dangerous_verbs, manifest["metadata"]["name"]
            assert not (resource == "secrets" and scope == "cluster"), "Secrets only in the release namespace"


def _comment_above(lines: list[str], number: int) -> str:
    """The comment block right above line `number`, looking through template-only lines."""
    block: list[str] = []
    above = number - 1
    while above >= 0 and lines[above].strip().startswith(("#", "{{")):
        if lines[above].strip().startswith("#"):
            block.insert(0, lines[above])
        above -= 1
    return "\n".join(block)


def test_every_rule_is_commented_framework_or_application() -> None:
    for template in sorted((rendering.CHART / "templates").glob("rbac-*.yaml")):
        lines = template.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                comment = _comment_above(lines, number)
                assert comment, f"{template.name}:{number + 1} has no comment"
                if template.name != "rbac-user-roles.yaml":  # roles for people, not for a component
                    assert "framework" in comment or "application" in comment, f"{template.name}:{number + 1}"


@pytest.mark.parametrize("layout", rendering.LAYOUTS)
def test_each_identity_holds_exactly_its_components_grants(layout: str) -> None:
    """Roles are written per component; bindings decide who holds them (facade.layout)."""
    manifests = rendering.objects(rendering.render(rendering.with_layout({}, layout)))
    operator_sa = rendering.service_account_of(manifests, "operator")
    facade_sa = rendering.service_account_of(manifests, "facade")
    agent_sa = rendering.service_account_of(manifests, "agent")
    assert rendering.bound_grants(manifests, agent_sa) == AGENT
    if layout == "deployment":
        assert facade_sa != operator_sa
        assert rendering.bound_grants(manifests, operator_sa) == OPERATOR
        assert rendering.bound_grants(manifests, facade_sa) == FACADE | FACADE_KUBERNETES_AUTH
    else:  # the sidecar shares the pod, hence the operator's identity and rights
        assert facade_sa == operator_sa
        assert rendering.bound_grants(manifests, operator_sa) == OPERATOR | FACADE | FACADE_KUBERNETES_AUTH


def test_the_facade_gets_nothing_on_secrets_in_any_layout_or_values_file() -> None:
    for values_file in rendering.CI_VALUES:
        for layout in rendering.LAYOUTS:
            values = rendering.with_layout(rendering.values_of(values_file), layout)
            granted = rendering.component_grants(rendering.objects(rendering.render(values)), "facade")
            assert granted and not [g for g in granted if g[2] == "secrets"], (values_file.name, layout)


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
def test_bindings_bind_the_chart_roles_to_the_chart_service_accounts(values_file: pathlib.Path) -> None:
    manifests = rendering.objects_of_file(values_file)
    accounts = {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in manifests if m["kind"] == "ServiceAccount"}
    roles = {(m["kind"], m["metadata"]["name"]) for m in manifests if m["kind"] in ("Role", "ClusterRole")}
    bindings = [m for m in manifests if m["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings
    for binding in bindings:
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert (subject["namespace"], subject["name"]) in accounts


def test_rest_roles_map_to_the_verbs_the_facade_reviews() -> None:
    """auth.Access: list/get for viewers; create/update/delete for admins, on hosts.gpufleet.io."""
    from gpufleet.facade import auth

    manifests = _values("default-values.yaml")
    admin = rendering.grants(rendering.find(manifests, "ClusterRole", "-admin"))
    viewer = rendering.grants(rendering.find(manifests, "ClusterRole", "-viewer"))
    for access in auth.Access:
        grant = ("cluster", "gpufleet.io", "hosts", access.value, "")
        assert grant in admin
        assert (grant in viewer) is not access.admin_only
    admin_role = rendering.find(manifests, "ClusterRole", "-admin")["metadata"]["labels"]
    assert admin_role["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    viewer_role = rendering.find(manifests, "ClusterRole", "-viewer")["metadata"]["labels"]
    assert viewer_role["rbac.authorization.k8s.io/aggregate-to-view"] == "true"


def test_node_remediation_grants_node_writes_only_when_it_is_on() -> None:
    """Off by default: the operator may then neither read nor touch a Node."""
    for enabled in (False, True):
        values = {"operator": {"nodeRemediation": {"enabled": enabled}}}
        manifests = rendering.objects(rendering.render(values))
        grants = rendering.bound_grants(manifests, rendering.service_account_of(manifests, "operator"))
        node_grants = _expand("cluster", "", "nodes", "get patch") | _expand("cluster", "", "nodes/status", "patch")
        assert (node_grants <= grants) is enabled
        assert not any(g for g in grants - node_grants if "nodes" in str(g) and "namespaces" not in str(g))
