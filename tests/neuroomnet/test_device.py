"""The simulated server's state machine on real SQLite files: restore points, local copies, import, apply."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import pytest
from nn_helpers import make_db, rewrite_zip

from harness.errors import BadInput
from harness.targets.neuroomnet.artifact import load_zip
from harness.targets.neuroomnet.schema import APP_ID_LIVE, APP_ID_SNAPSHOT, check_snapshot_header
from harness.ziparchive import write_zip
from simulators.neuroomnet.device import NeuroomNetServer, ServerError

pytestmark = pytest.mark.target_neuroomnet


def server(tmp_path: Path, name: str = "a", version: str = "4.2.0", sid: str = "srv-0000000a") -> NeuroomNetServer:
    s = NeuroomNetServer(tmp_path / name, version=version, server_id=sid, admin="qa", admin_password="pw")
    s.boot()
    return s


def finish(s: NeuroomNetServer, op: dict) -> dict:
    s.wait_idle()
    return s.operation(op["id"])


def create(s: NeuroomNetServer, label: str = "baseline") -> str:
    op = s.create_restore_point(label)
    assert op["state"] == "running" and [o["id"] for o in s.operations()["running"]] == [op["id"]]
    done = finish(s, op)
    assert done["state"] == "succeeded", done["error"]
    assert done["id"] in [o["id"] for o in s.operations()["completed"]]
    return done["result"]["restore_point_id"]


def export_zip(s: NeuroomNetServer, rp_id: str, dest: Path) -> Path:
    done = finish(s, s.export(rp_id))
    assert done["state"] == "succeeded", done["error"]
    dest.write_bytes(b"".join(write_zip(s.download_members(done["result"]["local_copy"]))))
    return dest


def upload_import(s: NeuroomNetServer, zip_path: Path) -> dict:
    tmp = s.new_upload_path()
    tmp.write_bytes(zip_path.read_bytes())
    item = s.accept_upload(tmp, None)
    return finish(s, s.import_copy(item["name"]))


def test_create_lists_logs_and_stores_a_self_contained_snapshot(tmp_path):
    s = server(tmp_path)
    rp_id = create(s)
    op = s.operations()["completed"][0]
    lines, total = s.log_lines(op["id"])
    assert total == 7 and lines[-1].split(" ", 2)[2].startswith(f"Stored restore point {rp_id}")
    item = s.restore_points()[0]
    assert item["id"] == rp_id and item["origin"] == "created" and item["compatibility"]["verdict"] == "as_is"
    zip_path = export_zip(s, rp_id, tmp_path / "a.zip")
    data = load_zip(zip_path)
    assert data.manifest.restore_point_id == rp_id and data.config_digest == item["config_digest"]
    assert data.header.application_id == APP_ID_SNAPSHOT and data.header.write_version == 1
    with zipfile.ZipFile(zip_path) as z:
        snap = tmp_path / "snap.sqlite"
        snap.write_bytes(z.read("config.sqlite"))
    tables = {r[0] for r in sqlite3.connect(snap).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not tables & {"restore_point", "operation", "server_meta"}
    live = (tmp_path / "a" / "neuroomnet.db").read_bytes()[:100]
    assert int.from_bytes(live[68:72], "big") == APP_ID_LIVE and live[18:20] == b"\x02\x02"


def test_dismiss_view_once_and_busy(tmp_path):
    s = server(tmp_path)
    op = s.create_restore_point("one")
    with pytest.raises(ServerError) as busy:
        s.create_restore_point("two")
    assert busy.value.status == 409 and busy.value.code == "operation_running"
    with pytest.raises(ServerError) as running:
        s.dismiss(op["id"])
    assert running.value.code == "operation_running"
    finish(s, op)
    s.log_view_once = True
    s.log_lines(op["id"])
    with pytest.raises(ServerError) as gone:
        s.log_lines(op["id"])
    assert gone.value.status == 410
    s.dismiss(op["id"])
    assert s.operations()["completed"] == [] and len(s.restore_points()) == 1


def test_local_copies_download_identically_and_import_idempotently(tmp_path):
    s = server(tmp_path)
    rp_id = create(s)
    a = export_zip(s, rp_id, tmp_path / "a.zip")
    name = s.local_copies()[0]["name"]
    assert name.startswith("RP_") and name.endswith("_baseline")
    assert not list(s.local_copy_root.glob("*.tmp"))
    b = tmp_path / "b.zip"
    b.write_bytes(b"".join(write_zip(s.download_members(name))))
    assert a.read_bytes() == b.read_bytes()
    again = upload_import(s, a)
    assert again["result"] == {"restore_point_id": rp_id, "already_present": True}
    other = server(tmp_path, "b", sid="srv-0000000b")
    moved = upload_import(other, a)
    assert moved["state"] == "succeeded" and not moved["result"]["already_present"]
    item = other.restore_point(rp_id)
    assert item["origin"] == "imported"
    assert (item["config_digest"], item["summary_digest"]) == (s.restore_point(rp_id)["config_digest"],
                                                               s.restore_point(rp_id)["summary_digest"])
    wrapped = rewrite_zip(a, tmp_path / "w.zip", prefix="MyFolder/")
    assert upload_import(other, wrapped)["result"]["already_present"]


def test_hostile_uploads_write_nothing_outside_the_root(tmp_path):
    s = server(tmp_path)
    a = export_zip(s, create(s), tmp_path / "a.zip")
    cases = {"unsafe_path": rewrite_zip(a, tmp_path / "e.zip", add={"../evil.txt": b"x"}),
             "manifest_missing": rewrite_zip(a, tmp_path / "m.zip", drop=("restorepoint.json",)),
             "layout_invalid": rewrite_zip(a, tmp_path / "n.zip", prefix="a/b/")}
    for code, path in cases.items():
        tmp = s.new_upload_path()
        tmp.write_bytes(path.read_bytes())
        with pytest.raises(ServerError) as info:
            s.accept_upload(tmp, None)
        assert info.value.code == code and info.value.status == 422
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert len(s.local_copies()) == 1 and not list(s.local_copy_root.glob(".upload-*"))


def test_server_side_import_checks(tmp_path):
    s = server(tmp_path)
    rp_id = create(s)
    finish(s, s.export(rp_id))
    folder = Path(s.local_copies()[0]["path"])

    def copy_as(name: str) -> Path:
        import shutil
        dest = folder.parent / name
        shutil.copytree(folder, dest)
        return dest

    tampered = copy_as("tampered")
    data = bytearray((tampered / "config.sqlite").read_bytes())
    data[3000] ^= 1
    (tampered / "config.sqlite").write_bytes(data)
    live = copy_as("live")
    make_db(tmp_path / "live.db", app_id=APP_ID_LIVE)
    (live / "config.sqlite").write_bytes((tmp_path / "live.db").read_bytes())
    _fix_manifest(live)
    wal = copy_as("wal")
    (wal / "config.sqlite-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(28))
    for name, code in (("tampered", "integrity_failed"), ("live", "not_a_snapshot"),
                       ("wal", "snapshot_not_self_contained")):
        done = finish(s, s.import_copy(name))
        assert (done["state"], done["error"]["code"]) == ("failed", code), done
    assert [c["name"] for c in s.local_copies() if c["state"] == "valid"]


def _fix_manifest(folder: Path) -> None:
    import hashlib
    doc = json.loads((folder / "restorepoint.json").read_text())
    data = (folder / "config.sqlite").read_bytes()
    doc["files"][0].update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "restorepoint.json").write_text(json.dumps(doc))


def test_apply_needs_confirmation_and_a_current_safety_point(tmp_path):
    s = server(tmp_path)
    rp_id = create(s)
    changed = s.meta("config_changed_at")
    with pytest.raises(ServerError) as info:
        s.apply(rp_id, {})
    assert info.value.status == 428 and s.meta("config_changed_at") == changed
    s.config_update("system_setting", "language", {"value": "fr"})
    with pytest.raises(ServerError) as stale:
        s.apply(rp_id, {"confirm": True, "safety_restore_point_id": rp_id})
    assert stale.value.code == "safety_restore_point_stale"
    safety = create(s, "safety")
    answer = s.apply(rp_id, {"confirm": True, "safety_restore_point_id": safety})
    assert answer["verdict"] == "as_is" and answer["warnings"] == []
    done = finish(s, answer["operation"])
    assert done["state"] == "succeeded" and done["result"]["summary_match"]
    assert s.config_rows("system_setting")[1] == {"key": "language", "value": "en"}
    assert {rp["id"] for rp in s.restore_points()} == {rp_id, safety}  # server-local data survives an apply


def test_cross_version_migrate_refuse_and_too_old(tmp_path):
    old = server(tmp_path, "old", "3.9.4")
    old_zip = export_zip(old, create(old), tmp_path / "old.zip")
    assert load_zip(old_zip).manifest.format == 1
    new = server(tmp_path, "new", "5.0.0", "srv-0000000c")
    new_zip = export_zip(new, create(new), tmp_path / "new.zip")
    mid = server(tmp_path, "mid", "4.2.0", "srv-0000000d")
    imported = upload_import(mid, old_zip)
    rp_old = imported["result"]["restore_point_id"]
    assert mid.restore_point(rp_old)["format"] == 2  # converted on import
    mid.config_update("component", "5", {"address": "10.55.0.5"})
    before = mid.current_summary()
    answer = mid.apply(rp_old, {"confirm": True})
    assert (answer["verdict"], answer["migration_path"], answer["warnings"]) == ("migrate", [17, 18, 20],
                                                                                ["no_current_restore_point"])
    done = finish(mid, answer["operation"])
    assert done["state"] == "succeeded", done["error"]
    log = "\n".join(mid.log_lines(done["id"])[0])
    assert "Migrating schema 17 -> 18" in log and "Migrating schema 18 -> 20" in log
    assert mid.current_summary()["summary_digest"] == mid.restore_point(rp_old)["summary_digest"]
    assert mid.current_summary()["summary_digest"] != before["summary_digest"]
    rp_new = upload_import(mid, new_zip)["result"]["restore_point_id"]
    state = mid.current_summary()["config_digest"]
    with pytest.raises(ServerError) as too_new:
        mid.apply(rp_new, {"confirm": True})
    assert too_new.value.code == "restore_point_too_new" and "Update this server to 5.0" in too_new.value.message
    assert mid.current_summary()["config_digest"] == state
    too_old = upload_import(new, old_zip)
    assert too_old["error"]["code"] == "restore_point_too_old"


def test_a_software_update_migrates_in_place_forward_only(tmp_path):
    s = server(tmp_path, "u", "4.0.2")
    s.config_update("component", "5", {"address": "10.55.0.5"})
    before, changed_at, instance = s.current_summary(), s.meta("config_changed_at"), s.instance_id
    answer = s.update_software("4.2.0")
    assert answer == {"software_version": "4.2.0", "config_schema": 20, "previous": "4.0.2",
                      "instance_id": s.instance_id}
    assert s.instance_id != instance  # the server started again
    assert (s.system()["software_version"], s.schema()) == ("4.2.0", 20)
    assert "time_zone" in s.config_rows("schedule")[0]  # the 20 layout, rows kept
    assert next(r for r in s.config_rows("component") if r["id"] == 5)["address"] == "10.55.0.5"
    assert s.current_summary()["summary_digest"] == before["summary_digest"]  # §3.5: every step keeps it
    assert s.meta("config_changed_at") > changed_at  # the rows were rewritten: older safety points are stale
    with pytest.raises(BadInput, match="downgraded from 4.2.0 to 4.0.2"):
        s.update_software("4.0.2")
    op = s.create_restore_point("busy")
    with pytest.raises(ServerError) as busy:
        s.update_software("5.0.0")
    assert busy.value.code == "operation_running"
    assert finish(s, op)["state"] == "succeeded"
    assert (s.system()["software_version"], s.schema()) == ("4.2.0", 20)  # both refusals changed nothing
    s.close()
    # `sim run --firmware 5.0.0` on the same state directory: the new release's first start migrates it.
    again = server(tmp_path, "u", "5.0.0")
    assert (again.system()["software_version"], again.schema()) == ("5.0.0", 22)
    assert again.current_summary()["summary_digest"] == before["summary_digest"]
    old = server(tmp_path, "o", "3.9.4", "srv-0000000e")
    with pytest.raises(BadInput, match="Update it to 4.0 first"):
        old.update_software("5.0.0")
    assert old.schema() == 17


def test_power_cut_interrupts_running_operations(tmp_path):
    s = server(tmp_path)
    with s._tx() as c:
        c.execute("INSERT INTO operation (id, kind, state, title, created, started, params, seq) VALUES "
                  "('op-dead01', 'create_restore_point', 'running', 't', 'c', 'c', '{}', 1)")
    (s.local_copy_root / "RP_half.tmp").mkdir()
    s.conn.close()
    again = server(tmp_path)
    assert again.operation("op-dead01")["state"] == "interrupted"
    assert not (again.local_copy_root / "RP_half.tmp").exists()


def test_header_of_the_snapshot_passes_the_harness_check(tmp_path):
    s = server(tmp_path)
    rp_id = create(s)
    export_zip(s, rp_id, tmp_path / "a.zip")
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        data = z.read("config.sqlite")
    assert check_snapshot_header(data, len(data), expected_schema=20).freelist_count == 0  # VACUUMed
