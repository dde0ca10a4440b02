"""The MultispeQ driver against the simulator process, through its pty, as against a real unit (rule 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.compare import diff
from harness.errors import DeviceError, Refused
from harness.simctl import SimControl
from harness.targets.base import Backup
from harness.targets.multispeq import TARGET
from harness.targets.multispeq.driver import MultispeqDriver
from simulators.core.options import SimOptions
from simulators.core.process import start_simulator

pytestmark = pytest.mark.target_multispeq

NON_SYMMETRIC = [["1.000000", "2.000000", "3.000000"], ["4.000000", "5.000000", "6.000000"],
                 ["7.000000", "8.000000", "9.500000"]]


@pytest.fixture
def sim(tmp_path):
    with start_simulator(SimOptions(target="multispeq", state=tmp_path / "state", firmware="1.17",
                                    device_id="52:00:13:1f")) as proc:
        yield proc


@pytest.fixture
def driver(sim):
    with MultispeqDriver(sim.address) as drv:
        yield drv


def save(tmp_path: Path, backup: Backup, name: str):
    path = tmp_path / name
    path.write_bytes(backup.content)
    return TARGET.load_artifact(path)


def eeprom_sha(sim) -> str:
    with SimControl(sim.control) as ctl:
        return ctl.request("GET", "/eeprom")["sha256"]


def test_backup(driver, tmp_path):
    backup = driver.backup(reason="after-calibration")
    assert backup.device.device_id == "52:00:13:1f" and backup.device.firmware == "1.17"
    assert backup.reason == "after-calibration" and backup.created.tzinfo is not None
    artifact = save(tmp_path, backup, "b.json")
    doc = json.loads(backup.content)
    assert doc["device"]["layout_family"] == "E" and doc["reason"] == "after-calibration"
    assert artifact.data.memory["device_id"] == "52:00:13:1f" and len(artifact.data.memory) == 168  # §4.2: 170 lines less the braces
    assert driver.identify().device_id == "52:00:13:1f"


def test_round_trip_restore(driver, tmp_path):
    values = TARGET.distinctive_settings(driver.identify(), seed=1)
    values.update(mag_cal=NON_SYMMETRIC, accel_cal=[list(r) for r in zip(*NON_SYMMETRIC, strict=True)],
                  userdef5="nan", userdef6="inf", userdef7="-inf", userdef8="-0.000000",
                  userdef9="340282346638528859811704183484516925440.000000",
                  userdef10="1000000015047466219876688855040.000000")
    driver.apply_settings(values)
    first = save(tmp_path, driver.backup(), "first.json")
    fields = TARGET.fields(first)
    for key, value in values.items():
        assert fields[key] == value, key  # print-exact values come back as printed
    driver.apply_settings(TARGET.distinctive_settings(driver.identify(), seed=2))
    plan = driver.check_restore(first)
    report = driver.restore(plan)
    assert [b.reason for b in report.backups] == ["before-restore", "after-restore"]
    assert report.skipped == [] and report.untouched == [] and report.resent == []
    assert "sleep" in report.not_carried and any("userdef135" in n for n in report.not_carried)
    again = save(tmp_path, driver.backup(), "again.json")
    result = diff(TARGET.fields(first), TARGET.fields(again), TARGET.compare_rules)
    assert result.equal, [str(d) for d in result.differences]
    before = save(tmp_path, report.before_restore, "before.json")
    assert TARGET.fields(before)["mag_cal"] != NON_SYMMETRIC


def test_id_mismatch_is_refused_and_nothing_is_sent(driver, sim, tmp_path):
    first = save(tmp_path, driver.backup(), "first.json")
    driver.apply_settings({"device_id": "80:00:00:00", "userdef0": "5.000000"})
    assert driver.identify().device_id == "80:00:00:00"  # sent as -2147483648
    sha = eeprom_sha(sim)
    with pytest.raises(Refused, match="52:00:13:1f.*80:00:00:00") as info:
        driver.check_restore(first)
    assert info.value.exit_code == 2 and eeprom_sha(sim) == sha
    plan = driver.check_restore(first, force=True)
    report = driver.restore(plan)
    assert driver.identify().device_id == "80:00:00:00"  # force does not clone the ID
    assert any("mismatch" in n for n in report.notes)
    plan = driver.check_restore(first, force=True, restore_device_id=True)
    assert plan.groups[0].data == b"set_device_info+1375736607+"
    driver.restore(plan)
    assert driver.identify().device_id == "52:00:13:1f"


def test_crc_corruption_retries_then_fails(driver, sim):
    with SimControl(sim.control) as ctl:
        ctl.set_fault("corrupt", offset=3000, count=2)  # only print_memory replies are that long
        backup = driver.backup()  # two bad replies, then a good one
        assert backup.device.device_id == "52:00:13:1f"
        ctl.set_fault("corrupt", offset=3000, count=0)  # every reply from now on
        with pytest.raises(DeviceError, match="CRC.*no backup"):
            driver.backup()
        ctl.clear_faults()
    assert driver.backup().content


def test_stalled_reply_is_retried(driver, sim):
    with SimControl(sim.control) as ctl:
        ctl.set_fault("stall", after=3000, seconds=1.5)  # mid print_memory, longer than the 1 s idle timeout
        assert driver.backup().device.device_id == "52:00:13:1f"


def test_port_drop_during_restore_reconnects_and_reruns(driver, sim, tmp_path):
    driver.apply_settings({"mag_cal": NON_SYMMETRIC})
    first = save(tmp_path, driver.backup(), "first.json")
    driver.apply_settings(TARGET.distinctive_settings(driver.identify(), seed=3))
    plan = driver.check_restore(first)
    # restore() opens with a full backup (Ready line, device_info, print_memory): drop after 4 group syncs.
    opening = len(b"MultispeQ Ready\n") + len(plan.unit.info_raw) + len(plan.unit.raw)
    with SimControl(sim.control) as ctl:
        ctl.set_fault("drop", after=opening + 4 * len(b"MultispeQ Ready\n"), down=0.3)
        report = driver.restore(plan)
    assert any("port was lost" in n for n in report.notes)
    again = save(tmp_path, driver.backup(), "again.json")
    assert diff(TARGET.fields(first), TARGET.fields(again), TARGET.compare_rules).equal


def test_cross_family_restore_needs_permission(driver, sim, tmp_path):
    driver.apply_settings({"thickness_c": "3.500000", "userdef100": "7.000000", "userdef3": "1.250000"})
    first = save(tmp_path, driver.backup(), "first.json")
    with SimControl(sim.control) as ctl:
        ctl.set_firmware("1.10")  # same bytes, reinterpreted by the C75 layout (§2.10)
    driver.close()
    with pytest.raises(Refused, match="layout E.*layout C75"):
        driver.check_restore(first)
    plan = driver.check_restore(first, allow_cross_family=True)
    report = driver.restore(plan)
    assert {"par_to_dac_slope3", "userdef100"} <= set(report.skipped) and report.untouched == []
    fields = TARGET.fields(save(tmp_path, driver.backup(), "c75.json"))
    assert fields["thickness_c"] == "3.500000" and fields["userdef3"] == "1.250000"
    assert "userdef100" not in fields


def test_reset_comes_back_at_the_same_address(driver):
    driver.reset()
    assert driver.identify().device_id == "52:00:13:1f"


def test_family_f_backup_is_refused(tmp_path):
    with start_simulator(SimOptions(target="multispeq", state=tmp_path / "f", firmware="1.19")) as proc:
        with MultispeqDriver(proc.address) as drv, pytest.raises(Refused, match="1.19"):
            drv.backup()


@pytest.mark.parametrize(("firmware", "profile"), [
    ("0.54", None), ("1.05", None), ("1.05", "B"), ("1.06", None), ("1.11", None), ("1.15", None)])
def test_round_trip_on_every_command_set(tmp_path, firmware, profile):
    """Numeric setters (A/B/C50, v1.04's one-value PAR codes), 5-value set_led_par (D), pre-1.16 IDs (E)."""
    options = SimOptions(target="multispeq", state=tmp_path / "s", firmware=firmware, profile=profile,
                         device_id="d4:f5:52:00:13:1f")
    with start_simulator(options) as proc, MultispeqDriver(proc.address) as drv:
        drv.apply_settings(TARGET.distinctive_settings(drv.identify(), seed=4))
        first = save(tmp_path, drv.backup(), "first.json")
        drv.apply_settings(TARGET.distinctive_settings(drv.identify(), seed=5))
        report = drv.restore(drv.check_restore(first))
        assert report.resent == []
        again = save(tmp_path, drv.backup(), "again.json")
        result = diff(TARGET.fields(first), TARGET.fields(again), TARGET.compare_rules)
        assert result.equal, [str(d) for d in result.differences]


def test_negative_zero_is_restored_over_positive_zero(driver, tmp_path):
    """The firmware skips a write whose value compares equal, and -0 == +0: the driver must force it."""
    driver.apply_settings({"userdef3": "-0.000000", "mag_bias": ["-0.000000", "1.000000", "2.000000"]})
    first = save(tmp_path, driver.backup(), "first.json")
    assert TARGET.fields(first)["userdef3"] == "-0.000000"
    driver.apply_settings({"userdef3": "5.000000", "mag_bias": ["5.000000", "1.000000", "2.000000"]})
    driver.apply_settings({"userdef3": "0.000000", "mag_bias": ["0.000000", "1.000000", "2.000000"]})
    held = save(tmp_path, driver.backup(), "held.json")
    assert TARGET.fields(held)["userdef3"] == "0.000000"  # the unit now holds +0
    report = driver.restore(driver.check_restore(first))
    assert report.resent == []
    again = TARGET.fields(save(tmp_path, driver.backup(), "again.json"))
    assert again["userdef3"] == "-0.000000" and again["mag_bias"][0] == "-0.000000"
