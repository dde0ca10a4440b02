"""The MobiusFlow driver against simulated nodes over real HTTP: round trips on every version line, token
expiry mid-run, the reboot, rollbacks, refusals, hub rewrites, TLS pinning, and no control plane."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import PASSWORD, USER

from harness.compare import diff
from harness.errors import BadInput, DeviceError, LinkError, Refused
from harness.targets.base import Artifact, Backup
from harness.targets.mobiusflow import TARGET


def _load(backup: Backup, keep: Path) -> Artifact:
    assert backup.path is not None
    dest = keep / f"{len(list(keep.iterdir()))}-{backup.path.name}"  # two backups in one second share a name
    shutil.move(str(backup.path), dest)
    shutil.rmtree(backup.path.parent, ignore_errors=True)
    return TARGET.load_artifact(dest)


def _round_trip(driver, keep: Path) -> tuple[Artifact, Artifact, object]:
    info = driver.identify()
    driver.apply_settings(TARGET.distinctive_settings(info, 1))
    first = _load(driver.backup(), keep)
    driver.apply_settings(TARGET.distinctive_settings(info, 2))
    changed = _load(driver.backup(), keep)
    assert not diff(TARGET.fields(first), TARGET.fields(changed), TARGET.compare_rules).equal
    report = driver.restore(driver.check_restore(first))
    again = _load(driver.backup(), keep)
    return first, again, report


@pytest.mark.parametrize("version", ["3021", "3004", "1.19.1", "1.16.4"])
def test_round_trip(make_sim, make_driver, tmp_path: Path, version: str) -> None:
    sim, fields = make_sim(version)
    driver = make_driver(fields)
    first, again, report = _round_trip(driver, tmp_path)
    result = diff(TARGET.fields(first), TARGET.fields(again), TARGET.compare_rules)
    assert result.equal, [str(d) for d in result.differences]
    assert result.compared > 100
    assert "verdict: as is" in report.notes and report.backups[0].reason == "before-restore"
    assert "node.nodeName" in report.restored and "users" in report.not_carried
    assert sim.node.deploy["pskGeneration"] == 2  # the restore reboot regenerated the PSKs


def test_without_control_plane(make_sim, make_driver, tmp_path: Path) -> None:
    _sim, fields = make_sim("3021", control=False)
    first, again, _ = _round_trip(make_driver(fields), tmp_path)
    assert diff(TARGET.fields(first), TARGET.fields(again), TARGET.compare_rules).equal


def test_token_expiring_mid_restore_is_recovered(make_sim, make_driver, tmp_path: Path) -> None:
    sim, fields = make_sim("3021")
    driver = make_driver(fields)
    info = driver.identify()
    driver.apply_settings(TARGET.distinctive_settings(info, 1))
    first = _load(driver.backup(), tmp_path)
    driver.apply_settings(TARGET.distinctive_settings(info, 2))
    sim.faults.set("token_ttl", seconds=0.4, announce=False)
    sim.faults_changed()
    sim.faults.set("slow_body", rate=10_000.0, path="/api/v3/node/backupfull")  # the safety backup takes ~0.6 s
    driver = make_driver(fields)  # logs in afresh: its token lives 0.4 s but is announced as 600 s
    driver.restore(driver.check_restore(first))
    assert sim.rejections.get("token_expired", 0) >= 1
    sim.faults.clear()
    sim.faults_changed()
    again = _load(driver.backup(), tmp_path)
    assert diff(TARGET.fields(first), TARGET.fields(again), TARGET.compare_rules).equal


def test_announced_expiry_is_refreshed_ahead(make_sim, make_driver) -> None:
    """M1: the token is refreshed before the next call; no 401 reaches the node's counters."""
    sim, fields = make_sim("1.19.1")
    sim.faults.set("token_ttl", seconds=30.0, announce=True)  # inside the 60 s margin: refresh every call
    sim.faults_changed()
    driver = make_driver(fields)
    for _ in range(3):
        driver.identify()
    assert driver.auth.logins == 1 and driver.auth.refreshes >= 3
    # (the one token_invalid is the driver's unauthenticated probe for the API generation)
    assert "token_expired" not in sim.rejections and sim.rejections.get("token_invalid", 0) <= 1


def test_rollback_is_reported_and_config_is_back(make_sim, make_driver, tmp_path: Path) -> None:
    sim, fields = make_sim("3021")
    driver = make_driver(fields)
    first = _load(driver.backup(), tmp_path)
    driver.apply_settings({"node.nodeName": "before-the-failed-restore"})
    before = sim.node.info()["configDigest"]
    sim.faults.set("apply_fails", step="Writing node configuration")
    with pytest.raises(DeviceError, match="restore rolled back: injected failure.*active again"):
        driver.restore(driver.check_restore(first))
    assert sim.node.info()["configDigest"] == before and sim.node.state == "running"


def test_crash_during_apply_recovers_without_a_boot_loop(make_sim, make_driver, tmp_path: Path) -> None:
    sim, fields = make_sim("3021")
    driver = make_driver(fields)
    first = _load(driver.backup(), tmp_path)
    driver.apply_settings({"node.nodeName": "before-the-crash"})
    before = sim.node.info()["configDigest"]
    sim.faults.set("crash_during_apply")
    with pytest.raises(DeviceError, match="apply_interrupted"):
        driver.restore(driver.check_restore(first))
    assert sim.node.info()["configDigest"] == before
    assert not (sim.node.restore_dir / "instruction.json").exists()
    assert not (sim.node.restore_dir / "applying.json").exists()


@pytest.mark.parametrize("source,node,code", [("3021", "1.19.1", "backup_generation_unsupported"),
                                              ("3021", "3004", "backup_too_new"),
                                              ("1.19.1", "1.16.4", "backup_too_new")])
def test_incompatible_versions_are_refused_before_anything(make_sim, make_driver, tmp_path: Path,
                                                           source: str, node: str, code: str) -> None:
    _src, src_fields = make_sim(source)
    artifact = _load(make_driver(src_fields).backup(), tmp_path)
    dst, dst_fields = make_sim(node)
    storage = dst.node.storage_sha256()
    jobs_before = sorted(dst.node.jobs.folder.glob("*")) if dst.node.jobs.folder.exists() else []
    with pytest.raises(Refused) as err:
        make_driver(dst_fields).check_restore(artifact)
    assert code in str(err.value) and err.value.exit_code == 2 and "Nothing was changed" in str(err.value)
    assert dst.node.storage_sha256() == storage
    assert (sorted(dst.node.jobs.folder.glob("*")) if dst.node.jobs.folder.exists() else []) == jobs_before


def test_other_hub_migrates_with_a_rewrite(make_sim, make_driver, tmp_path: Path) -> None:
    _src, src_fields = make_sim("3021", hub="000001")
    artifact = _load(make_driver(src_fields).backup(), tmp_path)
    dst, dst_fields = make_sim("3021")
    driver = make_driver(dst_fields)
    plan = driver.check_restore(artifact)
    assert plan.verdict.kind == "migrate"
    report = driver.restore(plan)
    assert "verdict: migrate" in report.notes
    assert dst.node.hub_id == "00A1F3"
    assert "000001" not in json.dumps(dst.node.config_document())
    assert dst.node.info()["configDigest"] == artifact.data.content.config_digest("000001")


def test_1x_backup_migrates_onto_v3_with_default_values(make_sim, make_driver, tmp_path: Path) -> None:
    _src, src_fields = make_sim("1.19.1")
    artifact = _load(make_driver(src_fields).backup(), tmp_path)
    dst, dst_fields = make_sim("3021")
    driver = make_driver(dst_fields)
    driver.restore(driver.check_restore(artifact))
    assert dst.node.info()["summaryDigest"] == artifact.data.content.summary_digest("00A1F3")
    value = dst.node.read_resource("020", "0028", "0001", "01")
    assert value["value"] == 0.0  # the resource default: a 1.x backup carries no values


def test_reboot_that_does_not_end_in_time(make_sim, make_driver, tmp_path: Path) -> None:
    sim, fields = make_sim("3021")
    driver = make_driver(fields, reboot_deadline_s=0.3)
    first = _load(driver.backup(), tmp_path)
    sim.faults.set("nginx_502_phase", seconds=1.5)
    with pytest.raises(LinkError, match="did not come back within 0.3 s"):
        driver.restore(driver.check_restore(first))


def test_credentials_problems(make_sim, make_driver) -> None:
    _sim, fields = make_sim("3021")
    with pytest.raises(BadInput, match="login refused"):
        make_driver(fields, password="wrong").identify()
    with pytest.raises(BadInput, match="needs credentials"):
        make_driver(fields, username=None, password=None).identify()


def test_tls_pinned_certificate(make_sim, make_driver) -> None:
    _sim, fields = make_sim("3021", tls=True)
    assert fields["address"].startswith("https://")
    assert make_driver(fields, verify=fields["cert"]).identify().device_id == "00A1F3"
    with pytest.raises(LinkError, match="certificate"):
        make_driver(fields, verify=True).identify()


def test_lowercase_hub_and_discovery(make_sim, make_driver) -> None:
    _sim, fields = make_sim("3021", hub="0a0b0c")
    driver = make_driver(fields)
    assert driver.identify().device_id == "0A0B0C"
    with httpx.Client(base_url=fields["address"], trust_env=False) as c:
        token = c.post("/api/v3/auth/login", json={"username": USER, "password": PASSWORD}).json()["sessionToken"]
        assert c.get("/api/v3/node/info/0a0b0c", headers={"Authorization": f"Bearer {token}"}).status_code == 200
