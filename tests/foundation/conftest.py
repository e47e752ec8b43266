"""Fixtures of the foundation's tests: a namespace of their own on the API under test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client


@pytest.fixture
async def namespace(async_api_client: client.ApiClient) -> AsyncIterator[str]:
    name = f"found-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(async_api_client)
    await core.create_namespace({"metadata": {"name": name}})
    yield name
    with contextlib.suppress(client.ApiException):
        await core.delete_namespace(name)
