"""pytest plugin: the bench switch, the tags of DESIGN.md, and units for scenarios.

On a simulated bench every scenario gets its own simulator process on its own state directory, so
``pytest -n auto`` runs scenarios in parallel without sharing a unit. On a real bench a scenario gets the
bench's unit of the requested target, and is skipped when that unit runs another version, when it needs a
control plane (``@sim_only``), or when it overwrites a unit without ``--allow-destructive``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.targets.base import Driver, ProgressFn, no_progress

DEFAULT_BENCH = Path("fixtures/benches/sim.yaml")

MARKERS = {
    "sim_only": "needs a simulator's control plane; skipped on a real bench",
    "destructive": "overwrites a unit; on a real bench needs --allow-destructive",
    "slow": "takes more than a few seconds",
    "target_multispeq": "MultispeQ scenarios",
    "target_bactobox": "BactoBox scenarios",
    "target_planktoscope": "PlanktoScope scenarios",
    "target_neuroomnet": "NeuroomNet scenarios",
    "target_mobiusflow": "MobiusFlow scenarios",
    "backup": "backup scenarios",
    "restore": "restore scenarios",
    "roundtrip": "round-trip scenarios",
    "faults": "fault scenarios",
    "compatibility": "cross-version scenarios",
    "firmware_update": "firmware update scenarios",
    "eol": "end-of-line scenarios",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "bench harness")
    group.addoption("--bench", type=Path, default=None,
                    help=f"bench file: simulators or real units (default {DEFAULT_BENCH})")
    group.addoption("--allow-destructive", action="store_true", default=False,
                    help="let @destructive scenarios overwrite units of a real bench")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def _bench_path(config: pytest.Config) -> Path:
    return config.getoption("--bench") or DEFAULT_BENCH


def _load(config: pytest.Config):
    from harness.bench import load_bench

    return load_bench(_bench_path(config))


def _is_simulated(bench) -> bool:
    return all(spec.is_sim for spec in bench.devices.values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tagged = [i for i in items if i.get_closest_marker("sim_only") or i.get_closest_marker("destructive")]
    if not tagged or not _bench_path(config).exists():
        return
    bench = _load(config)
    if _is_simulated(bench):
        return
    for item in tagged:
        if item.get_closest_marker("sim_only"):
            item.add_marker(pytest.mark.skip(reason="needs a simulator's control plane (real bench)"))
        elif not config.getoption("--allow-destructive"):
            item.add_marker(pytest.mark.skip(reason="overwrites a real unit: pass --allow-destructive"))


@dataclass
class Unit:
    """A unit under test: a simulator started for this scenario, or a real unit of the bench."""

    target: str
    firmware: str
    address: str
    control: str | None = None
    device_id: str | None = None
    username: str | None = None
    password: str | None = None
    process: object | None = None  # simulators.core.process.SimProcess for simulated units
    transport: str = "serial"
    ssh: str | None = None  # a second address (SSH/SFTP), used when the scenario's transport is "ssh"
    extra: dict = field(default_factory=dict)

    @property
    def link_address(self) -> str:
        """The address for this scenario's transport: pyvisa names a serial port ``ASRL<path>::INSTR``."""
        if self.transport == "visa" and "::" not in self.address:
            return f"ASRL{self.address}::INSTR"
        return self.address

    def driver(self, progress: ProgressFn = no_progress) -> Driver:
        from harness.operations import open_driver
        from harness.targets import get_target

        return open_driver(get_target(self.target), self.link_address, username=self.username,
                           password=self.password, progress=progress,
                           ssh=self.ssh if self.transport == "ssh" else None, control=self.control)


UnitFactory = Callable[..., Unit]


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config):
    return _load(pytestconfig)


@pytest.fixture
def unit_factory(bench, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnitFactory]:
    """``unit_factory(target, firmware, device_id=…, profile=…, blank=False)`` -> Unit."""
    from simulators.core.options import SimOptions
    from simulators.core.process import start_simulator

    started = []

    def make(target: str, firmware: str, *, device_id: str | None = None, profile: str | None = None,
             blank: bool = False, role: str = "unit") -> Unit:
        specs = [s for s in bench.devices.values() if s.target == target]
        if not specs:
            pytest.skip(f"the bench has no {target} device")
        sims = [s for s in specs if s.is_sim]
        if sims:
            spec = sims[0]
            default_id = None if blank else (device_id or spec.sim.device_id)
            state = tmp_path_factory.mktemp(f"{target}-{role}")
            password_file = None
            if spec.credentials and spec.credentials.username:
                password_file = state / "password"
                password_file.write_text(spec.password() or "", encoding="utf-8")
                os.chmod(password_file, 0o600)
            proc = start_simulator(SimOptions(
                target=target, state=state, firmware=firmware, profile=profile or spec.sim.profile,
                device_id=default_id, username=spec.username, password_file=password_file))
            started.append(proc)
            return Unit(target=target, firmware=firmware, address=proc.address, control=proc.control,
                        device_id=proc.info.get("device_id"), username=spec.username,
                        password=spec.password(), process=proc, ssh=proc.info.get("ssh"))
        real = [s for s in specs if s.firmware == firmware]
        if not real:
            pytest.skip(f"the bench's {target} units run {', '.join(s.firmware for s in specs)}, "
                        f"not {firmware}")
        index = 1 if role != "unit" else 0
        if index >= len(real):
            pytest.skip(f"the scenario needs a second {target} unit at {firmware}")
        spec = real[index]
        return Unit(target=target, firmware=firmware, address=spec.address, username=spec.username,
                    password=spec.password(), ssh=spec.ssh)

    yield make
    for proc in started:
        proc.stop()
