"""NeuroomNet-only steps: server faults through the control plane, damaged restore-point ZIPs, cross-version
backups. Everything else comes from the shared step library (steps/common.py)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
import zipfile
from pathlib import Path

from pytest_bdd import given, parsers, then

from harness.errors import Refused
from harness.simctl import SimControl
from steps.common import Scenario, _backup


def _rezip(source: Path, dest: Path, *, replace: dict[str, bytes] | None = None,
           add: dict[str, bytes] | None = None, compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(dest, "w", compression) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, (replace or {}).get(info.filename, zin.read(info)))
        for name, data in (add or {}).items():
            zout.writestr(name, data)


def _with_snapshot(source: Path, dest: Path, snapshot: bytes) -> None:
    """Swap config.sqlite and update restorepoint.json to match, so only the snapshot itself is wrong."""
    with zipfile.ZipFile(source) as z:
        manifest = json.loads(z.read("restorepoint.json"))
    for entry in manifest["files"]:
        if entry["path"] == "config.sqlite":
            entry.update(size_bytes=len(snapshot), sha256=hashlib.sha256(snapshot).hexdigest())
    _rezip(source, dest, replace={"config.sqlite": snapshot, "restorepoint.json": json.dumps(manifest).encode()})


def _live_database(snapshot: bytes) -> bytes:
    """The same rows with the live server's application id: a live database passed off as a snapshot."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "live.db"
        path.write_bytes(snapshot)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA application_id = 1314016851")  # 0x4E524E53 "NRNS"
        conn.close()
        return path.read_bytes()


@given(parsers.re(r"the restore-point ZIP has (?P<damage>.+)"))
def damaged_zip(scenario: Scenario, damage: str) -> None:
    source = scenario.artifacts[-1]
    dest = source.parent / f"damaged-{source.name}"
    with zipfile.ZipFile(source) as z:
        snapshot = z.read("config.sqlite")
    if damage == "an entry whose path escapes the folder":
        _rezip(source, dest, add={"../evil.txt": b"written outside the local copy root"})
    elif damage == "a corrupted byte in config.sqlite":
        data = bytearray(source.read_bytes())
        start = data.index(b"SQLite format 3\x00")
        data[start + 2000] ^= 0x5A
        dest.write_bytes(bytes(data))
    elif damage == "another target's content":
        with zipfile.ZipFile(dest, "w") as z:
            z.writestr("node-backup/flows.json", b"[]")
            z.writestr("node-backup/backup-info.json", b'{"hub_id": "H-1"}')
    elif damage == "a live database as its snapshot":
        _with_snapshot(source, dest, _live_database(snapshot))
    elif damage == "a WAL file beside its snapshot":
        _rezip(source, dest, add={"config.sqlite-wal": b"\x37\x7f\x06\x82" + bytes(28)})
    elif damage == "an entry that inflates like a bomb":
        _rezip(source, dest, add={"assets/setup/bomb.png": bytes(50 << 20)}, compression=zipfile.ZIP_DEFLATED)
    else:
        raise AssertionError(f"unknown damage {damage!r}")
    scenario.edited = dest


@given(parsers.re(r"the server ends every session after (?P<count>\d+) more requests"))
def sessions_end(scenario: Scenario, count: str) -> None:
    SimControl(scenario.unit.control).set_fault("sessions_invalidated", after=int(count))


@then("the session fault has fired")
def session_fault_fired(scenario: Scenario) -> None:
    assert "sessions_invalidated" not in SimControl(scenario.unit.control).faults()


@given("the server restarts slowly")
def slow_restart(scenario: Scenario) -> None:
    SimControl(scenario.unit.control).set_fault("slow_restart", factor=6.0)


@then("the server restarted during the restore")
def restarted(scenario: Scenario) -> None:
    assert scenario.report is not None
    assert any("restarted" in note for note in scenario.report.notes), scenario.report.notes


@given(parsers.re(r"a backup of a neuroomnet server running (?P<version>[\w.\-]+) with the same ID"))
def backup_of_version(scenario: Scenario, unit_factory, version: str) -> None:
    other = unit_factory("neuroomnet", version, device_id=scenario.unit.device_id, role="other")
    scenario.other = other
    scenario.other_artifact = _backup(scenario, other)


@then("the restore is refused because the server is older than the restore point")
def refused_too_new(scenario: Scenario) -> None:
    assert isinstance(scenario.error, Refused), scenario.error
    assert "restore_point_too_new" in str(scenario.error) and "Update this server" in str(scenario.error)


@then("the restore is refused because the restore point is too old")
def refused_too_old(scenario: Scenario) -> None:
    assert isinstance(scenario.error, Refused), scenario.error
    assert "restore_point_too_old" in str(scenario.error) and "4.x server" in str(scenario.error)
