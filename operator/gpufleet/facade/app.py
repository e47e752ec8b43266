"""The facade's aiohttp application: routes, middlewares, and the caches it starts and stops.

`create_app` is all a caller needs (tests, `serve`, `gpufleet dev`): the API client is opened
and the informers run in the app's cleanup context, so they live exactly as long as the app
runs, and `/readyz` turns ready once every cache (Hosts, GPUs, host Leases) has completed its
first list. The static tokens file, in static auth mode, is looked at for changes for as long too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from aiohttp import web

from gpufleet import informer, kube
from gpufleet.facade import audit, auth, errors, heartbeats, kubeapi, metrics, openapi, ratelimit, reload, routes
from gpufleet.settings import AuthMode, Settings


def create_app(settings: Settings, *, kubeconfig: str | None = None) -> web.Application:
    """The facade for `settings`, talking to the cluster of `kubeconfig` (default: in-cluster or $KUBECONFIG)."""
    app_metrics = metrics.Metrics()
    app = web.Application(
        middlewares=[app_metrics.middleware, audit.middleware(heartbeats=settings.audit_heartbeats), errors.envelope],
        client_max_size=settings.max_body_bytes,
    )
    app[routes.SERVICES] = services = _services(settings)
    for view in services.informers:
        app_metrics.observe(view)
    app.cleanup_ctx.append(lambda app: _connected(services, kubeconfig))
    if isinstance(services.guard.callers, auth.StaticTokensFile):
        tokens_file = services.guard.callers
        watch = reload.FileWatch("static tokens file", [tokens_file.path], tokens_file.reload)
        app.cleanup_ctx.append(lambda app: _watching(watch, settings.reload_interval_seconds))
    document = openapi.document(settings)
    routes.add_routes(app, document)

    async def serve_document(request: web.Request) -> web.Response:
        return errors.json_response(document)

    app.router.add_get(openapi.PATH, serve_document, allow_head=False)
    app.router.add_get("/healthz", _healthz, allow_head=False)
    app.router.add_get("/readyz", _readyz, allow_head=False)
    app.router.add_get("/metrics", app_metrics.handler(), allow_head=False)
    return app


def _services(settings: Settings) -> routes.Services:
    k8s = kubeapi.Kubernetes(
        timeout=settings.api_timeout_seconds,
        namespace=settings.namespace,
        lease_namespace=settings.host_lease_namespace,
    )
    hosts = informer.Store(transform=informer.drop_managed_fields, indexers=routes.host_indexers())
    gpus = informer.Store(transform=informer.drop_managed_fields, indexers=routes.gpu_indexers())
    leases = informer.Store(transform=heartbeats.compact_lease)
    timeout = settings.api_timeout_seconds
    informers = [
        informer.Informer("hosts", k8s.list_hosts, store=hosts, timeout=timeout),
        informer.Informer("gpus", k8s.list_gpus, store=gpus, timeout=timeout),
        informer.Informer("leases", k8s.list_leases, store=leases, timeout=timeout),
    ]
    callers: auth.Authorizer
    if settings.auth_mode is AuthMode.STATIC:
        assert settings.static_tokens_file is not None  # Settings validates this
        callers = auth.StaticTokensFile(settings.static_tokens_file)
    else:
        callers = auth.KubernetesReviews(
            k8s, audience=settings.auth_audience, ttl=settings.auth_cache_seconds, size=settings.auth_cache_size
        )
    agent_tokens = auth.AgentTokens(hosts)
    limiter = ratelimit.FailureLimiter(settings.auth_failure_burst, settings.auth_failure_rate)
    return routes.Services(
        settings=settings,
        kube=k8s,
        hosts=hosts,
        gpus=gpus,
        informers=informers,
        guard=auth.Guard(callers, agent_tokens, limiter),
        limiter=limiter,
        # A Lease a heartbeat renews lasts one grace period: the operator's deadline for a sign of life.
        leases=heartbeats.Leases(k8s, leases, duration_seconds=max(1, int(settings.grace_period_seconds))),
    )


async def _connected(services: routes.Services, kubeconfig: str | None) -> AsyncIterator[None]:
    # kubernetes_asyncio reads $KUBECONFIG once, when imported; `gpufleet dev` and tests set it later.
    async with await kube.api_client(kubeconfig or os.environ.get("KUBECONFIG")) as api:
        services.kube.connect(api)
        tasks = [asyncio.create_task(i.run(), name=f"facade informer {i.resource}") for i in services.informers]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            services.kube.close()


async def _watching(watch: reload.FileWatch, interval: float) -> AsyncIterator[None]:
    task = asyncio.create_task(watch.run(interval), name=f"facade watch {watch.what}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_synced(app: web.Application) -> None:
    """Return once every cache has completed its first list."""
    await asyncio.gather(*(view.synced.wait() for view in app[routes.SERVICES].informers))


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _readyz(request: web.Request) -> web.Response:
    if not request.app[routes.SERVICES].synced():
        return web.Response(status=503, text="caches are syncing")
    return web.Response(text="ok")
