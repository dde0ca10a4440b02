"""Software 1.8.4 (bactobox.md §5): layout L1 with an EBR chain, store v1, GMI format 1 (one deflated
``disk.img``, data descriptor, chunked download), written by the simulator and taken through the real driver;
restored as is by 1.8.4, by the legacy reader on 2.x (``migrate``: the unit comes back on 1.8.4 and L1),
refused by 3.1.0; a 2.x GMI refused by 1.8.4 (spec checks B9, R4, R5)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.artifact import forget
from harness.targets.bactobox.driver import BactoboxDriver
from harness.targets.bactobox.gmi import (
    DEFLATED,
    FLAG_DESCRIPTOR,
    GmiStreamError,
    GmiStreamReader,
    inspect_gmi,
)
from simulators.core.options import SimOptions
from simulators.core.process import SimProcess, start_simulator

TARGET = get_target("bactobox")
PROFILE = "tiny"  # the smallest disk that holds layout L1 (micro's 6 MiB has no room for the EBR chain)
LEGACY_LINE = "Converting GMI format 1 (single disk image) with the legacy reader"

pytestmark = pytest.mark.usefixtures("workdir")  # tests/bactobox/conftest.py: HARNESS_TMPDIR per test


def start(tmp_path: Path, name: str, firmware: str) -> SimProcess:
    proc = start_simulator(SimOptions(target="bactobox", state=tmp_path / name, firmware=firmware,
                                      profile=PROFILE))
    with BactoboxDriver(proc.address) as driver:
        driver.identify()  # up (past 503 starting), and the boot confirmed (its environment write done)
    return proc


def api(proc: SimProcess) -> httpx.Client:
    return httpx.Client(base_url=proc.address + "/api/v1", timeout=20, trust_env=False)


def storage(proc: SimProcess) -> str:
    return SimControl(proc.control).state()["storage_sha256"]


@pytest.fixture
def unit18(tmp_path: Path):
    proc = start(tmp_path, "unit18", "1.8.4")
    yield proc
    proc.stop()


def backup(proc: SimProcess, store: Store, progress=None) -> Path:
    kwargs = {"progress": progress} if progress else {}
    with BactoboxDriver(proc.address, **kwargs) as driver:
        return backup_to_store(driver, TARGET, store, address=proc.address)


def test_b9_backup_is_format_1_deflated_and_filed(unit18: SimProcess, tmp_path: Path):
    with api(unit18) as c:
        dev = c.get("/device").json()
    assert dev["storage"]["layout"] == "L1" and dev["gmi"] == {"writes_format": 1, "reads_formats": [1]}
    with BactoboxDriver(unit18.address) as driver:
        driver.apply_settings({"timezone": "Asia/Tokyo"})  # store v1: the settings live in p5 config
    seen: list[tuple[int, int | None]] = []
    gmi = backup(unit18, Store(tmp_path / "store"), progress=lambda done, total, msg: seen.append((done, total)))
    info = inspect_gmi(gmi)
    assert info.format == 1 and [e.name for e in info.entries] == ["mimetype", "manifest.json", "disk.img"]
    disk = info.entries[2]
    assert disk.method == DEFLATED and disk.flags & FLAG_DESCRIPTOR
    assert disk.uncompressed_size == 32 << 20 and disk.compressed_size < 16 << 20  # zeros and repeats deflate
    with zipfile.ZipFile(gmi) as z:
        assert z.testzip() is None
        image = z.read("disk.img")
    assert hashlib.sha256(image).hexdigest() == info.manifest.part("disk").sha256
    # §4.2 tiny example: extended partition at 30720, EBR1 there, p5 config at 32768, EBR2 at 34816, p6 at 36864
    mbr = S.MBR.parse(image[:512])
    assert [p.type for p in mbr.partitions] == [0x0C, 0x0C, 0x0C, 0x0F]
    assert (mbr.partitions[3].lba_first, mbr.partitions[3].num_sectors) == (30720, 34816)
    ebr1 = S.EBR.parse(image[30720 * 512:30721 * 512])
    assert (ebr1.partitions[0].lba_first, ebr1.partitions[0].num_sectors) == (2048, 2048)
    assert (ebr1.partitions[1].type, ebr1.partitions[1].lba_first, ebr1.partitions[1].num_sectors) == (5, 4096, 30720)
    ebr2 = S.EBR.parse(image[34816 * 512:34817 * 512])
    assert (ebr2.partitions[0].lba_first, ebr2.partitions[0].num_sectors) == (2048, 28672)
    assert ebr2.partitions[1].type == 0
    sb = S.SUPERBLOCK_V1.parse(image[36864 * 512:36864 * 512 + 512]).body.value
    assert sb.record_count == 50 and sb.records_offset == 512
    first = S.parse_record_header(image[36864 * 512 + 512:36864 * 512 + 512 + 32])
    assert first.header_version == 1 and first.record_id == 1
    # The driver filed it knowing no total while the bytes came (chunked): progress without a total.
    assert any(total is None and done > 0 for done, total in seen)
    fields = TARGET.fields(load_artifact(gmi)[1])
    assert fields["format"] == 1 and fields["disk.layout"] == "L1" and fields["data.store_version"] == 1
    assert fields["partitions.config.start_lba"] == 32768 and fields["partitions.data.start_lba"] == 36864
    assert fields["settings.timezone"] == "Asia/Tokyo" and fields["boot_env.sw_version"] == "1.8.4"
    assert fields["data.record_count"] == 50


def test_b9_artifact_is_chunked_without_content_length(unit18: SimProcess):
    with api(unit18) as c:
        op = c.post("/backups", json={}).json()["operation"]["id"]
        deadline = time.monotonic() + 30
        while c.get(f"/operations/{op}").json()["state"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with c.stream("GET", f"/operations/{op}/artifact") as r:
            assert r.status_code == 200 and r.headers["x-gmi-format"] == "1"
            assert "content-length" not in r.headers and r.headers.get("transfer-encoding") == "chunked"
            body = r.read()
        done = c.get(f"/operations/{op}").json()
    assert done["state"] == "succeeded" and done["result"]["size_bytes"] == len(body)
    assert body[30:38] == b"mimetype" and body[38:65] == S.MEDIA_TYPE.encode()


def test_r4_migrate_on_2x_brings_back_1_8_4_and_l1(unit18: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    gmi = backup(unit18, store)
    with api(unit18) as c:
        records = c.get("/measurements", params={"limit": 1000}).json()["measurements"]
    unit18.stop()
    new = start(tmp_path, "unit26", "2.6.3")  # the same unit ID (the default), on 2.x with layout L2
    try:
        with BactoboxDriver(new.address) as driver:
            report = restore_from(driver, TARGET, gmi, store, address=new.address)
            assert any("verdict migrate" in n for n in report.notes)
            dev = driver.device()
        assert dev["software_version"] == "1.8.4" and dev["storage"]["layout"] == "L1"
        with api(new) as c:
            last = c.get("/operations/last-restore").json()
            assert last["result"]["verdict"] == "migrate"
            assert any(LEGACY_LINE in line for line in last["log"])
            names = [p["name"] for p in last["result"]["partitions"]]
            assert names == ["head", "boot", "system0", "system1", "config", "data"]
            assert c.get("/measurements", params={"limit": 1000}).json()["measurements"] == records
        # Time travel: the whole disk is the GMI's image again (a 1.8.4 boot leaves its env v1 as it was).
        again = backup(new, store)
        assert inspect_gmi(again).manifest.part("disk").sha256 == inspect_gmi(gmi).manifest.part("disk").sha256
    finally:
        new.stop()


def test_r5_3_1_0_refuses_format_1(unit18: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    gmi = backup(unit18, store)
    unit18.stop()
    new = start(tmp_path, "unit31", "3.1.0")
    try:
        before = storage(new)
        with BactoboxDriver(new.address) as driver, pytest.raises(Refused, match="gmi_format_unsupported"):
            restore_from(driver, TARGET, gmi, store, address=new.address)
        # The unit itself refuses too (a driver that skipped its local check).
        info = inspect_gmi(gmi)
        with api(new) as c:
            r = c.post("/restores", json={"confirm": True, "file_name": gmi.name, "file_size_bytes": info.size,
                                          "manifest_sha256": info.manifest_sha256,
                                          "manifest": json.loads(info.manifest_bytes)})
        assert r.status_code == 422 and r.json()["error"]["code"] == "gmi_format_unsupported"
        assert "Software 3.1.0 can no longer restore it" in r.json()["error"]["message"]
        assert storage(new) == before
    finally:
        new.stop()


def test_1_8_4_refuses_a_2x_gmi(unit18: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    old = start(tmp_path, "unit22", "2.2.0")
    try:
        gmi = backup(old, store)
    finally:
        old.stop()
    before = storage(unit18)
    with BactoboxDriver(unit18.address) as driver, pytest.raises(Refused, match="gmi_format_too_new"):
        restore_from(driver, TARGET, gmi, store, address=unit18.address)
    assert storage(unit18) == before


def test_round_trip_on_1_8_4_then_diff_is_clean(unit18: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    first = backup(unit18, store)
    with BactoboxDriver(unit18.address) as driver:
        driver.apply_settings({"wifi_mode": "client"})  # changed after the backup: the restore rolls it back
        report = restore_from(driver, TARGET, first, store, address=unit18.address)
    assert not any("migrate" in n for n in report.notes)  # 1.8.4 reads its own format as is
    second = backup(unit18, store)
    assert second != first
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-m", "harness", "diff", str(first), str(second)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    verify = subprocess.run([sys.executable, "-m", "harness", "verify", str(second)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert verify.returncode == 0, verify.stderr
    assert TARGET.fields(load_artifact(second)[1])["settings.wifi_mode"] == "off"


def test_a_damaged_format_1_gmi_is_refused_locally(unit18: SimProcess, tmp_path: Path):
    store = Store(tmp_path / "store")
    gmi = backup(unit18, store)
    bad = tmp_path / "bad.gmi"
    bad.write_bytes(gmi.read_bytes())
    info = inspect_gmi(bad)
    flip_byte(bad, info.entries[2].data_offset + 1000)
    forget()
    before = storage(unit18)
    with BactoboxDriver(unit18.address) as driver, pytest.raises(BadInput):
        restore_from(driver, TARGET, bad, store, address=unit18.address)
    assert storage(unit18) == before


def test_stream_reader_refuses_a_format_1_disk_that_inflates_too_far(tmp_path: Path):
    """The device-side reader bounds a deflated disk.img by the manifest's size (a decompression bomb)."""
    import datetime as dt

    from harness.targets.bactobox.gmi import stream_gmi_v1

    disk = bytes(4 << 20)
    manifest = {"format": 1, "device_id": "bb2241039", "software_version": "1.8.4",
                "created": "2026-01-09T10:15:02Z", "disk_size_bytes": 1 << 20,
                "parts": [{"name": "disk", "file": "disk.img", "size_bytes": 1 << 20,
                           "sha256": hashlib.sha256(disk).hexdigest()}]}
    blob = b"".join(stream_gmi_v1(json.dumps(manifest).encode(), [disk], disk_size=len(disk),
                                  modified=dt.datetime(2026, 1, 9, tzinfo=dt.UTC)))
    reader = GmiStreamReader(on_manifest=S.Manifest.from_json, on_part_data=lambda name, view: None,
                             on_part_end=lambda name: None)
    with pytest.raises(GmiStreamError, match="inflates beyond"):
        reader.feed(blob)


def test_micro_packs_l1_and_a_disk_without_room_is_refused(tmp_path: Path):
    """``micro`` (6 MiB, ours) packs the EBRs 64 KiB before their partitions; with the spec's 1 MiB gaps the
    same disk has no room for L1, which is refused in one line, leaving no disk behind."""
    from simulators.bactobox import disk as D
    from simulators.bactobox.profiles import MIB, Profile, get_profile

    disk = D.build_fresh_disk(tmp_path / "micro.img", get_profile("micro"), device_id="bb2241039",
                              version="1.8.4", seed=1)
    try:
        regions = D.read_regions(disk)
        assert D.layout_of(regions) == "L1" and [r.name for r in regions][-2:] == ["config", "data"]
        config, data = D.region(regions, "config"), D.region(regions, "data")
        assert config.start_lba == 8192 + 128 and config.size == 256 * 1024
        assert data.start_lba + data.size // 512 == 6 * MIB // 512
        store = D.DataStore.of(disk, regions)
        assert store.version == 1 and store.superblock()["record_count"] == 20
        assert len(list(store.records())) == 20 and store.settings()["wifi_mode"] == "off"
    finally:
        disk.close()
    spec_gaps = Profile("micro-spec-gaps", 6 * MIB, 1 * MIB, 1 * MIB, 20)
    with pytest.raises(BadInput, match="no room for layout L1"):
        D.build_fresh_disk(tmp_path / "spec.img", spec_gaps, device_id="bb2241039", version="1.8.4", seed=1)
    assert not (tmp_path / "spec.img").exists()


@pytest.mark.parametrize(("fault", "params", "expect"), [
    ("flip_bit", {"offset": 200_000}, "damaged"),  # inside the deflated disk.img: its CRC-32 or sha256 fails
    ("disconnect_at", {"fraction": 0.5}, "transfer_interrupted"),  # by disk bytes read: the size is unknown
    ("source_changed_at", {"part": "disk"}, "source_changed"),  # cut before the descriptor and directory
])
def test_a_bad_format_1_download_is_never_kept(unit18: SimProcess, workdir: Path, fault, params, expect):
    SimControl(unit18.control).set_fault(fault, **params)
    with BactoboxDriver(unit18.address) as driver:
        with pytest.raises(DeviceError, match=expect):
            driver.backup()
        assert list(workdir.iterdir()) == []  # neither the .gmi nor its .part
        assert driver.identify().details["mode"] == "normal"
