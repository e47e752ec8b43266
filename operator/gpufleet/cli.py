"""The `gpufleet` command: one console script, a subcommand per component.

Entry points stay thin: each subcommand parses its options here and hands them to the package
that does the work, importing it only when chosen, so `gpufleet crds` does not pay for Kopf.

The options of `operator`, `facade` and `agent` are generated from their pydantic-settings
models, the single source of truth: each setting's flag, environment variable, default and help
(the attribute docstring) come from the model, so a setting added there shows up in `--help` and
as a flag without anyone remembering to write either.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import importlib.metadata
import json
import os
import pathlib
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

import pydantic
import pydantic_core
import pydantic_settings

from gpufleet import settings
from gpufleet_agent import settings as agent_settings

DISTRIBUTION = "gpufleet"


def version() -> str:
    """The installed distribution's version: what `pip` installed is what `--version` reports."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class _Formatter(argparse.HelpFormatter):
    """Wraps help at spaces only, so that a long environment variable name is never cut in two."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One field of a settings model as the command line shows and accepts it."""

    field: str
    """The model's field name; also the `argparse` destination, so `Model(**values)` takes it."""
    variables: tuple[str, ...]
    """Environment variables the model reads it from, in the model's order of precedence."""
    flag: str
    """The option, e.g. `--grace-period-seconds`: the first variable without the model's prefix."""
    default: str
    """The default as it would be written in the environment; `required` or `unset` where none."""
    description: str
    kind: Literal["bool", "json", "text"]
    """How a flag's value is read: a switch, a JSON document (lists), or text the model validates."""
    metavar: str | None


def _variables(name: str, field: pydantic.fields.FieldInfo, prefix: str) -> tuple[str, ...]:
    """The environment variables of a field: its upper-case aliases, else the prefixed name.

    The same rule pydantic-settings applies (an alias replaces the prefix); lower-case aliases
    are the names Python callers use, not variables.
    """
    alias = field.validation_alias or field.alias
    choices: list[Any] = alias.choices if isinstance(alias, pydantic.AliasChoices) else [alias]
    named = tuple(choice for choice in choices if isinstance(choice, str) and choice.isupper())
    return named or (f"{prefix}{name}".upper(),)


def _bare(annotation: Any) -> Any:
    """The type under `Optional[...]` and `Annotated[...]`: what decides how a value is written."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(rest) == 1:
                annotation = rest[0]
                continue
        return annotation


def _kind(annotation: Any) -> Literal["bool", "json", "text"]:
    bare = _bare(annotation)
    if bare is bool:
        return "bool"
    if typing.get_origin(bare) in (list, dict, set, tuple) or bare in (list, dict, set, tuple):
        return "json"  # pydantic-settings reads these variables as JSON too
    return "text"


def _metavar(name: str, annotation: Any) -> str | None:
    bare = _bare(annotation)
    if bare is bool:
        return None
    if isinstance(bare, type) and issubclass(bare, enum.Enum):
        return "{" + ",".join(str(member.value) for member in bare) + "}"
    if typing.get_origin(bare) is typing.Literal:
        return "{" + ",".join(str(choice) for choice in typing.get_args(bare)) + "}"
    if _kind(annotation) == "json":
        return "JSON"
    if bare is float:
        return "SECONDS" if name.endswith("_seconds") else "NUMBER"
    if bare is int:
        return "INT"
    if isinstance(bare, type) and issubclass(bare, pathlib.PurePath):
        return "PATH"
    return "TEXT"


def _written(value: Any) -> str:
    """A value as it is written in an environment variable (the form pydantic-settings reads)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (list, dict, set, tuple)):
        return json.dumps(list(value) if isinstance(value, (set, tuple)) else value)
    return str(value)


def _default(field: pydantic.fields.FieldInfo) -> str:
    if field.default is pydantic_core.PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    return "unset" if value is None else _written(value)


def settings_of(model: type[pydantic_settings.BaseSettings]) -> list[Setting]:
    """Every field of `model`, with its variables, flag, default and description, in model order."""
    prefix = str(model.model_config.get("env_prefix", ""))
    found = []
    for name, field in model.model_fields.items():
        variables = _variables(name, field, prefix)
        bare_name = variables[0].removeprefix(prefix.upper())  # NODE_NAME has none to remove
        found.append(
            Setting(
                field=name,
                variables=variables,
                flag="--" + bare_name.lower().replace("_", "-"),
                default=_default(field),
                description=" ".join((field.description or "").split()),
                kind=_kind(field.annotation),
                metavar=_metavar(name, field.annotation),
            )
        )
    return found


def _json(text: str) -> Any:
    """A flag's JSON value (`--ignored-xids '[94]'`); argparse reports the ValueError as a usage error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(str(error)) from error


_json.__name__ = "JSON"  # argparse names the type in its message: "invalid JSON value"


def _add_settings(parser: argparse.ArgumentParser, model: type[pydantic_settings.BaseSettings]) -> None:
    """One flag per setting of `model`, its help naming the variable and the default.

    A flag overrides its variable: `main` writes it into the environment before the component
    starts, because the operator and the facade read their settings from the environment alone,
    exactly as the chart gives them.
    """
    group = parser.add_argument_group(
        "settings", "Each setting is read from its environment variable; its flag, when given, overrides it."
    )
    found = settings_of(model)
    for setting in found:
        shown = f"{setting.description} [env {' or '.join(setting.variables)}; default: {setting.default}]"
        help_text = shown.replace("%", "%%")
        if setting.kind == "bool":
            group.add_argument(
                setting.flag,
                dest=setting.field,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                setting.flag,
                dest=setting.field,
                type=_json if setting.kind == "json" else str,
                default=None,
                metavar=setting.metavar,
                help=help_text,
            )
    parser.set_defaults(setting_options=found)


def given_settings(args: argparse.Namespace) -> dict[str, str]:
    """The environment variables the flags on this command line set, with their values."""
    found: list[Setting] = getattr(args, "setting_options", [])
    return {
        setting.variables[0]: _written(value)
        for setting in found
        if (value := getattr(args, setting.field, None)) is not None
    }


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"gpufleet {version()}")


def _add_crds(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("crds", help="print the CRD YAML generated from the API models")
    parser.add_argument(
        "--output-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="write one file per CRD into DIR instead of printing (repeatable)",
    )
    parser.set_defaults(entry="gpufleet.api.crds_command")


def _add_operator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "operator",
        help="run the Kopf operator against the current kubeconfig or in-cluster config",
        formatter_class=_Formatter,
    )
    _add_version(parser)
    _add_settings(parser, settings.Settings)
    parser.set_defaults(entry="gpufleet.controller.main")


def _add_facade(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("facade", help="run the legacy REST API facade over the CRDs", formatter_class=_Formatter)
    _add_version(parser)
    _add_settings(parser, settings.Settings)
    parser.set_defaults(entry="gpufleet.facade.main")


def _add_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "dev",
        help="run the whole control plane on this machine: emulated Kubernetes API, operator, facade",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="REST facade port (default: %(default)s)")
    parser.add_argument("--api-port", type=int, default=0, help="emulated Kubernetes API port (default: a free one)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="operator Prometheus /metrics port (default: off; the facade's /metrics is always on)",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=None,
        metavar="SECONDS",
        help="heartbeat grace period (default: GPUFLEET_GRACE_PERIOD_SECONDS or 50)",
    )
    parser.add_argument("--admin-token", default=None, help="fixed admin token (default: generated)")
    parser.add_argument("--viewer-token", default=None, help="fixed viewer token (default: generated)")
    parser.add_argument(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="where to write the kubeconfig for kubectl (default: a file in a temporary directory)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        metavar="N",
        help="also run N simulated node agents in this process, with varied loads and occasional faults",
    )
    parser.add_argument(
        "--gpus", type=int, default=8, metavar="M", help="GPUs of each simulated node (default: %(default)s)"
    )
    parser.set_defaults(entry="gpufleet.dev")


def _add_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "agent", help="run the node agent: NVML discovery, GPU status, heartbeats", formatter_class=_Formatter
    )
    _add_version(parser)
    _add_settings(parser, agent_settings.AgentSettings)
    parser.set_defaults(entry="gpufleet_agent.main")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `gpufleet` command."""
    parser = argparse.ArgumentParser(prog="gpufleet", description="Manage a fleet of GPU hosts on Kubernetes.")
    _add_version(parser)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in (_add_crds, _add_operator, _add_facade, _add_dev, _add_agent):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the chosen component; exit with its status."""
    args = build_parser().parse_args(argv)
    os.environ.update(given_settings(args))
    module = importlib.import_module(args.entry)
    sys.exit(module.run(args))
