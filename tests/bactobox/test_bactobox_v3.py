"""Software 3.1.0 (bactobox.md §5): GMI format 3 with a sparse data part, written by the simulator, taken
through the real driver, restored by 3.1.0, refused by 2.x before anything is written."""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from bbtools import flip_byte

from harness.errors import BadInput, DeviceError, Refused
from harness.operations import backup_to_store, load_artifact, restore_from
from harness.simctl import SimControl
from harness.store import Store
from harness.targets import get_target
from harness.targets.bactobox.artifact import forget
from harness.targets.bactobox.driver import BactoboxDriver
from harness.targets.bactobox.gmi import inspect_gmi
from harness.targets.bactobox.schema import MEDIA_TYPE
from simulators.core.options import SimOptions
from simulators.core.process import SimProcess, start_simulator

TARGET = get_target("bactobox")
PROFILE = "micro"  # the smallest L2 disk: a format-3 GMI of it is ~4 MiB


pytestmark = pytest.mark.usefixtures("workdir")  # tests/bactobox/conftest.py: HARNESS_TMPDIR per test


def start(tmp_path: Path, name: str, firmware: str) -> SimProcess:
    return start_simulator(SimOptions(target="bactobox", state=tmp_path / name, firmware=firmware,
                                      profile=PROFILE))


def storage(proc: SimProcess) -> str:
    return SimControl(proc.control).state()["storage_sha256"]


def api(proc: SimProcess) -> httpx.Client:
    return httpx.Client(base_url=proc.address + "/api/v1", timeout=20, trust_env=False)


def preflight(c: httpx.Client, gmi: Path, **manifest_changes):
    info = inspect_gmi(gmi)
    manifest = {**json.loads(info.manifest_bytes), **manifest_changes}
    return c.post("/restores", json={"confirm": True, "file_name": gmi.name, "file_size_bytes": info.size,
                                     "manifest_sha256": info.manifest_sha256, "manifest": manifest})


@pytest.fixture
def unit31(tmp_path: Path):
    proc = start(tmp_path, "unit31", "3.1.0")
    yield proc
    proc.stop()


def test_backup_through_the_driver_is_format_3_and_restores(unit31: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    with BactoboxDriver(unit31.address) as driver:
        dev = driver.identify()
        assert dev.firmware == "3.1.0" and dev.details["gmi"] == {"writes_format": 3, "reads_formats": [2, 3]}
        driver.apply_settings({"timezone": "Asia/Tokyo"})
        first = backup_to_store(driver, TARGET, store, address=unit31.address)
        info = inspect_gmi(first)
        data = info.manifest.part("data")
        assert info.format == 3 and data.file == "parts/data.sparse" and data.encoding == "sparse"
        # 20 records of 4 KiB in a 2 MiB partition: one raw chunk to the used end, then one zero chunk
        assert data.size_bytes == 2 << 20 and data.stored_size_bytes < 200 * 1024
        digest = SimControl(unit31.control).request("GET", "/digest")
        assert next(p["sha256"] for p in digest["parts"] if p["name"] == "data") == data.sha256  # expanded
        with zipfile.ZipFile(first) as z:
            assert z.testzip() is None
            stored = z.read("parts/data.sparse")
        assert hashlib.sha256(stored).hexdigest() == data.stored_sha256 and stored[:4] == b"BBSP"
        assert TARGET.fields(load_artifact(first)[1])["settings.timezone"] == "Asia/Tokyo"

        driver.apply_settings({"timezone": "Africa/Nairobi", "wifi_mode": "client"})
        driver.start_program("measure", dilution=2, label="after backup", sampling_time_s=1)
        driver.wait_idle()
        report = restore_from(driver, TARGET, first, store, address=unit31.address)
        assert "settings.timezone" in report.restored
        assert all(m["label"] != "after backup" for m in driver.measurements())
        again = backup_to_store(driver, TARGET, store, address=unit31.address)
    from harness.compare import diff

    result = diff(TARGET.fields(load_artifact(first)[1]), TARGET.fields(load_artifact(again)[1]),
                  TARGET.compare_rules)
    assert result.equal, result.differences


def test_the_artifact_download_has_the_exact_length_and_format_header(unit31: SimProcess, tmp_path: Path):
    with api(unit31) as c:
        with BactoboxDriver(unit31.address) as driver:
            driver.identify()  # waits out 503 starting after the power-on
        op = c.post("/backups", json={}).json()["operation"]["id"]
        while c.get(f"/operations/{op}").json()["state"] != "ready":
            time.sleep(0.01)
        dest = tmp_path / "raw.gmi"
        with c.stream("GET", f"/operations/{op}/artifact") as resp, open(dest, "wb") as f:
            headers = resp.headers
            for chunk in resp.iter_raw():
                f.write(chunk)
        assert headers["x-gmi-format"] == "3" and int(headers["content-length"]) == dest.stat().st_size
        lines = c.get(f"/operations/{op}/log").text
        assert "Sending data (5 of 5, " in lines and "Backup successful" in lines
    estimate = httpx.get(unit31.address + "/api/v1/backup/estimate", trust_env=False).json()
    assert estimate["format"] == 3 and estimate["estimated_size_bytes"] >= dest.stat().st_size
    assert estimate["estimated_size_bytes"] < 6 << 20  # the sparse data part, not the 6 MiB disk


def test_a_3_1_0_gmi_is_refused_on_2_6_3_with_nothing_written(unit31: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    with BactoboxDriver(unit31.address) as driver:
        gmi = backup_to_store(driver, TARGET, store, address=unit31.address)
    old = start(tmp_path, "unit263", "2.6.3")
    try:
        with BactoboxDriver(old.address) as driver:
            driver.identify()  # up, and the boot confirmed (its environment write done)
            before = storage(old)
            with pytest.raises(Refused, match="gmi_format_too_new: .*format 3 .*3.1.0.*Update the BactoBox "
                                              "software to 3.0.0 or later"):
                restore_from(driver, TARGET, gmi, store, address=old.address)
        with api(old) as c:  # the unit refuses it too, should a client skip the driver's check
            r = preflight(c, gmi)
            assert r.status_code == 422 and r.json()["error"]["code"] == "gmi_format_too_new"
            assert "can restore formats 1 and 2 only" in r.json()["error"]["message"]
            assert c.get("/operations").json()["current"] is None
            assert c.get("/device").json()["mode"] == "normal"
        assert storage(old) == before
    finally:
        old.stop()


def test_3_1_0_reads_format_2_but_no_longer_format_1(tmp_path: Path):
    """An update 2.6.3 -> 3.1.0 keeps the data; the 2.6.3 GMI made before it restores (the software rolls
    back with it), and a format-1 GMI is refused by 3.1.0."""
    unit = start(tmp_path, "unit", "2.6.3")
    store = Store(tmp_path / "store")
    try:
        with BactoboxDriver(unit.address) as driver:
            before = backup_to_store(driver, TARGET, store, address=unit.address)
            SimControl(unit.control).set_firmware("3.1.0")
            dev = driver.identify()  # the update restarts the unit: the driver waits out 503 starting
            assert dev.firmware == "3.1.0" and dev.details["boot"]["slots"] == {"system0": "2.6.3",
                                                                               "system1": "3.1.0"}
            assert inspect_gmi(backup_to_store(driver, TARGET, store, address=unit.address)).format == 3
            with api(unit) as c:
                r = preflight(c, before, format=1, disk_size_bytes=6 << 20,
                              parts=[{"name": "disk", "file": "disk.img", "size_bytes": 6 << 20,
                                      "sha256": "0" * 64}])
                assert r.status_code == 422 and r.json()["error"]["code"] == "gmi_format_unsupported"
                assert "Software 3.1.0 can no longer restore it" in r.json()["error"]["message"]
            report = restore_from(driver, TARGET, before, store, address=unit.address)
            assert any("3.1.0 -> 2.6.3" in note for note in report.notes)
            assert driver.identify().firmware == "2.6.3"
    finally:
        unit.stop()


def test_a_corrupted_sparse_part_is_caught(unit31: SimProcess, tmp_path: Path, workdir: Path):
    """In the file on the PC: the driver refuses it before the unit (R8). In the download: the backup is not
    kept (BB-F05). In an upload that skips the driver: the unit fails the part and is in recovery mode until
    a good GMI is restored (BB-F11)."""
    store = Store(tmp_path / "store")
    with BactoboxDriver(unit31.address) as driver:
        good = backup_to_store(driver, TARGET, store, address=unit31.address)
    entry = next(e for p, e in inspect_gmi(good).parts if p.name == "data")
    bad = tmp_path / "bad.gmi"
    bad.write_bytes(good.read_bytes())
    flip_byte(bad, entry.data_offset + 44 + 4096 + 10)  # past the sparse headers: a settings byte
    before = storage(unit31)
    with BactoboxDriver(unit31.address) as driver:
        with pytest.raises(BadInput, match="local_gmi_corrupt: data sha256 mismatch"):
            restore_from(driver, TARGET, bad, store, address=unit31.address)
        assert storage(unit31) == before

        SimControl(unit31.control).set_fault("flip_bit", offset=entry.data_offset + 44 + 100)
        with pytest.raises(DeviceError, match="damaged .*local_gmi_corrupt: data sha256 mismatch"):
            driver.backup()
        assert list(workdir.iterdir()) == []
        SimControl(unit31.control).clear_faults()

    forget()
    with api(unit31) as c:
        r = preflight(c, bad)
        op = r.json()["operation"]["id"]
        body = bad.read_bytes()
        r = c.put(r.json()["upload_url"].removeprefix("/api/v1"), content=body,
                  headers={"Content-Type": MEDIA_TYPE, "Content-Length": str(len(body))})
        assert r.status_code == 422 and r.json()["error"]["code"] == "part_hash_mismatch"
        assert r.json()["error"]["message"].startswith("data: sha256 ")
        assert c.get(f"/operations/{op}").json()["error"]["code"] == "part_hash_mismatch"
        assert c.get("/device").json()["mode"] == "recovery"
    with BactoboxDriver(unit31.address) as driver:
        restore_from(driver, TARGET, good, store, address=unit31.address)
        assert driver.identify().details["mode"] == "normal"
    digest = SimControl(unit31.control).request("GET", "/digest")
    assert next(p["sha256"] for p in digest["parts"] if p["name"] == "data") == \
        inspect_gmi(good).manifest.part("data").sha256
