"""A hung driver: the fake NVML can hang a call, and the watchdog gives up on it without piling up threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pynvml
import pytest

from gpufleet_agent import fakenvml, nvml, watchdog

from .conftest import eventually


@pytest.fixture
def fake() -> Iterator[fakenvml.FakeNVML]:
    """Two idle GPUs; any hang left by a failing test is released, so no thread stays blocked."""
    library = fakenvml.scenario("eight", gpus=2)
    yield library
    library.release()


def nvml_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == watchdog.THREAD_NAME}


def started(fake: fakenvml.FakeNVML) -> nvml.Nvml:
    library = nvml.Nvml(fake)
    library.start()
    library.discover()
    return library


def test_a_hung_call_blocks_only_its_device_until_released(fake: fakenvml.FakeNVML) -> None:
    library = started(fake)
    fake.hang("nvmlDeviceGetMemoryInfo", 1)
    assert library.read(0).memory_total > 0  # the other GPU still answers
    answers: list[nvml.Readings] = []
    reader = threading.Thread(target=lambda: answers.append(library.read(1)), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while fake.blocked_calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.blocked_calls == 1 and reader.is_alive() and answers == []  # blocked, not failed
    fake.release()
    reader.join(timeout=10)
    assert not reader.is_alive() and answers[0].memory_total > 0
    assert fake.blocked_calls == 0
    assert library.read(1).memory_total > 0  # released for good


def test_only_real_pynvml_call_names_can_hang(fake: fakenvml.FakeNVML) -> None:
    with pytest.raises(ValueError, match="nvmlDeviceGetMemory"):
        fake.hang("nvmlDeviceGetMemory")
    assert hasattr(pynvml, "nvmlDeviceGetMemoryInfo")
    fake.hang("nvmlDeviceGetMemoryInfo")  # accepted: the real library's name


async def test_a_hung_call_is_given_up_at_its_deadline_and_later_calls_refused_at_once(
    fake: fakenvml.FakeNVML,
) -> None:
    library = started(fake)
    dog = watchdog.Watchdog(deadline_seconds=1.0)
    assert (await dog.call(lambda: library.read(1))).memory_total > 0
    fake.hang("nvmlDeviceGetMemoryInfo", 1)

    with pytest.raises(watchdog.Hung) as first:
        await dog.call(lambda: library.read(1))
    assert first.value.timed_out and dog.stuck
    threads_when_hung = nvml_threads()
    loop = asyncio.get_running_loop()
    for _ in range(5):
        started_at = loop.time()
        with pytest.raises(watchdog.Hung) as later:
            await dog.call(lambda: library.read(0))  # even a healthy GPU's call would queue behind it
        assert not later.value.timed_out
        assert loop.time() - started_at < 1.0  # refused at once, not after another deadline
    assert fake.blocked_calls == 1  # one stuck call in the driver, not one per try
    assert nvml_threads() == threads_when_hung  # and no thread started for the tries

    fake.release()
    await eventually(lambda: not dog.stuck)
    assert (await dog.call(lambda: library.read(1))).memory_total > 0
    dog.close()


async def test_errors_and_results_come_back_through_the_watchdog(fake: fakenvml.FakeNVML) -> None:
    library = started(fake)
    dog = watchdog.Watchdog(deadline_seconds=5)
    fake.lose(0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        await dog.call(lambda: library.read(0))
    assert not dog.stuck
    assert (await dog.call(lambda: library.read(1))).memory_total > 0
    dog.close()
