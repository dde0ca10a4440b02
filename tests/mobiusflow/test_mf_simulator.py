"""The simulated node's API over real HTTP: auth of both generations, backup download, the upload ->
information -> confirm -> reboot flow, refusals with the spec's codes, hub IDs in paths."""

from __future__ import annotations

import hashlib
import io
import re
import time
import zipfile
from typing import Any

import httpx
import pytest
from conftest import PASSWORD, USER

from harness.targets.mobiusflow.archive import read_backup
from harness.targets.mobiusflow.corpus import DAMAGES

V1 = "/api/v1/mobius/node"


def _client(fields: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=fields["address"], trust_env=False, timeout=10)


def _login_v3(c: httpx.Client, password: str = PASSWORD) -> dict[str, str]:
    r = c.post("/api/v3/auth/login", json={"username": USER, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['sessionToken']}"}


def _login_v1(c: httpx.Client) -> tuple[dict[str, str], str]:
    doc = c.post("/api/v1/auth/login", json={"username": USER, "password": PASSWORD}).json()
    assert doc["tokenType"] == "Bearer" and doc["expiresIn"] == 600
    return {"Authorization": f"Bearer {doc['accessToken']}"}, doc["refreshToken"]


def _wait_running(c: httpx.Client, old_boot: str, path: str, login) -> dict[str, Any]:
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            r = c.get(path, headers=login())
            if r.status_code == 200 and r.json()["bootId"] != old_boot and r.json()["state"] == "running":
                return r.json()
        except (httpx.TransportError, AssertionError):
            pass
        time.sleep(0.05)
    raise AssertionError("the node did not come back")


def test_json_line(make_sim) -> None:
    sim, fields = make_sim("3021")
    assert fields["device_id"] == "00A1F3" and fields["firmware"] == "3021" and fields["user"] == USER
    assert PASSWORD not in str(fields) and fields["control"].endswith("/_sim")


def test_v3_login_backup_and_headers(make_sim) -> None:
    _sim, fields = make_sim("3021")
    with _client(fields) as c:
        assert c.post("/api/v3/auth/login", json={"username": USER, "password": "nope"}).json()["code"] == \
            "invalid_credentials"
        auth = _login_v3(c)
        # the vendor's collection sends a body with this GET: accepted and ignored
        r = c.request("GET", "/api/v3/node/backupfull/00a1f3", params={"name": "example backup!"}, headers=auth,
                      content=b"some text")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        name = re.fullmatch(r'attachment; filename="(.+)"', r.headers["content-disposition"]).group(1)
        assert re.fullmatch(r"example-backup_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.zip", name)
        assert r.headers["x-backup-sha256"] == hashlib.sha256(r.content).hexdigest()
        assert int(r.headers["content-length"]) == len(r.content)
        archive = read_backup(r.content)
        assert archive.manifest.file_name == name and archive.manifest.kind == "full"
        assert set(archive.content.values) == {"020", "021", "022"}
        # config-only form: no values
        r = c.get("/api/v3/node/backup/00A1F3", headers=auth)
        assert not read_backup(r.content).content.values
        # the other generation's paths do not exist here
        assert c.get(f"{V1}/info", headers=auth).status_code == 404


def test_hub_ids_in_paths(make_sim) -> None:
    _sim, fields = make_sim("3021")
    with _client(fields) as c:
        auth = _login_v3(c)
        assert c.get("/api/v3/node/info/00a1f3", headers=auth).json()["hubId"] == "00A1F3"
        bad = c.get("/api/v3/node/info/00A1F", headers=auth)
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_hub_id"
        other = c.get("/api/v3/node/info/000001", headers=auth)
        assert other.status_code == 404 and other.json()["code"] == "hub_not_found"
        assert other.json()["message"] == "This node is hub 00A1F3. There is no hub 000001 on this node."


def test_token_expiry_and_validate_session(make_sim) -> None:
    _sim, fields = make_sim("3021")
    with _client(fields) as c:
        c.post(fields["control"] + "/auth", json={"token_ttl": 0.3})
        auth = _login_v3(c)
        assert c.get("/api/v3/node/info/00A1F3", headers=auth).status_code == 200
        time.sleep(0.35)
        r = c.get("/api/v3/node/info/00A1F3", headers=auth)
        assert r.status_code == 401 and r.json()["code"] == "token_expired"
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        c.post(fields["control"] + "/auth", json={"token_ttl": 600})
        auth = _login_v3(c)
        token = auth["Authorization"].split()[1]
        renewed = c.post("/api/v3/auth/validate-session", json={"sessionToken": token}).json()
        assert renewed["valid"] is True and renewed["sessionToken"] != token
        new = {"Authorization": f"Bearer {renewed['sessionToken']}"}
        assert c.post("/api/v3/auth/logout", headers=new).status_code == 204
        gone = c.post("/api/v3/auth/validate-session", json={"sessionToken": renewed["sessionToken"]})
        assert gone.status_code == 401 and gone.json()["code"] == "session_expired"


def test_v1_refresh_rotation_and_reuse(make_sim) -> None:
    _sim, fields = make_sim("1.19.1")
    with _client(fields) as c:
        auth, refresh = _login_v1(c)
        assert c.get(f"{V1}/info", headers=auth).json()["version"] == "1.19.1"
        doc = c.post("/api/v1/auth/refresh", json={"refreshToken": refresh}).json()
        new_auth = {"Authorization": f"Bearer {doc['accessToken']}"}
        assert c.get(f"{V1}/info", headers=new_auth).status_code == 200
        reused = c.post("/api/v1/auth/refresh", json={"refreshToken": refresh})
        assert reused.status_code == 401 and reused.json()["code"] == "refresh_token_reused"
        assert c.get(f"{V1}/info", headers=new_auth).status_code == 401  # the family is revoked
        r = c.get(f"{V1}/backup", params={"name": "nightly"}, headers=_login_v1(c)[0])
        names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
        assert read_backup(r.content).manifest.format == "1.1" and not any(n.startswith("values/") for n in names)


def test_backup_flushes_a_value_written_just_before(make_sim) -> None:
    """M4: a value written 1 s before the backup (well inside the 5-minute interval) is in the MPV."""
    _sim, fields = make_sim("3021")
    with _client(fields) as c:
        auth = _login_v3(c)
        r = c.patch("/api/v3/object/resource/00A1F3/020/0028/0001/01", json={"value": 42.5}, headers=auth)
        assert r.json()["value"] == 42.5
        r = c.patch("/api/v3/object/resource/00A1F3/020/0028/0001/01", json={"value": 50.0, "priority": 3},
                    headers=auth)
        assert r.json()["value"] == 50.0 and r.json()["plainValue"] == 42.5
        archive = read_backup(c.get("/api/v3/node/backupfull/00A1F3", headers=auth).content)
        record = next(r for r in archive.content.values["020"].records if r.uri == "0028/0001/01")
        assert record.value == 42.5 and record.slots == {3: 50.0}


def test_upload_information_and_restore_with_reboot(make_sim) -> None:
    sim, fields = make_sim("3021")
    with _client(fields) as c:
        auth = _login_v3(c)
        backup = c.get("/api/v3/node/backupfull/00A1F3", params={"name": "b"}, headers=auth)
        c.patch("/api/v3/node/config/00A1F3", json={"nodeName": "changed"}, headers=auth)
        before = c.get("/api/v3/node/info/00A1F3", headers=auth).json()
        assert c.post("/api/v3/node/restore/upload/00A1F3", content=backup.content, headers=auth).status_code == 415
        up = c.post("/api/v3/node/restore/upload/00A1F3", content=backup.content,
                    headers={**auth, "Content-Type": "application/zip"})
        assert up.status_code == 201
        info = up.json()
        assert info["verdict"] == "as_is" and info["restorable"] is True and info["refusal"] is None
        assert info["backup"]["source"]["hubId"] == "00A1F3" and info["sha256"] == \
            hashlib.sha256(backup.content).hexdigest()
        uid = info["uploadId"]
        assert c.get(f"/api/v3/node/restore/upload/00A1F3/{uid}", headers=auth).json()["uploadId"] == uid
        no = c.post(f"/api/v3/node/restore/00A1F3/{uid}", json={}, headers=auth)
        assert no.status_code == 428 and no.json()["code"] == "confirmation_required"
        assert sim.node.state == "running"
        go = c.post(f"/api/v3/node/restore/00A1F3/{uid}", json={"confirm": True}, headers=auth)
        assert go.status_code == 202
        assert "The restoration process has started" in go.json()["message"]
        busy = c.get("/api/v3/node/backupfull/00A1F3", headers=auth)
        assert busy.status_code in (409, 401) or busy.status_code >= 500  # staged, or already going down
        after = _wait_running(c, before["bootId"], "/api/v3/node/info/00A1F3", lambda: _login_v3(c))
        auth = _login_v3(c)
        assert after["configDigest"] != before["configDigest"] and after["nodeName"] == "plant-room-2"
        job = c.get(f"/api/v3/node/jobs/00A1F3/{go.json()['jobId']}", headers=auth).json()
        assert job["state"] == "succeeded" and job["result"]["verdict"] == "as_is"
        log = c.get(f"/api/v3/node/jobs/00A1F3/{go.json()['jobId']}/log", headers=auth)
        lines = log.text.splitlines()
        assert int(log.headers["x-log-lines"]) == len(lines)
        assert any("Restore instruction consumed" in line for line in lines)
        assert lines[-1].endswith("Restore complete")
        after_log = c.get(f"/api/v3/node/jobs/00A1F3/{go.json()['jobId']}/log", params={"after": len(lines) - 1},
                          headers=auth)
        assert after_log.text.splitlines() == lines[-1:]


@pytest.mark.parametrize("damage", ["zip-slip entry", "encrypted entry", "zip bomb", "another target's ZIP",
                                    "tampered configuration file", "JSON file"])
def test_upload_refusals(make_sim, damage: str) -> None:
    sim, fields = make_sim("3021")
    maker, code = DAMAGES[damage]
    storage = sim.node.storage_sha256()
    with _client(fields) as c:
        auth = _login_v3(c)
        good = c.get("/api/v3/node/backupfull/00A1F3", headers=auth).content
        r = c.post("/api/v3/node/restore/upload/00A1F3", content=maker(good),
                   headers={**auth, "Content-Type": "application/zip"})
        assert r.status_code == 422 and r.json()["code"] == code
    assert sim.node.storage_sha256() == storage


def test_incompatible_backup_gets_information_then_422(make_sim) -> None:
    _new, new_fields = make_sim("3021")
    old, old_fields = make_sim("3004")
    with _client(new_fields) as c:
        backup = c.get("/api/v3/node/backupfull/00A1F3", headers=_login_v3(c)).content
    with _client(old_fields) as c:
        auth = _login_v3(c)
        info = c.post("/api/v3/node/restore/upload/00A1F3", content=backup,
                      headers={**auth, "Content-Type": "application/zip"}).json()
        assert info["restorable"] is False and info["refusal"]["code"] == "backup_too_new"
        r = c.post(f"/api/v3/node/restore/00A1F3/{info['uploadId']}", json={"confirm": True}, headers=auth)
        assert r.status_code == 422 and r.json()["code"] == "backup_too_new" and "3015" in r.json()["message"]
    assert old.node.state == "running"


def test_one_pending_upload_replaces_the_other(make_sim) -> None:
    _sim, fields = make_sim("3021")
    with _client(fields) as c:
        auth = _login_v3(c)
        good = c.get("/api/v3/node/backupfull/00A1F3", headers=auth).content
        headers = {**auth, "Content-Type": "application/zip"}
        first = c.post("/api/v3/node/restore/upload/00A1F3", content=good, headers=headers).json()["uploadId"]
        c.post("/api/v3/node/restore/upload/00A1F3", content=good, headers=headers)
        r = c.post(f"/api/v3/node/restore/00A1F3/{first}", json={"confirm": True}, headers=auth)
        assert r.status_code == 404 and r.json()["code"] == "upload_not_found"


def test_job_form_backup(make_sim) -> None:
    _sim, fields = make_sim("3021")
    with _client(fields) as c:
        auth = _login_v3(c)
        started = c.post("/api/v3/node/backupfull/00A1F3", json={"name": "example-backup", "kind": "config"},
                         headers=auth)
        assert started.status_code == 202
        ids = started.json()
        job = c.get(f"/api/v3/node/jobs/00A1F3/{ids['jobId']}", headers=auth).json()
        assert job["state"] == "succeeded" and job["result"]["backupId"] == ids["backupId"]
        z = c.get(f"/api/v3/node/backupfull/00A1F3/{ids['backupId']}/zip", headers=auth)
        assert z.status_code == 200 and hashlib.sha256(z.content).hexdigest() == job["result"]["sha256"]
        assert c.delete(f"/api/v3/node/backupfull/00A1F3/{ids['backupId']}", headers=auth).status_code == 204
        assert c.get(f"/api/v3/node/backupfull/00A1F3/{ids['backupId']}/zip", headers=auth).json()["code"] == \
            "backup_not_found"


def test_reboot_phases_502_then_503(make_sim) -> None:
    """Connection refused, then nginx's HTML 502, then the engine's JSON 503, then up with a new boot."""
    sim, fields = make_sim("3021")
    with _client(fields) as c:
        old_boot = c.get("/api/v3/node/info/00A1F3", headers=_login_v3(c)).json()["bootId"]
        c.post(fields["control"] + "/faults", json={"kind": "nginx_502_phase", "seconds": 0.5})
        c.post(fields["control"] + "/reboot")
        seen: list[str] = []
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                r = c.get("/api/v3/node/info/00A1F3")
            except httpx.TransportError:
                seen.append("refused")
                time.sleep(0.01)
                continue
            if r.status_code == 502:
                assert r.headers["content-type"].startswith("text/html")
            if r.status_code == 401:  # the engine is up (maybe still the old boot): log in and look
                try:
                    boot = c.get("/api/v3/node/info/00A1F3", headers=_login_v3(c)).json()["bootId"]
                except (httpx.TransportError, AssertionError, ValueError, KeyError):  # went down meanwhile
                    continue
                if boot != old_boot:
                    seen.append("up")
                    break
            else:
                seen.append(str(r.status_code))
            time.sleep(0.01)
    assert seen[-1] == "up" and "refused" in seen and "502" in seen, seen
    assert seen.index("refused") < seen.index("502") < len(seen) - 1
    assert sim.unavailable_served.get(502, 0) > 0


def test_no_control_plane(make_sim) -> None:
    _sim, fields = make_sim("3021", control=False)
    assert fields["control"] is None
    with _client(fields) as c:
        assert c.get("/_sim/state").status_code == 404
