"""Allocation from kubelet's PodResources API: decoding its answer, and a real gRPC call over a unix socket."""

from __future__ import annotations

import pathlib

import pytest

from gpufleet_agent import podresources

from .kubelet import Kubelet, container, devices, field, pod

RESPONSE = field(
    1,
    pod(
        "team-a",
        "train-0",
        container("main", devices("nvidia.com/gpu", "GPU-aaa", "GPU-bbb"), devices("example.com/nic", "nic0")),
    ),
) + field(1, pod("team-b", "infer-0", container("server", devices("nvidia.com/gpu", "2"))))


def test_gpus_map_to_the_pods_holding_them() -> None:
    holders = podresources.holders(podresources.parse_list_response(RESPONSE), ["nvidia.com/gpu"])
    assert holders == {"GPU-aaa": "team-a/train-0", "GPU-bbb": "team-a/train-0", "2": "team-b/infer-0"}


def test_an_empty_answer_means_nothing_is_allocated() -> None:
    assert podresources.parse_list_response(b"") == []


def test_a_truncated_answer_is_an_error_not_a_wrong_allocation() -> None:
    with pytest.raises(ValueError, match="truncated"):
        podresources.parse_list_response(RESPONSE[:-3])


def test_a_missing_socket_is_reported_as_the_reason() -> None:
    source = podresources.PodResources(pathlib.Path("/nonexistent/kubelet.sock"), ["nvidia.com/gpu"])
    reason = source.unavailable_reason()
    assert reason is not None
    assert "kubelet.sock" in reason or "grpcio" in reason


async def test_holders_are_read_from_kubelet_over_grpc(kubelet: Kubelet) -> None:
    kubelet.response = RESPONSE
    source = podresources.PodResources(kubelet.socket, ["nvidia.com/gpu"])
    assert source.unavailable_reason() is None
    try:
        assert (await source.holders())["GPU-aaa"] == "team-a/train-0"
    finally:
        await source.close()
