"""harness/ziparchive.py: the writer against Python's zipfile and unzip, the strict reader against hostile ZIPs."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import time
import zipfile
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import BadInput
from harness.ziparchive import (
    CENTRAL_DIRECTORY_HEADER,
    LOCAL_FILE_HEADER,
    U32_MAX,
    Member,
    is_symlink,
    read_entry,
    scan,
    unsafe_name,
    write_zip,
    zip_size,
)


def stored_zip(entries: dict[str, bytes], mtime: float = 1_700_000_000) -> bytes:
    members = [Member(n, len(d), zlib.crc32(d), mtime, (lambda d=d: io.BytesIO(d))) for n, d in entries.items()]
    return b"".join(write_zip(members))


names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,8}(/[a-z0-9][a-z0-9_.-]{0,8}){0,2}", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=3000), min_size=1, max_size=6))
def test_writer_round_trips_through_zipfile_and_our_reader(entries):
    blob = stored_zip(entries)
    members = [Member(n, len(d), zlib.crc32(d), 1_700_000_000, lambda d=d: io.BytesIO(d)) for n, d in entries.items()]
    assert len(blob) == zip_size(members)  # the exact Content-Length, known before sending
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        assert z.testzip() is None
        assert {i.filename: z.read(i) for i in z.infolist()} == entries
        assert all(i.compress_type == zipfile.ZIP_STORED and i.flag_bits & 0x800 for i in z.infolist())
    f = io.BytesIO(blob)
    found = scan(f, len(blob))
    assert {e.name: b"".join(read_entry(f, e)) for e in found} == entries
    assert stored_zip(entries) == blob  # deterministic


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip not installed")
def test_unzip_accepts_the_writer(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(stored_zip({"restorepoint.json": b"{}", "config.sqlite": b"x" * 5000, "assets/setup/é.png": b"p"}))
    assert subprocess.run(["unzip", "-t", str(path)], capture_output=True).returncode == 0


def test_zip64_is_planned_for_entries_past_4_gib():
    huge = Member("assets/setup/huge.bin", U32_MAX + 10, 0, 1_700_000_000, lambda: io.BytesIO())
    small = Member("config.sqlite", 10, 0, 1_700_000_000, lambda: io.BytesIO())
    size = zip_size([small, huge])
    # headers: 2 local (30+13, 30+21+20 zip64 extra), 2 central (46+13, 46+21+20), zip64 EOCD + locator + EOCD
    assert size == 10 + U32_MAX + 10 + (30 + 13) + (30 + 21 + 20) + (46 + 13) + (46 + 21 + 20) + 56 + 20 + 22


def refused(blob: bytes, text: str) -> str:
    with pytest.raises(BadInput) as info:
        f = io.BytesIO(blob)
        for e in scan(f, len(blob)):
            b"".join(read_entry(f, e))
    message = str(info.value)
    assert text in message and "\n" not in message, message
    return message


def python_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED, attrs: dict[str, int] | None = None
               ) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, (2026, 1, 9, 10, 0, 0))
            info.compress_type = compression
            if attrs and name in attrs:
                info.create_system = 3
                info.external_attr = attrs[name] << 16
            z.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "C:/x", "a\\b", "a/../../b", "./x", "a//b"])
def test_escaping_names_are_refused(name):
    refused(python_zip({"restorepoint.json": b"{}", name: b"x"}), "unsafe_path")


def test_symlink_encryption_count_and_method_are_refused():
    refused(python_zip({"assets/a/link": b"/etc/passwd"}, attrs={"assets/a/link": 0o120777}), "symbolic link")
    blob = bytearray(python_zip({"a": b"x"}))
    cd = blob.rindex(b"PK\x01\x02")
    blob[cd + 8] |= 1  # central directory flag bit 0: encrypted
    refused(bytes(blob), "encrypted_zip")
    refused(python_zip({f"f{i}": b"" for i in range(10_001)}), "too_many_entries")
    blob = bytearray(python_zip({"a": b"x"}))
    blob[cd + 10] = 14  # LZMA
    refused(bytes(blob), "compression method 14")


def test_deflate_and_data_descriptors_are_accepted():
    class Pipe(io.RawIOBase):  # a stream that cannot seek back, like a pipe: zipfile adds data descriptors
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            self.data += b
            return len(b)

    pipe = Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as z, z.open("restorepoint.json", "w") as w:
        w.write(b"{}" * 10_000)
    blob = bytes(pipe.data)
    assert LOCAL_FILE_HEADER.parse(blob).flags & 0x8
    f = io.BytesIO(blob)
    (entry,) = scan(f, len(blob))
    assert b"".join(read_entry(f, entry)) == b"{}" * 10_000


def test_bombs_and_lies_are_refused():
    refused(python_zip({"bomb": b"\0" * (20 << 20)}, zipfile.ZIP_DEFLATED), "zip bomb")
    # A header that understates the size: inflation stops one byte past the declared size.
    blob = bytearray(python_zip({"a": b"\0" * 100_000}, zipfile.ZIP_DEFLATED))
    cd = blob.rindex(b"PK\x01\x02")
    struct.pack_into("<I", blob, cd + 24, 1000)
    refused(bytes(blob), "inflates beyond")
    # Two central entries pointing at the same data: the overlapping-files bomb.
    one = python_zip({"a": b"x" * 100})
    cd = one.rindex(b"PK\x01\x02")
    eocd = one.rindex(b"PK\x05\x06")
    entry = one[cd:eocd]
    second = bytearray(entry)
    second[46:47] = b"b"
    tail = bytearray(one[eocd:])
    struct.pack_into("<HHI", tail, 8, 2, 2, len(entry) * 2)
    refused(one[:cd] + entry + bytes(second) + bytes(tail), "local header names")


def test_corruption_and_truncation_are_refused():
    good = stored_zip({"restorepoint.json": b"{}", "config.sqlite": b"abc" * 1000})
    data = bytearray(good)
    data[200] ^= 0xFF
    refused(bytes(data), "CRC-32")
    refused(good[: len(good) // 2], "not a ZIP")
    refused(b"PK\x03\x04 not really", "not a ZIP")
    h = CENTRAL_DIRECTORY_HEADER.parse(good[good.rindex(b"PK\x01\x02"):])
    assert h.name == b"config.sqlite"


# --- properties added with the shared module ---------------------------------------------------------------


def read_all(blob: bytes, **limits) -> dict[str, bytes]:
    f = io.BytesIO(blob)
    return {e.name: b"".join(read_entry(f, e)) for e in scan(f, len(blob), **limits)}


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=2000), min_size=1, max_size=5),
       st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
def test_reader_accepts_what_zipfile_writes(entries, compression):
    assert read_all(python_zip(entries, compression)) == entries


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=500), min_size=1, max_size=4),
       st.integers(min_value=315532800, max_value=4_000_000_000))
def test_writer_is_deterministic_and_zipfile_reads_the_utc_time(entries, mtime):
    blob = stored_zip(entries, mtime)
    assert blob == stored_zip(entries, mtime)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        t = time.gmtime(mtime)
        assert all(i.date_time[:5] == (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min) for i in z.infolist())


hostile = st.one_of(
    st.builds(lambda a, b: f"{a}/../{b}", names, names),
    st.builds(lambda a: f"/{a}", names),
    st.builds(lambda d, a: f"{d}:/{a}", st.sampled_from("CDcz"), names),
    st.builds(lambda a, b: f"{a}\\{b}", names, names),
    st.builds(lambda a, c: f"{a}{c}", names, st.sampled_from(["\x00", "\x01", "\n", "\x1f"])),
    st.just(".."), st.just("a/./b"), st.just("a//b"),
)


@settings(max_examples=60, deadline=None)
@given(hostile)
def test_unsafe_names_are_refused_whoever_wrote_the_zip(name):
    assert unsafe_name(name) is not None
    refused(stored_zip({"ok.txt": b"x", name: b"y"}), "unsafe_path")


@settings(max_examples=60, deadline=None)
@given(names)
def test_plain_names_and_folders_are_safe(name):
    assert unsafe_name(name) is None
    assert unsafe_name(name + "/") is None


def test_symlink_test_needs_a_unix_maker():
    assert is_symlink(3 << 8, 0o120777 << 16)
    assert not is_symlink(0, 0o120777 << 16)  # MS-DOS made: the high bits are not a mode
    assert not is_symlink(3 << 8, 0o100644 << 16)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(names, st.binary(min_size=1, max_size=800), min_size=1, max_size=4), st.data())
def test_any_truncation_is_refused(entries, data):
    blob = stored_zip(entries)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    with pytest.raises(BadInput) as info:
        read_all(blob[:cut])
    assert "\n" not in str(info.value)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, st.binary(min_size=1, max_size=800), min_size=1, max_size=4), st.data())
def test_any_flipped_byte_is_refused_or_harmless(entries, data):
    """One corrupted byte anywhere: a one-line refusal, or (names, times, unused fields) the same content."""
    blob = bytearray(stored_zip(entries))
    at = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    blob[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        got = read_all(bytes(blob))
    except BadInput as exc:
        assert "\n" not in str(exc)
        return
    # Accepted: every byte of content still passed its CRC-32 and size check.
    assert sorted(got.values()) == sorted(entries.values())


def test_bomb_limits_total_ratio_and_count_are_parameters():
    blob = python_zip({"a": b"\0" * 200_000, "b": b"\0" * 200_000}, zipfile.ZIP_DEFLATED)
    assert len(read_all(blob)) == 2
    with pytest.raises(BadInput, match="zip bomb"):
        read_all(blob, max_total=300_000)
    with pytest.raises(BadInput, match="too_many_entries"):
        read_all(blob, max_entries=1)
    big = python_zip({"a": b"\0" * (2 << 20)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(BadInput, match="zip bomb"):
        read_all(big, max_ratio=10)


def test_zip64_archive_from_zipfile_is_read():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, z.open("big", "w", force_zip64=True) as w:
        w.write(b"abc" * 1000)
    assert read_all(buf.getvalue()) == {"big": b"abc" * 1000}


def test_name_check_can_be_worded_by_the_target():
    with pytest.raises(BadInput, match="has a forbidden name"):
        read_all(stored_zip({"x": b"1"}), name_check=lambda n: "a forbidden name")
