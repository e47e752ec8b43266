"""`gpufleet dev`: the whole control plane on one machine, no cluster needed.

It starts the emulated Kubernetes API on loopback, installs the CRDs, and runs the operator and
the REST facade against it in this process, exactly as they run against a real cluster (same
kubeconfig-based clients, same HTTP). State lives in memory and is gone when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import secrets
import signal
import sys
import tempfile

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import devfleet, kube, logs, settings
from gpufleet.api import crds


async def _ensure_namespace(name: str) -> None:
    async with await kube.api_client() as api:
        with contextlib.suppress(exceptions.ApiException):
            await client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def _banner(
    *,
    facade_url: str,
    api_url: str,
    kubeconfig: pathlib.Path,
    admin: str,
    viewer: str,
    grace: float,
    metrics_url: str | None,
    nodes: list[str],
) -> str:
    metrics = f"{metrics_url}/metrics (operator), " if metrics_url else ""
    simulated = (
        [f"  simulated nodes:   {len(nodes)} ({nodes[0]} ... {nodes[-1]}); watch: kubectl get hosts,gpus -w"]
        if nodes
        else ["  try a node agent:  NODE_NAME=node-1 gpufleet agent --register --simulate 4 --metrics-port 0"]
    )
    return "\n".join(
        [
            "gpufleet dev is running (state is in memory and is lost when it stops).",
            f"  REST facade:       {facade_url}/api/v1/hosts   (OpenAPI: {facade_url}/api/v1/openapi.json)",
            f"  metrics:           {metrics}{facade_url}/metrics (facade)",
            f"  Kubernetes API:    {api_url}",
            f"  kubeconfig:        {kubeconfig}",
            f"                     export KUBECONFIG={kubeconfig}; kubectl get hosts",
            f"  admin token:       {admin}",
            f"  viewer token:      {viewer}",
            f"  grace period:      {grace:g}s",
            "  agent tokens are returned by POST /api/v1/hosts; for a Host made with kubectl: "
            "kubectl -n gpufleet get secret gpufleet-agent-token-<host> -o jsonpath='{.data.token}' | base64 -d",
            *simulated,
            "Press Ctrl+C to stop.",
        ]
    )


MISSING_EMULATOR = (
    "gpufleet dev needs the emulated Kubernetes API, which product images do not ship. From a "
    "checkout of gpufleet: `make run` (installs everything), or `pip install -e ./emulator`."
)


async def _serve(args: argparse.Namespace) -> int:
    from gpufleet.controller import main as controller
    from gpufleet.facade import main as facade

    try:
        from kube_emulator import EmulatedCluster
    except ImportError:
        print(MISSING_EMULATOR, file=sys.stderr)
        return 2

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-dev-"))
    cluster = EmulatedCluster(host=args.host, port=args.api_port).start()
    try:
        kubeconfig = cluster.write_kubeconfig(args.kubeconfig or workdir / "kubeconfig")
        os.environ["KUBECONFIG"] = str(kubeconfig)
        for crd in crds.all_crds().values():
            cluster.apply_crd(crd)

        admin = args.admin_token or secrets.token_urlsafe(24)
        viewer = args.viewer_token or secrets.token_urlsafe(24)
        tokens_file = workdir / "tokens"
        tokens_file.write_text(f"{admin},admin\n{viewer},viewer\n", encoding="utf-8")
        tokens_file.chmod(0o600)

        overrides: dict[str, object] = {
            "facade_host": args.host,
            "facade_port": args.port,
            "auth_mode": settings.AuthMode.STATIC,
            "static_tokens_file": tokens_file,
            "leader_election": False,
            "metrics_port": args.metrics_port,
            "log_format": os.environ.get("GPUFLEET_LOG_FORMAT", "text"),
        }
        if args.grace_period is not None:
            overrides["grace_period_seconds"] = args.grace_period
        config = settings.Settings(**overrides)  # type: ignore[arg-type]
        logs.configure(config.log_level, config.log_format.value)
        await _ensure_namespace(config.namespace)
        await _ensure_namespace(config.host_lease_namespace)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        operator_ready, facade_ready = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(controller.serve(config, stop=stop, ready=operator_ready), name="operator"),
            asyncio.create_task(facade.serve(config, stop=stop, ready=facade_ready), name="facade"),
        ]
        await _wait_ready(tasks, operator_ready, facade_ready)
        async with devfleet.running(args.nodes, args.gpus, kubeconfig=str(kubeconfig)) as fleet:
            print(
                _banner(
                    facade_url=f"http://{args.host}:{args.port}",
                    api_url=cluster.url,
                    kubeconfig=kubeconfig,
                    admin=admin,
                    viewer=viewer,
                    grace=config.grace_period_seconds,
                    metrics_url=f"http://{args.host}:{args.metrics_port}" if args.metrics_port else None,
                    nodes=fleet,
                ),
                flush=True,
            )
            # Kopf installs its own SIGINT/SIGTERM handlers over ours and stops only the operator, so the
            # end of either component is the end of both.
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await asyncio.gather(stopped, *tasks, return_exceptions=True)
        return 0
    finally:
        cluster.stop()


async def _wait_ready(tasks: list[asyncio.Task[None]], *events: asyncio.Event) -> None:
    """Wait until every component says it is ready, or fail with the first one that died."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    pending: set[asyncio.Task[object]] = {*waiters, *tasks}
    while any(not waiter.done() for waiter in waiters):
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks:
                task.result()
                raise RuntimeError(f"{task.get_name()} stopped before it was ready")


def run(args: argparse.Namespace) -> int:
    """Run until interrupted; exit status 0 on a clean stop."""
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0
    except Exception as error:
        print(f"gpufleet dev: {error}", file=sys.stderr)
        return 1
