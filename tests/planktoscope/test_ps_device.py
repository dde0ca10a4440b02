"""The simulated unit without a network: seeding, boot health, and the dashboard's writes W1-W8 byte for byte."""

from __future__ import annotations

import json

import pytest

from harness.errors import BadInput
from harness.targets.planktoscope import integrity, presets, versionfile
from harness.targets.planktoscope.releases import (
    CONFIG_PATH,
    DATA_ROOT,
    HARDWARE_PATH,
    HOSTNAME_PATH,
    RELEASES,
    V2_3,
    V2023,
    V2024,
    V2025,
    V2026,
    VERSIONING_PATH,
)
from simulators.planktoscope.device import PlanktoscopeDevice


def device(tmp_path, release, variant=None, device_id="pkscope-test-1"):
    d = PlanktoscopeDevice(tmp_path / "state", release=release, variant=variant, device_id=device_id)
    d.boot()
    return d


@pytest.mark.parametrize("release", RELEASES)
def test_seeding_is_byte_exact(tmp_path, release):
    d = device(tmp_path, release)
    hw, cfg = presets.seed(release)
    assert d.read(HARDWARE_PATH) == hw and d.read(CONFIG_PATH) == cfg
    assert d.read(HOSTNAME_PATH) == b"pkscope-test-1\n"
    assert d.exists(VERSIONING_PATH) == (release in (V2023, V2024, V2025))
    if release in (V2023, V2024, V2025):
        assert versionfile.parse_versioning(d.read(VERSIONING_PATH)).version == release
    acq = d.host_path(f"{DATA_ROOT}/img/2024-05-01/sample_a/acq_1")
    files = {p.name: p.read_bytes() for p in acq.iterdir()}
    assert integrity.verify(files[integrity.NAME], files) == []
    assert d.services["imager"] == "Ready"


def test_v2_3_root_files_have_no_final_newline(tmp_path):
    d = device(tmp_path, V2_3)
    assert d.read(HARDWARE_PATH).endswith(b"}") and d.read(CONFIG_PATH).endswith(b"}")


def test_w1_replaces_hardware_json_and_saves_config_node_red_style(tmp_path):
    d = device(tmp_path, V2024)
    d.set_white_balance(2.2, 1.3)
    d.select_hardware_version("2.6")
    assert d.read(HARDWARE_PATH) == presets.hardware_presets(V2024)["v2.6"]  # calibration gone
    cfg = d.read(CONFIG_PATH)
    assert b'    "acq_instrument": "PlanktoScope v2.6",\n' in cfg and cfg.endswith(b"}\n")
    assert [a["writer"] for a in d.audit_log()[-2:]] == ["node-red", "node-red"]


def test_w1_on_v2_3_keeps_white_balance(tmp_path):
    d = device(tmp_path, V2_3)
    d.select_hardware_version("2.2")
    doc = json.loads(d.read(HARDWARE_PATH))
    assert (doc["stepper_type"], doc["pump_steps_per_ml"], doc["wb_red_gain"]) == ("waveshare", 2000, 2)


def test_w1_on_v2026_copies_both_presets(tmp_path):
    d = device(tmp_path, V2026)
    d.finish_setup()
    d.select_hardware_version("v3.0")
    assert d.read(HARDWARE_PATH) == presets.hardware_presets(V2026)["v3.0"]
    assert d.read(CONFIG_PATH) == presets.config_presets(V2026)["v3.0"]  # user_setup false again


def test_w2_single_key_save_node_red_bytes(tmp_path):
    d = device(tmp_path, V2025, "v2.6")
    d.set_hardware("pump_steps_per_ml", 2100)
    expected = {**json.loads(presets.hardware_presets(V2025)["v2.6"]), "pump_steps_per_ml": 2100}
    data = d.read(HARDWARE_PATH)
    assert data == (json.dumps({k: (int(v) if isinstance(v, float) and v.is_integer() else v)
                                for k, v in expected.items()}, indent=4) + "\n").encode()
    assert b'"analog_gain": 1,' in data  # JavaScript numbers
    d.set_hardware("process_pixel_fixed", 0)
    assert "process_pixel_fixed" not in json.loads(d.read(HARDWARE_PATH))
    d.set_hardware("mystery", 1)
    assert list(json.loads(d.read(HARDWARE_PATH)))[-1] == "mystery"  # new keys are appended


def test_w4_never_adds_a_key_and_keeps_extras(tmp_path):
    d = device(tmp_path, V2024)
    d.write(CONFIG_PATH, json.dumps({"sample_id": 1, "user_setup": True}).encode(), writer="filebrowser")
    d.boot()
    d.save_config({"sample_id": 2, "new_key": 3})
    assert json.loads(d.read(CONFIG_PATH)) == {"sample_id": 2, "user_setup": True}


def test_w5_w6_w7_on_v2026(tmp_path):
    d = device(tmp_path, V2026)
    d.pump_calibration(3300.0)
    data = d.read(HARDWARE_PATH)
    assert not data.endswith(b"\n") and b'  "pump_steps_per_ml": 3300.0' in data and b'"analog_gain": 1.0' in data
    d.finish_setup()
    cfg = d.read(CONFIG_PATH)
    assert not cfg.endswith(b"\n") and b'"user_setup": true' in cfg and d.user_setup_done()
    d.api_reset()
    assert not d.exists(HARDWARE_PATH) and not d.exists(CONFIG_PATH)
    d.api_reset()  # a missing file is not an error
    with pytest.raises(BadInput, match="cannot update missing config"):
        d.finish_setup()


def test_w8_a_save_before_reboot_clobbers_an_upload(tmp_path):
    d = device(tmp_path, V2024, "v2.6")
    uploaded = presets.hardware_presets(V2024)["v2.6"].replace(b"2045", b"1999")
    d.write(HARDWARE_PATH, uploaded, writer="filebrowser")
    d.set_hardware("analog_gain", 1.0)  # the in-memory copy from boot is written back
    assert b"1999" not in d.read(HARDWARE_PATH)
    d.write(HARDWARE_PATH, uploaded, writer="filebrowser")
    d.boot()
    d.set_hardware("analog_gain", 1.0)
    assert b"1999" in d.read(HARDWARE_PATH)


@pytest.mark.parametrize(("release", "red", "blue", "status"), [
    (V2024, 40, 1.3, "Dead"), (V2024, 31, 1.3, "Ready"), (V2_3, 8, 1, "Dead"), (V2_3, 7.9, 1, "Ready"),
])
def test_r3_white_balance_out_of_range_kills_the_imager_after_reboot(tmp_path, release, red, blue, status):
    d = device(tmp_path, release)
    d.set_white_balance(red, blue)
    assert d.services["imager"] == "Ready"  # not before the reboot
    d.boot()
    assert d.services["imager"] == status


def test_r4_light_service(tmp_path):
    d = device(tmp_path, V2026)
    assert d.services["light"] == "ready" and d.services["bubbler"] == "inactive"
    d.write(HARDWARE_PATH, json.dumps({"hat_version": 2.0}).encode(), writer="ssh")
    d.boot()
    assert d.services["light"] == "failed"
    d.api_reset()
    d.boot()
    assert d.services["light"] == "stopped"


def test_reflash_keeps_the_host_name_and_wipes_the_rest(tmp_path):
    d = device(tmp_path, V2024)
    d.reflash(V2025, None)
    assert d.release == V2025 and d.hostname == "pkscope-test-1"
    assert not d.host_path(f"{DATA_ROOT}/img").exists()
    with pytest.raises(BadInput):
        d.reflash(V2025, "nonsense")


def test_paths_cannot_leave_the_disk(tmp_path):
    d = device(tmp_path, V2024)
    assert d.host_path("/../../etc/passwd") == d.root / "etc" / "passwd"
    (d.root / "home" / "pi" / "escape").symlink_to("/etc")
    with pytest.raises(BadInput):
        d.host_path("/home/pi/escape/passwd")
