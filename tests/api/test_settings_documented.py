"""Every setting a user can put in the environment is in the docs' settings tables, with its default.

The tables in docs/operator.md (operator and facade) and docs/agent.md (agent) are what people
read when they tune a deployment; a setting added in code and forgotten there fails here.
"""

from __future__ import annotations

import enum
import pathlib
import re
from typing import Any

import pydantic
import pydantic_core
import pytest

from gpufleet import settings
from gpufleet_agent import settings as agent_settings

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def _documented(page: str) -> dict[str, str]:
    """`| `VARIABLE` | default | meaning |` rows of a page: variable -> default cell."""
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", (DOCS / page).read_text(encoding="utf-8"), re.MULTILINE)
    return {variable: default.strip() for variable, default in rows}


def _variables(cls: Any, prefix: str) -> list[tuple[str, Any]]:
    found = []
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, pydantic.AliasChoices) else []
        upper = [c for c in choices if isinstance(c, str) and c.isupper()]
        found.append((upper[0] if upper else f"{prefix}{name.upper()}", field.default))
    return found


def _shown(default: Any) -> str:
    if default is None or default is pydantic_core.PydanticUndefined:
        return ""
    return f"`{default.value if isinstance(default, enum.Enum) else default}`"


@pytest.mark.parametrize(
    ("cls", "prefix", "page"),
    [(settings.Settings, "GPUFLEET_", "operator.md"), (agent_settings.AgentSettings, "GPUFLEET_AGENT_", "agent.md")],
    ids=["operator-and-facade", "agent"],
)
def test_every_setting_is_documented_with_its_default(cls: Any, prefix: str, page: str) -> None:
    documented = _documented(page)
    for variable, default in _variables(cls, prefix):
        assert variable in documented, f"{variable} is missing from docs/{page}"
        shown = _shown(default)
        if shown:
            assert documented[variable] == shown, f"docs/{page} gives {variable} the default {documented[variable]}"
