"""values.schema.json turns a bad value into a clear install-time error that names it.

Helm enforces the schema on install, upgrade and template; each case below is a mistake a user
could make, and the test checks the error points at the offending key. The defaults and every
values file in ci/ must pass, and every value in values.yaml must be described by the schema.
"""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest
import yaml

from . import rendering

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("grace-as-text", {"operator": {"gracePeriodSeconds": "fifty"}}, "/operator/gracePeriodSeconds"),
    ("grace-zero", {"operator": {"gracePeriodSeconds": 0}}, "/operator/gracePeriodSeconds"),
    ("heartbeat-negative", {"agent": {"heartbeatIntervalSeconds": -1}}, "/agent/heartbeatIntervalSeconds"),
    ("typo-in-a-key", {"agent": {"heartbeatIntervalSecs": 5}}, "heartbeatIntervalSecs"),
    ("unknown-top-level-key", {"operater": {}}, "operater"),
    ("auth-mode", {"facade": {"auth": {"mode": "ldap"}}}, "/facade/auth/mode"),
    (
        "static-token-role",
        {"facade": {"auth": {"static": {"tokens": [{"token": "x" * 20, "role": "root"}]}}}},
        "/facade/auth/static/tokens/0/role",
    ),
    (
        "static-token-with-comma",
        {"facade": {"auth": {"static": {"tokens": [{"token": "a,admin" * 3, "role": "admin"}]}}}},
        "/facade/auth/static/tokens/0/token",
    ),
    (
        "static-token-short",
        {"facade": {"auth": {"static": {"tokens": [{"token": "short", "role": "admin"}]}}}},
        "/facade/auth/static/tokens/0/token",
    ),
    ("port-out-of-range", {"facade": {"port": 70000}}, "/facade/port"),
    ("metrics-port-zero", {"agent": {"metricsPort": 0}}, "/agent/metricsPort"),
    ("replicas-zero", {"controlPlane": {"replicas": 0}}, "/controlPlane/replicas"),
    ("service-type", {"facade": {"service": {"type": "ExternalName"}}}, "/facade/service/type"),
    ("node-port-range", {"facade": {"service": {"type": "NodePort", "nodePort": 80}}}, "/facade/service/nodePort"),
    ("pull-policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("digest-format", {"image": {"digest": "latest"}}, "/image/digest"),
    ("log-format", {"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    ("log-level", {"agent": {"logLevel": "verbose"}}, "/agent/logLevel"),
    ("simulate-too-many", {"agent": {"simulate": 1000}}, "/agent/simulate"),
    ("body-limit-tiny", {"facade": {"maxBodyBytes": 10}}, "/facade/maxBodyBytes"),
    ("lease-name", {"operator": {"leaseName": "Not_A_Name"}}, "/operator/leaseName"),
    ("host-lease-namespace", {"hostLeases": {"namespace": "Heart_Beats"}}, "/hostLeases/namespace"),
    ("host-lease-namespace-empty", {"hostLeases": {"namespace": ""}}, "/hostLeases/namespace"),
    ("create-namespace-text", {"hostLeases": {"createNamespace": "yes"}}, "/hostLeases/createNamespace"),
    ("lease-duration-fraction", {"operator": {"leaseDurationSeconds": 15.5}}, "/operator/leaseDurationSeconds"),
    ("renew-deadline-text", {"operator": {"renewDeadlineSeconds": "10s"}}, "/operator/renewDeadlineSeconds"),
    ("retry-period-zero", {"operator": {"retryPeriodSeconds": 0}}, "/operator/retryPeriodSeconds"),
    ("operator-api-timeout-negative", {"operator": {"apiTimeoutSeconds": -1}}, "/operator/apiTimeoutSeconds"),
    ("peering-name-is-gone", {"operator": {"peeringName": "gpufleet"}}, "peeringName"),
    ("scrape-interval", {"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ("socket-path-relative", {"agent": {"podResources": {"hostPath": "var/lib"}}}, "/agent/podResources/hostPath"),
    ("labels-not-strings", {"commonLabels": {"team": 7}}, "/commonLabels/team"),
    ("facade-layout", {"facade": {"layout": "daemonset"}}, "/facade/layout"),
    ("facade-replicas-zero", {"facade": {"replicas": 0}}, "/facade/replicas"),
    ("facade-sa-name", {"facade": {"serviceAccount": {"name": "Not_A_Name"}}}, "/facade/serviceAccount/name"),
    ("facade-sa-typo", {"facade": {"serviceAccount": {"crate": True}}}, "crate"),
    ("facade-pdb-zero", {"facade": {"podDisruptionBudget": {"maxUnavailable": 0}}}, "/facade/podDisruptionBudget"),
    ("facade-grace-zero", {"facade": {"terminationGracePeriodSeconds": 0}}, "/facade/terminationGracePeriodSeconds"),
    ("facade-node-selector", {"facade": {"nodeSelector": {"pool": 1}}}, "/facade/nodeSelector/pool"),
]


@pytest.mark.parametrize(("values", "where"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_rejected_with_their_location(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as error:
        rendering.render(values)
    assert where in str(error.value)


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
def test_shipped_values_pass_the_schema(values_file: Any) -> None:
    with helm.Chart.load(rendering.CHART) as chart:
        chart.validate_schema(chart.merge_values(rendering.values_of(values_file)))


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    return [path]


def _described(schema: dict[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        properties = schema.get("properties", {})
        if key not in properties:
            # free-form maps (labels, resources, affinity) describe their entries as a whole
            return schema.get("additionalProperties") not in (None, False)
        schema = properties[key]
    return "description" in schema or "type" in schema


def test_every_default_value_is_in_the_schema() -> None:
    schema = json.loads((rendering.CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((rendering.CHART / "values.yaml").read_text())
    missing = [".".join(leaf) for leaf in _leaves(defaults) if not _described(schema, leaf)]
    assert missing == []


def test_every_default_value_is_documented_in_values_yaml() -> None:
    """Every key has a comment right above it, or sits inside a block whose key has one."""
    lines = (rendering.CHART / "values.yaml").read_text().splitlines()
    documented_blocks: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while documented_blocks and documented_blocks[-1][0] >= indent:
            documented_blocks.pop()
        commented = number > 0 and lines[number - 1].strip().startswith("#")
        documented = commented or any(flag for _, flag in documented_blocks)
        if not documented and not stripped.endswith(":"):
            undocumented.append(f"values.yaml:{number + 1}: {stripped}")
        documented_blocks.append((indent, documented))
    assert undocumented == []
