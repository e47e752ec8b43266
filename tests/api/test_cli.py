"""The `gpufleet` console script: one command, a subcommand per component.

The settings tests run the installed console script (what a user and the images run), and
compute what `--help` must show from the settings models on their own, so that a setting added
to a model without reaching the command line, or shown with the wrong variable or default, fails.
"""

from __future__ import annotations

import enum
import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys
import typing

import pydantic
import pydantic_settings
import pytest
import yaml

from gpufleet import cli, settings
from gpufleet.api import crds
from gpufleet_agent import settings as agent_settings

REPO = pathlib.Path(__file__).resolve().parents[2]
#: The component commands whose options are generated from a settings model.
MODELS: dict[str, type[pydantic_settings.BaseSettings]] = {
    "operator": settings.Settings,
    "facade": settings.Settings,
    "agent": agent_settings.AgentSettings,
}


def gpufleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpufleet", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_help_lists_every_subcommand() -> None:
    result = gpufleet("--help")
    assert result.returncode == 0
    for command in ("crds", "operator", "facade", "dev", "agent"):
        assert command in result.stdout


def test_crds_prints_exactly_the_committed_files() -> None:
    result = gpufleet("crds")
    assert result.returncode == 0
    printed = list(yaml.safe_load_all(result.stdout))
    committed = [yaml.safe_load(path.read_text()) for path in sorted((REPO / "crds").glob("*.yaml"))]
    assert sorted(printed, key=lambda d: d["metadata"]["name"]) == sorted(
        committed, key=lambda d: d["metadata"]["name"]
    )
    assert {doc["metadata"]["name"] for doc in printed} == {name.removesuffix(".yaml") for name in crds.all_crds()}


def test_crds_writes_files_into_each_output_dir(tmp_path: pathlib.Path) -> None:
    result = gpufleet("crds", "--output-dir", str(tmp_path / "a"), "--output-dir", str(tmp_path / "b"))
    assert result.returncode == 0
    for directory in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / directory).iterdir()) == sorted(crds.all_crds())


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = gpufleet("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def console_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `gpufleet` script (next to this interpreter, as pip puts it) with a clean environment."""
    script = pathlib.Path(sys.executable).parent / "gpufleet"
    found = str(script) if script.exists() else shutil.which("gpufleet")
    assert found, "the gpufleet console script is not installed (pip install -e .)"
    # Only what the command needs: no GPUFLEET_* or NODE_NAME of the developer's shell leaks in.
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "COLUMNS": "100"}
    return subprocess.run(
        [found, *args], capture_output=True, text=True, timeout=60, check=False, env={**base, **(env or {})}
    )


def _variables(name: str, field: pydantic.fields.FieldInfo, prefix: str) -> list[str]:
    """What pydantic-settings reads a field from: its upper-case alias choices, else prefix + NAME."""
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, pydantic.AliasChoices) else []
    return [c for c in choices if isinstance(c, str) and c.isupper()] or [f"{prefix}{name.upper()}"]


def _env_form(field: pydantic.fields.FieldInfo) -> str:
    """The default as one would write it in the variable."""
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _fields(model: type[pydantic_settings.BaseSettings]) -> list[tuple[str, list[str], str, str]]:
    prefix = str(model.model_config["env_prefix"])
    return [
        (name, _variables(name, field, prefix), _env_form(field), " ".join((field.description or "").split()))
        for name, field in model.model_fields.items()
    ]


def _flag(variable: str, prefix: str) -> str:
    return "--" + variable.removeprefix(prefix).lower().replace("_", "-")


@pytest.mark.parametrize("component", sorted(MODELS))
def test_component_help_lists_every_setting_with_its_variable_default_and_meaning(component: str) -> None:
    result = console_script(component, "--help")
    assert result.returncode == 0, result.stderr
    shown = " ".join(result.stdout.split())
    model = MODELS[component]
    for name, variables, default, description in _fields(model):
        assert description, f"{model.__name__}.{name} has no docstring: --help would not say what it is for"
        entry = f"{description} [env {' or '.join(variables)}; default: {default}]"
        assert entry in shown, f"`gpufleet {component} --help` does not show {name} as: {entry}"
        assert _flag(variables[0], str(model.model_config["env_prefix"])) in shown


def test_every_setting_has_a_flag_that_sets_its_variable() -> None:
    for model in {*MODELS.values()}:
        prefix = str(model.model_config["env_prefix"])
        for name, variables, _, _ in _fields(model):
            field = model.model_fields[name]
            if field.annotation is bool:
                argv, written = [_flag(variables[0], prefix)], "true"
            elif typing.get_origin(field.annotation) is list:
                argv, written = [_flag(variables[0], prefix), '["x"]'], '["x"]'
            else:
                argv, written = [_flag(variables[0], prefix), "some-value"], "some-value"
            component = "agent" if model is agent_settings.AgentSettings else "operator"
            args = cli.build_parser().parse_args([component, *argv])
            assert cli.given_settings(args) == {variables[0]: written}, name


def test_a_negated_switch_writes_false() -> None:
    args = cli.build_parser().parse_args(["facade", "--no-audit-heartbeats", "--no-leader-election"])
    assert cli.given_settings(args) == {"GPUFLEET_AUDIT_HEARTBEATS": "false", "GPUFLEET_LEADER_ELECTION": "false"}


def test_operator_flag_overrides_its_variable() -> None:
    # The variable alone is invalid; the flag replaces it, so only the other bad setting is reported
    # (and the operator stops at validation instead of trying to reach a cluster).
    result = console_script(
        "operator",
        "--grace-period-seconds",
        "30",
        env={"GPUFLEET_GRACE_PERIOD_SECONDS": "-1", "GPUFLEET_PAGE_SIZE_DEFAULT": "0"},
    )
    assert result.returncode == 2, result.stderr
    assert "page_size_default" in result.stderr
    assert "grace_period_seconds" not in result.stderr


def test_facade_flag_is_validated_like_its_variable() -> None:
    result = console_script("facade", "--page-size-max", "5", env={"GPUFLEET_PAGE_SIZE_DEFAULT": "10"})
    assert result.returncode == 2
    assert "GPUFLEET_PAGE_SIZE_DEFAULT must not exceed GPUFLEET_PAGE_SIZE_MAX" in result.stderr


def test_agent_flags_override_the_environment(tmp_path: pathlib.Path) -> None:
    # No cluster: the agent logs its settings, then stops because no kubeconfig exists.
    result = console_script(
        "agent",
        "--node-name",
        "from-flag",
        "--simulate",
        "3",
        "--log-format",
        "text",
        "--metrics-port",
        "0",
        env={
            "NODE_NAME": "from-env",
            "GPUFLEET_AGENT_SIMULATE": "2",
            "GPUFLEET_AGENT_LOG_FORMAT": "json",
            "KUBECONFIG": str(tmp_path / "missing"),
        },
    )
    assert result.returncode == 1, result.stderr
    assert "agent starting on node from-flag (3 simulated GPUs)" in result.stderr
    assert "cannot reach the Kubernetes API" in result.stderr


def test_a_bad_json_flag_is_a_usage_error() -> None:
    result = console_script("agent", "--ignored-xids", "[94")
    assert result.returncode == 2
    assert "--ignored-xids: invalid JSON value" in result.stderr


@pytest.mark.parametrize(
    "command", [[], ["operator"], ["facade"], ["agent"]], ids=["gpufleet", "operator", "facade", "agent"]
)
def test_version_is_the_installed_distributions(command: list[str]) -> None:
    result = console_script(*command, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"gpufleet {importlib.metadata.version('gpufleet')}"
