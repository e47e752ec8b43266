"""A stand-in kubelet: the PodResources gRPC API on a unix socket, answering hand-encoded protobuf."""

from __future__ import annotations

import dataclasses
import pathlib


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes | str) -> bytes:
    """A length-delimited protobuf field."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def devices(resource: str, *ids: str) -> bytes:
    """`ContainerDevices` with a topology (field 3) that the decoder must skip."""
    return field(1, resource) + b"".join(field(2, i) for i in ids) + field(3, field(1, field(1, b"")))


def container(name: str, *device_lists: bytes) -> bytes:
    cpu_ids = varint(3 << 3 | 2) + varint(2) + b"\x01\x02"  # packed int64 cpu_ids, to be skipped
    return field(1, name) + b"".join(field(2, d) for d in device_lists) + cpu_ids


def pod(namespace: str, name: str, *containers: bytes) -> bytes:
    return field(1, name) + field(2, namespace) + b"".join(field(3, c) for c in containers)


def holding(namespace: str, pod_name: str, *gpu_ids: str) -> bytes:
    """A `ListPodResourcesResponse` with one pod holding `gpu_ids`."""
    return field(1, pod(namespace, pod_name, container("main", devices("nvidia.com/gpu", *gpu_ids))))


@dataclasses.dataclass
class Kubelet:
    socket: pathlib.Path
    response: bytes = b""
