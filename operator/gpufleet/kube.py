"""One way to reach the Kubernetes API from asyncio code: in-cluster config, else the kubeconfig.

The facade and the agent run inside an event loop, so they use `kubernetes_asyncio`; Kopf logs
in on its own. Both honour `KUBECONFIG`, so everything points at a real cluster or at the
emulated API of `gpufleet dev` the same way.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException


async def api_client(kubeconfig: str | None = None, *, request_timeout: float | None = None) -> client.ApiClient:
    """An API client for the in-cluster service account, or for `kubeconfig` / `$KUBECONFIG`.

    With `request_timeout`, every call that does not set its own `_request_timeout` gets this one: the
    library's default is no timeout at all, and one call hung on a half-open connection would
    hold whatever it holds (a write slot, a host's verdict) forever.
    """
    configuration = client.Configuration()
    api: client.ApiClient | None = None
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api = client.ApiClient(configuration)
        except ConfigException:
            pass
    if api is None:
        # Read $KUBECONFIG now rather than the library's copy taken at import time, so a process that
        # points itself at a cluster after start-up (gpufleet dev, tests) is honoured.
        await config.load_kube_config(
            config_file=kubeconfig or os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
        api = client.ApiClient(configuration)
    if request_timeout is not None:
        _default_timeout(api, request_timeout)
    return api


def _default_timeout(api: client.ApiClient, timeout: float) -> None:
    """Give every request of `api` without a `_request_timeout` of its own a total timeout of `timeout`."""
    rest = api.rest_client
    send = rest.request

    @functools.wraps(send)
    async def request(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("_request_timeout"):
            kwargs["_request_timeout"] = timeout
        return await send(*args, **kwargs)

    rest.request = request  # type: ignore[method-assign] # an instance of the library's client, on purpose
