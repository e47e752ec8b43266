"""Agent settings: environment, command line, and clear refusals of bad values."""

from __future__ import annotations

import argparse

import pytest

from gpufleet import cli
from gpufleet_agent import main
from gpufleet_agent.settings import AgentSettings


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["agent", *argv])


def test_node_name_comes_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-node-1")
    monkeypatch.setenv("GPUFLEET_AGENT_REGISTER", "true")
    monkeypatch.setenv("GPUFLEET_AGENT_SAMPLE_INTERVAL_SECONDS", "2")
    settings = main.load_settings(parse())
    assert (settings.node_name, settings.register_node, settings.simulate) == ("gpu-node-1", True, None)
    assert settings.sample_interval_seconds == 2


def test_command_line_options_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-node-1")
    monkeypatch.setenv("GPUFLEET_AGENT_SIMULATE", "2")
    settings = main.load_settings(parse("--node-name", "n9", "--register", "--simulate", "8"))
    assert (settings.node_name, settings.register_node, settings.simulate) == ("n9", True, 8)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GPUFLEET_AGENT_SAMPLE_INTERVAL_SECONDS", "0"),
        ("GPUFLEET_AGENT_RESYNC_INTERVAL_SECONDS", "1"),  # shorter than the 5 s sample interval
        ("GPUFLEET_AGENT_SIMULATE", "-1"),
        ("NODE_NAME", "Not_A_Node"),
        ("GPUFLEET_AGENT_LOG_FORMAT", "xml"),
    ],
)
def test_bad_settings_stop_the_agent_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv("NODE_NAME", "n1")
    monkeypatch.setenv(variable, value)
    assert main.run(parse()) == 2
    assert "invalid settings" in capsys.readouterr().err


def test_a_missing_node_name_is_explained(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.delenv("GPUFLEET_AGENT_NODE_NAME", raising=False)
    assert main.run(parse()) == 2
    assert "NODE_NAME" in capsys.readouterr().err


def test_defaults_keep_writes_rare_and_heartbeats_frequent() -> None:
    settings = AgentSettings(node_name="n1")
    assert settings.resync_interval_seconds >= 12 * settings.sample_interval_seconds
    assert settings.heartbeat_interval_seconds * 4 <= 50  # well inside the operator's default grace period
