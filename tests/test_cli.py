"""The command line as users script it: real `harness` processes against real simulator processes.

These are the acceptance checks of the foundation issue: the JSON line, a plain pyserial client, a CLI round
trip ending in `harness diff` exit 0, a refused restore onto another unit with its memory unchanged, the same
backup through pyvisa, and a bench of plain addresses (a "real" bench) pointed at `harness sim up`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import serial

from harness.simctl import SimControl

REPO = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness"]


def harness(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([*HARNESS, *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=90,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


@pytest.fixture
def sim(tmp_path: Path):
    """`harness sim run multispeq` as its own process; yields its JSON line."""
    procs = []

    def start(device_id: str = "52:00:13:1f", firmware: str = "1.17", name: str = "unit") -> dict:
        state = tmp_path / name
        proc = subprocess.Popen([*HARNESS, "sim", "run", "multispeq", "--firmware", firmware, "--state",
                                 str(state), "--device-id", device_id], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        procs.append(proc)
        line = proc.stdout.readline()
        info = json.loads(line)
        return info

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def _artifact(proc: subprocess.CompletedProcess) -> Path:
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file()
    return path


def test_sim_run_prints_its_json_line_and_a_plain_client_gets_ready_and_a_crc(sim) -> None:
    info = sim()
    assert set(info) >= {"target", "address", "control", "device_id", "firmware", "pid"}
    assert info["target"] == "multispeq" and info["firmware"] == "1.17"
    assert info["device_id"] == "52:00:13:1f"
    with serial.serial_for_url(info["address"], baudrate=115200, timeout=0.3) as port:
        port.write(b"hello+")
        assert port.read_until(b"\n") == b"MultispeQ Ready\n"
        port.write(b"print_memory+")
        reply = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (reply.endswith(b"\n") and b"\n}" in reply[-12:]):
            reply += port.read(port.in_waiting or 1)
    body, digits = reply[:-9], reply[-9:-1]
    assert digits.decode() == f"{zlib.crc32(body):08X}"
    assert body.startswith(b'{\n"device_id":"52:00:13:1f",')


def test_round_trip_through_the_cli_ends_with_diff_exit_0(sim, tmp_path: Path) -> None:
    info = sim()
    store = str(tmp_path / "store")
    addr = ["--target", "multispeq", "--address", info["address"], "--store", store]
    first = _artifact(harness("backup", *addr))
    # A calibration tool changes the unit: a non-symmetric magnetometer matrix, sent column-major.
    with serial.serial_for_url(info["address"], timeout=0.5) as port:
        port.write(b"set_magnetometer+1+2+3+4+5+6+7+8+9+set_par+0.5+1.5+2.5+3.5+-4+hello+")
        assert port.read_until(b"Ready\n").endswith(b"MultispeQ Ready\n")
    changed = _artifact(harness("backup", *addr))
    different = harness("diff", str(first), str(changed))
    assert different.returncode == 1 and "mag_cal[1][0]" in different.stdout
    restored = harness("restore", str(first), *addr, "--yes")
    assert restored.returncode == 0, restored.stderr
    after = _artifact(harness("backup", *addr))
    same = harness("diff", str(first), str(after))
    assert same.returncode == 0, same.stdout
    assert harness("verify", str(after)).returncode == 0
    latest = harness("latest", "--target", "multispeq", "--device-id", "52:00:13:1f", "--store", store)
    assert Path(latest.stdout.strip()).resolve() == after.resolve()


def test_restore_onto_another_unit_exits_2_and_leaves_its_memory_unchanged(sim, tmp_path: Path) -> None:
    unit = sim("52:00:13:1f", name="unit")
    other = sim("52:00:13:20", name="other")
    store = str(tmp_path / "store")
    theirs = _artifact(harness("backup", "--target", "multispeq", "--address", other["address"],
                               "--store", store))
    before = SimControl(unit["control"]).state()
    refused = harness("restore", str(theirs), "--target", "multispeq", "--address", unit["address"],
                      "--store", store, "--yes")
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert "ID" in refused.stderr
    after = SimControl(unit["control"]).state()
    assert after["image_sha256"] == before["image_sha256"]
    assert sum(after["write_counts"].values()) == sum(before["write_counts"].values())


def test_the_same_backup_through_pyvisa(sim, tmp_path: Path) -> None:
    info = sim()
    store = str(tmp_path / "store")
    via_serial = _artifact(harness("backup", "--target", "multispeq", "--address", info["address"],
                                   "--store", store))
    via_visa = _artifact(harness("backup", "--target", "multispeq", "--address",
                                 f"ASRL{info['address']}::INSTR", "--store", store))
    assert via_visa != via_serial
    assert harness("diff", str(via_serial), str(via_visa)).returncode == 0
    manifest = json.loads(Path(str(via_visa) + ".manifest.json").read_text())
    assert manifest["source_address"].startswith("ASRL")


@pytest.mark.parametrize("damage", ["truncated", "foreign", "not json", "edited"])
def test_bad_artifacts_are_refused_with_one_line_and_exit_2(sim, tmp_path: Path, damage: str) -> None:
    info = sim()
    store = tmp_path / "store"
    good = _artifact(harness("backup", "--target", "multispeq", "--address", info["address"],
                             "--store", str(store)))
    bad = tmp_path / "bad.json"
    data = good.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 3])
    elif damage == "foreign":
        bad.write_bytes((REPO / "fixtures/bad/planktoscope-hardware.json").read_bytes())
    elif damage == "not json":
        bad.write_bytes(os.urandom(512))
    else:
        doc = json.loads(data)
        doc["memory"]["light_slope_r"] = "12.000000"
        bad.write_text(json.dumps(doc))
    before = SimControl(info["control"]).state()["image_sha256"]
    for args in (["verify", str(bad)],
                 ["restore", str(bad), "--target", "multispeq", "--address", info["address"], "--yes"]):
        proc = harness(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert SimControl(info["control"]).state()["image_sha256"] == before


def test_a_bench_of_plain_addresses_drives_simulators_started_with_sim_up(tmp_path: Path) -> None:
    """How real hardware runs: the harness did not start these units, it only knows their addresses."""
    sim_bench = tmp_path / "lab-sims.yaml"
    sim_bench.write_text(
        "devices:\n"
        "  unit-a:\n    target: multispeq\n    firmware: '1.17'\n"
        f"    sim: {{device_id: '52:00:13:1f', state: {tmp_path / 'a'}}}\n"
        "  unit-b:\n    target: multispeq\n    firmware: '1.11'\n"
        f"    sim: {{device_id: '52:00:13:2b', state: {tmp_path / 'b'}}}\n")
    up = harness("sim", "up", "--bench", str(sim_bench), cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    try:
        started = {d["device"]: d for d in map(json.loads, up.stdout.splitlines())}
        real_bench = tmp_path / "lab.yaml"
        real_bench.write_text(
            "devices:\n"
            f"  unit-a:\n    target: multispeq\n    firmware: '1.17'\n    port: {started['unit-a']['address']}\n"
            f"  unit-b:\n    target: multispeq\n    firmware: '1.11'\n"
            f"    visa: ASRL{started['unit-b']['address']}::INSTR\n")
        store = str(tmp_path / "store")
        a = _artifact(harness("backup", "unit-a", "--bench", str(real_bench), "--store", store, cwd=tmp_path))
        b = _artifact(harness("backup", "unit-b", "--bench", str(real_bench), "--store", store, cwd=tmp_path))
        assert a.parent.name == "5200131f" and b.parent.name == "5200132b"
        assert harness("diff", str(a), str(b)).returncode == 1  # two layouts, two units
        # A restore across units is refused on a real bench too, before anything is sent.
        refused = harness("restore", str(a), "unit-b", "--bench", str(real_bench), "--store", store,
                          "--yes", cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
    finally:
        down = harness("sim", "down", "--bench", str(sim_bench), cwd=tmp_path)
        assert down.returncode == 0, down.stderr
    for info in started.values():
        assert not _running(info["pid"]), f"simulator {info['pid']} still runs after sim down"


def _running(pid: int) -> bool:
    """Alive and not a zombie (in a container, PID 1 may never reap an orphaned simulator)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_errors_are_one_line_with_the_contract_exit_codes(tmp_path: Path) -> None:
    missing = harness("verify", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    no_port = harness("backup", "--target", "multispeq", "--address", str(tmp_path / "no-such-tty"),
                      "--store", str(tmp_path / "s"))
    assert no_port.returncode == 3 and no_port.stderr.count("\n") == 1 and "Traceback" not in no_port.stderr
    no_target = harness("backup", "--address", "/dev/null")
    assert no_target.returncode == 2
