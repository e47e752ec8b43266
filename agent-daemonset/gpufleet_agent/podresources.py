"""Which pod holds which GPU, from kubelet's PodResources API (gRPC over a unix socket).

Kubelet knows which devices the device plugin gave each container; it serves that on
`/var/lib/kubelet/pod-resources/kubelet.sock` (`v1.PodResourcesLister/List`). The agent reads it
each publishing round and sets a GPU's `allocatedTo` to `namespace/pod`. Device IDs are GPU
UUIDs (the NVIDIA device plugin's default) or indexes (`--device-id-strategy=index`); both match.

grpcio is an optional dependency (`pip install gpufleet[agent]`), imported only where the
socket exists (it costs ~9 MB of memory): without it, or without the socket (not a kubelet
node, socket not mounted), allocation is left to whoever sets `allocatedTo`, and the agent
says so once at start-up. The response is decoded by hand from
the protobuf wire format (four small messages), which spares a protobuf dependency and
generated code for one read-only call.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import pathlib
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

LIST_METHOD = "/v1.PodResourcesLister/List"


@dataclasses.dataclass(frozen=True)
class ContainerDevices:
    namespace: str
    pod: str
    container: str
    resource_name: str
    device_ids: tuple[str, ...]


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of one protobuf message; bytes for length-delimited fields."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
            yield number, wire_type, value
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ValueError("truncated field")
            yield number, wire_type, data[position : position + length]
            position += length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            yield number, wire_type, int.from_bytes(data[position : position + size], "little")
            position += size
        else:
            raise ValueError(f"unsupported wire type {wire_type}")


def _strings(data: bytes, wanted: dict[int, str]) -> dict[str, str]:
    return {wanted[n]: v.decode() for n, t, v in _fields(data) if n in wanted and isinstance(v, bytes)}


def parse_list_response(data: bytes) -> list[ContainerDevices]:
    """Decode a `v1.ListPodResourcesResponse` into the devices of every container."""
    found = []
    for number, _, pod in _fields(data):
        if number != 1 or not isinstance(pod, bytes):
            continue
        names = _strings(pod, {1: "name", 2: "namespace"})
        for field, _, container in _fields(pod):
            if field != 3 or not isinstance(container, bytes):
                continue
            container_name = _strings(container, {1: "name"}).get("name", "")
            for kind, _, devices in _fields(container):
                if kind != 2 or not isinstance(devices, bytes):
                    continue
                resource = _strings(devices, {1: "resource_name"}).get("resource_name", "")
                ids = tuple(v.decode() for n, _, v in _fields(devices) if n == 2 and isinstance(v, bytes))
                found.append(
                    ContainerDevices(names.get("namespace", ""), names.get("name", ""), container_name, resource, ids)
                )
    return found


def holders(containers: list[ContainerDevices], resource_names: list[str]) -> dict[str, str]:
    """`namespace/pod` by device ID, for the GPU resources only."""
    return {
        device_id: f"{c.namespace}/{c.pod}"
        for c in containers
        if c.resource_name in resource_names
        for device_id in c.device_ids
    }


class PodResources:
    """A client of kubelet's PodResources API; `holders()` answers None when allocation is unknown."""

    def __init__(self, socket_path: pathlib.Path, resource_names: list[str], timeout_seconds: float = 5.0) -> None:
        self._socket_path = socket_path
        self._resource_names = resource_names
        self._timeout = timeout_seconds
        self._channel: Any = None

    def unavailable_reason(self) -> str | None:
        """Why allocation cannot be read here, or None when it can be tried."""
        if not self._socket_path.is_socket():
            return f"no kubelet PodResources socket at {self._socket_path}"
        if importlib.util.find_spec("grpc") is None:
            return "grpcio is not installed (pip install 'gpufleet[agent]')"
        return None

    async def holders(self) -> dict[str, str]:
        """`namespace/pod` by device ID (UUID or index). Raises on gRPC errors."""
        if self._channel is None:
            aio = importlib.import_module("grpc.aio")
            self._channel = aio.insecure_channel(f"unix://{self._socket_path}")
        call = self._channel.unary_unary(
            LIST_METHOD, request_serializer=lambda _: b"", response_deserializer=parse_list_response
        )
        containers: list[ContainerDevices] = await call(None, timeout=self._timeout)
        return holders(containers, self._resource_names)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
