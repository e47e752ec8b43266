"""The chart's PrometheusRule (metrics.prometheusRule): alerts that fire when they should, not when they should not.

The chart is rendered with the rule on, its groups are written to a rules file, and `promtool
test rules` runs the cases in tests/chart/alerts/ on them (series in, alerts expected out, `for`
durations included): `<name>.test.yaml` against the rules rendered with `<name>.values.yaml` (values
of metrics.prometheusRule), or with the defaults where there is none. `promtool check rules`
checks every render. promtool is Prometheus' own (Debian's `prometheus` package; .ci/run installs
it where it can): without it those tests skip. The checks that need no promtool (runbooks, metric
names, values, manifests) always run.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from . import rendering
from .test_manifests import THIRD_PARTY_KINDS

ALERTS_DIR = pathlib.Path(__file__).resolve().parent / "alerts"
TEST_FILES = sorted(ALERTS_DIR.glob("*.test.yaml"))
RUNBOOKS = rendering.REPO / "docs" / "alerts.md"
DEFAULT_RUNBOOKS_URL = "https://github.com/gpufleet/gpufleet/blob/main/docs/alerts.md"

#: Where the components define their metrics: an alert may read only names defined there.
METRIC_SOURCES = [
    rendering.REPO / "operator" / "gpufleet" / "controller" / "metrics.py",
    rendering.REPO / "operator" / "gpufleet" / "facade" / "metrics.py",
    rendering.REPO / "agent-daemonset" / "gpufleet_agent" / "metrics.py",
]

ALERTS = [
    "GpufleetHostsOffline",
    "GpufleetFleetOffline",
    "GpufleetOperatorWatchStale",
    "GpufleetOperatorDown",
    "GpufleetNoLeader",
    "GpufleetGPUUnhealthy",
    "GpufleetGPUHealthFlapping",
    "GpufleetGPUXidStorm",
    "GpufleetGPUTemperatureHigh",
    "GpufleetFacadeErrors",
]

#: metrics.prometheusRule key of each alert.
ALERT_KEYS = {
    "GpufleetHostsOffline": "hostsOffline",
    "GpufleetFleetOffline": "fleetOffline",
    "GpufleetOperatorWatchStale": "watchStale",
    "GpufleetOperatorDown": "operatorDown",
    "GpufleetNoLeader": "noLeader",
    "GpufleetGPUUnhealthy": "gpuUnhealthy",
    "GpufleetGPUHealthFlapping": "gpuHealthFlapping",
    "GpufleetGPUXidStorm": "xidStorm",
    "GpufleetGPUTemperatureHigh": "gpuTemperature",
    "GpufleetFacadeErrors": "facadeErrors",
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found: install Debian's prometheus package")
    return found


def _with_rule(rule_values: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Chart values with metrics.prometheusRule on (and `rule_values` in it), over `base`."""
    values = dict(base or {})
    metrics = dict(values.get("metrics", {}))
    metrics["prometheusRule"] = {**(rule_values or {}), "enabled": True}
    values["metrics"] = metrics
    return values


def _prometheus_rule(values: dict[str, Any]) -> rendering.Manifest:
    return rendering.find(rendering.objects(rendering.render(values)), "PrometheusRule", "-alerts")


def _rules(rule: rendering.Manifest) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _values_for(test_file: pathlib.Path) -> dict[str, Any]:
    values_file = test_file.with_name(test_file.name.removesuffix(".test.yaml") + ".values.yaml")
    return rendering.values_of(values_file) if values_file.exists() else {}


def _write_rules(rule: rendering.Manifest, directory: pathlib.Path) -> pathlib.Path:
    """The rule groups as a Prometheus rules file, what the Prometheus operator hands Prometheus."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False), encoding="utf-8")
    return path


def _run(argv: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# ----- promtool ---------------------------------------------------------------------------------


@pytest.mark.parametrize("test_file", TEST_FILES, ids=[p.name.removesuffix(".test.yaml") for p in TEST_FILES])
def test_rendered_rules_pass_promtool_check(test_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    promtool = _promtool()
    rules = _write_rules(_prometheus_rule(_with_rule(_values_for(test_file))), tmp_path)
    result = _run([promtool, "check", "rules", str(rules)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("test_file", TEST_FILES, ids=[p.name.removesuffix(".test.yaml") for p in TEST_FILES])
def test_alerts_fire_as_the_promtool_cases_expect(test_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    promtool = _promtool()
    _write_rules(_prometheus_rule(_with_rule(_values_for(test_file))), tmp_path)
    cases = tmp_path / test_file.name
    shutil.copyfile(test_file, cases)
    result = _run([promtool, "test", "rules", cases.name], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_cases_can_fail(tmp_path: pathlib.Path) -> None:
    """The cases above can fail: the default cases against rules whose host threshold moved do."""
    promtool = _promtool()
    rule = _prometheus_rule(_with_rule({"hostsOffline": {"threshold": 2}}))
    _write_rules(rule, tmp_path)
    shutil.copyfile(ALERTS_DIR / "default.test.yaml", tmp_path / "default.test.yaml")
    result = _run([promtool, "test", "rules", "default.test.yaml"], tmp_path)
    assert result.returncode != 0
    assert "GpufleetHostsOffline" in result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    """The default cases cover each alert both ways (this needs no promtool)."""
    cases = yaml.safe_load((ALERTS_DIR / "default.test.yaml").read_text(encoding="utf-8"))
    fires: set[str] = set()
    silent: set[str] = set()
    for case in cases["tests"]:
        for expectation in case.get("alert_rule_test", []):
            (fires if expectation.get("exp_alerts") else silent).add(expectation["alertname"])
    rendered = {r["alert"] for r in _rules(_prometheus_rule(_with_rule()))}
    assert rendered == set(ALERTS)
    assert (fires, silent) == (rendered, rendered)


# ----- what the rules read and link to -----------------------------------------------------------


def test_rules_read_only_metrics_the_components_export() -> None:
    defined = set()
    for source in METRIC_SOURCES:
        text = source.read_text(encoding="utf-8")
        defined |= set(re.findall(r'"(gpufleet_[a-z_]+)"', text))
        defined |= {"gpufleet_facade_" + name for name in re.findall(r'f"\{PREFIX\}([a-z_]+)"', text)}
    read = set()
    for rule in _rules(_prometheus_rule(_with_rule())):
        read |= set(re.findall(r"\b(gpufleet_[a-z_]+)\b", rule["expr"]))
    assert read
    # prometheus-client exposes a Counter `x` as `x_total`
    assert {name.removesuffix("_total") for name in read} <= defined


def test_every_alert_links_to_its_runbook_section() -> None:
    headings = {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    for rule in _rules(_prometheus_rule(_with_rule())):
        url = rule["annotations"]["runbook_url"]
        assert url == f"{DEFAULT_RUNBOOKS_URL}#{rule['alert'].lower()}"
        assert rule["alert"].lower() in headings, f"docs/alerts.md has no section {rule['alert']}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_runbook_base_url_is_a_value() -> None:
    rule = _prometheus_rule(_with_rule({"runbookBaseUrl": "https://wiki.example.com/gpufleet/alerts"}))
    assert {r["annotations"]["runbook_url"] for r in _rules(rule)} == {
        f"https://wiki.example.com/gpufleet/alerts#{alert.lower()}" for alert in ALERTS
    }


# ----- values ------------------------------------------------------------------------------------


def test_the_rule_is_off_by_default() -> None:
    for values_file in rendering.CI_VALUES:
        kinds = {m["kind"] for m in rendering.objects_of_file(values_file)}
        assert "PrometheusRule" not in kinds, values_file.name


def test_labels_and_alert_labels_go_where_they_belong() -> None:
    rule = _prometheus_rule(_with_rule({"labels": {"release": "prometheus"}, "alertLabels": {"team": "gpu-infra"}}))
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["labels"]["app.kubernetes.io/component"] == "alerts"
    assert rule["metadata"]["namespace"] == rendering.NAMESPACE
    for r in _rules(rule):
        assert r["labels"]["team"] == "gpu-infra", r["alert"]


def test_the_selector_scopes_every_series_to_the_release_namespace() -> None:
    rules = _rules(_prometheus_rule(_with_rule()))
    for r in rules:
        selectors = re.findall(r"gpufleet_[a-z_]+(\{[^}]*\})?", r["expr"])
        assert selectors and all(f'namespace="{rendering.NAMESPACE}"' in s for s in selectors), r["expr"]
    unscoped = _rules(_prometheus_rule(_with_rule({"selector": ""})))
    assert not any("namespace=" in r["expr"] for r in unscoped)
    assert any(r["expr"] == "gpufleet_gpu_healthy == 0" for r in unscoped)


@pytest.mark.parametrize("alert", ALERTS)
def test_each_alert_can_be_turned_off(alert: str) -> None:
    rule = _prometheus_rule(_with_rule({ALERT_KEYS[alert]: {"enabled": False}}))
    assert {r["alert"] for r in _rules(rule)} == set(ALERTS) - {alert}
    assert all(group["rules"] for group in rule["spec"]["groups"])


def test_every_alert_off_leaves_no_groups() -> None:
    rule = _prometheus_rule(_with_rule({key: {"enabled": False} for key in ALERT_KEYS.values()}))
    assert rule["spec"]["groups"] == []


def test_thresholds_and_durations_reach_the_rules() -> None:
    rule = _prometheus_rule(
        _with_rule(
            {
                "fleetOffline": {"percent": 2.5, "for": "15m", "severity": "page"},
                "gpuHealthFlapping": {"window": "30m", "changes": 4},
                "facadeErrors": {"percent": 1, "window": "10m", "for": "1h"},
            }
        )
    )
    by_name = {r["alert"]: r for r in _rules(rule)}
    fleet = by_name["GpufleetFleetOffline"]
    assert (fleet["for"], fleet["labels"]["severity"]) == ("15m", "page")
    assert fleet["expr"].endswith("* 100 > 2.5")
    assert by_name["GpufleetGPUHealthFlapping"]["expr"].endswith("[30m]) >= 4")
    facade = by_name["GpufleetFacadeErrors"]
    assert facade["for"] == "1h"
    assert facade["expr"].count("[10m]") == 2
    assert facade["expr"].endswith("> 1")


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("percent-over-100", {"fleetOffline": {"percent": 150}}, "/metrics/prometheusRule/fleetOffline/percent"),
    ("percent-zero", {"facadeErrors": {"percent": 0}}, "/metrics/prometheusRule/facadeErrors/percent"),
    ("for-not-a-duration", {"hostsOffline": {"for": "soon"}}, "/metrics/prometheusRule/hostsOffline/for"),
    ("window-not-a-duration", {"facadeErrors": {"window": "5 min"}}, "/metrics/prometheusRule/facadeErrors/window"),
    ("threshold-negative", {"hostsOffline": {"threshold": -1}}, "/metrics/prometheusRule/hostsOffline/threshold"),
    ("changes-one", {"gpuHealthFlapping": {"changes": 1}}, "/metrics/prometheusRule/gpuHealthFlapping/changes"),
    ("celsius-text", {"gpuTemperature": {"celsius": "hot"}}, "/metrics/prometheusRule/gpuTemperature/celsius"),
    ("severity-with-space", {"noLeader": {"severity": "very bad"}}, "/metrics/prometheusRule/noLeader/severity"),
    ("alert-typo", {"hostOffline": {"enabled": False}}, "hostOffline"),
    ("url-with-fragment", {"runbookBaseUrl": "https://x.example/a.md#b"}, "/metrics/prometheusRule/runbookBaseUrl"),
    ("selector-with-braces", {"selector": '{job="x"}'}, "/metrics/prometheusRule/selector"),
    ("alert-label-name", {"alertLabels": {"team-name": "x"}}, "team-name"),
    ("alert-label-severity", {"alertLabels": {"severity": "x"}}, "/metrics/prometheusRule/alertLabels/severity"),
]


@pytest.mark.parametrize(("rule_values", "where"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_rule_values_are_rejected_with_their_location(rule_values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as error:
        rendering.render(_with_rule(rule_values))
    assert where in str(error.value)


# ----- the manifest checks, with the rule on -------------------------------------------------------

HARDENED = rendering.CHART / "ci" / "hardened-values.yaml"


@pytest.mark.parametrize("version", rendering.SUPPORTED_KUBERNETES)
def test_with_the_rule_on_every_other_object_still_validates(version: str) -> None:
    """What tests/chart/test_manifests.py checks of the ci/ files, over a render with the rule on:
    Kubernetes' own kinds validate strictly, and the two prometheus-operator kinds are of their group."""
    values = rendering.values_for(_with_rule(base=rendering.values_of(HARDENED)), version)
    manifests = rendering.objects(rendering.render(values))
    kinds = {**THIRD_PARTY_KINDS, "PrometheusRule": "monitoring.coreos.com/v1: prometheus-operator's CRD"}
    validated = 0
    for manifest in manifests:
        if manifest["kind"] in kinds:
            assert kinds[manifest["kind"]].startswith(manifest["apiVersion"] + ":"), manifest["kind"]
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        validated += 1
    assert validated > 10
    assert [m["kind"] for m in manifests].count("PrometheusRule") == 1


@pytest.mark.parametrize("version", [rendering.SUPPORTED_KUBERNETES[0], rendering.SUPPORTED_KUBERNETES[-1]])
def test_with_the_rule_on_helm_lint_strict_is_clean(version: str) -> None:
    report = helm.lint(
        rendering.CHART,
        rendering.values_for(_with_rule(base=rendering.values_of(HARDENED)), version),
        strict=True,
        kube_version=f"v{version}",
        namespace=rendering.NAMESPACE,
    )
    assert ([m for m in report["messages"] if m["severity"] >= 2], report["errors"]) == ([], [])
