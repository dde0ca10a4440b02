"""The backup bundle: written, read back, and every kind of damage refused."""

from __future__ import annotations

import datetime as dt
import json
import stat
import zipfile
from pathlib import Path

import pytest

from harness.errors import BadInput
from harness.targets import get_target
from harness.targets.planktoscope import bundle as b
from harness.targets.planktoscope import integrity

CREATED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def make(path: Path, *, mismatch: bool = False) -> Path:
    files = [("metadata.json", b'{"acq_id": "a1"}\n'), ("09_30_00_000001.jpg", b"\xff\xd8" + bytes(300))]
    check = integrity.build(files)
    if mismatch:
        files[1] = (files[1][0], files[1][1][:-1] + b"\x01")
    w = b.BundleWriter(path)
    sha, size = w.add_bytes("files/home/pi/PlanktoScope/hardware.json", b'{"microsteps": 256}\n')
    entries = []
    for name, data in [*files, (integrity.NAME, check)]:
        rel = f"img/2024-05-01/s1/a1/{name}"
        s, n = w.add_bytes(b.dataset_entry(rel), data)
        entries.append({"path": rel, "size": n, "sha256": s})
    w.finish({"format": b.FORMAT, "created_utc": b.created_text(CREATED), "tool": {},
              "source": {"device_id": "pkscope-x", "release": "v2024.0.0"},
              "settings": {"available": True, "files": [{"device_path": "/home/pi/PlanktoScope/hardware.json",
                                                         "bundle_path": "files/home/pi/PlanktoScope/hardware.json",
                                                         "size": size, "sha256": sha}]},
              "datasets": [{"rel_path": "img/2024-05-01/s1/a1", "files": 3, "bytes": 1,
                            "integrity": "mismatch" if mismatch else "ok", "mismatches": [], "entries": entries}],
              "warnings": []})
    return path


def rewrite(src: Path, dst: Path, *, drop: str | None = None, add: tuple[str, bytes] | None = None,
            change: tuple[str, bytes] | None = None, manifest: dict | None = None, mode: int | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename == drop:
                continue
            data = zin.read(info.filename)
            if change and info.filename == change[0]:
                data = change[1]
            if manifest is not None and info.filename == b.MANIFEST:
                data = json.dumps(manifest).encode()
            zout.writestr(info, data)
        if add:
            info = zipfile.ZipInfo(add[0])
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            zout.writestr(info, add[1])
    return dst


def test_round_trip_and_target_view(tmp_path):
    path = make(tmp_path / b.bundle_name("pkscope-x", CREATED))
    bundle = b.load_bundle(path)
    assert bundle.device_id == "pkscope-x" and bundle.release == "v2024.0.0"
    assert bundle.datasets[0].integrity == "ok"
    assert b.host_from_name(path.name) == "pkscope-x"
    art = get_target("planktoscope").load_artifact(path)
    fields = get_target("planktoscope").fields(art)
    assert fields["hardware.microsteps"] == 256
    assert fields["datasets.img/2024-05-01/s1/a1.integrity"] == "ok"


def test_a_recorded_mismatch_loads_with_its_record(tmp_path):
    bundle = b.load_bundle(make(tmp_path / "m.zip", mismatch=True))
    assert bundle.datasets[0].integrity == "mismatch"


@pytest.mark.parametrize(("damage", "message"), [
    ("changed", "sha256"),
    ("dropped", "missing"),
    ("extra", "not listed"),
    ("escape", "escapes"),
    ("absolute", "absolute"),
    ("symlink", "not a regular file"),
    ("bomb", "zip bomb"),
    ("format", "not a PlanktoScope backup"),
    ("not_zip", "not a ZIP"),
    ("integrity", "integrity.check"),
    ("recorded_ok_but_bad", "integrity.check"),
    ("device_id", "host name"),
])
def test_damaged_bundles_are_bad_input(tmp_path, damage, message):
    good = make(tmp_path / "good.zip")
    manifest = json.loads(zipfile.ZipFile(good).read(b.MANIFEST))
    bad = tmp_path / "bad.zip"
    img = "datasets/img/2024-05-01/s1/a1/09_30_00_000001.jpg"
    if damage == "changed":
        rewrite(good, bad, change=("files/home/pi/PlanktoScope/hardware.json", b'{"microsteps": 32}\n'))
    elif damage == "dropped":
        rewrite(good, bad, drop=img)
    elif damage == "extra":
        rewrite(good, bad, add=("files/etc/passwd", b"x"))
    elif damage == "escape":
        rewrite(good, bad, add=("datasets/../../x", b"x"))
    elif damage == "absolute":
        rewrite(good, bad, add=("/etc/x", b"x"))
    elif damage == "symlink":
        rewrite(good, bad, add=("files/link", b"/etc/passwd"), mode=stat.S_IFLNK | 0o777)
    elif damage == "bomb":
        rewrite(good, bad, add=("datasets/bomb", bytes(64 * 1024 * 1024)))
    elif damage == "format":
        rewrite(good, bad, manifest={**manifest, "format": "multispeq-console-backup"})
    elif damage == "not_zip":
        bad.write_bytes(b'{"format": "multispeq-console-backup"}')
    elif damage == "integrity":
        manifest["datasets"][0]["integrity"] = "ok"
        check = "datasets/img/2024-05-01/s1/a1/integrity.check"
        rewrite(good, bad, change=(check, b"#\n#\nmetadata.json,1,0000000000000000000000000000000000000000\n"))
        # keep the manifest's hash honest so only the integrity recomputation can catch it
        data = zipfile.ZipFile(bad).read(check)
        import hashlib

        for e in manifest["datasets"][0]["entries"]:
            if e["path"].endswith(integrity.NAME):
                e["sha256"], e["size"] = hashlib.sha256(data).hexdigest(), len(data)
        rewrite(bad, tmp_path / "bad2.zip", manifest=manifest)
        bad = tmp_path / "bad2.zip"
    elif damage == "recorded_ok_but_bad":
        mism = make(tmp_path / "mm.zip", mismatch=True)
        m2 = json.loads(zipfile.ZipFile(mism).read(b.MANIFEST))
        m2["datasets"][0]["integrity"] = "ok"
        rewrite(mism, bad, manifest=m2)
    elif damage == "device_id":
        rewrite(good, bad, manifest={**manifest, "source": {**manifest["source"], "device_id": "../x"}})
    with pytest.raises(BadInput, match=message):
        b.load_bundle(bad)


def test_entry_names():
    for name in ("files/a/b", "datasets/x.jpg", "manifest.json", "archives/etc.tar"):
        b.check_entry_name(name)
    for name in ("other/x", "files/./a", "files//a", "files/a\\b", "C:/x", ""):
        with pytest.raises(BadInput):
            b.check_entry_name(name)
