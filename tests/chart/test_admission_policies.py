"""The agent's node restriction as the chart renders it (templates/admission-policies.yaml).

Three ValidatingAdmissionPolicies (Hosts, GPUs, host Leases), each with a Deny binding, matching the agent's
ServiceAccount only, in a CEL the emulator compiles; off by value, and refused on Kubernetes
before 1.30 while on. What the rules do is tested end to end in tests/admission.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import helm_python as helm
import pytest

from gpufleet.api import host, meta
from kube_emulator import cel

from . import rendering

POLICY = "ValidatingAdmissionPolicy"
BINDING = "ValidatingAdmissionPolicyBinding"


def _policies(values: dict[str, Any], namespace: str = rendering.NAMESPACE) -> list[rendering.Manifest]:
    rendered = rendering.render(values, namespace=namespace)
    return [m for m in rendering.objects(rendered) if m["kind"] in (POLICY, BINDING)]


def test_the_default_install_restricts_agents_to_their_node() -> None:
    found = {(m["kind"], m["metadata"]["name"]) for m in rendering.objects_of_file(rendering.CI_VALUES[0])}
    for name in ("gpufleet-agent-hosts", "gpufleet-agent-gpus", "gpufleet-agent-leases"):
        assert {(POLICY, name), (BINDING, name)} <= found


@pytest.mark.parametrize(
    "values",
    [{"agent": {"nodeRestriction": {"enabled": False}}}, {"agent": {"enabled": False}}],
    ids=["turned-off", "no-agent"],
)
def test_no_policies_when_turned_off_or_without_agents(values: dict[str, Any]) -> None:
    assert _policies(values) == []


def test_each_binding_denies_with_its_policy() -> None:
    manifests = _policies({})
    policies = {m["metadata"]["name"]: m for m in manifests if m["kind"] == POLICY}
    bindings = [m for m in manifests if m["kind"] == BINDING]
    assert sorted(b["spec"]["policyName"] for b in bindings) == sorted(policies)
    for bound in bindings:
        assert bound["spec"]["validationActions"] == ["Deny"]
        assert "matchResources" not in bound["spec"]  # everything the policy matches
    for policy in policies.values():
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert policy["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"


def test_the_policies_match_the_agents_service_account_only() -> None:
    values = {"agent": {"serviceAccount": {"name": "node-reporter"}}}
    for policy in [m for m in _policies(values, namespace="fleet") if m["kind"] == POLICY]:
        [condition] = policy["spec"]["matchConditions"]
        assert condition["expression"] == "request.userInfo.username == 'system:serviceaccount:fleet:node-reporter'"
        [rule] = policy["spec"]["matchConstraints"]["resourceRules"]
        assert sorted(rule["operations"]) == ["CREATE", "DELETE", "UPDATE"]
        if policy["metadata"]["name"].endswith("-leases"):
            assert (rule["apiGroups"], rule["resources"]) == (["coordination.k8s.io"], ["leases"])
            continue
        assert rule["apiGroups"] == [meta.GROUP]
        plural = "hosts" if policy["metadata"]["name"].endswith("-hosts") else "gpus"
        assert rule["resources"] == [plural, f"{plural}/status"]


@pytest.mark.parametrize("namespace", ["gpufleet-host-leases", "fleet-heartbeats"])
def test_the_lease_policy_keeps_the_agent_in_the_host_lease_namespace(namespace: str) -> None:
    """The agent writes Leases only in hostLeases.namespace, the one the chart hands every component."""
    values = {"hostLeases": {"namespace": namespace}}
    [leases] = [m for m in _policies(values) if m["kind"] == POLICY and m["metadata"]["name"].endswith("-leases")]
    expressions = [v["expression"] for v in leases["spec"]["validations"]]
    assert f"has(request.namespace) && request.namespace == '{namespace}'" in expressions
    agent = rendering.container_of(rendering.objects(rendering.render(values)), "agent")
    assert {"name": "GPUFLEET_AGENT_HOST_LEASE_NAMESPACE", "value": namespace} in agent["env"]


def test_every_expression_compiles() -> None:
    """In the emulator's CEL (kube-apiserver compiles them on create; tests/e2e installs them on kind)."""
    environment = cel.Environment(cel.POLICY_VARIABLES)
    count = 0
    for policy in [m for m in _policies({}) if m["kind"] == POLICY]:
        spec = policy["spec"]
        for item in [*spec["matchConditions"], *spec["variables"], *spec["validations"]]:
            for key in ("expression", "messageExpression"):
                if key in item:
                    environment.compile(item[key])
                    count += 1
    assert count > 20


def test_the_operator_owned_fields_and_labels_are_the_models() -> None:
    """The policy names status fields and labels by string: they must be the models' own."""
    [hosts] = [m for m in _policies({}) if m["metadata"]["name"] == "gpufleet-agent-hosts" and m["kind"] == POLICY]
    text = " ".join(v["expression"] for v in hosts["spec"]["validations"])
    fields = re.search(r"\[('state'[^\]]*)\]\.all", text)
    assert fields is not None
    named = {f.strip(" '") for f in fields.group(1).split(",")}
    assert named == {"state", "conditions", "totalGpu", "usedGpu", "gpus", "observedGeneration"}
    aliases = {info.alias or key for key, info in host.HostStatus.model_fields.items()}
    assert named <= aliases
    for label in meta.OPERATOR_LABELS:
        assert f"'{label}'" in text


def test_older_kubernetes_is_refused_while_on_and_installs_without(tmp_path: pathlib.Path) -> None:
    """`helm install` on 1.29 fails naming the value; with it off the chart lints clean there.

    Helm renders offline as its own Kubernetes version and lint treats `fail` as a warning it does not
    report, so the refusal is seen by rendering a copy of the chart whose cluster version says 1.29.
    """
    with helm.Chart.load(rendering.CHART) as chart:
        copy = pathlib.Path(chart.save_dir(tmp_path))
    template = copy / "templates" / "admission-policies.yaml"
    template.write_text(template.read_text().replace(".Capabilities.KubeVersion.Version", '"v1.29.4"'))
    with helm.Chart.load(copy) as chart, pytest.raises(helm.HelmError) as refused:
        chart.render({}, name=rendering.RELEASE, namespace=rendering.NAMESPACE)
    assert "agent.nodeRestriction needs Kubernetes 1.30 or newer" in str(refused.value)
    assert "agent.nodeRestriction.enabled=false" in str(refused.value)
    with helm.Chart.load(copy) as chart:
        rendered = chart.render({"agent": {"nodeRestriction": {"enabled": False}}}, name=rendering.RELEASE)
    assert not [m for m in rendering.objects(rendered) if m["kind"] in (POLICY, BINDING)]
    off = {"agent": {"nodeRestriction": {"enabled": False}}}
    report = helm.lint(rendering.CHART, off, strict=True, kube_version="v1.29.0", namespace=rendering.NAMESPACE)
    assert ([m for m in report["messages"] if m["severity"] >= 2], report["errors"]) == ([], [])
