"""The simulated MultispeQ's non-volatile state: EEPROM file, firmware profiles, write rules (§1, §2.10, §3.7)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from harness.errors import BadInput, DeviceError
from harness.targets.multispeq import schema
from simulators.multispeq.device import IMAGE_FILE, META_FILE, EepromDevice, parse_device_id
from simulators.multispeq.profiles import PROFILES, SUPPORTED_FIRMWARE, profile_for


def test_new_state_dir_is_a_blank_part(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path / "unit")
    assert (tmp_path / "unit" / IMAGE_FILE).read_bytes() == b"\xff" * 2048
    assert dev.profile.firmware == "1.17" and dev.family.name == "E"
    v = dev.values()
    assert v.device_id == -1 and math.isnan(v.mag_bias[0]) and v.sleep == 255
    meta = json.loads((tmp_path / "unit" / META_FILE).read_text())
    assert meta["firmware"] == "1.17"
    assert dev.state()["device_id"] == "ff:ff:ff:ff"


def test_power_cycle_keeps_firmware_and_bytes(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path, "1.05", "B-early", device_id="52:00:13:1f")
    dev.write_field("thickness_c", 2.5)
    again = EepromDevice(tmp_path)
    assert again.profile.name == "1.05-B-early"
    assert again.image == dev.image
    assert again.values().thickness_c == 2.5
    assert again.state()["device_id"] == "52:00:13:1f"


def test_device_id_is_programmed_when_given(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path, device_id="80:00:00:00")
    assert dev.values().device_id == -(1 << 31)
    assert dev.write_counts["device_id"] == 1
    same = EepromDevice(tmp_path, device_id="80:00:00:00")  # unchanged: not written again
    assert same.write_counts["device_id"] == 0
    assert parse_device_id("d4:f5:52:0:13:1f") == 0x5200131F
    assert parse_device_id("0xffffffff") == -1
    with pytest.raises(BadInput):
        parse_device_id("bogus")


def test_float_writes_round_to_float32_and_overflow_to_inf(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path)
    dev.write_field("light_yint", 0.1)
    dev.write_field("mag_cal", 1e39, index=5)  # flat row-major index: [1][2]
    dev.write_field("userdef", -1e39, index=3)
    v = dev.values()
    assert v.light_yint == schema.f32(0.1) != 0.1
    assert v.mag_cal[1][2] == math.inf
    assert v.userdef[3] == -math.inf
    assert dev.image[104:108] == struct.pack("<f", 0.1)


def test_write_only_if_changed(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path)
    assert dev.write_field("thickness_a", 1.25) is True
    assert dev.write_field("thickness_a", 1.25) is False
    assert dev.write_counts["thickness_a"] == 1
    # NaN never compares equal, so it is written every time.
    assert dev.write_field("thickness_b", math.nan) is True
    assert dev.write_field("thickness_b", math.nan) is True
    assert dev.write_counts["thickness_b"] == 2
    # Float compare: -0.0 == 0.0, so a negative zero over a zero is not written (bits stay +0).
    dev.write_field("thickness_c", 0.0)
    assert dev.write_field("thickness_c", -0.0) is False
    assert math.copysign(1, dev.values().thickness_c) == 1


def test_named_writes_check_their_index(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path)
    with pytest.raises(BadInput):
        dev.write_field("userdef", 1.0, index=136)
    with pytest.raises(BadInput):
        dev.write_field("mag_bias", 1.0)
    with pytest.raises(BadInput):
        dev.write_field("thickness_d", 1.0)  # an A field; this is E


def test_raw_out_of_range_index_lands_in_the_neighbour(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path, "1.17")
    assert dev.write_raw_element("par_to_dac_slope1", 11, 3.5)
    assert dev.values().par_to_dac_slope2[0] == 3.5
    assert dev.write_counts["par_to_dac_slope2"] == 1 and "par_to_dac_slope1" not in dev.write_counts
    # userdef[136] in E covers bytes 1424-1427: the low byte of the denormal 1.4e-45 is 0x01 -> sleep.
    dev.write_raw_element("userdef", 136, 1.4e-45)
    assert dev.sleep == 1 and dev.write_counts["sleep"] == 1
    dev.write_raw_element("mag_bias", -1, 2.0)  # before the array: device_manufacture's bytes
    assert dev.image[4:8] == struct.pack("<f", 2.0)


def test_raw_write_outside_the_eeprom_is_ignored_or_raised(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path / "a")
    before = dev.image
    assert dev.write_raw_element("userdef", 10_000, 1.0) is False
    assert dev.write_raw_element("mag_bias", -3, 1.0) is False
    assert dev.image == before
    strict = EepromDevice(tmp_path / "b", strict=True)
    with pytest.raises(DeviceError):
        strict.write_raw_element("userdef", 10_000, 1.0)


def test_firmware_change_keeps_bytes_and_scrambles_fields(tmp_path: Path) -> None:
    """§2.10: A -> B, thickness_d becomes thickness_c, par_to_dac_slope1[0..1] become thickness_min/max."""
    dev = EepromDevice(tmp_path, "1.05", "A")
    dev.write_field("thickness_d", 7.5)
    dev.write_field("par_to_dac_slope1", 1.5, index=0)
    dev.write_field("par_to_dac_slope1", 2.5, index=1)
    image = dev.image
    dev.change_firmware("1.05", "B")
    assert dev.image == image
    v = dev.values()
    assert (v.thickness_c, v.thickness_min, v.thickness_max) == (7.5, 1.5, 2.5)
    assert EepromDevice(tmp_path).profile.name == "1.05-B-late"  # survives a power cycle


def test_flashing_on_restart_keeps_bytes(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path, "1.17")
    dev.write_field("par_to_dac_yint", 9.0, index=0)  # offset 352 in D/E
    older = EepromDevice(tmp_path, "1.10")  # C: bytes 352.. are ir_baseline_yint[0]
    assert older.family.name == "C75"
    assert older.values().ir_baseline_yint[0] == 9.0


def test_boot_sleep_rule(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path, "1.17")
    assert dev.boot() is False
    dev.write_field("sleep", 1)
    assert dev.boot() is True and dev.deep_sleep and dev.sleep == 0
    assert dev.boot() is False and not dev.deep_sleep
    no_sleep = EepromDevice(tmp_path / "a", "1.05")  # A has no sleep byte
    assert no_sleep.sleep is None and no_sleep.boot() is False


def test_every_write_is_on_disk_and_atomic(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path)
    for i in range(5):
        dev.write_field("userdef", float(i + 1), index=i)
        assert (tmp_path / IMAGE_FILE).read_bytes() == dev.image
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_FILE, IMAGE_FILE]


def test_image_of_wrong_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / IMAGE_FILE).write_bytes(b"\x00" * 100)
    with pytest.raises(BadInput, match="2048"):
        EepromDevice(tmp_path)


def test_state_for_the_control_plane(tmp_path: Path) -> None:
    dev = EepromDevice(tmp_path, "1.13", device_id="1375736607")
    dev.load_image(dev.image)
    state = dev.state()
    assert state["firmware"] == "1.13" and state["family"] == "E" and state["device_id"] == "52:00:13:1f"
    assert state["write_counts"] == {"device_id": 1}
    assert state["sleep"] == 255 and state["deep_sleep"] is False
    assert len(state["image_sha256"]) == 64


@pytest.mark.parametrize(("firmware", "profile", "name", "family"), [
    ("0.54", None, "0.54", "A"), ("1.05", None, "1.05-A", "A"), ("1.05", "A", "1.05-A", "A"),
    ("1.05", "B", "1.05-B-late", "B"), ("1.05", "B-early", "1.05-B-early", "B"),
    ("1.06", None, "1.06-C50", "C50"), ("1.06", "B", "1.06-B", "B"), ("1.10", None, "1.10", "C75"),
    ("1.11", "D", "1.11", "D"), ("1.132", None, "1.132", "E"), ("1.20", None, "1.20", "F"),
])
def test_profile_for(firmware: str, profile: str | None, name: str, family: str) -> None:
    p = profile_for(firmware, profile)
    assert (p.name, p.family.name, p.firmware) == (name, family, firmware)


@pytest.mark.parametrize(("firmware", "profile"), [
    ("1.05", "C50"), ("1.06", "B-early"), ("1.17", "A"), ("1.17", "B-late"), ("2.31", None), ("0.50", None)])
def test_profile_for_refuses(firmware: str, profile: str | None) -> None:
    with pytest.raises(BadInput):
        profile_for(firmware, profile)


def test_profiles_cover_the_firmware_history() -> None:
    assert set(SUPPORTED_FIRMWARE) == set(schema.KNOWN_FIRMWARE)
    assert {p.family.name for p in PROFILES.values()} == set(schema.FAMILIES)
    assert profile_for("1.10").led_par_values == 3 and profile_for("1.11").led_par_values == 5
    assert profile_for("1.06").read_command == "1006" and profile_for("1.10").read_command == "print_memory"
    assert profile_for("1.05").numeric_setters and not profile_for("1.10").numeric_setters
