"""The `gpufleet` console script: one command, a subcommand per component."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import yaml

from gpufleet.api import crds

REPO = pathlib.Path(__file__).resolve().parents[2]


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
