"""The driver against real simulator processes: channels, tokens, faults, refusals, reboots."""

from __future__ import annotations

import time

import pytest

from harness.errors import DeviceError, Refused
from harness.operations import backup_to_store, restore_from
from harness.simctl import SimControl
from harness.store import Store
from harness.targets import get_target
from harness.targets.planktoscope.bundle import load_bundle
from harness.targets.planktoscope.fbclient import FileBrowserAuth

TARGET = get_target("planktoscope")


def drv(proc, **kw):
    return TARGET.driver(proc.address, username="pi", password="copepode", **kw)


def test_the_token_goes_in_x_auth_only():
    from harness.transports.http import Grant

    auth = FileBrowserAuth(None, None)
    auth.grant = Grant("a.b.c", time.monotonic() + 60)
    assert auth.headers(None) == {"X-Auth": "a.b.c"}  # type: ignore[arg-type]


def test_v2026_over_http_backs_up_datasets_through_v2_44_2_and_says_why_no_settings(start_sim, tmp_path):
    proc = start_sim("v2026")
    with drv(proc) as d:
        info = d.identify()
        assert info.firmware == "v2026" and info.device_id == "127.0.0.1"  # no hostname reachable
        path = backup_to_store(d, TARGET, Store(tmp_path), address=proc.address)
    bundle = load_bundle(path)
    assert not bundle.settings_available and bundle.settings == []
    assert "Cockpit" in bundle.manifest["settings"]["unavailable_reason"]
    assert [d.integrity for d in bundle.datasets] == ["ok", "ok"]  # v2.44.2 refuses ?auth=: X-Auth worked


def test_ssh_address_alone(start_sim, tmp_path):
    proc = start_sim("v2.3")
    with TARGET.driver(proc.info["ssh"], username="pi", password="copepode") as d:
        assert d.identify().device_id == "pkscope-test-1"
        path = backup_to_store(d, TARGET, Store(tmp_path), address=proc.info["ssh"])
    bundle = load_bundle(path)
    assert bundle.release == "v2.3" and bundle.settings_available and len(bundle.datasets) == 2
    assert bundle.source["git_version"] == "v2.3"


def test_renewal_and_expired_tokens(start_sim):
    proc = start_sim("v2024.0.0")
    sim = SimControl(proc.control)
    with drv(proc) as d:
        d.identify()
        sim.request("POST", "/clock", {"advance": 3700})
        admin = d._admin_fs()
        assert admin.read("/etc/hostname") == b"pkscope-test-1\n"
        assert admin.renewals == 1
        sim.set_fault("expire_tokens")
        time.sleep(1.1)  # a login in the same second signs the same token
        assert admin.read("/etc/hostname") == b"pkscope-test-1\n"  # 401, log in again, retry
        assert admin.auth.logins == 2


def test_works_without_the_control_plane(start_sim, tmp_path):
    proc = start_sim("v2025.0.0", control=False)
    with drv(proc) as d:
        path = backup_to_store(d, TARGET, Store(tmp_path), address=proc.address)
        report = restore_from(d, TARGET, path, Store(tmp_path), address=proc.address)
    assert not report.rebooted and any("HZ-18: reboot the unit now" in n for n in report.notes)


def test_disk_full_fails_the_restore_as_a_device_error(start_sim, tmp_path):
    proc = start_sim("v2024.0.0", variant="v2.6")
    store = Store(tmp_path)
    with drv(proc) as d:
        d.apply_settings(TARGET.distinctive_settings(d.identify(), 1))
        path = backup_to_store(d, TARGET, store, address=proc.address)
    SimControl(proc.control).set_fault("disk_full")
    with drv(proc) as d, pytest.raises(DeviceError) as err:
        restore_from(d, TARGET, path, store, address=proc.address)
    assert err.value.exit_code == 3 and "500" in str(err.value)
    SimControl(proc.control).clear_faults()
    # filebrowser removes the target of a failed write (spec §8.2): the unit answers, the file is gone
    with pytest.raises(Exception, match="404"):
        SimControl(proc.control).request("POST", "/disk/read", {"path": "/home/pi/PlanktoScope/hardware.json"})


def test_id_mismatch_is_refused_unless_forced(start_sim, tmp_path):
    a, b = start_sim("v2025.0.0"), start_sim("v2025.0.0")
    SimControl(b.control).request("POST", "/disk/write", {"path": "/etc/hostname", "base64": "b3RoZXIK"})
    store = Store(tmp_path)
    with drv(a) as d:
        path = backup_to_store(d, TARGET, store, address=a.address)
    with drv(b, reboot=SimControl(b.control).reset) as d:
        with pytest.raises(Refused, match="device IDs differ"):
            restore_from(d, TARGET, path, store, address=b.address)
        report = restore_from(d, TARGET, path, store, address=b.address, force=True)
    assert report.rebooted


def test_a_reformat_after_the_reboot_is_no_warning(start_sim, tmp_path):
    proc = start_sim("v2024.0.0", variant="v2.6")
    sim = SimControl(proc.control)

    def reboot_then_dashboard_save() -> None:
        boots = sim.state()["boots"]
        sim.reset()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if sim.state()["boots"] > boots:
                    break
            except Exception:  # noqa: BLE001 - down while rebooting
                pass
            time.sleep(0.05)
        sim.request("POST", "/ui/set-hardware", {"key": "analog_gain", "value": 1.0})  # same value, new bytes

    store = Store(tmp_path)
    with drv(proc) as d:
        path = backup_to_store(d, TARGET, store, address=proc.address)
    with drv(proc, reboot=reboot_then_dashboard_save) as d:
        report = restore_from(d, TARGET, path, store, address=proc.address)
    assert report.rebooted and not any(n.startswith("HZ-18") for n in report.notes), report.notes
    audit = sim.request("GET", "/audit")["audit"]
    assert audit[-1]["writer"] == "node-red"


def test_v2_3_over_http_is_read_only(start_sim, tmp_path):
    proc = start_sim("v2.3")
    store = Store(tmp_path)
    with drv(proc) as d:
        path = backup_to_store(d, TARGET, store, address=proc.address)
        with pytest.raises(Refused, match="HZ-15"):
            restore_from(d, TARGET, path, store, address=proc.address)
