"""Bench files: parsing with file:line errors, secrets by reference only, runtime records, sim lifecycle.

The lifecycle tests start real simulator processes (simulators.core.process) on loopback and ptys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.bench import Bench, load_bench
from harness.errors import BadInput, DeviceError, Refused
from harness.transports import open_transport

REPO = Path(__file__).resolve().parents[1]

VALID = """\
version: 1
description: mixed bench
devices:
  sim1:
    target: multispeq
    firmware: 1.10            # unquoted: must stay "1.10", not 1.1
    sim:
      device_id: 12:34:56:78  # unquoted: YAML 1.1 would read this as a base-60 integer
      profile: null
      time_scale: 0.5
  sim2:
    target: multispeq
    firmware: "1.17"
    sim:
      state: custom/state
      control: false
  sim3:
    target: multispeq
    firmware: "1.17"
    sim:
  bench7:
    target: multispeq
    firmware: "1.17"
    port: rfc2217://127.0.0.1:7000
    description: the unit on the left
  bench8:
    target: multispeq
    firmware: "1.16"
    visa: ASRL/dev/ttyUSB1::INSTR
    credentials:
      username: admin
      password_file: secrets/bench8.txt
  bench9:
    target: multispeq
    firmware: "1.17"
    url: https://unit.local
    credentials: {username: admin, password_env: BENCH9_PASSWORD}
"""


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / "benches" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_valid_bench(tmp_path: Path) -> None:
    bench = load_bench(write(tmp_path, VALID), workdir=tmp_path / "repo")
    assert list(bench.devices) == ["sim1", "sim2", "sim3", "bench7", "bench8", "bench9"]
    assert bench.description == "mixed bench" and not bench.is_simulated

    sim1 = bench.devices["sim1"]
    assert sim1.is_sim and sim1.target == "multispeq" and sim1.firmware == "1.10"
    assert sim1.sim is not None
    assert sim1.sim.device_id == "12:34:56:78" and sim1.sim.profile is None
    assert sim1.sim.time_scale == 0.5 and sim1.sim.control
    assert sim1.sim.state == tmp_path / "repo" / ".harness" / "state" / "lab" / "sim1"
    assert sim1.address is None and sim1.line == 5

    sim2 = bench.devices["sim2"]
    assert sim2.sim is not None and sim2.sim.state == tmp_path / "repo" / "custom" / "state"
    assert not sim2.sim.control
    assert bench.devices["sim3"].sim is not None  # `sim:` alone takes every default

    bench7 = bench.devices["bench7"]
    assert not bench7.is_sim and bench7.address == "rfc2217://127.0.0.1:7000"
    assert bench7.address_kind == "port" and bench7.description == "the unit on the left"
    assert bench7.username is None and bench7.password() is None

    bench8 = bench.devices["bench8"]
    assert bench8.address == "ASRL/dev/ttyUSB1::INSTR" and bench8.address_kind == "visa"
    assert bench8.username == "admin"
    assert bench8.credentials is not None
    assert bench8.credentials.password_file == tmp_path / "benches" / "secrets" / "bench8.txt"
    assert bench.devices["bench9"].address_kind == "url"

    options = bench.sim_options(sim1)
    assert (options.target, options.firmware, options.device_id, options.time_scale) == (
        "multispeq", "1.10", "12:34:56:78", 0.5)
    assert bench.run_file == tmp_path / "repo" / ".harness" / "run" / "lab.json"


def test_default_bench_fixture() -> None:
    bench = load_bench(REPO / "fixtures" / "benches" / "sim.yaml", workdir=REPO)
    assert bench.is_simulated
    spec = bench.devices["multispeq"]
    assert spec.target == "multispeq" and spec.firmware == "1.17"
    assert spec.sim is not None and spec.sim.device_id == "52:00:13:1f"
    assert spec.sim.state == REPO / ".harness" / "state" / "sim" / "multispeq"


def test_merge_keys(tmp_path: Path) -> None:
    bench = load_bench(write(tmp_path, """\
        devices:
          a: &unit
            target: multispeq
            firmware: "1.17"
            port: /dev/ttyUSB0
          b:
            <<: *unit
            port: /dev/ttyUSB1
        """), workdir=tmp_path)
    assert bench.devices["b"].address == "/dev/ttyUSB1" and bench.devices["b"].firmware == "1.17"


DEVICE = "devices:\n  d:\n    target: multispeq\n    firmware: '1.17'\n"

INVALID = [
    ("devices: [\n", r":2: not valid YAML"),
    ("", r"empty bench file"),
    ("- a\n- b\n", r":1: bench must be a mapping"),
    ("description: x\n", r":1: missing devices:"),
    ("devices: {}\n", r":1: devices: must map at least one"),
    ("devices:\n  d:\n    target: multispeq\n    firmware: '1'\n    sim: {}\nextra: 1\n", r":6: bench: unknown key 'extra'"),
    (DEVICE + "    port: /dev/x\n    targt: y\n", r":6: device 'd': unknown key 'targt' \(allowed: target,"),
    ("devices:\n  d:\n    firmware: '1'\n    sim:\n", r":3: device 'd': missing target"),
    ("devices:\n  d:\n    target: toaster\n    firmware: '1'\n    sim:\n", r":3: .*unknown target 'toaster'"),
    ("devices:\n  d:\n    target: multispeq\n    sim:\n", r":3: .*missing firmware"),
    (DEVICE + "    sim: {}\n    port: /dev/ttyUSB0\n", r":6: .*both sim: and port:"),
    (DEVICE, r":3: device 'd': needs sim: .*or an address"),
    (DEVICE + "    port: /dev/a\n    url: https://x\n", r":6: .*one address, not port and url"),
    (DEVICE + "    visa: /dev/ttyUSB0\n", r":5: .*VISA resource name like"),
    (DEVICE + "    port: ASRL/dev/x::INSTR\n", r":5: .*write it as visa:"),
    (DEVICE + "    port: https://unit\n", r":5: .*write it as url:"),
    (DEVICE + "    url: unit.local\n", r":5: .*must start with http"),
    (DEVICE + "    port: /dev/x\n    credentials:\n      username: a\n      password: hunter2\n",
     r":8: .*literal 'password' is not allowed.*password_file.*password_env"),
    (DEVICE + "    port: /dev/x\n    password: hunter2\n", r":6: .*literal 'password' is not allowed"),
    (DEVICE + "    sim:\n      token: abc\n", r":6: .*literal 'token' is not allowed"),
    (DEVICE + "    port: /dev/x\n    credentials: {password_file: a, password_env: B}\n",
     r":6: .*password_file or password_env, not both"),
    (DEVICE + "    port: /dev/x\n    credentials: {password_env: 'not a var'}\n", r":6: .*must name an environment"),
    (DEVICE + "    port: /dev/x\n    port: /dev/y\n", r":6: .*key 'port' given twice"),
    (DEVICE + "    port: /dev/x\n  d:\n    target: multispeq\n", r":6: device 'd' defined twice"),
    ("devices:\n  '../up':\n    target: multispeq\n", r":2: device name '../up'"),
    (DEVICE + "    sim: {time_scale: -1}\n", r":5: .*time_scale must be greater than 0"),
    (DEVICE + "    sim: {time_scale: fast}\n", r":5: .*time_scale must be a number"),
    (DEVICE + "    sim: {time_scale: 2, realtime: true}\n", r":5: .*realtime or sim.time_scale, not both"),
    (DEVICE + "    sim: {control: maybe}\n", r":5: .*control must be true or false"),
    (DEVICE + "    sim: [1]\n", r":5: .*sim must be a mapping"),
    (DEVICE + "    firmware: ''\n", r":5: .*key 'firmware' given twice"),
    ("version: 2\n" + DEVICE + "    sim:\n", r":1: only bench file version 1"),
    ("devices:\n  d:\n    target: multispeq\n    firmware: ''\n    sim:\n", r":4: .*firmware must not be empty"),
    ("devices:\n  d:\n    target: [multispeq]\n    firmware: '1'\n    sim:\n", r":3: .*target must be a single"),
]


@pytest.mark.parametrize("text, message", INVALID)
def test_invalid_benches(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BadInput, match=message) as err:
        load_bench(path, workdir=tmp_path)
    assert str(err.value).startswith(str(path))
    assert "\n" not in str(err.value) and err.value.exit_code == 2
    assert "hunter2" not in str(err.value)


def test_missing_bench_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no bench file"):
        load_bench(tmp_path / "nope.yaml")


def test_passwords_are_read_at_use_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_bench(write(tmp_path, VALID), workdir=tmp_path)
    bench8, bench9 = bench.devices["bench8"], bench.devices["bench9"]
    # The bench loads although the secret file does not exist yet: it is read only when needed.
    with pytest.raises(BadInput, match="cannot read password file .*bench8.txt"):
        bench8.password()
    secret = tmp_path / "benches" / "secrets" / "bench8.txt"
    secret.parent.mkdir()
    secret.write_text("s3cret pass\n")
    assert bench8.password() == "s3cret pass"
    secret.write_text("rotated")
    assert bench8.password() == "rotated"
    assert "rotated" not in repr(bench8) and "rotated" not in repr(bench)

    monkeypatch.delenv("BENCH9_PASSWORD", raising=False)
    with pytest.raises(BadInput, match="BENCH9_PASSWORD .* is not set"):
        bench9.password()
    monkeypatch.setenv("BENCH9_PASSWORD", "from-env")
    assert bench9.password() == "from-env"


def test_sim_password_env_is_materialised_privately(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_bench(write(tmp_path, DEVICE + "    sim:\n    credentials: {username: u, password_env: SIMPW}\n"),
                       workdir=tmp_path)
    monkeypatch.setenv("SIMPW", "pw1")
    options = bench.sim_options(bench.devices["d"])
    assert options.username == "u"
    assert options.password_file.read_text() == "pw1"
    assert (options.password_file.stat().st_mode & 0o777) == 0o600
    bench._drop_secret("d")
    assert not options.password_file.exists()


# --- runtime records and resolve (no simulator needed) -----------------------------------------------------


def record_file(bench: Bench, devices: dict, owner: Path | None = None) -> None:
    bench.run_file.parent.mkdir(parents=True, exist_ok=True)
    bench.run_file.write_text(json.dumps({"bench": str(owner or bench.path), "devices": devices}))


@pytest.fixture
def lab(tmp_path: Path) -> Bench:
    return load_bench(write(tmp_path, VALID), workdir=tmp_path)


def test_resolve_real_and_stopped_sim(lab: Bench) -> None:
    resolved = lab.resolve("bench7")
    assert resolved.address == "rfc2217://127.0.0.1:7000" and resolved.control is None
    assert resolved.spec is lab.devices["bench7"]
    with lab.device("bench7") as again:
        assert again == resolved
    with pytest.raises(DeviceError, match="simulator 'sim1' .* is not running: start it with `harness sim up"):
        lab.resolve("sim1")
    with pytest.raises(BadInput, match="no device named 'nope' .*sim1, sim2"):
        lab.resolve("nope")


def test_runtime_record_of_a_live_process(lab: Bench) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from harness.bench import _proc_start

        record_file(lab, {"sim1": {"pid": sleeper.pid, "address": "/tmp/x/tty", "control": "http://127.0.0.1:1/_sim",
                                   "state": "/tmp/x", "proc_start": _proc_start(sleeper.pid)}})
        resolved = lab.resolve("sim1")
        assert (resolved.address, resolved.control, resolved.pid) == ("/tmp/x/tty", "http://127.0.0.1:1/_sim",
                                                                      sleeper.pid)
        assert list(lab.running()) == ["sim1"]
        # sim_down stops exactly the recorded process and removes the record
        assert lab.sim_down() == ["sim1"]
        assert sleeper.wait(5) is not None
        assert not lab.run_file.exists()
        with pytest.raises(DeviceError):
            lab.resolve("sim1")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dead_or_reused_pid_is_not_running(lab: Bench) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # our own pid with a different start time stands for a pid the OS gave to another process
    record_file(lab, {"sim1": {"pid": dead.pid, "address": "a", "state": "s"},
                      "sim2": {"pid": os.getpid(), "address": "b", "state": "s", "proc_start": 1}})
    assert lab.running() == {}
    with pytest.raises(DeviceError):
        lab.resolve("sim2")
    assert lab.sim_down() == []  # nothing signalled: neither process is ours to stop
    assert not lab.run_file.exists()


def test_record_of_another_bench_with_the_same_stem_is_refused(lab: Bench, tmp_path: Path) -> None:
    record_file(lab, {"sim1": {"pid": 1, "address": "a", "state": "s"}}, owner=tmp_path / "elsewhere" / "lab.yaml")
    with pytest.raises(Refused, match="harness sim down --bench .*elsewhere"):
        lab.sim_up()
    with pytest.raises(Refused):
        lab.resolve("sim1")


def test_sim_up_refuses_real_units(lab: Bench) -> None:
    with pytest.raises(BadInput, match="bench7 is a real unit"):
        lab.sim_up(["bench7"])


# --- simulator lifecycle (real processes) ------------------------------------------------------------------


def hello(address: str) -> bytes:
    with open_transport(address) as t:
        t.write(b"hello\r\n")
        return t.read_until(lambda b: b"Ready" in b, timeout=5)


def gone(pid: int, wait: float = 5.0) -> bool:
    """The process has exited (a zombie not yet reaped by its parent counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def sim_bench(tmp_path: Path) -> Bench:
    bench = load_bench(write(tmp_path, """\
        devices:
          msq:
            target: multispeq
            firmware: "1.17"
            sim:
              device_id: "52:00:13:1f"
          other:
            target: multispeq
            firmware: "1.17"
            port: /dev/null
        """), workdir=tmp_path)
    yield bench
    bench.sim_down()


def test_sim_up_down_lifecycle(sim_bench: Bench) -> None:
    started = sim_bench.sim_up()
    assert list(started) == ["msq"]
    info = started["msq"]
    state = Path(info["state"])
    assert state == sim_bench.workdir / ".harness" / "state" / "lab" / "msq"
    assert info["device_id"] == "52:00:13:1f" and info["control"].startswith("http://127.0.0.1:")
    assert json.loads(sim_bench.run_file.read_text())["devices"]["msq"]["pid"] == info["pid"]
    assert b"Ready" in hello(info["address"])
    assert b"Ready" in hello(f"ASRL{info['address']}::INSTR")  # pyvisa opens the same symlink

    # idempotent: a second `sim up` leaves the running simulator alone
    assert sim_bench.sim_up()["msq"]["pid"] == info["pid"]
    resolved = sim_bench.resolve("msq")
    assert (resolved.address, resolved.pid, resolved.state) == (info["address"], info["pid"], state)
    with sim_bench.device("msq") as r:  # already up: used, not restarted, not stopped after
        assert r.pid == info["pid"]
    assert sim_bench.running().keys() == {"msq"}

    # another process (`harness sim down`) sees the same record
    again = load_bench(sim_bench.path, workdir=sim_bench.workdir)
    assert again.sim_down() == ["msq"]
    assert not sim_bench.run_file.exists()
    assert gone(info["pid"])
    assert (state / "eeprom.bin").exists()  # non-volatile storage survives, like a unit on the shelf
    with pytest.raises(DeviceError):
        sim_bench.resolve("msq")


def test_device_starts_a_stopped_sim_for_the_block(sim_bench: Bench) -> None:
    with sim_bench.device("msq") as resolved:
        assert resolved.pid is not None and resolved.control
        assert b"Ready" in hello(resolved.address)
        pid = resolved.pid
        assert not sim_bench.run_file.exists()  # not recorded: the block owns it
    assert gone(pid)
    assert resolved.state is not None and (resolved.state / "eeprom.bin").exists()
    with sim_bench.device("other") as real:
        assert real.address == "/dev/null" and real.pid is None


def test_sim_up_failure_is_a_device_error(tmp_path: Path) -> None:
    bench = load_bench(write(tmp_path, DEVICE + "    sim: {profile: no-such-profile}\n"), workdir=tmp_path)
    with pytest.raises(DeviceError, match="did not start"):
        bench.sim_up()
    assert bench.running() == {}
