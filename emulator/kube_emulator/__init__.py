"""An emulated Kubernetes API server for testing operators, controllers and their tools.

It answers from memory with kube-apiserver's semantics where clients depend on them
(resourceVersions, conflicts, the status subresource, patch types, selectors, resumable
watches with bookmarks, finalizers, garbage collection, CRD schemas and CEL rules,
ValidatingAdmissionPolicies, auth reviews, Table output), plus fault-injection hooks. It
serves real HTTP on loopback, so every client (kubectl, Kopf, kubernetes, kubernetes_asyncio,
aiohttp) talks to it through a kubeconfig::

    with EmulatedCluster() as cluster:            # a background thread with its own loop
        cluster.write_kubeconfig("kubeconfig")
        cluster.apply_crd(crd)
        cluster.emulator.fail_next(2, status=503)
        with cluster.emulator.unavailable("hang"):
            ...

    async with emulated_api(kubeconfig="kubeconfig") as cluster:   # on the running loop
        ...   # only asynchronous clients here: a blocking client would block the server

    serve("127.0.0.1", 6443, "kubeconfig")        # foreground; also python -m kube_emulator
"""

from .cluster import EmulatedCluster, emulated_api, load_crds, serve, write_kubeconfig
from .emulator import Emulator
from .errors import ApiError
from .faults import RequestInfo, RequestRecord
from .resources import ResourceDef

__all__ = [
    "ApiError",
    "EmulatedCluster",
    "Emulator",
    "RequestInfo",
    "RequestRecord",
    "ResourceDef",
    "emulated_api",
    "load_crds",
    "serve",
    "write_kubeconfig",
]
