"""The two Dockerfiles keep the promises the chart relies on.

The chart runs every container as UID 65532 with a read-only root filesystem (the agent as UID 0
only for kubelet's socket), so the images must run as that user, install nothing at run time and
build from a base that cannot move. These are static checks of the files; `make images` and
tests/e2e/run.sh build them for real where Docker is available.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from . import rendering

DOCKERFILES = {
    "operator": rendering.REPO / "operator" / "Dockerfile",
    "agent": rendering.REPO / "agent-daemonset" / "Dockerfile",
}
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}$")


def _stages(path: pathlib.Path) -> list[list[str]]:
    """Instructions per build stage, line continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("image", DOCKERFILES)
def test_the_base_is_pinned_by_version_and_digest(image: str) -> None:
    text = DOCKERFILES[image].read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert PINNED_BASE.match(base), base
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in text.splitlines() if line.startswith("FROM "))


def test_both_images_share_one_base() -> None:
    bases = {
        re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", p.read_text(), flags=re.MULTILINE)[0] for p in DOCKERFILES.values()
    }
    assert len(bases) == 1


@pytest.mark.parametrize("image", DOCKERFILES)
def test_the_final_stage_runs_as_nonroot_and_copies_only_the_virtualenv(image: str) -> None:
    stages = _stages(DOCKERFILES[image])
    assert len(stages) == 2, "a builder stage and a final stage"
    final = stages[-1]
    assert [line for line in final if line.startswith("USER ")] == ["USER 65532:65532"]
    assert [line for line in final if line.startswith("COPY")] == ["COPY --from=builder /opt/gpufleet /opt/gpufleet"]
    runs = [line for line in final if line.startswith("RUN ")]
    assert all("uninstall" in run and "install " not in run.replace("uninstall", "") for run in runs), runs
    assert not any("apt-get" in line or "gcc" in line for line in final)
    assert final[-1] in ('CMD ["operator"]', 'CMD ["agent"]')


def test_the_agent_image_asks_the_nvidia_runtime_for_nvml_only() -> None:
    text = DOCKERFILES["agent"].read_text()
    assert "NVIDIA_VISIBLE_DEVICES=all" in text
    assert "NVIDIA_DRIVER_CAPABILITIES=utility" in text
    instructions = "\n".join(line for stage in _stages(DOCKERFILES["agent"]) for line in stage)
    assert not re.search(r"nvidia/cuda|libnvidia|cuda-|apt-get", instructions, flags=re.IGNORECASE)


def test_the_build_context_holds_only_what_the_images_need() -> None:
    rules = [
        line
        for line in (rendering.REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"
    included = {rule.removeprefix("!").rstrip("/") for rule in rules if rule.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "operator/gpufleet", "agent-daemonset/gpufleet_agent"}
    for dockerfile in DOCKERFILES.values():
        for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), flags=re.MULTILINE):
            assert set(source.split()) <= included, source
