"""A minimal operator run by ``test_kopf.py``: it records each handler call in a file."""

from __future__ import annotations

import os
from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 10


def _record(what: str, namespace: str | None, name: str | None) -> None:
    with open(os.environ["GPUFLEET_KOPF_TEST_LOG"], "a") as log:
        log.write(f"{what} {namespace}/{name}\n")


@kopf.on.create("testing.gpufleet.io", "v1", "widgets")
def created(name: str | None, namespace: str | None, **_: Any) -> dict[str, Any]:
    _record("created", namespace, name)
    return {"seen": True}


@kopf.on.delete("testing.gpufleet.io", "v1", "widgets")
def deleted(name: str | None, namespace: str | None, **_: Any) -> None:
    _record("deleted", namespace, name)
