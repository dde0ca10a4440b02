"""The simulated PlanktoScope over the wire: routing per release, filebrowser semantics, faults, SSH."""

from __future__ import annotations

import io
import tarfile
import zipfile

import httpx
import pytest

from harness.simctl import SimControl
from harness.targets.planktoscope import presets
from harness.targets.planktoscope.sshlink import SshLink

FB_FIELDS = {"path", "name", "size", "extension", "modified", "mode", "isDir", "isSymlink", "type"}


def client(proc) -> httpx.Client:
    return httpx.Client(base_url=proc.address, trust_env=False, timeout=10)


def login(c: httpx.Client, base: str) -> str:
    r = c.post(f"{base}/api/login", json={"username": "", "password": "", "recaptcha": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text.count(".") == 2 and not r.text.endswith("\n")
    return r.text


def test_json_line_names_ssh_and_the_release(start_sim):
    proc = start_sim("v2025.0.0")
    assert proc.info["firmware"] == "v2025.0.0" and proc.info["device_id"] == "pkscope-test-1"
    assert proc.info["ssh"].startswith("ssh://pi@127.0.0.1:") and proc.info["variant"] == "planktoscopehat"


def test_filebrowser_era_surface(start_sim):
    proc = start_sim("v2024.0.0")
    with client(proc) as c:
        assert c.get("/admin/fs").status_code == 302 and c.get("/admin/fs").headers["location"] == "/admin/fs/"
        assert c.get("/ps/data/browse").headers["location"] == "/ps/data/browse/"
        assert c.get("/admin/fs/health").json() == {"status": "OK"}
        r = c.get("/admin/fs/api/resources/home/pi/PlanktoScope/")
        assert r.status_code == 401 and r.text == "401 Unauthorized\n"
        assert r.headers["x-content-type-options"] == "nosniff"
        token = login(c, "/admin/fs")
        h = {"X-Auth": token}
        listing = c.get("/admin/fs/api/resources/home/pi/PlanktoScope/", headers=h).json()
        assert FB_FIELDS | {"items", "numDirs", "numFiles", "sorting"} <= set(listing)
        assert listing["path"] == "/home/pi/PlanktoScope/" and listing["mode"] == 2147484141
        assert all(FB_FIELDS <= set(i) and "content" not in i for i in listing["items"])
        hw = c.get("/admin/fs/api/resources/home/pi/PlanktoScope/hardware.json", headers=h).json()
        assert hw["type"] == "text" and hw["content"].encode() == presets.seed("v2024.0.0")[0]
        assert hw["mode"] == 420 and hw["extension"] == ".json"
        summed = c.get("/admin/fs/api/resources/home/pi/PlanktoScope/hardware.json?checksum=sha256", headers=h)
        assert "content" not in summed.json() and len(summed.json()["checksums"]["sha256"]) == 64
        assert c.get("/admin/fs/api/resources/etc/hostname?checksum=crc32", headers=h).status_code == 400
        assert c.get("/admin/fs/api/resources/etc/hostname", params={"auth": token}).status_code == 200
        c.cookies.set("auth", token)
        assert c.get("/admin/fs/api/resources/etc/hostname").status_code == 200
        assert c.post("/admin/fs/api/resources/home/pi/c.txt", content=b"x").status_code == 401  # GET only
        c.cookies.clear()
        assert c.get("/admin/fs/api/resources/nope", headers=h).status_code == 404
        assert c.get("/admin/fs/api/search/x", headers=h).status_code == 404
        raw = c.get("/admin/fs/api/raw/home/pi/PlanktoScope/hardware.json", headers=h)
        assert raw.content == presets.seed("v2024.0.0")[0]
        assert raw.headers["content-disposition"] == "attachment; filename*=utf-8''hardware.json"
        assert raw.headers["cache-control"] == "private"
        image = c.get("/ps/data/browse/api/resources/img/2024-05-01/sample_a/acq_1/", headers={
            "X-Auth": login(c, "/ps/data/browse")}).json()["items"]
        assert any(i["type"] == "image" and i.get("resolution") == {"width": 1, "height": 1} for i in image)


def test_uploads_409_override_etag_mkdir(start_sim):
    proc = start_sim("v2024.0.0")
    with client(proc) as c:
        h = {"X-Auth": login(c, "/admin/fs")}
        path = "/admin/fs/api/resources/home/pi/PlanktoScope/hardware.json"
        before = c.get(path.replace("resources", "raw"), headers=h).content
        r = c.post(path, content=b"{}", headers=h)
        assert r.status_code == 409 and r.text == "409 Conflict\n"
        assert c.get(path.replace("resources", "raw"), headers=h).content == before
        r = c.post(path + "?override=true", content=b'{"a": 1}', headers=h)
        assert r.status_code == 200 and r.text == "200 OK\n" and r.headers["etag"].startswith('"')
        new = c.post("/admin/fs/api/resources/home/pi/new/deep/file.txt", content=b"x", headers=h)
        assert new.status_code == 200
        info = c.get("/admin/fs/api/resources/home/pi/new/deep/file.txt", headers=h).json()
        assert info["mode"] == 0o755
        assert c.post("/admin/fs/api/resources/home/pi/dir/", headers=h).status_code == 200
        assert c.post("/admin/fs/api/resources/home/pi/dir/", headers=h).status_code == 200
        assert c.put("/admin/fs/api/resources/home/pi/missing.txt", content=b"x", headers=h).status_code == 404
        assert c.put("/admin/fs/api/resources/home/pi/dir/", content=b"x", headers=h).status_code == 405
        assert c.delete("/admin/fs/api/resources/", headers=h).status_code == 403
        assert c.delete("/admin/fs/api/resources/home/pi/dir", headers=h).status_code == 200
        assert c.delete("/admin/fs/api/resources/home/pi/dir", headers=h).status_code == 404
    audit = SimControl(proc.control).request("GET", "/audit")["audit"]
    assert any(a["writer"] == "filebrowser" and a["path"].endswith("hardware.json") for a in audit)


@pytest.mark.parametrize(("algo", "ext"), [("", ".zip"), ("tar", ".tar"), ("targz", ".tar.gz"),
                                           ("tarxz", ".tar.xz"), ("nonsense", None)])
def test_directory_download(start_sim, algo, ext):
    proc = start_sim("v2025.0.0")
    with client(proc) as c:
        h = {"X-Auth": login(c, "/ps/data/browse")}
        r = c.get("/ps/data/browse/api/raw/img/2024-05-01/sample_a/acq_1/", params={"algo": algo}, headers=h)
        if ext is None:
            assert r.status_code == 500
            return
        assert r.headers["content-disposition"].endswith(f"acq_1{ext}")
        if ext == ".zip":
            names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
        else:
            names = tarfile.open(fileobj=io.BytesIO(r.content)).getnames()
        assert "integrity.check" in names and "metadata.json" in names and not any("/" in n for n in names)


def test_v2_3_surface(start_sim):
    proc = start_sim("v2.3")
    with client(proc) as c:
        assert c.get("/admin/fs").status_code == 404 and c.get("/ps/data/browse/").status_code == 404
        index = c.get("/")
        assert index.status_code == 200 and "Index of /" in index.text and 'href="img/"' in index.text
        assert c.post("/").status_code == 405
        r = c.get("/img/2024-05-01/sample_a/acq_1/integrity.check")
        assert r.status_code == 200 and r.content.startswith(b"# planktoscope integrity file")


def test_v2026_surface(start_sim):
    proc = start_sim("v2026")
    with client(proc) as c:
        for path in ("/admin/fs", "/admin/fs/", "/admin/fs/files/home/pi/"):
            r = c.get(path)
            assert r.status_code == 302 and r.headers["location"] == "/admin/cockpit/files"
        api = c.get("/admin/fs/api/resources/home/pi/PlanktoScope/hardware.json")
        assert api.status_code == 200 and api.headers["content-type"].startswith("text/html")
        assert c.post("/admin/fs/api/resources/x", content=b"x").status_code == 404
        assert c.get("/").headers["location"] == "/ps/node-red-v2/dashboard/setup"
        token = login(c, "/ps/data/browse")
        path = "/ps/data/browse/api/resources/img/"
        assert c.get(path, headers={"X-Auth": token}).status_code == 200
        assert c.get(path, params={"auth": token}).status_code == 401  # v2.44.2: never the query form
        new = c.post("/ps/data/browse/api/resources/captures/x.jpg", content=b"x", headers={"X-Auth": token})
        assert new.status_code == 200
        assert c.get("/ps/data/browse/api/resources/captures/x.jpg", headers={"X-Auth": token}).json()["mode"] == \
            0o640
        assert c.get("/api/files/img/2024-05-01/sample_a/acq_1/integrity.check").content.startswith(b"#")
        assert c.get("/api/files/nope.jpg").headers["content-type"].startswith("text/html")
        assert c.post("/api/reset").status_code == 200
        assert c.get("/").headers["location"] == "/ps/node-red-v2/dashboard/setup"
    state = SimControl(proc.control).state()
    assert state["release"] == "v2026"


def test_token_renewal_and_faults(start_sim):
    proc = start_sim("v2024.0.0")
    sim = SimControl(proc.control)
    with client(proc) as c:
        token = login(c, "/admin/fs")
        h = {"X-Auth": token}
        url = "/admin/fs/api/resources/etc/hostname"
        assert "x-renew-token" not in c.get(url, headers=h).headers
        sim.request("POST", "/clock", {"advance": 3700})
        assert c.get(url, headers=h).headers["x-renew-token"] == "true"
        renewed = c.post("/admin/fs/api/renew", headers=h)
        assert renewed.headers["x-renew-token"] == "false" and renewed.text.count(".") == 2
        sim.request("POST", "/clock", {"advance": 3600})
        assert c.get(url, headers=h).status_code == 401  # the 2 h lifetime is over
        h = {"X-Auth": login(c, "/admin/fs")}
        sim.set_fault("expire_tokens")
        assert c.get(url, headers=h).status_code == 401
        h = {"X-Auth": login(c, "/admin/fs")}
        sim.set_fault("disk_full")
        r = c.post("/admin/fs/api/resources/home/pi/full.txt", content=b"x" * 100, headers=h)
        assert r.status_code == 500 and c.get("/admin/fs/api/resources/home/pi/full.txt", headers=h).status_code == 404
        sim.clear_faults()
        assert c.post("/admin/fs/api/resources/home/pi/full.txt", content=b"x", headers=h).status_code == 200


def test_ssh_sftp_and_reboot(start_sim):
    proc = start_sim("v2026")
    link = SshLink(proc.info["ssh"], username="pi", password="copepode")
    try:
        assert link.read("/etc/hostname") == b"pkscope-test-1\n"
        assert link.read("/home/pi/PlanktoScope/hardware.json") == presets.seed("v2026")[0]
        assert link.read("/nope") is None
        link.write("/home/pi/PlanktoScope/calibration.json", b"{}")
        assert link.write("/home/pi/PlanktoScope/calibration.json", b"[]", exclusive=True) is False
        boots = SimControl(proc.control).state()["boots"]
        link.run("sudo reboot", expect_drop=True)
        import time

        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if SimControl(proc.control).state()["boots"] > boots:
                    break
            except Exception:  # noqa: BLE001 - down while rebooting
                pass
            time.sleep(0.05)
        assert SimControl(proc.control).state()["boots"] == boots + 1
        assert link.read("/etc/hostname") == b"pkscope-test-1\n"  # reconnects after the reboot
    finally:
        link.close()
    audit = SimControl(proc.control).request("GET", "/audit")["audit"]
    assert any(a["writer"] == "ssh" and a["path"].endswith("calibration.json") for a in audit)
    bad = SshLink(proc.info["ssh"], username="pi", password="wrong")
    try:
        from harness.errors import LinkError

        with pytest.raises(LinkError, match="refused"):
            bad.read("/etc/hostname")
    finally:
        bad.close()


def test_no_control_means_no_sim_routes(start_sim):
    proc = start_sim("v2024.0.0", control=False)
    assert proc.control is None
    with client(proc) as c:
        assert c.get("/_sim/state").status_code == 404
