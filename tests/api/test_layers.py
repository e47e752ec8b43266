"""Layers import only downward: the components never import each other.

The operator, the facade and the agent are deployed separately (the agent image does not even
carry Kopf); an import across them would drag one component's dependencies into another, and
an import upward (the API types reaching for the operator) would make the types unusable alone.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = {
    "gpufleet": ROOT / "operator" / "gpufleet",
    "gpufleet_agent": ROOT / "agent-daemonset" / "gpufleet_agent",
    # A test tool that no image ships: only `gpufleet dev` may import it, and it imports no gpufleet.
    "kube_emulator": ROOT / "emulator" / "kube_emulator",
}

#: What each part may import besides itself; the entry points (cli, dev, __main__) may import anything.
FOUNDATION = {
    "gpufleet.api",
    "gpufleet.settings",
    "gpufleet.tokens",
    "gpufleet.kube",
    "gpufleet.logs",
    "gpufleet.backoff",
    "gpufleet.informer",
    "gpufleet.leaderelection",
}
ALLOWED = {
    "gpufleet.api": set(),
    "gpufleet.settings": set(),
    "gpufleet.logs": set(),
    "gpufleet.tokens": {"gpufleet.api"},
    "gpufleet.kube": set(),
    "gpufleet.backoff": set(),
    "gpufleet.informer": {"gpufleet.backoff"},
    "gpufleet.leaderelection": {"gpufleet.backoff", "gpufleet.api"},
    "kube_emulator": set(),
    "gpufleet.controller": FOUNDATION,
    "gpufleet.facade": FOUNDATION,
    "gpufleet_agent": {"gpufleet.api", "gpufleet.logs"},
}
ENTRY_POINTS = {"gpufleet.cli", "gpufleet.dev", "gpufleet.devfleet", "gpufleet.__main__", "gpufleet"}


def _part(module: str) -> str:
    if module.startswith(("gpufleet_agent", "kube_emulator")):
        return module.split(".")[0]
    return ".".join(module.split(".")[:2])


def _modules() -> list[tuple[str, pathlib.Path]]:
    found = []
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            found.append((".".join([package, *parts]), path))
    return found


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in SOURCES}


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_a_module_imports_only_its_own_part_and_the_layers_below(module: str, path: pathlib.Path) -> None:
    if module in ENTRY_POINTS:
        return
    part = _part(module)
    allowed = ALLOWED[part] | {part}
    wrong = {name for name in _imports(path) if not any(name == a or name.startswith(f"{a}.") for a in allowed)}
    assert not wrong, f"{module} ({part}) imports {sorted(wrong)}; it may import {sorted(allowed)}"
