"""The BactoBox driver against simulator processes (the same path a real unit takes: a loopback URL)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from bbtools import flip_byte

from harness.errors import BadInput, DeviceError, Refused
from harness.operations import backup_to_store, load_artifact, restore_from
from harness.simctl import SimControl
from harness.store import Store
from harness.targets import get_target
from harness.targets.bactobox.artifact import forget
from harness.targets.bactobox.driver import BactoboxDriver
from simulators.core.options import SimOptions
from simulators.core.process import SimProcess, start_simulator

TARGET = get_target("bactobox")


pytestmark = pytest.mark.usefixtures("workdir")  # tests/bactobox/conftest.py: HARNESS_TMPDIR per test


def start(tmp_path: Path, name: str = "unit", **options) -> SimProcess:
    return start_simulator(SimOptions(target="bactobox", state=tmp_path / name, **options))


@pytest.fixture
def unit(tmp_path: Path):
    proc = start(tmp_path)
    yield proc
    proc.stop()


def storage(proc: SimProcess) -> str:
    return SimControl(proc.control).state()["storage_sha256"]


def test_backup_files_a_verified_gmi(unit: SimProcess, tmp_path: Path, workdir: Path):
    store = Store(tmp_path / "store")
    messages: list[str] = []
    with BactoboxDriver(unit.address, progress=lambda d, t, m: messages.append(m) if m else None) as driver:
        assert driver.identify().firmware == "2.6.3"
        first = backup_to_store(driver, TARGET, store, address=unit.address)
        second = backup_to_store(driver, TARGET, store, address=unit.address)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert first.name == f"backup-of-bb2241039-{today}.gmi"
    assert second.name == f"backup-of-bb2241039-{today}_2.gmi"  # the store never overwrites
    assert "Backup successful" in messages and "Sending data (5 of 5, 17.0 MiB)" in messages
    forget()
    _, artifact = load_artifact(first)
    assert artifact.device_id == "bb2241039" and artifact.firmware == "2.6.3"
    assert list(workdir.iterdir()) == []  # the store took the file over; nothing left behind


def test_round_trip_rolls_software_and_data_back(unit: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    with BactoboxDriver(unit.address) as driver:
        driver.digest_after_restart = True  # the unit hashes every part once more after the restart
        driver.apply_settings(TARGET.distinctive_settings(driver.identify(), 1))
        first = backup_to_store(driver, TARGET, store, address=unit.address)
        driver.apply_settings(TARGET.distinctive_settings(driver.identify(), 2))
        driver.start_program("measure", dilution=3, label="after backup", sampling_time_s=1)
        driver.wait_idle()
        SimControl(unit.control).set_firmware("2.2.0")
        time.sleep(0.3)
        assert driver.identify().firmware == "2.2.0"
        report = restore_from(driver, TARGET, first, store, address=unit.address)
        assert any("2.2.0 -> 2.6.3" in note for note in report.notes)
        assert "settings.timezone" in report.restored
        assert driver.identify().firmware == "2.6.3"
        assert all(m["label"] != "after backup" for m in driver.measurements())
        again = backup_to_store(driver, TARGET, store, address=unit.address)
    from harness.compare import diff

    result = diff(TARGET.fields(load_artifact(first)[1]), TARGET.fields(load_artifact(again)[1]),
                  TARGET.compare_rules)
    assert result.equal, result.differences
    assert result.compared > 30


def test_backup_refused_while_a_program_runs(unit: SimProcess, tmp_path: Path):
    with BactoboxDriver(unit.address) as driver:
        driver.start_program("measure", sampling_time_s=3600)
        with pytest.raises(Refused, match="program_running"):
            driver.backup()
        ops = httpx.get(unit.address + "/api/v1/operations").json()
        assert ops == {"current": None, "finished": []}
        driver.start_program("stop")


def test_gmi_of_another_unit_is_refused_with_nothing_written(unit: SimProcess, tmp_path: Path):
    other = start(tmp_path, "other", device_id="bb2240017")
    store = Store(tmp_path / "store")
    try:
        with BactoboxDriver(other.address) as driver:
            foreign = backup_to_store(driver, TARGET, store, address=other.address)
    finally:
        other.stop()
    before = storage(unit)
    with BactoboxDriver(unit.address) as driver:
        with pytest.raises(Refused, match="ID mismatch.*bb2240017"):
            restore_from(driver, TARGET, foreign, store, address=unit.address, force=True)
    assert storage(unit) == before
    assert httpx.get(unit.address + "/api/v1/operations").json()["current"] is None


def test_truncated_or_corrupt_gmi_is_refused_before_the_unit(unit: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    with BactoboxDriver(unit.address) as driver:
        good = backup_to_store(driver, TARGET, store, address=unit.address)
    before = storage(unit)
    data = good.read_bytes()
    short = tmp_path / "short.gmi"
    short.write_bytes(data[: len(data) * 2 // 3])
    corrupt = tmp_path / "corrupt.gmi"
    corrupt.write_bytes(data)
    entry = next(e for p, e in load_artifact(good)[1].data.parts if p.name == "system1")
    flip_byte(corrupt, entry.data_offset + 4096)
    with BactoboxDriver(unit.address) as driver:
        with pytest.raises(BadInput, match="truncated|end-of-central"):
            restore_from(driver, TARGET, short, store, address=unit.address)
        with pytest.raises(BadInput, match="local_gmi_corrupt: system1 sha256 mismatch"):
            restore_from(driver, TARGET, corrupt, store, address=unit.address)
    assert storage(unit) == before


@pytest.mark.parametrize(("fault", "params", "expect"), [
    ("flip_bit", {"offset": 5 << 20}, "damaged"),
    ("disconnect_at", {"fraction": 0.5}, "transfer_interrupted"),
    ("source_changed_at", {"part": "system1"}, "source_changed"),
])
def test_a_bad_download_is_never_kept(unit: SimProcess, tmp_path: Path, workdir: Path, fault, params, expect):
    SimControl(unit.control).set_fault(fault, **params)
    with BactoboxDriver(unit.address) as driver:
        with pytest.raises(DeviceError, match=expect):
            driver.backup()
        assert list(workdir.iterdir()) == []  # neither the .gmi nor its .part
        assert driver.identify().details["mode"] == "normal"


def test_power_cut_in_the_middle_of_a_restore(unit: SimProcess, tmp_path: Path):
    """The process is killed while the GMI is being written; powered on again the unit is in recovery mode,
    the driver says so, and a second restore of the same GMI brings everything back."""
    store = Store(tmp_path / "store")
    with BactoboxDriver(unit.address) as driver:
        first = backup_to_store(driver, TARGET, store, address=unit.address)
        driver.apply_settings({"timezone": "Asia/Tokyo"})
    SimControl(unit.control).request("POST", "/timing", {"usb_mb_s": 24})  # 32 MiB: about 1.4 s
    errors: list[BaseException] = []

    def restore() -> None:
        try:
            with BactoboxDriver(unit.address) as driver:
                restore_from(driver, TARGET, first, store, address=unit.address)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=restore)
    thread.start()
    end = time.monotonic() + 20
    while True:
        current = httpx.get(unit.address + "/api/v1/operations", timeout=5).json()["current"]
        if current and current["state"] == "receiving" and current["progress"]["done_bytes"] > 12 << 20:
            break
        assert time.monotonic() < end, current
        time.sleep(0.02)
    unit.kill()
    thread.join(30)
    assert errors and isinstance(errors[0], DeviceError), errors
    assert "recovery" in str(errors[0])
    unit.restart()
    with BactoboxDriver(unit.address) as driver:
        info = driver.identify()
        assert info.details["mode"] == "recovery" and info.firmware == "recovery"
        with pytest.raises(Refused, match="recovery_mode"):
            driver.backup()
        restore_from(driver, TARGET, first, store, address=unit.address)
        assert driver.identify().details["mode"] == "normal"
        again = backup_to_store(driver, TARGET, store, address=unit.address)
    from harness.compare import diff

    assert diff(TARGET.fields(load_artifact(first)[1]), TARGET.fields(load_artifact(again)[1]),
                TARGET.compare_rules).equal


def test_without_control_plane_and_with_a_token(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("usb-token-1\n")
    proc = start(tmp_path, control=False, username="access", password_file=token)
    store = Store(tmp_path / "store")
    try:
        assert proc.control is None
        with pytest.raises(DeviceError, match="401"):
            BactoboxDriver(proc.address).identify()
        with BactoboxDriver(proc.address, username="access", password="usb-token-1") as driver:
            saved = backup_to_store(driver, TARGET, store, address=proc.address)
            restore_from(driver, TARGET, saved, store, address=proc.address)
        manifest = json.loads(Path(str(saved) + ".manifest.json").read_text())
        assert "usb-token-1" not in json.dumps(manifest)
        assert manifest["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    finally:
        proc.stop()


def test_restore_waits_out_a_slow_restart(unit: SimProcess, tmp_path: Path):
    """BB-F14: services take 8 times longer to start after the restart; the driver waits it out."""
    store = Store(tmp_path / "store")
    with BactoboxDriver(unit.address) as driver:
        saved = backup_to_store(driver, TARGET, store, address=unit.address)
        SimControl(unit.control).set_fault("slow_boot", factor=8.0)  # 0.1 s -> 0.8 s of 503 starting
        t0 = time.monotonic()
        restore_from(driver, TARGET, saved, store, address=unit.address)
        assert time.monotonic() - t0 > 0.8
        assert driver.identify().details["mode"] == "normal"
