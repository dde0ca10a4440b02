"""The NeuroomNet driver against the simulator process over HTTP on loopback, as against a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from harness.compare import diff
from harness.errors import BadInput, DeviceError, LinkError, Refused
from harness.simctl import SimControl
from harness.targets.neuroomnet import TARGET
from harness.targets.neuroomnet.driver import NeuroomNetDriver
from simulators.core.options import SimOptions
from simulators.core.process import start_simulator

pytestmark = pytest.mark.target_neuroomnet

SID = "srv-7d2c41e0"
PASSWORD = "pw-for-tests"


def start(tmp_path: Path, name: str = "state", version: str = "4.2.0", *, control: bool = True):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    return start_simulator(SimOptions(target="neuroomnet", state=tmp_path / name, firmware=version, device_id=SID,
                                      username="qa", password_file=pw, control=control))


@pytest.fixture
def sim(tmp_path):
    with start(tmp_path) as proc:
        yield proc


def driver(proc, **kw) -> NeuroomNetDriver:
    return NeuroomNetDriver(proc.address, username="qa", password=PASSWORD, **kw)


def save(tmp_path: Path, backup, name: str):
    path = tmp_path / name
    shutil.move(str(backup.path), path)
    return TARGET.load_artifact(path)


def config_digest(proc) -> str:
    return SimControl(proc.control).state()["config_digest"]


def test_backup_restore_round_trip(sim, tmp_path):
    with driver(sim) as d:
        info = d.identify()
        assert (info.device_id, info.firmware) == (SID, "4.2.0")
        d.apply_settings(TARGET.distinctive_settings(info, 1))
        first = save(tmp_path, d.backup(), "first.zip")
        assert first.device_id == SID and first.firmware == "4.2.0"
        fields = TARGET.fields(first)
        assert fields["config.system_setting.language.value"] == "fr"
        d.apply_settings(TARGET.distinctive_settings(info, 2))
        changed = save(tmp_path, d.backup(), "changed.zip")
        assert not diff(fields, TARGET.fields(changed), TARGET.compare_rules).equal
        report = d.restore(d.check_restore(first))
        assert report.restarted and report.verdict == "as_is" and report.safety_restore_point_id
        assert [b.reason for b in report.backups] == ["before-restore"]
        assert TARGET.load_artifact(report.backups[0].path).data.config_digest == changed.data.config_digest
        assert len(d.instance_ids) >= 2
        again = save(tmp_path, d.backup(), "again.zip")
    result = diff(fields, TARGET.fields(again), TARGET.compare_rules)
    assert result.equal, result.differences
    assert result.ignored == 5 and result.compared > 300


def test_token_invalidated_in_the_middle_of_a_backup(sim, tmp_path):
    SimControl(sim.control).set_fault("sessions_invalidated", after=3)
    with driver(sim) as d:
        backup = d.backup()
        assert d._auth.logins >= 2  # logged in again transparently
    assert save(tmp_path, backup, "b.zip").device_id == SID
    assert "sessions_invalidated" not in SimControl(sim.control).faults()


def test_waits_out_a_slow_restart(sim, tmp_path):
    with driver(sim) as d:
        first = save(tmp_path, d.backup(), "first.zip")
        SimControl(sim.control).set_fault("slow_restart", factor=8.0)
        report = d.restore(d.check_restore(first))
    assert report.restarted and any("restarted" in n for n in report.notes)


def test_crash_past_the_point_of_no_return_rolls_back(sim, tmp_path):
    with driver(sim) as d:
        first = save(tmp_path, d.backup(), "first.zip")
        d.apply_settings({"config.system_setting.language.value": "nl"})
        before = config_digest(sim)
        SimControl(sim.control).set_fault("crash_after_point_of_no_return")
        with pytest.raises(DeviceError, match="safety restore point .* was applied automatically and succeeded"):
            d.restore(d.check_restore(first))
        assert d.identify().details["state"] == "running"
    assert config_digest(sim) == before


def test_a_newer_version_is_refused_before_anything_is_sent(sim, tmp_path):
    with start(tmp_path, "newer", "5.0.0") as newer, driver(newer) as d:
        artifact = save(tmp_path, d.backup(), "new.zip")
    before = config_digest(sim)
    with driver(sim) as d, pytest.raises(Refused, match="restore_point_too_new") as info:
        d.check_restore(artifact)
    assert "Update this server to 5.0" in str(info.value)
    assert config_digest(sim) == before


def test_older_version_migrates(sim, tmp_path):
    with start(tmp_path, "older", "3.9.4") as older, driver(older) as d:
        artifact = save(tmp_path, d.backup(), "old.zip")
    assert artifact.data.manifest.format == 1
    with driver(sim) as d:
        plan = d.check_restore(artifact)
        assert plan.verdict.path == (17, 18, 20)
        report = d.restore(plan)
    assert report.verdict == "migrate" and report.migration_path == [17, 18, 20]


def test_a_software_update_through_the_control_plane_restarts_the_server(tmp_path):
    with start(tmp_path, version="4.0.2") as proc, driver(proc) as d:
        info = d.identify()
        d.apply_settings(TARGET.distinctive_settings(info, 3))
        first = save(tmp_path, d.backup(), "first.zip")
        logins = d._auth.logins
        with SimControl(proc.control) as ctl:
            answer = ctl.set_firmware("4.2.0")
            assert answer["restarted"] and (answer["previous"], answer["config_schema"]) == ("4.0.2", 20)
            with pytest.raises(LinkError, match="HTTP 400: NeuroomNet cannot be downgraded"):
                ctl.request("POST", "/upgrade", {"version": "4.0.2"})
        after = d.identify()
        assert (after.firmware, after.details["config_schema"]) == ("4.2.0", 20)
        assert after.details["instance_id"] == answer["instance_id"] != info.details["instance_id"]
        again = save(tmp_path, d.backup(), "again.zip")
        assert d._auth.logins == logins + 1  # the session ended with the restart: logged in again
    a, b = TARGET.fields(first), TARGET.fields(again)
    assert b["source.software_version"] == "4.2.0"
    for key in ("config.system_setting.site_name.value", "config.component.1.address", "summary_digest"):
        assert b[key] == a[key], key


def test_another_servers_backup_needs_force(sim, tmp_path):
    other_state = tmp_path / "other"
    pw = tmp_path / "pw2"
    pw.write_text(PASSWORD)
    with start_simulator(SimOptions(target="neuroomnet", state=other_state, firmware="4.2.0",
                                    device_id="srv-00000002", username="qa", password_file=pw)) as other:
        with driver(other) as d:
            artifact = save(tmp_path, d.backup(), "other.zip")
    with driver(sim) as d:
        with pytest.raises(Refused, match="server IDs differ"):
            d.check_restore(artifact)
        report = d.restore(d.check_restore(artifact, force=True))
        assert d.identify().device_id == SID and any("mismatch" in n for n in report.notes)


def test_works_without_the_control_plane_and_refuses_bad_logins(tmp_path):
    with start(tmp_path, control=False) as proc:
        assert proc.control is None
        assert httpx.get(proc.address + "/_sim/state").status_code == 404
        with driver(proc) as d:
            assert save(tmp_path, d.backup(), "b.zip").device_id == SID
        with NeuroomNetDriver(proc.address, username="qa", password="wrong") as d, pytest.raises(Refused):
            d.backup()
        with NeuroomNetDriver(proc.address) as d, pytest.raises(BadInput, match="username"):
            d.backup()
