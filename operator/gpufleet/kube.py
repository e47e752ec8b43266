"""One way to reach the Kubernetes API from asyncio code: in-cluster config, else the kubeconfig.

The facade and the agent run inside an event loop, so they use `kubernetes_asyncio`; Kopf logs
in on its own. Both honour `KUBECONFIG`, so everything points at a real cluster or at the
emulated API of `gpufleet dev` the same way.
"""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException


async def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client for the in-cluster service account, or for `kubeconfig` / `$KUBECONFIG`."""
    configuration = client.Configuration()
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return client.ApiClient(configuration)
        except ConfigException:
            pass
    # Read $KUBECONFIG now rather than the library's copy taken at import time, so a process that
    # points itself at a cluster after start-up (gpufleet dev, tests) is honoured.
    await config.load_kube_config(
        config_file=kubeconfig or os.environ.get("KUBECONFIG"), client_configuration=configuration
    )
    return client.ApiClient(configuration)
