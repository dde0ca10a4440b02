"""integrity.check, the installer YAML files, the git checkout version, and dd card images."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import BadInput
from harness.targets.planktoscope import card, integrity, versionfile

ROOT = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, "-m", "harness"]


def test_integrity_hash_is_over_name_nul_content():
    assert integrity.file_hash("a.jpg", b"xyz") == hashlib.sha1(b"a.jpg\0xyz").hexdigest()
    assert integrity.file_hash("a.jpg", b"xyz") != hashlib.sha1(b"xyz").hexdigest()


def test_integrity_build_parse_verify():
    files = [("metadata.json", b"{}"), ("09_30_00_000001.jpg", b"\xff\xd8data")]
    data = integrity.build(files)
    assert data.startswith(integrity.HEADER.encode())
    assert [r.name for r in integrity.parse(data)] == ["metadata.json", "09_30_00_000001.jpg"]
    assert integrity.verify(data, dict(files)) == []
    assert "sha1" in integrity.verify(data, {**dict(files), "metadata.json": b"{ }"})[0] or \
        "bytes" in integrity.verify(data, {**dict(files), "metadata.json": b"{ }"})[0]
    assert "missing" in integrity.verify(data, {"metadata.json": b"{}"})[0]


@pytest.mark.parametrize("data", [b"", b"# one header only\n", b"x\n#\n", b"#\n#\na,b\n", b"#\n#\na,1,zz\n",
                                  b"#\n#\na,b,c,d\n"])
def test_integrity_malformed(data):
    with pytest.raises(BadInput):
        integrity.parse(data)


def test_integrity_refuses_names_the_checker_cannot_split():
    with pytest.raises(ValueError):
        integrity.build([("a,b.jpg", b"")])


@given(st.lists(st.tuples(st.text(alphabet="abcdefgh_.0123", min_size=1, max_size=12), st.binary(max_size=64)),
                max_size=6, unique_by=lambda t: t[0]))
def test_integrity_round_trip(files):
    data = integrity.build(files)
    rows = integrity.parse(data)
    assert [(r.name, r.size) for r in rows] == [(n, len(c)) for n, c in files]
    assert integrity.verify(data, dict(files)) == []


def test_versioning_round_trip_and_shape():
    v = versionfile.InstallerVersioning("github.com/PlanktoScope/PlanktoScope",
                                        "4f1c60555be30490c632887eb7e0a16602f46216", "software/v2024.0.0", "v2024.0.0")
    data = v.build()
    assert data.splitlines()[0] == b"# This file was auto-generated!"
    assert b'tag: "software/v2024.0.0"' in data
    assert versionfile.parse_versioning(data) == v
    with pytest.raises(BadInput):
        versionfile.parse_versioning(data.replace(b"4f1c", b"zzzz"))
    with pytest.raises(BadInput):
        versionfile.parse_versioning(b"repo: x\n")


def test_git_version():
    commit = "e7a2d41c9b3f5a8e0d6c2b7f4a1e9d3c8b5f2a60"
    refs = versionfile.build_packed_refs(commit, "software/v2026.0.0-beta.0")
    assert versionfile.git_version(f"{commit}\n".encode(), refs) == "v2026.0.0-beta.0"
    assert versionfile.git_version(b"ref: refs/heads/main\n", refs) is None


def test_card_image_ok(tmp_path):
    path = tmp_path / "card.img"
    card.build_card(path)
    image = card.check_card(path)
    assert image.boot["fat_type"] == "FAT32" and image.boot["volume_label"] == "bootfs" and image.rootfs
    assert [p["type"] for p in image.partitions] == ["0x0c", "0x83"]


def _corrupt(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(("damage", "message"), [
    ("truncate", "truncated"),
    ("mbr_signature", "no MBR"),
    ("fat_signature", "no FAT boot sector"),
    ("overlap", "overlap"),
    ("fat_type", "not FAT"),
    ("ext_magic", "superblock"),
])
def test_card_image_damage(tmp_path, damage, message):
    path = tmp_path / "card.img"
    card.build_card(path)
    if damage == "truncate":
        os.truncate(path, path.stat().st_size - 4096)
    elif damage == "mbr_signature":
        _corrupt(path, 510, b"\0\0")
    elif damage == "fat_signature":
        _corrupt(path, 8192 * 512 + 510, b"\0\0")
    elif damage == "overlap":
        _corrupt(path, 446 + 16 + 8, (8192 + 10).to_bytes(4, "little"))
    elif damage == "fat_type":
        _corrupt(path, 446 + 4, b"\x83")
    elif damage == "ext_magic":
        _corrupt(path, (8192 + 512 * 2048) * 512 + 1024 + 56, b"\0\0")
    with pytest.raises(BadInput, match=message):
        card.check_card(path)


def test_cli_verify_card_image(tmp_path):
    path = tmp_path / "pkscope.img"
    card.build_card(path)
    ok = subprocess.run([*HARNESS, "verify", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK planktoscope backup of pkscope") and "FAT32" in ok.stdout
    os.truncate(path, path.stat().st_size // 2)
    bad = subprocess.run([*HARNESS, "verify", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "truncated" in bad.stderr and bad.stderr.count("\n") == 1
