"""The one ZIP toolkit of the harness: PKWARE APPNOTE records, a streaming stored-ZIP writer, a strict reader.

Shared by the targets whose artifacts are ZIPs (NeuroomNet restore points, BactoBox GMI images); lifted from
their own copies so one set of record layouts and one set of checks serve all of them.

Records (construct, little-endian): local file header, central directory header, end of central directory,
ZIP64 end of central directory and locator, extra fields, data descriptors. Each header exists as a
``*_FIXED`` struct (the fixed-size part, for readers that parse a header before its name has arrived) and as
the full record with its name, extra field and comment.

Writer (``Member`` + ``zip_size`` + ``write_zip``): stored entries only, no data descriptors, sizes and CRC-32
in the local headers, UTF-8 names (flag bit 11), ZIP64 only when needed, entry times from the files' mtimes
(UTC), so the whole length is known before the first byte goes out (an exact ``Content-Length``) and two
archives of the same files are byte-identical.

Reader (``scan`` + ``read_entry``): walks the central directory *and* every local header, refusing what a
hostile or damaged archive does: names that escape the folder (absolute, ``..``, backslashes, drive
letters, control characters), symlinks, encrypted entries, too many entries, unknown compression, entries
whose data overlap (the "overlapping files" zip bomb), declared sizes with absurd ratios or totals, and data
that inflates beyond its declared size or fails its CRC-32. Deflate and data descriptors are accepted, as
users re-zip folders with other tools. Every refusal is a one-line ``BadInput``.
"""

from __future__ import annotations

import datetime as dt
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from construct import Bytes, Const, ConstructError, GreedyRange, Int16ul, Int32ul, Int64ul, Struct, this

from harness.errors import BadInput

LFH_SIG = b"PK\x03\x04"
CDH_SIG = b"PK\x01\x02"
EOCD_SIG = b"PK\x05\x06"
ZIP64_EOCD_SIG = b"PK\x06\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
DATA_DESCRIPTOR_SIG = b"PK\x07\x08"

FLAG_ENCRYPTED = 0x0001
FLAG_DATA_DESCRIPTOR = 0x0008
FLAG_STRONG_ENCRYPTION = 0x0040
FLAG_UTF8 = 0x0800
STORED, DEFLATED = 0, 8
ZIP64_EXTRA_ID = 0x0001
U32_MAX = 0xFFFFFFFF
U16_MAX = 0xFFFF
S_IFMT, S_IFLNK, S_IFREG = 0o170000, 0o120000, 0o100000

# The fixed parts are separate structs because streaming readers parse a header before its name and extra
# field have arrived (BactoBox's GMI upload); the full records add the variable tail.
# The fields a local header and a central directory header share, in the same order in both.
_ENTRY_FIELDS = (
    "version_needed" / Int16ul,
    "flags" / Int16ul,
    "method" / Int16ul,
    "mod_time" / Int16ul,
    "mod_date" / Int16ul,
    "crc32" / Int32ul,
    "compressed_size" / Int32ul,
    "uncompressed_size" / Int32ul,
    "name_length" / Int16ul,
    "extra_length" / Int16ul,
)
LOCAL_FILE_HEADER_FIXED = Struct("signature" / Const(LFH_SIG), *_ENTRY_FIELDS)  # then name, extra
LFH_FIXED = 30
LOCAL_FILE_HEADER = Struct(
    *LOCAL_FILE_HEADER_FIXED.subcons,
    "name" / Bytes(this.name_length),
    "extra" / Bytes(this.extra_length),
)

CENTRAL_DIRECTORY_HEADER_FIXED = Struct(
    "signature" / Const(CDH_SIG),
    "version_made_by" / Int16ul,
    *_ENTRY_FIELDS,
    "comment_length" / Int16ul,
    "disk_start" / Int16ul,
    "internal_attributes" / Int16ul,
    "external_attributes" / Int32ul,
    "local_header_offset" / Int32ul,
)  # then name, extra, comment
CDH_FIXED = 46
CENTRAL_DIRECTORY_HEADER = Struct(
    *CENTRAL_DIRECTORY_HEADER_FIXED.subcons,
    "name" / Bytes(this.name_length),
    "extra" / Bytes(this.extra_length),
    "comment" / Bytes(this.comment_length),
)

EXTRA_FIELD_HEADER = Struct("id" / Int16ul, "size" / Int16ul)  # then ``size`` bytes
EXTRA_FIELD = Struct("id" / Int16ul, "size" / Int16ul, "data" / Bytes(this.size))
EXTRA_FIELDS = GreedyRange(EXTRA_FIELD)

DATA_DESCRIPTOR = Struct("signature" / Const(DATA_DESCRIPTOR_SIG), "crc32" / Int32ul,
                         "compressed_size" / Int32ul, "uncompressed_size" / Int32ul)
DATA_DESCRIPTOR64 = Struct("signature" / Const(DATA_DESCRIPTOR_SIG), "crc32" / Int32ul,
                           "compressed_size" / Int64ul, "uncompressed_size" / Int64ul)

END_OF_CENTRAL_DIRECTORY_FIXED = Struct(
    "signature" / Const(EOCD_SIG),
    "disk_number" / Int16ul,
    "cd_disk" / Int16ul,
    "entries_on_disk" / Int16ul,
    "entries_total" / Int16ul,
    "cd_size" / Int32ul,
    "cd_offset" / Int32ul,
    "comment_length" / Int16ul,
)  # then the comment
EOCD_FIXED = 22
END_OF_CENTRAL_DIRECTORY = Struct(
    *END_OF_CENTRAL_DIRECTORY_FIXED.subcons,
    "comment" / Bytes(this.comment_length),
)

ZIP64_END_OF_CENTRAL_DIRECTORY = Struct(
    "signature" / Const(ZIP64_EOCD_SIG),
    "record_size" / Int64ul,  # size of the remaining record: 44 without an extensible data sector
    "version_made_by" / Int16ul,
    "version_needed" / Int16ul,
    "disk_number" / Int32ul,
    "cd_disk" / Int32ul,
    "entries_on_disk" / Int64ul,
    "entries_total" / Int64ul,
    "cd_size" / Int64ul,
    "cd_offset" / Int64ul,
)
ZIP64_EOCD_FIXED = 56

ZIP64_LOCATOR = Struct(
    "signature" / Const(ZIP64_LOCATOR_SIG),
    "eocd64_disk" / Int32ul,
    "eocd64_offset" / Int64ul,
    "total_disks" / Int32ul,
)
ZIP64_LOCATOR_SIZE = 20


def dos_date_time(when: dt.datetime) -> tuple[int, int]:
    """(time, date) in MS-DOS format from the fields of ``when`` as given (2-second resolution, 1980 at the
    earliest); no zone conversion, so the caller decides which clock the archive shows."""
    c = max(when, dt.datetime(1980, 1, 1, tzinfo=when.tzinfo))
    return (c.hour << 11) | (c.minute << 5) | (c.second // 2), ((c.year - 1980) << 9) | (c.month << 5) | c.day


def dos_datetime(mtime: float) -> tuple[int, int]:
    """(time, date) in MS-DOS format from a POSIX time, in UTC so the bytes do not depend on the host zone."""
    return dos_date_time(dt.datetime.fromtimestamp(max(mtime, 315532800), dt.UTC))


# --- writer ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One file to store: its name in the ZIP, size, CRC-32, mtime and how to open it for reading."""

    name: str
    size: int
    crc32: int
    mtime: float
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class _Planned:
    member: Member
    offset: int
    local: bytes
    central: bytes


def _plan(members: list[Member]) -> tuple[list[_Planned], bytes, int]:
    planned: list[_Planned] = []
    offset = 0
    for m in members:
        name = m.name.encode("utf-8")
        t, d = dos_datetime(m.mtime)
        big = m.size >= U32_MAX
        local_extra = EXTRA_FIELD.build({"id": ZIP64_EXTRA_ID, "size": 16,
                                         "data": Int64ul.build(m.size) * 2}) if big else b""
        local = LOCAL_FILE_HEADER.build(dict(
            version_needed=45 if big else 20, flags=FLAG_UTF8, method=STORED, mod_time=t, mod_date=d,
            crc32=m.crc32, compressed_size=U32_MAX if big else m.size,
            uncompressed_size=U32_MAX if big else m.size, name_length=len(name), extra_length=len(local_extra),
            name=name, extra=local_extra))
        far = offset >= U32_MAX
        cd_data = (Int64ul.build(m.size) * 2 if big else b"") + (Int64ul.build(offset) if far else b"")
        cd_extra = EXTRA_FIELD.build({"id": ZIP64_EXTRA_ID, "size": len(cd_data), "data": cd_data}) \
            if cd_data else b""
        central = CENTRAL_DIRECTORY_HEADER.build(dict(
            version_made_by=(3 << 8) | (45 if big or far else 20), version_needed=45 if big or far else 20,
            flags=FLAG_UTF8, method=STORED, mod_time=t, mod_date=d, crc32=m.crc32,
            compressed_size=U32_MAX if big else m.size, uncompressed_size=U32_MAX if big else m.size,
            name_length=len(name), extra_length=len(cd_extra), comment_length=0, disk_start=0,
            internal_attributes=0, external_attributes=(S_IFREG | 0o644) << 16,
            local_header_offset=U32_MAX if far else offset, name=name, extra=cd_extra, comment=b""))
        planned.append(_Planned(m, offset, local, central))
        offset += len(local) + m.size
    cd_offset = offset
    cd = b"".join(p.central for p in planned)
    count = len(planned)
    zip64 = cd_offset >= U32_MAX or len(cd) >= U32_MAX or count >= U16_MAX or \
        any(p.member.size >= U32_MAX or p.offset >= U32_MAX for p in planned)
    tail = b""
    if zip64:
        eocd64_offset = cd_offset + len(cd)
        tail += ZIP64_END_OF_CENTRAL_DIRECTORY.build(dict(
            record_size=ZIP64_EOCD_FIXED - 12, version_made_by=(3 << 8) | 45, version_needed=45, disk_number=0,
            cd_disk=0, entries_on_disk=count, entries_total=count, cd_size=len(cd), cd_offset=cd_offset))
        tail += ZIP64_LOCATOR.build(dict(eocd64_disk=0, eocd64_offset=eocd64_offset, total_disks=1))
    tail += END_OF_CENTRAL_DIRECTORY.build(dict(
        disk_number=0, cd_disk=0, entries_on_disk=min(count, U16_MAX), entries_total=min(count, U16_MAX),
        cd_size=min(len(cd), U32_MAX), cd_offset=min(cd_offset, U32_MAX), comment_length=0, comment=b""))
    return planned, cd + tail, cd_offset + len(cd) + len(tail)


def zip_size(members: list[Member]) -> int:
    """The exact length of the ZIP that ``write_zip`` produces, before producing it."""
    return _plan(members)[2]


def write_zip(members: list[Member], chunk: int = 1 << 20) -> Iterator[bytes]:
    """The ZIP's bytes, streamed: each member is read as it goes out (flat memory for gigabyte assets)."""
    planned, tail, _ = _plan(members)
    for p in planned:
        yield p.local
        left = p.member.size
        with p.member.open() as f:
            while left > 0:
                data = f.read(min(chunk, left))
                if not data:
                    raise OSError(f"{p.member.name} shrank while it was being sent")
                left -= len(data)
                yield data
    yield tail


# --- reader ------------------------------------------------------------------------------------------------

MAX_ENTRIES = 10_000
MAX_RATIO = 1000  # deflate reaches ~1:1000 at best; a higher declared ratio is a bomb
MAX_CD_BYTES = 64 << 20

NameCheck = Callable[[str], "str | None"]


@dataclass
class Entry:
    """One entry as the central directory declares it (ZIP64 values applied)."""

    name: str
    method: int
    flags: int
    crc32: int
    compressed_size: int
    uncompressed_size: int
    header_offset: int
    data_offset: int = 0  # a streaming reader fills it from the local header
    external_attr: int = 0

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_name(name: str) -> str | None:
    """Why an entry name would escape the extraction folder (or is no plain relative path), or None.

    A folder entry's trailing ``/`` is allowed. The reason reads after "has": "ZIP entry 'x' has a backslash".
    """
    path = name.rstrip("/") if name.endswith("/") and len(name) > 1 else name
    if not path:
        return "an empty name"
    if "\\" in path:
        return "a backslash"
    if path.startswith("/"):
        return "an absolute path"
    if _DRIVE.match(path):
        return "a drive letter"
    if any(ord(c) < 0x20 for c in path):
        return "a control character"
    parts = path.split("/")
    if any(p == ".." for p in parts):
        return "'..' (it escapes the folder)"
    if any(p in ("", ".") for p in parts):
        return "an empty or '.' path component"
    return None


def is_symlink(version_made_by: int, external_attributes: int) -> bool:
    """A Unix-made entry whose mode says symbolic link (extracting it would let later entries escape)."""
    return (version_made_by >> 8) == 3 and ((external_attributes >> 16) & S_IFMT) == S_IFLNK


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _zip64_values(extra: bytes, want: list[str], where: str) -> dict[str, int]:
    try:
        fields = EXTRA_FIELDS.parse(extra)
    except ConstructError:
        fields = []
    z = next((x for x in fields if x.id == ZIP64_EXTRA_ID), None)
    if z is None:
        raise BadInput(f"{where}: 0xFFFFFFFF sizes without a ZIP64 extra field (corrupted ZIP)")
    out: dict[str, int] = {}
    pos = 0
    for name in want:
        width = 4 if name == "disk_start" else 8
        if pos + width > len(z.data):
            raise BadInput(f"{where}: ZIP64 extra field too short (corrupted ZIP)")
        out[name] = int.from_bytes(z.data[pos:pos + width], "little")
        pos += width
    return out


def _find_eocd(f: BinaryIO, size: int) -> tuple[int, Any]:
    tail_len = min(size, EOCD_FIXED + 0xFFFF)
    tail = _read_at(f, size - tail_len, tail_len)
    pos = len(tail)
    while True:
        pos = tail.rfind(EOCD_SIG, 0, pos)
        if pos < 0:
            raise BadInput("not a ZIP file: no end-of-central-directory record (truncated or another format)")
        if pos + EOCD_FIXED <= len(tail):
            comment_len = int.from_bytes(tail[pos + 20:pos + 22], "little")
            if pos + EOCD_FIXED + comment_len == len(tail):
                return size - tail_len + pos, END_OF_CENTRAL_DIRECTORY.parse(tail[pos:])
        if pos == 0:
            raise BadInput("not a ZIP file: no valid end-of-central-directory record (truncated?)")


def scan(f: BinaryIO, size: int, *, max_entries: int = MAX_ENTRIES, max_total: int = 8 << 30,
         max_ratio: int = MAX_RATIO, name_check: NameCheck = unsafe_name) -> list[Entry]:
    """Check a whole ZIP's structure and return its entries; BadInput with a one-line reason otherwise.

    ``name_check`` lets a target word the unsafe-name reason its own way (its tests and users read it).
    """
    if size < EOCD_FIXED:
        raise BadInput(f"not a ZIP file: {size} bytes")
    eocd_pos, eocd = _find_eocd(f, size)
    entries_total, cd_size, cd_offset = eocd.entries_total, eocd.cd_size, eocd.cd_offset
    cd_end_limit = eocd_pos
    if eocd.disk_number != 0 or eocd.cd_disk != 0:
        raise BadInput("multi-disk (split) ZIP archives are not supported")
    locator_pos = eocd_pos - ZIP64_LOCATOR_SIZE
    if locator_pos >= 0 and _read_at(f, locator_pos, 4) == ZIP64_LOCATOR_SIG:
        loc = ZIP64_LOCATOR.parse(_read_at(f, locator_pos, ZIP64_LOCATOR_SIZE))
        if loc.eocd64_offset + ZIP64_EOCD_FIXED > locator_pos:
            raise BadInput("ZIP64 locator points outside the file (corrupted ZIP)")
        try:
            e64 = ZIP64_END_OF_CENTRAL_DIRECTORY.parse(_read_at(f, loc.eocd64_offset, ZIP64_EOCD_FIXED))
        except ConstructError:
            raise BadInput("ZIP64 end-of-central-directory record is missing (corrupted ZIP)") from None
        entries_total, cd_size, cd_offset = e64.entries_total, e64.cd_size, e64.cd_offset
        cd_end_limit = loc.eocd64_offset
    if entries_total > max_entries:
        raise BadInput(f"the ZIP has {entries_total} entries; more than {max_entries} are refused "
                       f"(too_many_entries)")
    if cd_offset + cd_size > cd_end_limit or cd_size > MAX_CD_BYTES:
        raise BadInput("the ZIP's central directory lies outside the file (truncated or corrupted)")
    cd = _read_at(f, cd_offset, cd_size)
    entries: list[Entry] = []
    names: set[str] = set()
    pos = 0
    total = 0
    while pos < len(cd):
        try:
            h = CENTRAL_DIRECTORY_HEADER.parse(cd[pos:])
        except ConstructError:
            raise BadInput(f"the ZIP's central directory is damaged at entry {len(entries) + 1}") from None
        pos += CDH_FIXED + h.name_length + h.extra_length + h.comment_length
        entries.append(_entry(f, h, cd_offset, names, name_check, max_ratio))
        total += entries[-1].uncompressed_size
        if len(entries) > max_entries:
            raise BadInput(f"the ZIP has more than {max_entries} entries (too_many_entries)")
    if len(entries) != entries_total:
        raise BadInput(f"the ZIP's directory lists {len(entries)} entries but its end record says "
                       f"{entries_total} (corrupted)")
    if total > max_total:
        raise BadInput(f"the ZIP would unpack to {total} bytes, more than the {max_total}-byte limit (zip bomb?)")
    spans = sorted((e.header_offset, e.data_offset + e.compressed_size, e.name) for e in entries)
    for (_, end_a, name_a), (start_b, _, name_b) in zip(spans, spans[1:], strict=False):
        if start_b < end_a:
            raise BadInput(f"ZIP entries {name_a!r} and {name_b!r} overlap (a zip bomb or a damaged archive)")
    return entries


def _entry(f: BinaryIO, h: Any, cd_offset: int, names: set[str], name_check: NameCheck,
           max_ratio: int) -> Entry:
    raw_name = h.name
    try:
        name = raw_name.decode("utf-8") if h.flags & FLAG_UTF8 else raw_name.decode("cp437")
    except UnicodeDecodeError:
        raise BadInput(f"ZIP entry name {raw_name!r} is not valid UTF-8") from None
    reason = name_check(name)
    if reason:
        raise BadInput(f"ZIP entry {name!r} has {reason} (unsafe_path)")
    if name in names:
        raise BadInput(f"ZIP entry {name!r} appears twice")
    names.add(name)
    if h.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION):
        raise BadInput(f"ZIP entry {name!r} is encrypted (encrypted_zip)")
    if is_symlink(h.version_made_by, h.external_attributes):
        raise BadInput(f"ZIP entry {name!r} is a symbolic link (layout_invalid)")
    if h.method not in (STORED, DEFLATED):
        raise BadInput(f"ZIP entry {name!r} uses compression method {h.method}; only stored and deflate")
    csize, usize, offset = h.compressed_size, h.uncompressed_size, h.local_header_offset
    want = [k for k, v in (("uncompressed_size", usize), ("compressed_size", csize),
                           ("local_header_offset", offset)) if v == U32_MAX]
    if want:
        z = _zip64_values(h.extra, want, f"ZIP entry {name!r}")
        usize, csize, offset = (z.get("uncompressed_size", usize), z.get("compressed_size", csize),
                                z.get("local_header_offset", offset))
    if h.method == STORED and csize != usize:
        raise BadInput(f"ZIP entry {name!r} is stored but its sizes differ ({csize} vs {usize})")
    if usize > 1 << 20 and usize > max_ratio * max(csize, 1):
        raise BadInput(f"ZIP entry {name!r} claims {usize} bytes from {csize} compressed (zip bomb)")
    if offset + LFH_FIXED > cd_offset:
        raise BadInput(f"ZIP entry {name!r}: its local header lies outside the data area (corrupted)")
    try:
        local = LOCAL_FILE_HEADER.parse(_read_at(f, offset, LFH_FIXED + 0xFFFF * 2))
    except ConstructError:
        raise BadInput(f"ZIP entry {name!r}: no local file header at offset {offset} (corrupted)") from None
    if local.name != raw_name:
        raise BadInput(f"ZIP entry {name!r}: the local header names {local.name!r} (corrupted or forged)")
    if local.flags & FLAG_ENCRYPTED:
        raise BadInput(f"ZIP entry {name!r} is encrypted (encrypted_zip)")
    data_offset = offset + LFH_FIXED + local.name_length + local.extra_length
    if data_offset + csize > cd_offset:
        raise BadInput(f"ZIP entry {name!r}: its data runs past the end of the data area (truncated)")
    if name.endswith("/") and usize:
        raise BadInput(f"ZIP entry {name!r} is a folder with content (corrupted)")
    return Entry(name, h.method, h.flags, h.crc32, csize, usize, offset, data_offset, h.external_attributes)


def read_entry(f: BinaryIO, entry: Entry, chunk: int = 1 << 20) -> Iterator[bytes]:
    """An entry's content, inflated and bounded by its declared size; CRC-32 and length checked at the end."""
    f.seek(entry.data_offset)
    left = entry.compressed_size
    limit = entry.uncompressed_size
    produced = 0
    crc = 0
    inflater = zlib.decompressobj(-15) if entry.method == DEFLATED else None

    def take(out: bytes) -> bytes:
        nonlocal produced, crc
        produced += len(out)
        if produced > limit:
            raise BadInput(f"ZIP entry {entry.name!r} inflates beyond its declared {limit} bytes "
                           f"(zip bomb or corrupted)")
        crc = zlib.crc32(out, crc)
        return out

    while left > 0:
        data = f.read(min(chunk, left))
        if not data:
            raise BadInput(f"ZIP entry {entry.name!r} is truncated")
        left -= len(data)
        if inflater is None:
            yield take(data)
            continue
        pending = data
        while pending:
            try:
                # Never inflate more than one byte beyond the declared size: a lying header stops here.
                out = inflater.decompress(pending, limit - produced + 1)
            except zlib.error as exc:
                raise BadInput(f"ZIP entry {entry.name!r}: deflate data is corrupt ({exc})") from None
            yield take(out)
            pending = inflater.unconsumed_tail
    if inflater is not None:
        yield take(inflater.flush())
        if not inflater.eof:
            raise BadInput(f"ZIP entry {entry.name!r}: deflate stream is incomplete (truncated or corrupted)")
    if produced != limit:
        raise BadInput(f"ZIP entry {entry.name!r} has {produced} bytes, its header says {limit} "
                       f"(truncated or corrupted)")
    if crc != entry.crc32:
        raise BadInput(f"ZIP entry {entry.name!r} fails its CRC-32 check (corrupted)")
