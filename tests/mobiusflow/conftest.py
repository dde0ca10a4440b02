"""MobiusFlow test fixtures: simulated nodes in this process (fast) on loopback, real HTTP in between."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.targets.mobiusflow.driver import MobiusFlowDriver
from simulators.core.options import SimOptions
from simulators.mobiusflow.interface import MobiusFlowSimulator

USER = "qa-user"
PASSWORD = "mf-test-pass-9"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    return path


@pytest.fixture
def make_sim(tmp_path: Path, password_file: Path) -> Iterator[Any]:
    """``make_sim(version="3021", hub=None, **options) -> (simulator, JSON-line fields)``."""
    started: list[MobiusFlowSimulator] = []

    def make(version: str | None = "3021", hub: str | None = None, *, state: Path | None = None,
             **options: Any) -> tuple[MobiusFlowSimulator, dict[str, Any]]:
        opts = SimOptions(target="mobiusflow", state=state or tmp_path / f"node{len(started)}", firmware=version,
                          device_id=hub, username=USER, password_file=password_file, **options)
        sim = MobiusFlowSimulator(opts)
        fields = sim.start()
        started.append(sim)
        return sim, fields

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def make_driver() -> Iterator[Any]:
    drivers: list[MobiusFlowDriver] = []

    def make(fields: dict[str, Any], **kwargs: Any) -> MobiusFlowDriver:
        kwargs.setdefault("username", USER)
        kwargs.setdefault("password", PASSWORD)
        driver = MobiusFlowDriver(fields["address"], **kwargs)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()
