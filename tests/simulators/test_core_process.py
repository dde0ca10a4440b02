"""Simulators as real processes: `harness sim run` started by simulators.core.process."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serialtools import open_port

from harness.errors import DeviceError
from harness.simctl import SimControl
from simulators.core.options import SimOptions
from simulators.core.process import SimProcess, sim_command, start_simulator, stop_pid

DEVICE_ID = "52:00:13:1f"




def ask(path: str, command: bytes, end: bytes = b"\n", timeout: float = 3.0) -> bytes:
    """Send one command on a fresh connection and read up to ``end`` (the boot banner skipped)."""
    with open_port(path) as port:
        time.sleep(0.15)  # let a pending boot banner arrive, then drop it
        port.reset_input_buffer()
        port.write(command)
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(end) and time.monotonic() < deadline:
            buf += port.read(max(1, port.in_waiting))
        return buf


@pytest.fixture
def procs() -> Iterator[list[SimProcess]]:
    started: list[SimProcess] = []
    yield started
    for proc in started:
        proc.kill()


def start(procs: list[SimProcess], options: SimOptions, **kwargs) -> SimProcess:
    proc = start_simulator(options, **kwargs)
    procs.append(proc)
    return proc


def test_sim_command_mirrors_the_cli_flags(tmp_path: Path) -> None:
    cmd = sim_command(SimOptions(target="multispeq", state=tmp_path / "s", firmware="1.05", profile="B",
                                 device_id=DEVICE_ID, username="u", password_file=tmp_path / "pw",
                                 time_scale=0.5, control=False))
    assert cmd[:2] == [sys.executable, "-m"]
    args = cmd[cmd.index("multispeq"):]
    assert args == ["multispeq", "--firmware", "1.05", "--profile", "B", "--state", str(tmp_path / "s"),
                    "--device-id", DEVICE_ID, "--username", "u", "--password-file", str(tmp_path / "pw"),
                    "--time-scale", "0.5", "--no-control"]


def test_start_prints_one_json_line_and_serves(tmp_path: Path, procs: list[SimProcess]) -> None:
    state = tmp_path / "unit"
    proc = start(procs, SimOptions(target="multispeq", state=state, firmware="1.17", device_id=DEVICE_ID))
    info = proc.info
    assert {"target", "address", "control", "device_id", "firmware", "pid"} <= set(info)
    assert info["target"] == "multispeq" and info["firmware"] == "1.17" and info["device_id"] == DEVICE_ID
    assert info["pid"] == proc.pid and proc.alive
    assert proc.address == str(state / "tty") and Path(proc.address).is_symlink()
    assert proc.control.startswith("http://127.0.0.1:")
    assert json.loads((state / "sim.json").read_text()) == info
    assert ask(proc.address, b"hello+") == b"MultispeQ Ready\n"
    assert SimControl(proc.control).state()["device_id"] == DEVICE_ID
    assert proc.stop() == 0  # SIGTERM: clean shutdown
    assert not Path(proc.address).exists() and not (state / "sim.json").exists()


def test_no_control_gives_null(tmp_path: Path, procs: list[SimProcess]) -> None:
    proc = start(procs, SimOptions(target="multispeq", state=tmp_path / "u", control=False))
    assert "control" in proc.info and proc.info["control"] is None and proc.control is None
    assert ask(proc.address, b"hello+") == b"MultispeQ Ready\n"


def test_kill_and_restart_keeps_the_eeprom(tmp_path: Path, procs: list[SimProcess]) -> None:
    proc = start(procs, SimOptions(target="multispeq", state=tmp_path / "u", firmware="1.17"))
    address = proc.address
    reply = ask(address, b"set_device_info+1375736607+", end=b"\n")  # 52:00:13:1f, §6
    assert b'"device_id":"52:00:13:1f"' in reply
    before = SimControl(proc.control).state()["eeprom_sha256"]
    proc.kill()  # power cut
    assert not proc.alive
    proc.restart()  # power on, same state directory
    assert proc.address == address and proc.info["device_id"] == DEVICE_ID
    assert SimControl(proc.control).state()["eeprom_sha256"] == before
    assert b'"device_id":"52:00:13:1f"' in ask(address, b"device_info+")


def test_a_second_simulator_on_the_same_state_is_refused(tmp_path: Path, procs: list[SimProcess]) -> None:
    options = SimOptions(target="multispeq", state=tmp_path / "u")
    first = start(procs, options)
    with pytest.raises(DeviceError, match="in use by another simulator") as info:
        start(procs, options, startup_timeout=10)
    assert str(first.pid) in str(info.value)
    assert first.alive


def test_a_failing_start_raises_with_the_stderr_tail(tmp_path: Path, procs: list[SimProcess]) -> None:
    with pytest.raises(DeviceError, match="did not start") as info:
        start(procs, SimOptions(target="multispeq", state=tmp_path / "u", firmware="7.77"), startup_timeout=10)
    message = str(info.value)
    assert "7.77" in message and "\n" not in message


def test_detached_simulator_has_its_own_session(tmp_path: Path, procs: list[SimProcess]) -> None:
    state = tmp_path / "u"
    proc = start(procs, SimOptions(target="multispeq", state=state), detach=True)
    assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
    assert json.loads((state / "sim.out").read_text().splitlines()[0]) == proc.info
    assert ask(proc.address, b"hello+") == b"MultispeQ Ready\n"
    assert stop_pid(proc.info["pid"], timeout=5)  # what `harness sim down` does, by the JSON line's pid
    assert proc.popen is not None and proc.popen.wait(5) == 0
    assert not stop_pid(proc.info["pid"])


def test_sigint_also_shuts_down_cleanly(tmp_path: Path, procs: list[SimProcess]) -> None:
    proc = start(procs, SimOptions(target="multispeq", state=tmp_path / "u"))
    assert proc.popen is not None
    proc.popen.send_signal(signal.SIGINT)
    assert proc.popen.wait(5) == 0
    assert not Path(proc.address).exists()
