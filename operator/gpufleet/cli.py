"""The `gpufleet` command: one console script, a subcommand per component.

Entry points stay thin: each subcommand parses its options here and hands them to the package
that does the work, importing it only when chosen, so `gpufleet crds` does not pay for Kopf.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence


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
        "operator", help="run the Kopf operator against the current kubeconfig or in-cluster config"
    )
    parser.set_defaults(entry="gpufleet.controller.main")


def _add_facade(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("facade", help="run the legacy REST API facade over the CRDs")
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
    parser.set_defaults(entry="gpufleet.dev")


def _add_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("agent", help="run the node agent: NVML discovery, GPU status, heartbeats")
    parser.add_argument("--node-name", default=None, help="Kubernetes node this agent runs on (default: $NODE_NAME)")
    parser.add_argument(
        "--register",
        action="store_true",
        default=None,
        help="register this node as a Host when none exists (GPUFLEET_AGENT_REGISTER)",
    )
    parser.add_argument(
        "--simulate",
        type=int,
        default=None,
        metavar="N",
        help="use N simulated GPUs instead of NVML (GPUFLEET_AGENT_SIMULATE)",
    )
    parser.set_defaults(entry="gpufleet_agent.main")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `gpufleet` command."""
    parser = argparse.ArgumentParser(prog="gpufleet", description="Manage a fleet of GPU hosts on Kubernetes.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in (_add_crds, _add_operator, _add_facade, _add_dev, _add_agent):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the chosen component; exit with its status."""
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args.entry)
    sys.exit(module.run(args))
