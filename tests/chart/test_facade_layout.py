"""Where the facade runs (facade.layout), and with which identity.

The facade faces callers, so by default (`deployment`) it runs in pods of its own under a
ServiceAccount of its own, bound only to the facade's roles, none of which reads a Secret. The
`sidecar` layout keeps it in the control-plane pod for small installs, sharing the operator's
ServiceAccount. Either way the facade container is one definition, and the Service, the metrics
Services and ServiceMonitors, the PodDisruptionBudget and the NetworkPolicy follow its pods.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import helm_python as helm
import pytest

from . import rendering

Manifest = rendering.Manifest
LAYOUTS = rendering.LAYOUTS
HARDENED = rendering.CHART / "ci" / "hardened-values.yaml"


def _objects(layout: str, values: dict[str, Any] | None = None) -> list[Manifest]:
    return rendering.objects(rendering.render(rendering.with_layout(values or {}, layout)))


def _pod(workload: Manifest) -> Manifest:
    pod: Manifest = workload["spec"]["template"]["spec"]
    return pod


def _container_names(workload: Manifest) -> list[str]:
    return [c["name"] for c in _pod(workload)["containers"]]


def _ports(container: Manifest) -> set[str]:
    return {p["name"] for p in container.get("ports", [])}


def _by_name(manifests: list[Manifest], kind: str, name: str) -> Manifest | None:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) <= 1
    return found[0] if found else None


# ----- the layouts ----------------------------------------------------------------------------------


def test_the_facade_runs_in_a_deployment_of_its_own_by_default() -> None:
    assert rendering.values_of(rendering.CHART / "values.yaml")["facade"]["layout"] == "deployment"
    manifests = rendering.objects(rendering.render({}))
    controlplane = rendering.find(manifests, "Deployment", "-controlplane")
    facade = rendering.find(manifests, "Deployment", "-facade")
    assert _container_names(controlplane) == ["operator"]
    assert _container_names(facade) == ["facade"]
    assert rendering.pod_labels(facade)["app.kubernetes.io/component"] == "facade"
    assert facade["spec"]["replicas"] == 2
    assert facade["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert rendering.selects(facade["spec"]["selector"]["matchLabels"], rendering.pod_labels(facade))
    # the facade's pods are as locked down as the control plane's
    assert _pod(facade)["securityContext"] == _pod(controlplane)["securityContext"]
    assert [v["name"] for v in _pod(controlplane)["volumes"]] == ["tmp"]


def test_the_sidecar_layout_puts_the_facade_in_the_control_plane_pod() -> None:
    manifests = _objects("sidecar")
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"] == ["gpufleet-controlplane"]
    controlplane = rendering.find(manifests, "Deployment", "-controlplane")
    assert _container_names(controlplane) == ["operator", "facade"]
    assert rendering.service_account_of(manifests, "facade") == rendering.service_account_of(manifests, "operator")
    assert _by_name(manifests, "ServiceAccount", "gpufleet-facade") is None
    service = rendering.find(manifests, "Service", "-facade")
    assert rendering.selects(service["spec"]["selector"], rendering.pod_labels(controlplane))


@pytest.mark.parametrize(
    "values_file", [HARDENED, rendering.CHART / "ci" / "minimal-values.yaml"], ids=["hardened", "minimal"]
)
def test_the_facade_container_is_one_definition_in_both_layouts(values_file: pathlib.Path) -> None:
    values = rendering.values_of(values_file)
    deployment, sidecar = (_objects(layout, values) for layout in LAYOUTS)
    assert rendering.container_of(deployment, "facade") == rendering.container_of(sidecar, "facade")
    assert rendering.container_of(deployment, "operator") == rendering.container_of(sidecar, "operator")
    # the facade's volumes come along with it, whichever pod it is in
    mounted = {m["name"] for m in rendering.container_of(deployment, "facade")["volumeMounts"]}
    for manifests in (deployment, sidecar):
        volumes = {v["name"]: v for v in _pod(rendering.workload_of(manifests, "facade"))["volumes"]}
        assert mounted <= set(volumes)
    facade_pod = {v["name"]: v for v in _pod(rendering.workload_of(deployment, "facade"))["volumes"]}
    sidecar_pod = {v["name"]: v for v in _pod(rendering.workload_of(sidecar, "facade"))["volumes"]}
    assert {name: facade_pod[name] for name in mounted} == {name: sidecar_pod[name] for name in mounted}


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(helm.HelmValuesError, match="/facade/layout"):
        rendering.render({"facade": {"layout": "daemonset"}})


# ----- identity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
def test_in_the_deployment_layout_the_facade_has_an_identity_of_its_own(values_file: pathlib.Path) -> None:
    manifests = _objects("deployment", rendering.values_of(values_file))
    facade_sa = rendering.service_account_of(manifests, "facade")
    operator_sa = rendering.service_account_of(manifests, "operator")
    assert facade_sa == "gpufleet-facade"
    assert facade_sa != operator_sa
    assert _by_name(manifests, "ServiceAccount", facade_sa) is not None
    granted = rendering.bound_grants(manifests, facade_sa)
    assert granted, "the facade's ServiceAccount is bound to nothing"
    # exactly the facade's roles: nothing of the operator's (leases, events, gpus delete...)
    assert granted == rendering.component_grants(manifests, "facade")
    assert not [g for g in granted if g[2] == "secrets"], "the facade's identity may not touch a Secret"
    # and the operator's identity holds the operator's roles only
    assert rendering.bound_grants(manifests, operator_sa) == rendering.component_grants(manifests, "operator")


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
def test_no_role_bound_to_the_facade_grants_anything_on_secrets(values_file: pathlib.Path) -> None:
    manifests = _objects("deployment", rendering.values_of(values_file))
    facade_sa = rendering.service_account_of(manifests, "facade")
    roles = {(m["kind"], m["metadata"]["name"]): m for m in manifests if m["kind"] in ("Role", "ClusterRole")}
    bound = [
        roles[(b["roleRef"]["kind"], b["roleRef"]["name"])]
        for b in manifests
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s["name"] == facade_sa for s in b.get("subjects") or [])
    ]
    assert bound
    for role in bound:
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"], role["metadata"]["name"]
            assert "*" not in rule["resources"], role["metadata"]["name"]


def test_in_the_sidecar_layout_the_facade_shares_the_operators_identity() -> None:
    """Documented as such: the sidecar holds the operator's rights too, its token Secrets included."""
    manifests = _objects("sidecar")
    shared = rendering.service_account_of(manifests, "facade")
    assert shared == "gpufleet-controlplane"
    expected = rendering.component_grants(manifests, "facade") | rendering.component_grants(manifests, "operator")
    assert rendering.bound_grants(manifests, shared) == expected
    binding = rendering.find(manifests, "ClusterRoleBinding", "-facade")
    assert [s["name"] for s in binding["subjects"]] == [shared]


def test_the_facade_service_account_follows_its_values() -> None:
    manifests = _objects(
        "deployment", {"facade": {"serviceAccount": {"name": "fleet-api", "annotations": {"example.com/role": "api"}}}}
    )
    account = rendering.find(manifests, "ServiceAccount", "fleet-api")
    assert account["metadata"]["annotations"] == {"example.com/role": "api"}
    assert account["metadata"]["labels"]["app.kubernetes.io/component"] == "facade"
    assert rendering.service_account_of(manifests, "facade") == "fleet-api"
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert [s["name"] for s in rendering.find(manifests, kind, "-facade")["subjects"]] == ["fleet-api"]
    unmade = _objects("deployment", {"facade": {"serviceAccount": {"create": False, "name": "made-elsewhere"}}})
    assert _by_name(unmade, "ServiceAccount", "made-elsewhere") is None
    assert rendering.service_account_of(unmade, "facade") == "made-elsewhere"


def test_the_facade_may_not_be_given_the_operators_service_account() -> None:
    with pytest.raises(helm.HelmError, match="must differ from the operator's ServiceAccount"):
        rendering.render({"facade": {"serviceAccount": {"name": "gpufleet-controlplane"}}})
    with pytest.raises(helm.HelmError, match="must differ"):
        rendering.render(
            {"operator": {"serviceAccount": {"name": "shared"}}, "facade": {"serviceAccount": {"name": "shared"}}}
        )
    rendering.render({"facade": {"layout": "sidecar", "serviceAccount": {"name": "gpufleet-controlplane"}}})


# ----- the pods' values -----------------------------------------------------------------------------


def test_the_facade_pod_values_reach_its_pods() -> None:
    toleration = {"key": "dedicated", "operator": "Equal", "value": "api", "effect": "NoSchedule"}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["api"]}]}]
            }
        }
    }
    values = {
        "facade": {
            "replicas": 3,
            "podLabels": {"team": "fleet"},
            "podAnnotations": {"example.com/scrape": "yes"},
            "nodeSelector": {"pool": "api"},
            "tolerations": [toleration],
            "affinity": affinity,
            "priorityClassName": "api-critical",
            "terminationGracePeriodSeconds": 45,
        }
    }
    manifests = _objects("deployment", values)
    facade = rendering.find(manifests, "Deployment", "-facade")
    pod = _pod(facade)
    assert facade["spec"]["replicas"] == 3
    assert rendering.pod_labels(facade)["team"] == "fleet"
    assert facade["spec"]["template"]["metadata"]["annotations"] == {"example.com/scrape": "yes"}
    assert pod["nodeSelector"] == {"pool": "api"}
    assert pod["tolerations"] == [toleration]
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "api-critical"
    assert pod["terminationGracePeriodSeconds"] == 45
    # ...and none of them leaks into the control-plane pods, which keep controlPlane.*
    controlplane = _pod(rendering.find(manifests, "Deployment", "-controlplane"))
    assert not {"nodeSelector", "tolerations", "priorityClassName"} & set(controlplane)
    assert "team" not in rendering.pod_labels(rendering.find(manifests, "Deployment", "-controlplane"))


def test_facade_replicas_spread_over_nodes_by_default() -> None:
    manifests = _objects("deployment")
    facade = rendering.find(manifests, "Deployment", "-facade")
    (term,) = _pod(facade)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == facade["spec"]["selector"]["matchLabels"]


def test_in_the_sidecar_layout_the_control_plane_values_schedule_the_facade() -> None:
    manifests = _objects(
        "sidecar", {"controlPlane": {"nodeSelector": {"pool": "system"}}, "facade": {"nodeSelector": {"pool": "api"}}}
    )
    assert _pod(rendering.workload_of(manifests, "facade"))["nodeSelector"] == {"pool": "system"}


# ----- what follows the facade's pods ---------------------------------------------------------------


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_facade_service_selects_the_facade_pods_and_targets_their_port(
    values_file: pathlib.Path, layout: str
) -> None:
    manifests = _objects(layout, rendering.values_of(values_file))
    service = rendering.find(manifests, "Service", "-facade")
    selected = [
        w
        for w in manifests
        if w["kind"] in ("Deployment", "DaemonSet")
        and rendering.selects(service["spec"]["selector"], rendering.pod_labels(w))
    ]
    assert selected == [rendering.workload_of(manifests, "facade")]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in _ports(rendering.container_of(manifests, "facade"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_facade_metrics_are_scraped_wherever_the_facade_runs(layout: str) -> None:
    manifests = _objects(layout, rendering.values_of(HARDENED))
    facade_pods = rendering.pod_labels(rendering.workload_of(manifests, "facade"))
    operator_pods = rendering.pod_labels(rendering.workload_of(manifests, "operator"))
    monitors = [m for m in manifests if m["kind"] == "ServiceMonitor"]
    services = [m for m in manifests if m["kind"] == "Service"]
    scraped: list[tuple[dict[str, str], str]] = []  # (pod labels the target selects, container port name)
    for monitor in monitors:
        for service in services:
            if not rendering.selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]):
                continue
            ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                if endpoint["port"] in ports:
                    scraped.append((service["spec"]["selector"], ports[endpoint["port"]]))
    assert any(rendering.selects(selector, facade_pods) and port == "facade" for selector, port in scraped)
    assert any(rendering.selects(selector, operator_pods) and port == "metrics" for selector, port in scraped)
    facade_endpoint = next(e for m in monitors for e in m["spec"]["endpoints"] if e["port"] == "facade-metrics")
    assert facade_endpoint["scheme"] == "https"  # hardened serves TLS
    if layout == "deployment":
        service = rendering.find(manifests, "Service", "-facade-metrics")
        assert rendering.selects(service["spec"]["selector"], facade_pods)
        assert not rendering.selects(service["spec"]["selector"], operator_pods)
        metrics = rendering.find(manifests, "Service", "gpufleet-metrics")
        assert [p["name"] for p in metrics["spec"]["ports"]] == ["operator-metrics"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_disruption_budgets_select_the_pods_they_protect(layout: str) -> None:
    manifests = _objects(layout)
    budgets = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "PodDisruptionBudget"}
    workloads = [m for m in manifests if m["kind"] == "Deployment"]
    for budget in budgets.values():
        protected = [
            w
            for w in workloads
            if rendering.selects(budget["spec"]["selector"]["matchLabels"], rendering.pod_labels(w))
        ]
        assert len(protected) == 1, budget["metadata"]["name"]
    facade_workload = rendering.workload_of(manifests, "facade")
    protecting = [
        b
        for b in budgets.values()
        if rendering.selects(b["spec"]["selector"]["matchLabels"], rendering.pod_labels(facade_workload))
    ]
    assert len(protecting) == 1
    if layout == "deployment":
        assert protecting[0]["metadata"]["name"] == "gpufleet-facade"
        assert protecting[0]["spec"]["maxUnavailable"] == 1
    else:
        assert set(budgets) == {"gpufleet-controlplane"}


def test_the_facade_budget_follows_its_values() -> None:
    manifests = _objects("deployment", {"facade": {"podDisruptionBudget": {"maxUnavailable": "50%"}}})
    assert rendering.find(manifests, "PodDisruptionBudget", "-facade")["spec"]["maxUnavailable"] == "50%"
    off = _objects("deployment", {"facade": {"podDisruptionBudget": {"enabled": False}}})
    assert [m["metadata"]["name"] for m in off if m["kind"] == "PodDisruptionBudget"] == ["gpufleet-controlplane"]


def _ingress_ports(policy: Manifest) -> dict[str, list[Any]]:
    """Port name -> the peers allowed to reach it (an empty list: anyone)."""
    return {port["port"]: rule.get("from", []) for rule in policy["spec"]["ingress"] for port in rule["ports"]}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_network_policies_admit_only_the_ports_each_pod_serves(layout: str) -> None:
    values = rendering.values_of(HARDENED)
    manifests = _objects(layout, values)
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]

    def policy_for(container: str) -> Manifest:
        labels = rendering.pod_labels(rendering.workload_of(manifests, container))
        (policy,) = [p for p in policies if rendering.selects(p["spec"]["podSelector"]["matchLabels"], labels)]
        return policy

    facade_from = values["networkPolicy"]["facadeFrom"]
    metrics_from = values["networkPolicy"]["metricsFrom"]
    if layout == "deployment":
        assert _ingress_ports(policy_for("facade")) == {"facade": facade_from}
        assert _ingress_ports(policy_for("operator")) == {"metrics": metrics_from}
        assert policy_for("facade")["metadata"]["name"] == "gpufleet-facade"
    else:
        assert _ingress_ports(policy_for("operator")) == {"facade": facade_from, "metrics": metrics_from}
    # every port a policy admits is one the pods it selects open
    for policy in policies:
        opened = {
            p
            for w in manifests
            if w["kind"] in ("Deployment", "DaemonSet")
            and rendering.selects(policy["spec"]["podSelector"]["matchLabels"], rendering.pod_labels(w))
            for c in _pod(w)["containers"]
            for p in _ports(c)
        }
        assert set(_ingress_ports(policy)) <= opened, policy["metadata"]["name"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_notes_say_where_the_facade_runs(layout: str) -> None:
    notes = rendering.render(rendering.with_layout({}, layout))["gpufleet/templates/NOTES.txt"]
    if layout == "deployment":
        assert "It runs in Deployment gpufleet-facade under ServiceAccount gpufleet-facade of its own" in notes
        assert "app.kubernetes.io/component=facade" in notes
    else:
        assert "sidecar of the control-plane pods" in notes
        assert "ServiceAccount gpufleet-controlplane, so it holds the operator's rights too" in notes


# ----- values ---------------------------------------------------------------------------------------

NEW_FACADE_VALUES = [
    "layout",
    "replicas",
    "serviceAccount.create",
    "serviceAccount.name",
    "serviceAccount.annotations",
    "podDisruptionBudget.enabled",
    "podDisruptionBudget.maxUnavailable",
    "podLabels",
    "podAnnotations",
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
    "terminationGracePeriodSeconds",
]


@pytest.mark.parametrize("key", NEW_FACADE_VALUES)
def test_every_facade_layout_value_has_a_default_a_schema_entry_and_a_comment(key: str) -> None:
    defaults = rendering.values_of(rendering.CHART / "values.yaml")["facade"]
    schema = json.loads((rendering.CHART / "values.schema.json").read_text())["properties"]["facade"]
    node: Any = defaults
    for part in key.split("."):
        assert part in node, f"facade.{key} has no default"
        node = node[part]
        schema = schema["properties"][part]
    assert "type" in schema and "description" in schema, f"facade.{key} is not described by the schema"
    # a comment right above the key, or above the block that holds it
    lines = (rendering.CHART / "values.yaml").read_text().splitlines()
    start = lines.index("facade:")
    first = key.split(".")[0]
    number = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(f"{first}:"))
    assert lines[number - 1].strip().startswith("#"), f"facade.{first} is not documented in values.yaml"


def test_the_layout_comment_says_what_the_sidecar_shares() -> None:
    text = (rendering.CHART / "values.yaml").read_text()
    comment = text[text.index("facade:\n") : text.index("  layout:")]
    assert "ServiceAccount" in comment and "operator's rights" in comment and "small installs" in comment
