"""GMI files (bactobox.md §3, §4.7): written streamed, read by Python's zipfile and by ours; hostile files refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from bbtools import LAYOUT, flip_byte, make_gmi, make_manifest, part_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import BadInput
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.gmi import (
    MEDIA_BYTES,
    EntrySpec,
    GmiStreamError,
    GmiStreamReader,
    ZipPlan,
    inspect_gmi,
    verify_gmi,
)


def test_layout_and_python_zipfile_agree(tmp_path: Path):
    path = make_gmi(tmp_path / "a.gmi")
    raw = path.read_bytes()
    assert raw[30:38] == b"mimetype" and raw[38:65] == MEDIA_BYTES  # the magic-number sniff of §3.2
    assert struct.unpack_from("<H", raw, 28)[0] == 0  # no extra field on the mimetype entry
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["mimetype", "manifest.json", *(f"parts/{n}.img" for n, _, _ in LAYOUT)]
        assert z.testzip() is None  # every CRC-32 checks out
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        assert z.read("parts/system0.img") == part_bytes("system0", 256 * 1024)
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["device_id"] == "bb2241039"
    info = verify_gmi(path)
    assert not info.zip64 and info.size == len(raw)
    assert info.manifest_sha256 == hashlib.sha256(json.dumps(manifest, indent=2).encode() + b"\n").hexdigest()


def test_forced_zip64_is_read_by_both_readers(tmp_path: Path):
    path = make_gmi(tmp_path / "z64.gmi", force_zip64=True)
    raw = path.read_bytes()
    assert b"PK\x06\x06" in raw[-200:] and b"PK\x06\x07" in raw[-200:]
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
    info = verify_gmi(path)
    assert info.zip64


def test_zip64_offsets_past_4_gib_in_a_sparse_file(tmp_path: Path):
    """The bench-4g/8g case of §4.7: sizes and offsets beyond 32 bits. The plan's headers are written at their
    offsets into a sparse file (the part data is all zeros, a hole), then both readers locate the EOCD by
    scanning the tail and the ZIP64 locator 20 bytes before it."""
    big = 6591 << 20
    sizes = [1 << 20, 64 << 20, 768 << 20, 768 << 20, big]
    manifest = b"{}"
    entries = [EntrySpec("mimetype", len(MEDIA_BYTES), zlib.crc32(MEDIA_BYTES)),
               EntrySpec("manifest.json", len(manifest), zlib.crc32(manifest)),
               *(EntrySpec(f"parts/{n}.img", s, 0) for (n, _, _), s in zip(LAYOUT, sizes, strict=True))]
    plan = ZipPlan(entries, modified=dt.datetime(2026, 1, 9, tzinfo=dt.UTC))
    assert plan.total_size > 8 << 30
    path = tmp_path / "big.gmi"
    with open(path, "wb") as f:
        f.write(plan.local_headers[0] + MEDIA_BYTES + plan.local_headers[1] + manifest)
        for i in range(2, len(entries)):
            f.seek(plan.offsets[i])
            f.write(plan.local_headers[i])
        f.seek(plan.cd_offset)
        f.write(plan.tail)
    try:
        assert os.stat(path).st_blocks * 512 < 1 << 20  # sparse: the test costs no disk
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("parts/data.img")
            assert info.file_size == big  # the entry passes 4 GiB: ZIP64 sizes
        assert plan.cd_offset > 1 << 32  # the central directory too: ZIP64 end record and locator
        assert plan.tail[-22 - 20:-22][:4] == b"PK\x06\x07"
        with pytest.raises(BadInput, match="manifest"):
            inspect_gmi(path)  # the structure is fine; the manifest "{}" is not
        local = plan.local_headers[6]
        assert struct.unpack_from("<II", local, 18) == (0xFFFFFFFF, 0xFFFFFFFF)  # sizes in the ZIP64 extra
    finally:
        path.unlink()


def test_truncated_gmi_is_refused(tmp_path: Path):
    path = make_gmi(tmp_path / "t.gmi")
    data = path.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 100):
        short = tmp_path / f"cut{cut}.gmi"
        short.write_bytes(data[:cut])
        with pytest.raises(BadInput, match="truncated|end-of-central-directory"):
            verify_gmi(short)


def test_flipped_bit_in_a_part_is_named(tmp_path: Path):
    path = make_gmi(tmp_path / "f.gmi")
    entry = next(e for e in inspect_gmi(path).entries if e.name == "parts/system1.img")
    flip_byte(path, entry.data_offset + 1000)
    inspect_gmi(path)  # the structure is still fine: only hashing finds it
    with pytest.raises(BadInput, match="local_gmi_corrupt: system1 sha256 mismatch"):
        verify_gmi(path)


def test_not_a_gmi(tmp_path: Path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("mimetype", "application/zip")
        z.writestr("manifest.json", "{}")
    with pytest.raises(BadInput, match="not a GMI file"):
        inspect_gmi(plain)
    text = tmp_path / "text.gmi"
    text.write_text("hello")
    with pytest.raises(BadInput, match="not a GMI file"):
        inspect_gmi(text)


def _zip_with(tmp_path: Path, names: list[str], *, method=zipfile.ZIP_STORED) -> Path:
    path = tmp_path / "hostile.gmi"
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), MEDIA_BYTES, compress_type=zipfile.ZIP_STORED)
        for name in names:
            z.writestr(zipfile.ZipInfo(name), b"x" * 512)
    return path


@pytest.mark.parametrize("name", ["../evil.img", "/etc/passwd", "parts/../../x", "C:\\windows", "a//b"])
def test_entry_names_escaping_the_folder_are_refused(tmp_path: Path, name: str):
    with pytest.raises(BadInput, match="escape"):
        inspect_gmi(_zip_with(tmp_path, ["manifest.json", name]))


def test_too_many_entries_are_refused(tmp_path: Path):
    with pytest.raises(BadInput, match="entries"):
        inspect_gmi(_zip_with(tmp_path, ["manifest.json", *(f"parts/p{i}.img" for i in range(20))]))


def test_entries_must_match_the_manifest(tmp_path: Path):
    datas = [part_bytes(n, s) for n, _, s in LAYOUT]
    manifest = make_manifest(datas)
    path = tmp_path / "m.gmi"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", MEDIA_BYTES)
        z.writestr("manifest.json", manifest.to_json())
        for (n, _, _), d in zip(LAYOUT[:-1], datas, strict=False):
            z.writestr(f"parts/{n}.img", d)
        z.writestr("parts/extra.img", b"")
    with pytest.raises(BadInput, match="do not match the manifest"):
        inspect_gmi(path)


def test_a_deflate_bomb_is_refused(tmp_path: Path):
    """Format 1 stores disk.img deflated: output beyond the stated size is refused while inflating."""
    size = 1 << 20
    disk = bytes(size)
    doc = {"format": 1, "device_id": "bb2241039", "software_version": "1.8.4", "created": "2023-06-01T00:00:00Z",
           "disk_size_bytes": size, "parts": [{"name": "disk", "file": "disk.img", "size_bytes": size,
                                               "sha256": hashlib.sha256(disk).hexdigest()}]}
    good = tmp_path / "f1.gmi"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("mimetype", MEDIA_BYTES)
        z.writestr("manifest.json", json.dumps(doc))
        z.writestr("disk.img", disk, compress_type=zipfile.ZIP_DEFLATED)
    assert verify_gmi(good).format == 1
    # A real bomb: 64 MiB of zeros deflated, with both headers claiming the manifest's 1 MiB, so the sizes
    # agree everywhere and only the inflater can notice (it stops at the stated size).
    bomb = tmp_path / "bomb.gmi"
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("mimetype", MEDIA_BYTES)
        z.writestr("manifest.json", json.dumps(doc))
        z.writestr("disk.img", bytes(64 << 20), compress_type=zipfile.ZIP_DEFLATED)
        info = z.getinfo("disk.img")
    raw = bytearray(bomb.read_bytes())
    struct.pack_into("<I", raw, info.header_offset + 22, size)  # local header: uncompressed size
    central = raw.rindex(b"PK\x01\x02")  # the last central directory entry: disk.img
    assert raw[central + 46:central + 46 + 8] == b"disk.img"
    struct.pack_into("<I", raw, central + 24, size)  # central header: uncompressed size
    bomb.write_bytes(bytes(raw))
    with pytest.raises(BadInput, match="inflates beyond its stated 1048576 bytes"):
        verify_gmi(bomb)


# --- the streaming reader (the device side of an upload) ------------------------------------------------


def _stream(path: Path, cuts: list[int], *, announced: str | None = None) -> tuple[dict[str, bytes], list[str]]:
    got: dict[str, bytearray] = {}
    order: list[str] = []

    def on_manifest(raw: bytes) -> S.Manifest:
        if announced is not None and hashlib.sha256(raw).hexdigest() != announced:
            raise GmiStreamError("manifest_mismatch", "differs")
        return S.Manifest.from_json(raw)

    def on_data(name: str, view: memoryview) -> None:
        if name not in got:
            order.append(name)
        got.setdefault(name, bytearray()).extend(view)

    reader = GmiStreamReader(on_manifest=on_manifest, on_part_data=on_data, on_part_end=lambda n: None)
    data = path.read_bytes()
    pos = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        if cut > pos:
            reader.feed(data[pos:cut])
            pos = cut
    reader.finish()
    return {k: bytes(v) for k, v in got.items()}, order


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 1_100_000), max_size=12), st.booleans())
def test_stream_reader_any_chunking(tmp_path_factory, cuts, zip64):
    path = make_gmi(tmp_path_factory.mktemp("s") / "s.gmi", force_zip64=zip64)
    got, order = _stream(path, cuts)
    assert order == [f"parts/{n}.img" for n, _, _ in LAYOUT]
    for name, _, size in LAYOUT:
        assert got[f"parts/{name}.img"] == part_bytes(name, size)


def test_stream_reader_refuses_before_any_image_byte(tmp_path: Path):
    path = make_gmi(tmp_path / "s.gmi")
    with pytest.raises(GmiStreamError) as err:
        _stream(path, [10, 100, 5000], announced="0" * 64)
    assert err.value.code == "manifest_mismatch"
    not_gmi = tmp_path / "x.bin"
    not_gmi.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(GmiStreamError) as err:
        _stream(not_gmi, [])
    assert err.value.code == "not_a_gmi"


def test_stream_reader_detects_a_short_body(tmp_path: Path):
    path = make_gmi(tmp_path / "s.gmi")
    data = path.read_bytes()
    reader = GmiStreamReader(on_manifest=S.Manifest.from_json, on_part_data=lambda n, v: None,
                             on_part_end=lambda n: None)
    reader.feed(data[: len(data) // 2])
    with pytest.raises(GmiStreamError) as err:
        reader.finish()
    assert err.value.code == "transfer_interrupted"
