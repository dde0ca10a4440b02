"""ZIP records: the server's writer against Python's zipfile and unzip, the strict reader against hostile ZIPs."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zipfile
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nn_helpers import stored_zip

from harness.errors import BadInput
from harness.targets.neuroomnet.ziprecords import (
    CENTRAL_DIRECTORY_HEADER,
    LOCAL_FILE_HEADER,
    U32_MAX,
    Member,
    read_entry,
    scan,
    zip_size,
)

pytestmark = pytest.mark.target_neuroomnet

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
