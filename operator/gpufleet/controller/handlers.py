"""Every Kopf decorator of the operator, and nothing else.

Kopf is the operator's runtime: it logs in and answers the liveness probe. The fleet is followed
by the operator's own informers (see `main` for why), so no resource handler is registered here.
"""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else `$KUBECONFIG` as it is now.

    Kopf's default (through the `kubernetes` library) uses the kubeconfig path that library saw
    when it was first imported, which misses a `KUBECONFIG` set later by `gpufleet dev` or tests.
    """
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    return info
