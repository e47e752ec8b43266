"""The pods the chart runs: what the code reads from its environment, and how little they may do.

The env of each container is fed to the component's own settings class, so a renamed setting or
a value the code would refuse fails here rather than in a crash-looping pod.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
from typing import Any

import helm_python as helm
import pydantic
import pytest

from gpufleet import settings
from gpufleet_agent import settings as agent_settings

from . import rendering

FILES = rendering.CI_VALUES
IDS = rendering.ids(FILES)
WITH_AGENT = [f for f in FILES if f.name != "minimal-values.yaml"]  # minimal turns the agent off
DOWNWARD_API = {"metadata.namespace": rendering.NAMESPACE, "spec.nodeName": "gpu-node-1", "status.hostIP": "192.0.2.10"}


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process would see it (downward API resolved)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = DOWNWARD_API[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _container(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for _, c in rendering.containers(manifests) if c["name"] == name)


def _variables(cls: Any, prefix: str) -> dict[str, str]:
    """Environment variable -> field name, for every field of a pydantic-settings class."""
    found: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, pydantic.AliasChoices) else [alias] if alias else []
        env_like = [c for c in choices if isinstance(c, str) and c.isupper()]
        for variable in env_like or [f"{prefix}{name.upper()}"]:
            found[variable] = name
    return found


OPERATOR_VARIABLES = _variables(settings.Settings, "GPUFLEET_")
AGENT_VARIABLES = _variables(agent_settings.AgentSettings, "GPUFLEET_AGENT_")


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, cls: Any) -> Any:
    for name in [n for n in os.environ if n.startswith("GPUFLEET_") or n == "NODE_NAME"]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls()


# ----- the environment mirrors the code's settings ------------------------------------------------


@pytest.mark.parametrize("values_file", FILES, ids=IDS)
@pytest.mark.parametrize("name", ["operator", "facade"])
def test_control_plane_env_is_accepted_by_the_settings(
    values_file: pathlib.Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(_container(rendering.objects_of_file(values_file), name))
    unread = set(env) - set(OPERATOR_VARIABLES)
    assert not unread, f"variables the code does not read: {unread}"
    config = _settings_from(env, monkeypatch, settings.Settings)
    assert config.namespace == rendering.NAMESPACE


@pytest.mark.parametrize("values_file", WITH_AGENT, ids=rendering.ids(WITH_AGENT))
def test_agent_env_is_accepted_by_the_agent_settings(
    values_file: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(_container(rendering.objects_of_file(values_file), "agent"))
    # read by the NVIDIA container runtime, not by the agent: it grants the MIG monitor capability
    unread = set(env) - set(AGENT_VARIABLES) - {"NVIDIA_MIG_MONITOR_DEVICES"}
    assert not unread, f"variables the agent does not read: {unread}"
    config = _settings_from(env, monkeypatch, agent_settings.AgentSettings)
    assert config.node_name == "gpu-node-1"
    assert config.podresources_socket == agent_settings.DEFAULT_PODRESOURCES_SOCKET


def test_values_reach_the_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "hardened-values.yaml")
    operator = _settings_from(_env(_container(manifests, "operator")), monkeypatch, settings.Settings)
    assert (operator.grace_period_seconds, operator.heartbeat_interval_seconds) == (120, 15)
    assert operator.flapping_warning() is None
    assert operator.leader_lease_name == "gpufleet-leader"
    timings = (operator.lease_duration_seconds, operator.renew_deadline_seconds, operator.retry_period_seconds)
    assert timings == (30, 20, 4)
    assert operator.api_timeout_seconds == 8
    facade = _settings_from(_env(_container(manifests, "facade")), monkeypatch, settings.Settings)
    assert facade.auth_mode is settings.AuthMode.STATIC
    assert facade.api_timeout_seconds == 5  # the facade's own facade.apiTimeoutSeconds, not the operator's
    assert facade.tls_cert_file == pathlib.Path("/etc/gpufleet/tls/tls.crt")
    agent = _settings_from(_env(_container(manifests, "agent")), monkeypatch, agent_settings.AgentSettings)
    assert getattr(agent, AGENT_VARIABLES["GPUFLEET_AGENT_REGISTER"]) is True
    assert agent.heartbeat_interval_seconds == 15


def test_kind_values_simulate_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "kind-values.yaml")
    agent = _settings_from(_env(_container(manifests, "agent")), monkeypatch, agent_settings.AgentSettings)
    assert agent.simulate == 2


# ----- the grace period guard ---------------------------------------------------------------------


def test_a_grace_period_under_four_heartbeats_is_refused() -> None:
    with pytest.raises(helm.HelmError, match=r"at least 4x agent.heartbeatIntervalSeconds"):
        rendering.render({"operator": {"gracePeriodSeconds": 39}, "agent": {"heartbeatIntervalSeconds": 10}})


def test_a_grace_period_of_exactly_four_heartbeats_is_accepted() -> None:
    rendering.render({"operator": {"gracePeriodSeconds": 40}, "agent": {"heartbeatIntervalSeconds": 10}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"agent": {"sampleIntervalSeconds": 30, "resyncIntervalSeconds": 10}}, "resyncIntervalSeconds"),
        ({"facade": {"pageSizeDefault": 500, "pageSizeMax": 100}}, "pageSizeDefault"),
        ({"facade": {"tls": {"enabled": True, "secretName": ""}}}, "secretName is required"),
        ({"operator": {"leaderElection": False}}, "replicas=1"),
        ({"operator": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10}}, "renewDeadlineSeconds"),
        ({"operator": {"retryPeriodSeconds": 10}}, "retryPeriodSeconds"),
        (
            {"controlPlane": {"replicas": 1}, "operator": {"leaderElection": False, "retryPeriodSeconds": 12}},
            "retryPeriodSeconds",
        ),
    ],
    ids=[
        "resync-under-sample",
        "page-size",
        "tls-without-secret",
        "no-election-with-replicas",
        "renew-deadline-not-under-lease",
        "retry-not-under-renew-deadline",
        "lease-timings-checked-without-election-too",
    ],
)
def test_inconsistent_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        rendering.render(values)


# ----- least privilege of every container ---------------------------------------------------------


@pytest.mark.parametrize("values_file", FILES, ids=IDS)
def test_containers_cannot_escalate(values_file: pathlib.Path) -> None:
    for workload, container in rendering.containers(rendering.objects_of_file(values_file)):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["privileged"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert workload["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("values_file", FILES, ids=IDS)
def test_the_control_plane_and_the_facade_run_as_non_root(values_file: pathlib.Path) -> None:
    manifests = rendering.objects_of_file(values_file)
    for name in ("operator", "facade"):
        pod = rendering.workload_of(manifests, name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532


def test_the_agent_is_root_only_to_reach_the_pod_resources_socket() -> None:
    default = rendering.find(rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml"), "DaemonSet")
    pod = default["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 0
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "pod-resources")
    assert (mount["mountPath"], mount["readOnly"]) == ("/var/lib/kubelet/pod-resources", True)
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert [v["name"] for v in pod["volumes"] if "hostPath" in v] == ["pod-resources"]

    without = rendering.render({"agent": {"podResources": {"enabled": False}}})
    pod = rendering.find(rendering.objects(without), "DaemonSet")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsNonRoot"], pod["securityContext"]["runAsUser"]) == (True, 65532)
    assert not [v for v in pod["volumes"] if "hostPath" in v]


def test_the_agent_lands_on_gpu_nodes_with_the_nvidia_runtime() -> None:
    pod = rendering.find(rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml"), "DaemonSet")
    spec = pod["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    downward = {
        v["name"]: v["valueFrom"]["fieldRef"]["fieldPath"] for v in spec["containers"][0]["env"] if "valueFrom" in v
    }
    # the Host the agent registers carries the node's name and address, not the pod's
    assert downward == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"}


# ----- probes, ports, services --------------------------------------------------------------------


def _port_numbers(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


@pytest.mark.parametrize("values_file", FILES, ids=IDS)
def test_every_probe_targets_a_declared_port(values_file: pathlib.Path) -> None:
    for _, container in rendering.containers(rendering.objects_of_file(values_file)):
        ports = _port_numbers(container)
        probes = [container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in container]
        assert "livenessProbe" in container, container["name"]
        for probe in probes:
            target = (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
            assert target in ports, (container["name"], target)


def test_the_chart_leader_election_defaults_are_the_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart sets every leader-election variable; by default to exactly the code's defaults."""
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml")
    env = _env(_container(manifests, "operator"))
    names = ["leader_election", "leader_lease_name", "lease_duration_seconds", "renew_deadline_seconds"]
    names += ["retry_period_seconds", "api_timeout_seconds"]
    assert {f"GPUFLEET_{name.upper()}" for name in names} <= set(env)
    config = _settings_from(env, monkeypatch, settings.Settings)
    defaults = settings.Settings.model_fields
    assert {name: getattr(config, name) for name in names} == {name: defaults[name].default for name in names}


def test_probes_follow_the_code_defaults() -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml")
    operator, facade, agent = (_container(manifests, n) for n in ("operator", "facade", "agent"))
    defaults = settings.Settings.model_fields
    assert _port_numbers(operator) == {
        "metrics": defaults["metrics_port"].default,
        "healthz": defaults["liveness_port"].default,
    }
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert operator["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    # readiness: the operator's view of the fleet is fresh; served with /metrics
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert _port_numbers(facade) == {"facade": 8080}
    assert facade["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "facade", "scheme": "HTTP"}
    assert facade["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert _port_numbers(agent) == {"metrics": agent_settings.AgentSettings.model_fields["metrics_port"].default}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # readiness fails while NVML is hung (a restart cannot unstick a driver: liveness stays up)
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_tls_switches_probes_and_service_to_https() -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "hardened-values.yaml")
    facade = _container(manifests, "facade")
    assert facade["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    service = rendering.find(manifests, "Service", "-facade")
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "facade", "protocol": "TCP"}]
    pod = rendering.workload_of(manifests, "facade")["spec"]["template"]["spec"]
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "gpufleet-facade-tls"


@pytest.mark.parametrize("values_file", FILES, ids=IDS)
@pytest.mark.parametrize("layout", rendering.LAYOUTS)
def test_services_select_the_pods_that_serve_them(values_file: pathlib.Path, layout: str) -> None:
    manifests = rendering.objects(rendering.render(rendering.with_layout(rendering.values_of(values_file), layout)))
    for service in (m for m in manifests if m["kind"] == "Service"):
        selector = service["spec"]["selector"]
        serving = [
            c
            for w, c in rendering.containers(manifests)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert serving, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert any(port["targetPort"] in _port_numbers(c) for c in serving), (service["metadata"]["name"], port)


def test_images_are_pinned_by_digest_when_given() -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "hardened-values.yaml")
    images = {c["name"]: c["image"] for _, c in rendering.containers(manifests)}
    assert images["operator"] == images["facade"]
    assert images["operator"].startswith("registry.example.com/gpufleet/gpufleet@sha256:")
    assert images["agent"].startswith("registry.example.com/gpufleet/gpufleet-agent@sha256:")
    default = rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml")
    assert {c["image"] for _, c in rendering.containers(default)} == {
        "ghcr.io/gpufleet/gpufleet:0.1.0",
        "ghcr.io/gpufleet/gpufleet-agent:0.1.0",
    }


# ----- facade auth --------------------------------------------------------------------------------


def test_chart_made_static_tokens_hold_the_given_tokens() -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "minimal-values.yaml")
    secret = rendering.find(manifests, "Secret", "-facade-tokens")
    lines = base64.b64decode(secret["data"]["tokens"]).decode().splitlines()
    assert lines == ["admin-token-for-ci-0123456789,admin", "viewer-token-for-ci-0123456789,viewer"]
    facade = _container(manifests, "facade")
    assert {"name": "GPUFLEET_STATIC_TOKENS_FILE", "value": "/etc/gpufleet/auth/tokens"} in facade["env"]


def test_static_mode_without_tokens_generates_one_admin_token() -> None:
    manifests = rendering.objects(rendering.render({"facade": {"auth": {"mode": "static"}}}))
    secret = rendering.find(manifests, "Secret", "-facade-tokens")
    (line,) = base64.b64decode(secret["data"]["tokens"]).decode().splitlines()
    token, role = line.split(",")
    assert (len(token), role) == (48, "admin")


def test_an_existing_token_secret_is_used_not_created() -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "hardened-values.yaml")
    assert not [m for m in manifests if m["kind"] == "Secret"]
    pod = rendering.workload_of(manifests, "facade")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "static-tokens")
    assert volume["secret"]["secretName"] == "gpufleet-facade-tokens"


def test_kubernetes_mode_mounts_no_tokens() -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml")
    assert not [m for m in manifests if m["kind"] == "Secret"]
    env = _env(_container(manifests, "facade"))
    assert env["GPUFLEET_AUTH_MODE"] == "kubernetes"
    assert "GPUFLEET_STATIC_TOKENS_FILE" not in env


# ----- optional objects ---------------------------------------------------------------------------


def _kinds(values_file: str) -> set[str]:
    return {m["kind"] for m in rendering.objects_of_file(rendering.CHART / "ci" / values_file)}


def test_optional_objects_follow_their_flags() -> None:
    optional = {"ServiceMonitor", "NetworkPolicy", "ConfigMap"}
    assert not optional & _kinds("default-values.yaml")
    assert optional <= _kinds("hardened-values.yaml")


def test_the_dashboard_configmap_holds_the_shipped_dashboard() -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "hardened-values.yaml")
    configmap = rendering.find(manifests, "ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((rendering.CHART / "dashboards" / "gpufleet.json").read_text())
    assert json.loads(configmap["data"]["gpufleet.json"]) == shipped


def test_a_single_replica_gets_no_disruption_budget() -> None:
    assert "PodDisruptionBudget" not in _kinds("minimal-values.yaml")  # one control-plane pod, facade its sidecar
    budgets = [
        m
        for m in rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml")
        if m["kind"] == "PodDisruptionBudget"
    ]
    assert sorted(m["metadata"]["name"] for m in budgets) == ["gpufleet-controlplane", "gpufleet-facade"]
    single_facade = rendering.objects(rendering.render({"facade": {"replicas": 1}}))
    assert [m["metadata"]["name"] for m in single_facade if m["kind"] == "PodDisruptionBudget"] == [
        "gpufleet-controlplane"
    ]


@pytest.mark.parametrize("values_file", FILES, ids=IDS)
def test_the_chart_leaves_the_lease_to_the_operator(values_file: pathlib.Path) -> None:
    """The operator creates and updates its Lease; the chart ships none, and nothing of Kopf peering."""
    manifests = rendering.objects_of_file(values_file)
    assert not [m for m in manifests if m["kind"] == "Lease" or m["apiVersion"].startswith("kopf.dev/")]


@pytest.mark.parametrize("values_file", ["default-values.yaml", "hardened-values.yaml"])
def test_the_operator_is_told_to_use_the_lease_its_role_names(values_file: str) -> None:
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / values_file)
    env = _env(_container(manifests, "operator"))
    role = rendering.find(manifests, "Role", "-operator")
    (rule,) = [r for r in role["rules"] if r["resources"] == ["leases"] and r.get("resourceNames")]
    assert env["GPUFLEET_LEADER_ELECTION"] == "true"
    assert rule["resourceNames"] == [env["GPUFLEET_LEADER_LEASE_NAME"]]
    assert role["metadata"]["namespace"] == env["GPUFLEET_NAMESPACE"]
