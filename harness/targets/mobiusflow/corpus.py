"""The bad-input corpus for MobiusFlow: hostile, corrupted and foreign ZIPs made from a good backup.

Every function returns the bytes of a file the harness (and the node) must refuse before anything reaches the
configuration. Used by the tests, the feature steps and ``fixtures/bad/mobiusflow`` alike, so each damage is
defined once. ``DAMAGES`` maps a name to (maker, the error code the harness reports).
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from collections.abc import Callable

_Entries = list[tuple[zipfile.ZipInfo, bytes]]


def _entries(good: bytes) -> _Entries:
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def _rebuild(entries: _Entries, extra: _Entries | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
        for info, data in extra or []:
            zf.writestr(info, data)
    return buf.getvalue()


def with_entry(good: bytes, name: str) -> bytes:
    """An extra entry with ``name`` (``../evil.json``, ``/etc/evil.json``, ``C:/evil.json`` …)."""
    # zipfile normalises names given as str ("/etc/x" -> "etc/x"); a ZipInfo whose filename is set after
    # construction is written as is, the way a hostile tool writes it.
    info = zipfile.ZipInfo("placeholder")
    info.filename = name
    info.compress_type = zipfile.ZIP_DEFLATED
    return _rebuild(_entries(good), [(info, b'{"pwned": true}\n')])


def zip_slip(good: bytes) -> bytes:
    return with_entry(good, "../../etc/evil.json")


def absolute_path(good: bytes) -> bytes:
    return with_entry(good, "/etc/evil.json")


def drive_letter(good: bytes) -> bytes:
    return with_entry(good, "C:/Windows/evil.json")


def backslash(good: bytes) -> bytes:
    return with_entry(good, "..\\..\\evil.json")


def symlink(good: bytes) -> bytes:
    info = zipfile.ZipInfo("services/link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _rebuild(_entries(good), [(info, b"/etc/passwd")])


def encrypted(good: bytes) -> bytes:
    """Flag bit 0 (encrypted) set on ``node/node.json`` in the local header and the central directory."""
    data = bytearray(good)
    target = b"node/node.json"
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + name_len]) == target:
            data[pos + 8] |= 0x01
            local = struct.unpack_from("<I", data, pos + 42)[0]
            data[local + 6] |= 0x01
            return bytes(data)
        pos += 4
    raise ValueError("the good backup has no node/node.json")


def zip_bomb(good: bytes) -> bytes:
    """A good backup plus an entry of 8 MiB of zeros (about 1000:1)."""
    info = zipfile.ZipInfo("tags.json")
    info.compress_type = zipfile.ZIP_DEFLATED
    entries = [(i, d) for i, d in _entries(good) if i.filename != "tags.json"]
    return _rebuild(entries, [(info, b" " * (8 << 20))])


def corrupted(good: bytes) -> bytes:
    """One byte flipped inside the data of the largest entry: a CRC or inflate error on reading."""
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    data = bytearray(good)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x5A
    return bytes(data)


def truncated(good: bytes) -> bytes:
    return good[: len(good) * 2 // 3]


def foreign() -> bytes:
    """Another target's ZIP: a NeuroomNet-style restore point, no backup.json."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("restorepoint.json", '{"product": "NeuroomNet", "format": 1}\n')
        zf.writestr("config.sqlite", b"SQLite format 3\x00" + b"\x00" * 84)
    return buf.getvalue()


def other_product(good: bytes) -> bytes:
    """A ZIP with a backup.json of another product."""
    entries = [(i, d) for i, d in _entries(good) if i.filename != "backup.json"]
    info = zipfile.ZipInfo("backup.json")
    return _rebuild([(info, b'{"product": "NodeRED", "format": "1.1"}\n'), *entries])


def tampered(good: bytes) -> bytes:
    """``node/services.json`` edited after the backup: its sha256 no longer matches backup.json."""
    entries = []
    for info, data in _entries(good):
        if info.filename == "node/services.json":
            data = data.replace(b'"enabled": true', b'"enabled": false', 1)
        entries.append((info, data))
    return _rebuild(entries)


def not_a_zip() -> bytes:
    return b'{"this is": "a JSON file, not a zip"}\n'


DAMAGES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "zip-slip entry": (zip_slip, "unsafe_path"),
    "absolute path entry": (absolute_path, "unsafe_path"),
    "drive letter entry": (drive_letter, "unsafe_path"),
    "backslash entry": (backslash, "unsafe_path"),
    "symbolic link entry": (symlink, "unsafe_path"),
    "encrypted entry": (encrypted, "encrypted_zip"),
    "zip bomb": (zip_bomb, "zip_bomb_suspected"),
    "corrupted byte": (corrupted, "not_a_zip"),
    "truncated file": (truncated, "not_a_zip"),
    "another target's ZIP": (lambda good: foreign(), "manifest_missing"),
    "another product's manifest": (other_product, "not_a_mobiusflow_backup"),
    "tampered configuration file": (tampered, "integrity_failed"),
    "JSON file": (lambda good: not_a_zip(), "not_a_zip"),
}
