"""Fixtures of the API contract suite: raw API access, test CRDs, a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .helpers import GADGET_CRD, WIDGET_CRD, WIDGETS, Api


@pytest.fixture(scope="session")
def api(api_client: Any) -> Api:
    return Api(api_client)


@pytest.fixture(scope="session")
def test_crds(apply_crd: Callable[[dict[str, Any]], None]) -> None:
    apply_crd(WIDGET_CRD)
    apply_crd(GADGET_CRD)


@pytest.fixture
def namespace(api: Api, test_crds: None) -> Iterator[str]:
    """A fresh namespace per test (the test CRDs installed)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    api("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def widgets(namespace: str) -> str:
    """The widgets collection path in the test's namespace."""
    return WIDGETS.format(ns=namespace)
