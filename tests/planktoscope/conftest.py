"""Simulators for the PlanktoScope tests: real processes on loopback, one per release where tests only read."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from simulators.core.options import SimOptions
from simulators.core.process import SimProcess, start_simulator


@pytest.fixture
def start_sim(tmp_path_factory) -> Iterator[Callable[..., SimProcess]]:
    started: list[SimProcess] = []

    def start(release: str, *, variant: str | None = None, control: bool = True) -> SimProcess:
        state = tmp_path_factory.mktemp(f"ps-{release}")
        proc = start_simulator(SimOptions(target="planktoscope", state=state, firmware=release, profile=variant,
                                          device_id="pkscope-test-1", control=control))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
