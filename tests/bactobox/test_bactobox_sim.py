"""The BactoBox simulator over real HTTP on loopback (served from a thread): the API of bactobox.md §2."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from bbtools import flip_byte, sim_thread

from harness.targets.bactobox.gmi import inspect_gmi, verify_gmi
from harness.targets.bactobox.schema import MEDIA_TYPE
from simulators.core.options import SimOptions


@pytest.fixture
def sim(tmp_path: Path):
    with sim_thread(tmp_path / "unit") as info:
        yield info


def api(info) -> httpx.Client:
    return httpx.Client(base_url=info["address"] + "/api/v1", timeout=20, trust_env=False)


def ctl(info, method: str, path: str, body=None):
    r = httpx.request(method, info["control"] + path, json=body, timeout=20, trust_env=False)
    assert r.status_code == 200, r.text
    return r.json()


def up(c: httpx.Client, timeout: float = 10) -> dict:
    end = time.monotonic() + timeout
    while True:
        try:
            r = c.get("/device")
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        assert time.monotonic() < end, "the unit did not come up"
        time.sleep(0.02)


def new_boot(c: httpx.Client, old: str, timeout: float = 10) -> dict:
    """The unit's /device once it answers 200 from a boot other than ``old``."""
    end = time.monotonic() + timeout
    while True:
        try:
            r = c.get("/device")
            if r.status_code == 200 and r.headers["x-boot-id"] != old:
                return r.json()
        except httpx.TransportError:
            pass
        assert time.monotonic() < end, "no new boot"
        time.sleep(0.02)


def wait_state(c: httpx.Client, op: str, states: set[str], timeout: float = 20) -> dict:
    end = time.monotonic() + timeout
    while True:
        body = c.get(f"/operations/{op}").json()
        if body["state"] in states:
            return body
        assert time.monotonic() < end, body
        time.sleep(0.02)


def backup_to(c: httpx.Client, dest: Path) -> tuple[dict, httpx.Headers]:
    r = c.post("/backups", json={})
    assert r.status_code == 202, r.text
    op = r.json()["operation"]["id"]
    assert r.headers["location"] == f"/api/v1/operations/{op}"
    wait_state(c, op, {"ready"})
    with c.stream("GET", f"/operations/{op}/artifact", headers={"Range": "bytes=100-"}) as resp:
        assert resp.status_code == 200  # Range ignored: a GMI is sent whole, once
        with open(dest, "wb") as f:
            for chunk in resp.iter_raw():
                f.write(chunk)
        headers = resp.headers
    return wait_state(c, op, {"succeeded", "failed"}), headers


def test_device_identity_and_headers(sim):
    with api(sim) as c:
        dev = up(c)
        r = c.get("/device")
        assert r.headers["x-device-id"] == "bb2241039" and r.headers["x-boot-id"] == dev["boot"]["boot_id"]
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        assert dev["software_version"] == "2.6.3" and dev["mode"] == "normal"
        assert dev["gmi"] == {"writes_format": 2, "reads_formats": [1, 2]}
        assert dev["boot"]["slots"] == {"system0": "2.6.3", "system1": "2.2.0"}
        assert dev["storage"] == {"disk_size_bytes": 32 << 20, "sector_size": 512, "layout": "L2"}


def test_backup_gives_a_valid_gmi_once(sim, tmp_path: Path):
    with api(sim) as c:
        up(c)
        op, headers = backup_to(c, tmp_path / "b.gmi")
        assert op["state"] == "succeeded" and op["progress"]["percent"] == 100.0
        info = verify_gmi(tmp_path / "b.gmi")
        assert headers["content-type"] == MEDIA_TYPE and int(headers["content-length"]) == info.size
        assert headers["x-gmi-manifest-sha256"] == info.manifest_sha256 == op["result"]["manifest_sha256"]
        assert f'filename="{op["result"]["file_name"]}"' in headers["content-disposition"]
        assert [p.name for p in info.manifest.parts] == ["head", "boot", "system0", "system1", "data"]
        assert info.manifest.data["record_count"] == 50
        again = c.get(f"/operations/{op['id']}/artifact")
        assert again.status_code == 410 and again.json()["error"]["code"] == "artifact_consumed"
        log = c.get(f"/operations/{op['id']}/log")
        lines = [line.split(" ", 2)[2] for line in log.text.splitlines()]
        assert lines[0] == "Backup of bb2241039 started (software 2.6.3)" and lines[-1] == "Backup successful"
        assert "Sending data (5 of 5, 17.0 MiB)" in lines and int(log.headers["x-log-lines"]) == len(lines)


def test_backup_refused_while_measure_runs(sim):
    with api(sim) as c:
        up(c)
        r = c.post("/programs/measure", json={"dilution": 2, "label": "run 1", "sampling_time_s": 3600})
        assert r.status_code == 202, r.text
        r = c.post("/backups", json={})
        assert r.status_code == 409
        error = r.json()["error"]
        assert error["code"] == "program_running" and error["retryable"] and "Measure" in error["message"]
        assert c.get("/operations").json() == {"current": None, "finished": []}
        assert c.post("/programs/stop").status_code == 202
        end = time.monotonic() + 5
        while c.get("/programs").json()["name"] != "idle":
            assert time.monotonic() < end
            time.sleep(0.02)
        records = c.get("/measurements", params={"after_id": 50}).json()["measurements"]
        assert records[0]["label"] == "run 1" and records[0]["flags"] == 2  # stopped by Stop


def test_no_cancel_and_a_disconnect_fails_the_backup(sim, tmp_path: Path):
    with api(sim) as c:
        up(c)
        ctl(sim, "POST", "/faults", {"kind": "disconnect_at", "fraction": 0.4})
        op = c.post("/backups", json={}).json()["operation"]["id"]
        r = c.delete(f"/operations/{op}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_cancellable"
        wait_state(c, op, {"ready"})
        with pytest.raises(httpx.HTTPError):
            with c.stream("GET", f"/operations/{op}/artifact") as resp:
                for _ in resp.iter_raw():
                    pass
        final = wait_state(c, op, {"failed", "succeeded"})
        assert final["state"] == "failed" and final["error"]["code"] == "transfer_interrupted"
        assert c.get("/device").json()["mode"] == "normal"


def test_sse_and_polling_tell_the_same_story(sim):
    """P1/P2: the SSE log equals /log, across reconnects with Last-Event-ID (the stream drops every 3 events)."""
    ctl(sim, "POST", "/faults", {"kind": "sse_drop_every", "n": 3})
    ctl(sim, "POST", "/timing", {"usb_mb_s": 40})
    with api(sim) as c:
        up(c)
        op = c.post("/backups", json={}).json()["operation"]["id"]
        lines: list[str] = []
        states: list[str] = []
        last = 0
        reconnects = 0
        downloaded = False
        end_seen = None
        while end_seen is None:
            headers = {"Last-Event-ID": str(last)} if last else {}
            with c.stream("GET", f"/operations/{op}/events", headers=headers) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                event = {}
                for line in resp.iter_lines():
                    if line.startswith("id: "):
                        event["id"] = int(line[4:])
                    elif line.startswith("event: "):
                        event["type"] = line[7:]
                    elif line.startswith("data: "):
                        event["data"] = json.loads(line[6:])
                    elif line == "" and event:
                        if event["type"] == "log":
                            lines.append(event["data"]["text"])
                        elif event["type"] == "state":
                            states.append(event["data"]["state"])
                        elif event["type"] == "artifact" and not downloaded:
                            downloaded = True
                            with c.stream("GET", event["data"]["url"].removeprefix("/api/v1")) as art:
                                for _ in art.iter_raw():
                                    pass
                        elif event["type"] == "end":
                            end_seen = event["data"]
                        last = event["id"]
                        event = {}
            reconnects += 1
        assert reconnects > 3
        text = c.get(f"/operations/{op}/log").text
        assert lines == [line.split(" ", 2)[2] for line in text.splitlines()]
        assert end_seen["state"] == "succeeded" == c.get(f"/operations/{op}").json()["state"]
        assert states[-1] == "succeeded" and "streaming" in states


def test_restart_goes_down_and_comes_back_with_a_new_boot_id(sim):
    """P3: connection refused, then 503 starting with Retry-After, then 200 with a new X-Boot-Id."""
    ctl(sim, "POST", "/timing", {"time_scale": 0.01})  # shutdown 0.05 s, kernel 0.2 s, services 0.25 s
    with api(sim) as c:
        old = up(c)["boot"]["boot_id"]
        r = c.post("/system/restart")
        assert r.status_code == 202 and r.json()["boot_id"] == old
        seen: list[str] = []
        end = time.monotonic() + 10
        while True:
            try:
                r = c.get("/device")
                kind = f"{r.status_code}"
                if r.status_code == 503:
                    assert r.json()["error"]["code"] == "starting" and "retry-after" in r.headers
                if r.status_code == 200 and r.headers["x-boot-id"] != old:
                    break
            except httpx.TransportError:
                kind = "refused"
            if not seen or seen[-1] != kind:
                seen.append(kind)
            assert time.monotonic() < end, seen
            time.sleep(0.01)
        assert "refused" in seen and "503" in seen and seen.index("refused") < seen.index("503")
        dev = c.get("/device").json()
        assert dev["boot"]["boot_count"] == 0  # the boot was confirmed once services were up


def _preflight(c: httpx.Client, gmi: Path, **changes):
    info = inspect_gmi(gmi)
    body = {"confirm": True, "file_name": gmi.name, "file_size_bytes": info.size,
            "manifest_sha256": info.manifest_sha256, "manifest": json.loads(info.manifest_bytes)}
    body.update(changes)
    return c.post("/restores", json=body), info


def _put(c: httpx.Client, url: str, gmi: Path, **headers):
    h = {"Content-Type": MEDIA_TYPE, "Content-Length": str(gmi.stat().st_size), **headers}
    return c.put(url.removeprefix("/api/v1"), content=gmi.read_bytes(), headers=h)


def test_restore_preflight_refusals_change_nothing(sim, tmp_path: Path):
    with api(sim) as c:
        up(c)
        backup_to(c, tmp_path / "b.gmi")
        before = ctl(sim, "GET", "/state")["storage_sha256"]
        r, _ = _preflight(c, tmp_path / "b.gmi", confirm=False)
        assert r.status_code == 428 and r.json()["error"]["code"] == "confirmation_required"
        manifest = json.loads(inspect_gmi(tmp_path / "b.gmi").manifest_bytes)
        r, _ = _preflight(c, tmp_path / "b.gmi", manifest={**manifest, "device_id": "bb2240017"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "device_mismatch"
        assert "made on bb2240017" in r.json()["error"]["message"]
        r, _ = _preflight(c, tmp_path / "b.gmi", manifest={**manifest, "format": 3})
        assert r.status_code == 422 and r.json()["error"]["code"] == "gmi_format_too_new"
        r, _ = _preflight(c, tmp_path / "b.gmi", manifest={**manifest, "parts": []})
        assert r.status_code == 422 and r.json()["error"]["code"] == "manifest_invalid"
        ctl(sim, "POST", "/liquid", {"present": True})
        r, _ = _preflight(c, tmp_path / "b.gmi")
        assert r.status_code == 409 and r.json()["error"]["code"] == "liquid_in_flow_paths"
        ctl(sim, "POST", "/liquid", {"present": False})
        assert c.get("/operations").json()["current"] is None
        # the liquid flag lives in the settings block: put back, the disk is as it was
        assert ctl(sim, "GET", "/state")["storage_sha256"] == before


def test_upload_checks_before_the_first_write(sim, tmp_path: Path):
    with api(sim) as c:
        up(c)
        backup_to(c, tmp_path / "b.gmi")
        gmi = tmp_path / "b.gmi"
        before = ctl(sim, "GET", "/state")["storage_sha256"]
        r, info = _preflight(c, gmi)
        assert r.status_code == 201 and r.json()["verdict"] == "as_is"
        url = r.json()["upload_url"]
        op = r.json()["operation"]["id"]
        assert c.post("/backups", json={}).json()["error"]["code"] == "operation_in_progress"  # reserved
        r = _put(c, url, gmi, **{"Content-Type": "application/zip"})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
        r = c.put(url.removeprefix("/api/v1"), content=iter([gmi.read_bytes()]), headers={"Content-Type": MEDIA_TYPE})
        assert r.status_code == 411 and r.json()["error"]["code"] == "length_required"  # chunked body
        assert c.delete(f"/operations/{op}").status_code == 204
        r, _ = _preflight(c, gmi, file_size_bytes=info.size + 512)
        r = _put(c, r.json()["upload_url"], gmi)
        assert r.status_code == 400 and r.json()["error"]["code"] == "size_mismatch"
        assert c.delete(f"/operations/{c.get('/operations').json()['current']['id']}").status_code == 204
        r, info = _preflight(c, gmi)
        url, op = r.json()["upload_url"], r.json()["operation"]["id"]
        # a GMI whose manifest differs from the preflighted one: 422 before any image byte is written
        other = tmp_path / "other.gmi"
        data = bytearray(gmi.read_bytes())
        manifest_entry = inspect_gmi(gmi).entries[1]
        start = manifest_entry.data_offset
        data[start:start + manifest_entry.compressed_size] = data[start:start + manifest_entry.compressed_size] \
            .replace(b'"clock_valid": true', b'"clock_valid": TRUE')
        other.write_bytes(bytes(data))
        r = _put(c, url, other)
        assert r.status_code == 422 and r.json()["error"]["code"] == "manifest_mismatch"
        assert c.get(f"/operations/{op}").json()["state"] == "failed"
        assert c.get("/device").json()["mode"] == "normal"
        assert ctl(sim, "GET", "/state")["storage_sha256"] == before


def test_withdraw_and_expire(sim, tmp_path: Path):
    with api(sim) as c:
        up(c)
        backup_to(c, tmp_path / "b.gmi")
        r, _ = _preflight(c, tmp_path / "b.gmi")
        op = r.json()["operation"]["id"]
        assert c.delete(f"/operations/{op}").status_code == 204
        assert c.get(f"/operations/{op}").json()["state"] == "withdrawn"
        ctl(sim, "POST", "/timing", {"upload_deadline_s": 0.2})
        r, _ = _preflight(c, tmp_path / "b.gmi")
        time.sleep(0.4)
        r = _put(c, r.json()["upload_url"], tmp_path / "b.gmi")
        assert r.status_code == 410 and r.json()["error"]["code"] == "operation_expired"


def test_corrupt_upload_leaves_recovery_and_a_good_restore_recovers(sim, tmp_path: Path):
    """BB-F11/R7: a part that fails its hash after writing began leaves the unit in recovery mode, across a
    restart too; restoring a valid GMI brings it back, and until the restart only reads are allowed."""
    with api(sim) as c:
        up(c)
        gmi = tmp_path / "b.gmi"
        backup_to(c, gmi)
        bad = tmp_path / "bad.gmi"
        bad.write_bytes(gmi.read_bytes())
        entry = next(e for e in inspect_gmi(bad).entries if e.name == "parts/system1.img")
        flip_byte(bad, entry.data_offset + 12345)
        r, _ = _preflight(c, bad)
        op = r.json()["operation"]["id"]
        r = _put(c, r.json()["upload_url"], bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "part_hash_mismatch"
        assert c.get(f"/operations/{op}").json()["error"]["code"] == "part_hash_mismatch"
        dev = c.get("/device").json()
        assert dev["mode"] == "recovery" and dev["software_version"] is None
        assert c.post("/backups", json={}).json()["error"]["code"] == "recovery_mode"
        old = dev["boot"]["boot_id"]
        c.post("/system/restart")
        assert new_boot(c, old)["mode"] == "recovery"  # the SPI flash remembers the incomplete restore
        r, _ = _preflight(c, gmi)
        assert r.status_code == 201
        op = r.json()["operation"]["id"]
        assert _put(c, r.json()["upload_url"], gmi).status_code == 202
        final = wait_state(c, op, {"succeeded", "failed"})
        assert final["state"] == "succeeded" and all(p["ok"] for p in final["result"]["parts"])
        assert c.get("/device").json()["mode"] == "restart_required"
        r = c.post("/backups", json={})
        assert r.status_code == 409 and r.json()["error"]["code"] == "restart_required"
        record = c.get("/operations/last-restore").json()
        assert record["state"] == "succeeded" and record["log"][-1].endswith("before further use.")


def test_time_travel_rolls_the_software_back(sim, tmp_path: Path):
    with api(sim) as c:
        up(c)
        backup_to(c, tmp_path / "b.gmi")
        old = up(c)["boot"]["boot_id"]
        ctl(sim, "POST", "/upgrade", {"version": "2.2.0"})
        dev = new_boot(c, old)
        assert dev["software_version"] == "2.2.0" and dev["boot"]["active_slot"] == "system1"
        r, _ = _preflight(c, tmp_path / "b.gmi")
        assert "Software 2.2.0 -> 2.6.3" in r.json()["changes"][0]
        op = r.json()["operation"]["id"]
        assert _put(c, r.json()["upload_url"], tmp_path / "b.gmi").status_code == 202
        assert wait_state(c, op, {"succeeded", "failed"})["state"] == "succeeded"
        old = c.get("/device").json()["boot"]["boot_id"]
        c.post("/system/restart")
        dev = new_boot(c, old)
        assert dev["mode"] == "normal" and dev["software_version"] == "2.6.3" and dev["boot"]["active_slot"] == "system0"
        digest = ctl(sim, "GET", "/digest")
        manifest = inspect_gmi(tmp_path / "b.gmi").manifest
        for part in manifest.parts:
            if part.name != "boot":
                assert next(p["sha256"] for p in digest["parts"] if p["name"] == part.name) == part.sha256


def test_unbootable_slot_falls_back_after_three_attempts(sim):
    """BB-F13: three failed boots of system0, then the bootloader switches to system1."""
    ctl(sim, "POST", "/faults", {"kind": "slot_unbootable", "slot": "system0"})
    with api(sim) as c:
        old = up(c)["boot"]["boot_id"]
        c.post("/system/restart")
        dev = new_boot(c, old)
        assert dev["mode"] == "normal" and dev["boot"]["active_slot"] == "system1" and dev["software_version"] == "2.2.0"
        env = ctl(sim, "GET", "/digest")["env"]["values"]
        assert env["active_slot"] == "system1" and env["sw_version"] == "2.2.0"


def test_token_required_when_credentials_are_given(tmp_path: Path):
    secret = tmp_path / "token"
    secret.write_text("s3cret-token\n")
    with sim_thread(tmp_path / "unit", username="access", password_file=secret) as info:
        with api(info) as c:
            time.sleep(0.3)
            r = c.get("/device")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
            r = c.get("/device", headers={"Authorization": "Bearer s3cret-token"})
            assert r.status_code == 200
            assert "s3cret" not in json.dumps(info)


def test_realtime_backup_takes_its_scaled_time(tmp_path: Path):
    """A backup takes the real unit's ~31 minutes scaled by the time factor (here 1/1000: about 2 s)."""
    with sim_thread(tmp_path / "unit", time_scale=0.001) as info:
        with api(info) as c:
            up(c)
            t0 = time.monotonic()
            op = c.post("/backups", json={}).json()["operation"]["id"]
            percents: list[float] = []
            watching = threading.Event()

            def watch() -> None:
                with api(info) as w:
                    while not watching.is_set():
                        percents.append(w.get(f"/operations/{op}").json()["progress"]["percent"])
                        time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            wait_state(c, op, {"ready"})
            with c.stream("GET", f"/operations/{op}/artifact") as resp:
                sha = hashlib.sha256()
                for chunk in resp.iter_raw():
                    sha.update(chunk)
            final = wait_state(c, op, {"succeeded", "failed"})
            took = time.monotonic() - t0
            watching.set()
            watcher.join(5)
        assert final["state"] == "succeeded"
        assert 1.4 < took < 8, took  # preparing 143 s + streaming 1718 s of the real unit, / 1000
        # The watcher may stop before its next poll sees the end: the final state carries the 100 %.
        assert len(set(percents)) > 8 and percents == sorted(percents) and percents[-1] <= 100.0
        assert final["progress"]["percent"] == 100.0


def test_options_are_what_sim_run_gives(tmp_path: Path):
    from simulators.bactobox.interface import create

    sim = create(SimOptions(target="bactobox", state=tmp_path / "u", firmware="2.2.0", profile="tiny",
                            device_id="bb1234567"))
    try:
        assert sim.identity() == {"device_id": "bb1234567", "firmware": "2.2.0", "profile": "tiny"}
    finally:
        sim.device.disk.close()
    with pytest.raises(Exception, match="does not match"):
        create(SimOptions(target="bactobox", state=tmp_path / "v", device_id="52:00:13:1f"))
