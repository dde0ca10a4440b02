"""BactoBox binary layouts (targets/bactobox.md §4) as construct structs, and the GMI manifest (§3.3).

Pure: no I/O. construct describes headers, tables and small blocks only; multi-GiB payloads are streamed and
hashed by the callers (gmi.py, the simulator's disk), never parsed record by record here. Every CRC is
CRC-32/IEEE as ``zlib.crc32`` computes it, stored ``Int32ul``; every integer is little-endian.

Layouts, by section of the spec:

- §4.1 ``MBR`` (LBA 0, 512 bytes) with four ``PART_ENTRY``; §4.2 the EBR chain of layout L1 (``EBR``).
- §4.3 ``ENV_V1`` / ``ENV_V2``: the U-Boot-style boot environment (single copy / redundant A/B pair) and
  the ``key=value\\0…\\0\\0`` data area (``EnvData``); ``parse_env_pair`` selects the current copy.
- §4.4 ``SLOT_HEADER``: the 512-byte header of a system slot.
- §4.5 ``SUPERBLOCK_V2`` / ``SUPERBLOCK_V1`` of the data store, and ``RECORD_HEADER`` (v1 32 bytes or v2 64
  bytes, chosen by the version byte at offset 4).
- §4.6 ``SPARSE_HEADER`` / ``SPARSE_CHUNK`` of a format-3 sparse part (``build_sparse_header``/``_chunk``).
- §4.7 the ZIP records a GMI is made of (local/central headers, ZIP64 extra, ZIP64 EOCD and locator, EOCD).
- §3.3 ``Manifest`` (dataclasses; ``Manifest.from_json`` validates by the rules of §3.3).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from construct import (
    Adapter,
    Array,
    Bytes,
    Checksum,
    Const,
    ConstError,
    ConstructError,
    Float32l,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PaddedString,
    Peek,
    Pointer,
    RawCopy,
    Struct,
    Switch,
    this,
)

from harness import ziparchive
from harness.errors import BadInput

SECTOR = 512
MIB = 1 << 20

# ------------------------------------------------------------------------------------------------ §4.1 MBR

PART_EMPTY = 0x00
PART_EBR_LINK = 0x05
PART_FAT32_LBA = 0x0C
PART_EXTENDED_LBA = 0x0F
PART_LINUX = 0x83
CHS_UNUSED = b"\xfe\xff\xff"

PART_ENTRY = Struct(
    "status" / Int8ul,  # 0x80 boot, 0x00 otherwise
    "chs_first" / Bytes(3),  # always FE FF FF; readers ignore CHS
    "type" / Int8ul,
    "chs_last" / Bytes(3),
    "lba_first" / Int32ul,
    "num_sectors" / Int32ul,
)

MBR = Struct(
    "bootstrap" / Bytes(440),
    "disk_signature" / Int32ul,  # modelled: zlib.crc32(device_id)
    "reserved" / Int16ul,
    "partitions" / Array(4, PART_ENTRY),
    "boot_signature" / Const(b"\x55\xaa"),
)
EBR = MBR  # an EBR has the MBR sector layout; entries 3 and 4 are zero


def part_entry(lba_first: int, num_sectors: int, type_: int, *, boot: bool = False) -> dict[str, Any]:
    """A partition entry as ``PART_ENTRY.build`` takes it; an empty entry for ``type_ == 0``."""
    if type_ == PART_EMPTY:
        return {"status": 0, "chs_first": b"\0\0\0", "type": 0, "chs_last": b"\0\0\0", "lba_first": 0,
                "num_sectors": 0}
    return {"status": 0x80 if boot else 0, "chs_first": CHS_UNUSED, "type": type_, "chs_last": CHS_UNUSED,
            "lba_first": lba_first, "num_sectors": num_sectors}


def build_mbr(signature: int, entries: list[dict[str, Any]]) -> bytes:
    entries = list(entries) + [part_entry(0, 0, PART_EMPTY)] * (4 - len(entries))
    return MBR.build({"bootstrap": bytes(440), "disk_signature": signature, "reserved": 0,
                      "partitions": entries})


def disk_signature(device_id: str) -> int:
    """The modelled MBR disk signature of a unit (§4.1)."""
    return zlib.crc32(device_id.encode("ascii"))


@dataclass(frozen=True)
class Partition:
    """One partition as the partition table describes it (absolute LBAs)."""

    index: int  # MBR index 1-4, logical partitions 5 and up
    type: int
    lba_first: int
    num_sectors: int

    @property
    def offset(self) -> int:
        return self.lba_first * SECTOR

    @property
    def size(self) -> int:
        return self.num_sectors * SECTOR


def parse_partitions(read_sector: Any, disk_sectors: int, *, max_links: int = 16) -> tuple[int, list[Partition]]:
    """(disk signature, partitions) from the MBR and, for layout L1, the EBR chain (§4.2).

    ``read_sector(lba) -> bytes`` reads one 512-byte sector. Raises BadInput on a missing boot signature,
    a partition outside the disk, overlapping partitions, or an EBR chain that loops or runs too long.
    """
    try:
        mbr = MBR.parse(read_sector(0))
    except ConstructError as exc:
        raise BadInput(f"no valid MBR at LBA 0 ({_why(exc)})") from None
    parts: list[Partition] = []
    extended: Partition | None = None
    for i, entry in enumerate(mbr.partitions, start=1):
        if entry.type == PART_EMPTY:
            continue
        part = Partition(i, entry.type, entry.lba_first, entry.num_sectors)
        if entry.type == PART_EXTENDED_LBA:
            extended = part
        else:
            parts.append(part)
    if extended is not None:
        parts += _ebr_chain(read_sector, extended, max_links)
    _check_partitions(parts + ([extended] if extended else []), disk_sectors)
    return mbr.disk_signature, parts


def _ebr_chain(read_sector: Any, extended: Partition, max_links: int) -> list[Partition]:
    out: list[Partition] = []
    seen: set[int] = set()
    lba = extended.lba_first
    index = 5
    while True:
        if lba in seen:
            raise BadInput(f"EBR chain loops back to LBA {lba}")
        if len(seen) >= max_links:
            raise BadInput(f"EBR chain longer than {max_links} links")
        if not extended.lba_first <= lba < extended.lba_first + extended.num_sectors:
            raise BadInput(f"EBR at LBA {lba} lies outside the extended partition")
        seen.add(lba)
        try:
            ebr = EBR.parse(read_sector(lba))
        except ConstructError as exc:
            raise BadInput(f"no valid EBR at LBA {lba} ({_why(exc)})") from None
        logical, link = ebr.partitions[0], ebr.partitions[1]
        if logical.type != PART_EMPTY:
            # Entry 1 is relative to this EBR; entry 2 to the start of the extended partition (§4.2).
            out.append(Partition(index, logical.type, lba + logical.lba_first, logical.num_sectors))
            index += 1
        if link.type == PART_EMPTY:
            return out
        lba = extended.lba_first + link.lba_first


def _check_partitions(parts: list[Partition], disk_sectors: int) -> None:
    spans = sorted((p.lba_first, p.lba_first + p.num_sectors, p.index, p.type) for p in parts)
    for start, end, index, _ in spans:
        if start < 1 or end > disk_sectors or end <= start:
            raise BadInput(f"partition {index} (LBA {start}..{end}) lies outside the disk "
                           f"({disk_sectors} sectors)")
    primaries = [s for s in spans if s[2] <= 4]
    for a, b in zip(primaries, primaries[1:], strict=False):
        if b[0] < a[1]:
            raise BadInput(f"partitions {a[2]} and {b[2]} overlap")


# ---------------------------------------------------------------------------------- §4.3 boot environment

ENV_SIZE = 16384
ENV_COPY_B_OFFSET = 0x4000
BOOTLOADER_OFFSET = 0x10000
BOOTLOADER_SIZE = 256 * 1024
_ENV_KEY = re.compile(r"^[a-z0-9_]+$")


class EnvData(Adapter):
    """``key=value\\0`` pairs, one more ``\\0`` after the last, zero-filled to the area's size.

    Parses to a dict in stored order; builds from any mapping and refuses what does not fit or would not
    parse back (bad keys, NUL in a value, an area too small).
    """

    def _decode(self, obj: bytes, context: Any, path: str) -> dict[str, str]:
        return decode_env_data(obj)

    def _encode(self, obj: Mapping[str, Any], context: Any, path: str) -> bytes:
        return encode_env_data(obj, self.subcon.sizeof())


def decode_env_data(data: bytes) -> dict[str, str]:
    values: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        end = data.find(b"\0", pos)
        if end < 0:
            raise ConstructError("environment entry is not NUL-terminated")
        entry = data[pos:end]
        key, sep, value = entry.partition(b"=")
        if not sep:
            raise ConstructError(f"environment entry {entry[:40]!r} has no '='")
        try:
            name = key.decode("ascii")
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConstructError(f"environment entry {entry[:40]!r} is not text") from exc
        if not _ENV_KEY.match(name):
            raise ConstructError(f"environment key {name!r} is not [a-z0-9_]+")
        values[name] = text
        pos = end + 1
    return values


def encode_env_data(values: Mapping[str, Any], size: int) -> bytes:
    out = bytearray()
    for key, value in values.items():
        text = str(value)
        if not _ENV_KEY.match(key):
            raise ConstructError(f"environment key {key!r} is not [a-z0-9_]+")
        if "\0" in text:
            raise ConstructError(f"environment value of {key!r} contains NUL")
        out += key.encode("ascii") + b"=" + text.encode("utf-8") + b"\0"
    out += b"\0"
    if len(out) > size:
        raise ConstructError(f"environment needs {len(out)} bytes; the area holds {size}")
    return bytes(out) + bytes(size - len(out))


# env v1: crc32 over [4, 16384), then the data. env v2: crc32 over [5, 16384), then flags, then the data.
# The CRC comes first and covers what follows, so it is computed and checked by build_env/parse_env.
ENV_V1 = Struct(
    "crc32" / Int32ul,
    "values" / EnvData(Bytes(ENV_SIZE - 4)),
)
ENV_V2 = Struct(
    "crc32" / Int32ul,
    "flags" / Int8ul,
    "values" / EnvData(Bytes(ENV_SIZE - 5)),
)


@dataclass(frozen=True)
class EnvBlock:
    """One parsed environment copy."""

    format: int  # 1 or 2
    values: dict[str, str]
    flags: int = 0  # v2 write generation


def build_env(values: Mapping[str, Any], env_format: int, flags: int = 0) -> bytes:
    if env_format == 1:
        block = ENV_V1.build({"crc32": 0, "values": dict(values)})
        start = 4
    elif env_format == 2:
        block = ENV_V2.build({"crc32": 0, "flags": flags & 0xFF, "values": dict(values)})
        start = 5
    else:
        raise ValueError(f"unknown environment format {env_format}")
    return zlib.crc32(block[start:]).to_bytes(4, "little") + block[4:]


def parse_env(block: bytes) -> EnvBlock | None:
    """Detect and parse one copy (§4.3 detection); None if neither CRC matches or the data is malformed."""
    if len(block) != ENV_SIZE:
        return None
    crc = int.from_bytes(block[:4], "little")
    for env_format, schema, start in ((1, ENV_V1, 4), (2, ENV_V2, 5)):
        if zlib.crc32(block[start:]) == crc:
            try:
                parsed = schema.parse(block)
            except ConstructError:
                return None
            return EnvBlock(env_format, dict(parsed["values"]), parsed.get("flags", 0))
    return None


def v2_newer(a: int, b: int) -> bool:
    """True iff generation ``a`` is newer than ``b`` (serial-number arithmetic mod 256)."""
    return 1 <= (a - b) % 256 <= 127


@dataclass(frozen=True)
class EnvState:
    """The environment as the bootloader sees it: the current copy and where it sits."""

    current: EnvBlock
    copy: str  # "A" or "B"
    other: EnvBlock | None


def parse_env_pair(area: bytes) -> EnvState | None:
    """The current environment from the first 32 KiB of the boot partition (§4.3 v2 selection).

    Copy A at 0; copy B at 0x4000 (v2 only). None if no copy is valid.
    """
    a = parse_env(area[:ENV_SIZE])
    b = parse_env(area[ENV_COPY_B_OFFSET:ENV_COPY_B_OFFSET + ENV_SIZE])
    if a is not None and a.format == 1:
        return EnvState(a, "A", None)
    a = a if a is not None and a.format == 2 else None
    b = b if b is not None and b.format == 2 else None
    if a and b:
        return EnvState(a, "A", b) if v2_newer(a.flags, b.flags) else EnvState(b, "B", a)
    if a:
        return EnvState(a, "A", b)
    if b:
        return EnvState(b, "B", a)
    return None


def next_env_write(state: EnvState, values: Mapping[str, Any]) -> tuple[int, bytes]:
    """(offset in the boot partition, block) of the next environment write (§4.3 v2 write rule).

    v1 rewrites its single copy; v2 writes the older copy with the next generation.
    """
    current = state.current
    if current.format == 1:
        return 0, build_env(values, 1)
    offset = ENV_COPY_B_OFFSET if state.copy == "A" else 0
    return offset, build_env(values, 2, (current.flags + 1) % 256)


# -------------------------------------------------------------------------------------- §4.4 slot header

SLOT_HEADER_SIZE = 512


def _crc_last(*fields: Any) -> Struct:
    """A block whose last 4 bytes are the CRC-32 of everything before them (built and checked)."""
    return Struct("body" / RawCopy(Struct(*fields)), "crc32" / Checksum(Int32ul, zlib.crc32, this.body.data))


SLOT_HEADER = _crc_last(
    "magic" / Const(b"BBSY"),
    "header_version" / Const(1, Int16ul),
    "reserved" / Int16ul,
    "sw_version" / PaddedString(16, "ascii"),
    "build_unix" / Int64ul,
    "payload_size" / Int64ul,
    "payload_sha256" / Bytes(32),
    "reserved2" / Bytes(436),
)


def build_slot_header(sw_version: str, build_unix: int, payload_size: int, payload_sha256: bytes) -> bytes:
    return SLOT_HEADER.build({"body": {"value": {
        "sw_version": sw_version, "build_unix": build_unix, "reserved": 0, "payload_size": payload_size,
        "payload_sha256": payload_sha256, "reserved2": bytes(436)}}})


def parse_slot_header(data: bytes) -> Any | None:
    """The slot header, or None if the magic or CRC is wrong (the slot is not bootable)."""
    try:
        return SLOT_HEADER.parse(data).body.value
    except ConstructError:
        return None


# ------------------------------------------------------------------------------------- §4.5 data store

SUPERBLOCK_SIZE = 4096
SETTINGS_OFFSET = 4096
SETTINGS_SIZE = ENV_SIZE
RECORDS_OFFSET = 20480
FLAG_CLEAN_SHUTDOWN = 0x1
FLAG_FROZEN = 0x2

SUPERBLOCK_V2 = _crc_last(
    "magic" / Const(b"BBDS"),
    "store_version" / Const(2, Int16ul),
    "header_size" / Const(4096, Int16ul),
    "block_size" / Int32ul,
    "flags" / Int32ul,
    "partition_size_bytes" / Int64ul,
    "records_offset" / Int64ul,
    "end_offset" / Int64ul,
    "record_count" / Int32ul,
    "next_record_id" / Int32ul,
    "created_unix_ms" / Int64ul,
    "device_id" / PaddedString(16, "ascii"),
    "reserved" / Bytes(4020),
)

SUPERBLOCK_V1 = _crc_last(
    "magic" / Const(b"BBDS"),
    "store_version" / Const(1, Int16ul),
    "reserved" / Int16ul,
    "partition_blocks" / Int32ul,
    "records_offset" / Int32ul,
    "end_offset" / Int64ul,
    "record_count" / Int32ul,
    "next_record_id" / Int32ul,
    "device_id" / PaddedString(12, "ascii"),
    "reserved2" / Bytes(464),
)

PROGRAM_MEASURE, PROGRAM_CLEAN, PROGRAM_EMPTY = 1, 2, 3
PROGRAM_CODES = {"measure": PROGRAM_MEASURE, "clean": PROGRAM_CLEAN, "empty": PROGRAM_EMPTY}
PROGRAM_NAMES = {v: k for k, v in PROGRAM_CODES.items()}
REC_COMPLETED, REC_STOPPED, REC_LIQUID_LEFT = 0x1, 0x2, 0x4
RECORD_V2_SIZE = 64
RECORD_V1_SIZE = 32

RECORD_V2 = Struct(
    "raw" / RawCopy(Struct(
        "magic" / Const(b"BBMR"),
        "header_version" / Const(2, Int8ul),
        "header_size" / Const(64, Int8ul),
        "program" / Int8ul,
        "flags" / Int8ul,
        "record_id" / Int32ul,
        "payload_size" / Int32ul,
        "started_unix_ms" / Int64ul,
        "duration_ms" / Int32ul,
        "sampling_time_s" / Int16ul,
        "reserved" / Int16ul,
        "dilution_factor" / Float32l,
        "label" / PaddedString(20, "utf8"),
        "payload_crc32" / Int32ul,
    )),
    "header_crc32" / Checksum(Int32ul, zlib.crc32, this.raw.data),
)
RECORD_V1 = Struct(
    "magic" / Const(b"BBMR"),
    "header_version" / Const(1, Int8ul),
    "program" / Int8ul,
    "flags" / Int8ul,
    "reserved" / Int8ul,
    "record_id" / Int32ul,
    "started_unix" / Int32ul,
    "payload_size" / Int32ul,
    "dilution_factor" / Float32l,
    "sampling_time_s" / Int16ul,
    "reserved2" / Int16ul,
    "payload_crc32" / Int32ul,
)
# One reader for both: the version byte at offset 4 picks the layout (§4.5).
RECORD_HEADER = Struct(
    "magic" / Peek(Bytes(4)),
    "header_version" / Peek(Pointer(4, Int8ul)),
    "header" / Switch(this.header_version, {1: RECORD_V1, 2: RECORD_V2}),
)


def record_size(header_size: int, payload_size: int) -> int:
    """Header, payload, then padding to a multiple of 8."""
    n = header_size + payload_size
    return (n + 7) & ~7


def build_record_v2(*, record_id: int, program: int, flags: int, payload: bytes, started_unix_ms: int,
                    duration_ms: int, sampling_time_s: int, dilution_factor: float, label: str) -> bytes:
    """Header + payload + padding, ready to append to the store."""
    if len(label.encode("utf-8")) > 20:
        raise ValueError(f"label {label!r} is longer than 20 bytes")
    header = RECORD_V2.build({"raw": {"value": {
        "program": program, "flags": flags, "record_id": record_id, "payload_size": len(payload),
        "started_unix_ms": started_unix_ms, "duration_ms": duration_ms, "sampling_time_s": sampling_time_s,
        "reserved": 0, "dilution_factor": dilution_factor, "label": label,
        "payload_crc32": zlib.crc32(payload)}}})
    pad = record_size(RECORD_V2_SIZE, len(payload)) - RECORD_V2_SIZE - len(payload)
    return header + payload + bytes(pad)


def build_record_v1(*, record_id: int, program: int, flags: int, payload: bytes, started_unix: int,
                    sampling_time_s: int, dilution_factor: float) -> bytes:
    """A store-v1 record (software 1.x): 32-byte header (no label, no header CRC), payload, padding."""
    header = RECORD_V1.build({
        "program": program, "flags": flags, "reserved": 0, "record_id": record_id, "started_unix": started_unix,
        "payload_size": len(payload), "dilution_factor": dilution_factor, "sampling_time_s": sampling_time_s,
        "reserved2": 0, "payload_crc32": zlib.crc32(payload)})
    pad = record_size(RECORD_V1_SIZE, len(payload)) - RECORD_V1_SIZE - len(payload)
    return header + payload + bytes(pad)


def parse_record_header(data: bytes) -> Any:
    """A v1 or v2 record header; ConstructError on a bad magic, version or header CRC."""
    if data[:4] != b"BBMR":
        raise ConstError(f"record magic is {bytes(data[:4])!r}, not b'BBMR'")
    parsed = RECORD_HEADER.parse(data)
    header = parsed.header
    if header is None:
        raise ConstructError(f"unknown record header version {parsed.header_version}")
    return header.raw.value if parsed.header_version == 2 else header


# ---------------------------------------------------------------------------------- §4.6 sparse images

SPARSE_RAW, SPARSE_FILL, SPARSE_ZERO = 1, 2, 3
SPARSE_HEADER = Struct(
    "magic" / Const(b"BBSP"),
    "version" / Const(1, Int16ul),
    "header_size" / Const(32, Int16ul),
    "chunk_header_size" / Const(12, Int16ul),
    "reserved" / Int16ul,
    "block_size" / Int32ul,
    "total_blocks" / Int32ul,
    "chunk_count" / Int32ul,
    "reserved2" / Bytes(8),
)
SPARSE_CHUNK = Struct(
    "type" / Int8ul,
    "reserved" / Bytes(3),
    "blocks" / Int32ul,
    "data_len" / Int32ul,
)
SPARSE_HEADER_SIZE = 32
SPARSE_CHUNK_SIZE = 12
SPARSE_BLOCK = 4096


def build_sparse_header(block_size: int, total_blocks: int, chunk_count: int) -> bytes:
    return SPARSE_HEADER.build({"reserved": 0, "block_size": block_size, "total_blocks": total_blocks,
                                "chunk_count": chunk_count, "reserved2": bytes(8)})


def build_sparse_chunk(type_: int, blocks: int, block_size: int) -> bytes:
    """A chunk header; ``data_len`` follows from the type (raw: the blocks' bytes, fill: 4, zero: 0)."""
    data_len = {SPARSE_RAW: blocks * block_size, SPARSE_FILL: 4, SPARSE_ZERO: 0}[type_]
    return SPARSE_CHUNK.build({"type": type_, "reserved": bytes(3), "blocks": blocks, "data_len": data_len})

# ------------------------------------------------------------------------------------ §4.7 ZIP records
# The layouts live in harness/ziparchive.py (shared with NeuroomNet); the §4.7 names stay here for gmi.py and
# the simulator. The BactoBox names are the fixed-size parts: a streaming reader parses a header first.

ZIP_LOCAL_SIG = ziparchive.LFH_SIG
ZIP_CENTRAL_SIG = ziparchive.CDH_SIG
ZIP_EOCD_SIG = ziparchive.EOCD_SIG
ZIP64_EOCD_SIG = ziparchive.ZIP64_EOCD_SIG
ZIP64_LOCATOR_SIG = ziparchive.ZIP64_LOCATOR_SIG
ZIP_DESCRIPTOR_SIG = ziparchive.DATA_DESCRIPTOR_SIG
ZIP64_EXTRA_ID = ziparchive.ZIP64_EXTRA_ID
ZIP_LOCAL_HEADER = ziparchive.LOCAL_FILE_HEADER_FIXED  # then name, extra
ZIP_LOCAL_HEADER_SIZE = ziparchive.LFH_FIXED
ZIP_CENTRAL_HEADER = ziparchive.CENTRAL_DIRECTORY_HEADER_FIXED  # then name, extra, comment
ZIP_CENTRAL_HEADER_SIZE = ziparchive.CDH_FIXED
ZIP_EXTRA_FIELD = ziparchive.EXTRA_FIELD_HEADER  # then ``size`` bytes
ZIP64_EOCD = ziparchive.ZIP64_END_OF_CENTRAL_DIRECTORY
ZIP64_EOCD_SIZE = ziparchive.ZIP64_EOCD_FIXED
ZIP64_LOCATOR = ziparchive.ZIP64_LOCATOR
ZIP64_LOCATOR_SIZE = ziparchive.ZIP64_LOCATOR_SIZE
ZIP_EOCD = ziparchive.END_OF_CENTRAL_DIRECTORY_FIXED  # then the comment
ZIP_EOCD_SIZE = ziparchive.EOCD_FIXED


# -------------------------------------------------------------------------------------- §3.3 manifest

MEDIA_TYPE = "application/vnd.sbt.gmi+zip"
DEVICE_ID = re.compile(r"^bb[0-9]{7}$")
PART_NAMES = ("head", "boot", "system0", "system1", "data")
# Partition names by table index (§4.1): L2 has four primaries; L1 three and an extended partition (4) whose
# EBR chain holds p5 config and p6 data.
PART_NAMES_L2 = {1: "boot", 2: "system0", 3: "system1", 4: "data"}
PART_NAMES_L1 = {1: "boot", 2: "system0", 3: "system1", 5: "config", 6: "data"}
KNOWN_FORMATS = (1, 2, 3)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ManifestPart:
    name: str
    file: str
    start_lba: int
    size_bytes: int
    sha256: str
    encoding: str = "raw"
    mbr_index: int | None = None
    type: str | None = None
    stored_size_bytes: int | None = None  # format 3 sparse parts
    stored_sha256: str | None = None

    @property
    def entry_size(self) -> int:
        """Bytes of this part's ZIP entry (stored)."""
        return self.stored_size_bytes if self.encoding == "sparse" else self.size_bytes

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Manifest:
    """``manifest.json`` of a GMI (formats 2 and 3; format 1 is read into the same shape)."""

    format: int
    device_id: str
    software_version: str
    created: str
    parts: list[ManifestPart]
    total_size_bytes: int
    disk: dict[str, Any] = field(default_factory=dict)
    boot: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    clock_valid: bool = True
    producer: str = ""
    media_type: str = MEDIA_TYPE
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for forward compatibility

    @property
    def disk_size_bytes(self) -> int:
        return int(self.disk.get("size_bytes", 0))

    def part(self, name: str) -> ManifestPart:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        if self.format == 1:
            out: dict[str, Any] = {"format": 1, "device_id": self.device_id,
                                   "software_version": self.software_version, "created": self.created,
                                   "disk_size_bytes": self.disk_size_bytes}
        else:
            out = {"media_type": self.media_type, "format": self.format, "device_id": self.device_id,
                   "software_version": self.software_version, "created": self.created,
                   "clock_valid": self.clock_valid, "producer": self.producer, "disk": self.disk,
                   "boot": self.boot, "data": self.data}
        out["parts"] = [p.to_dict() for p in self.parts]
        if self.format != 1:
            out["total_size_bytes"] = self.total_size_bytes
        return {**out, **self.extra}

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parse and validate (§3.3 rules); BadInput naming the JSON pointer of the first problem."""
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadInput(f"manifest.json is not UTF-8 JSON ({exc})") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> Manifest:
        if not isinstance(doc, dict):
            raise _invalid("", "is not a JSON object")
        fmt = _get(doc, "format", int)
        if fmt not in KNOWN_FORMATS:
            raise _invalid("/format", f"is {fmt}, not one of {KNOWN_FORMATS}")
        device_id = _get(doc, "device_id", str)
        if not DEVICE_ID.match(device_id):
            raise _invalid("/device_id", f"{device_id!r} does not match {DEVICE_ID.pattern}")
        version = _get(doc, "software_version", str)
        created = _get(doc, "created", str)
        raw_parts = _get(doc, "parts", list)
        parts = [_part(p, f"/parts/{i}", fmt) for i, p in enumerate(raw_parts)]
        known = {"media_type", "format", "device_id", "software_version", "created", "clock_valid", "producer",
                 "disk", "boot", "data", "parts", "total_size_bytes", "disk_size_bytes"}
        extra = {k: v for k, v in doc.items() if k not in known}
        if fmt == 1:
            size = _get(doc, "disk_size_bytes", int)
            manifest = cls(format=1, device_id=device_id, software_version=version, created=created,
                           parts=parts, total_size_bytes=sum(p.size_bytes for p in parts),
                           disk={"size_bytes": size, "sector_size": SECTOR, "layout": "L1"},
                           extra=extra)
        else:
            media = _get(doc, "media_type", str)
            if media != MEDIA_TYPE:
                raise _invalid("/media_type", f"is {media!r}, not {MEDIA_TYPE!r}")
            disk = _get(doc, "disk", dict)
            _get(disk, "size_bytes", int, "/disk")
            if disk.get("sector_size", SECTOR) != SECTOR:
                raise _invalid("/disk/sector_size", f"is {disk.get('sector_size')!r}; only 512 is supported")
            manifest = cls(format=fmt, device_id=device_id, software_version=version, created=created,
                           parts=parts, total_size_bytes=_get(doc, "total_size_bytes", int), disk=disk,
                           boot=_get(doc, "boot", dict), data=doc.get("data") or {},
                           clock_valid=bool(doc.get("clock_valid", True)), producer=str(doc.get("producer", "")),
                           media_type=media, extra=extra)
        manifest.validate()
        return manifest

    def validate(self) -> None:
        names = [p.name for p in self.parts]
        if len(set(names)) != len(names):
            raise _invalid("/parts", f"part names are not unique ({', '.join(names)})")
        if self.format == 1:
            if names != ["disk"]:
                raise _invalid("/parts", f"format 1 has one part 'disk', not {names}")
        elif tuple(names) != PART_NAMES:
            raise _invalid("/parts", f"format {self.format} needs parts {', '.join(PART_NAMES)} in this "
                                     f"order, not {', '.join(names)}")
        files = [p.file for p in self.parts]
        if len(set(files)) != len(files):
            raise _invalid("/parts", "two parts name the same file")
        disk_size = self.disk_size_bytes
        if disk_size <= 0 or disk_size % SECTOR:
            raise _invalid("/disk/size_bytes", f"is {disk_size}, not a positive multiple of 512")
        end = 0
        for i, part in enumerate(self.parts):
            where = f"/parts/{i}"
            start = part.start_lba * SECTOR
            if start < end:
                raise _invalid(f"{where}/start_lba", f"{part.start_lba} overlaps the part before it")
            end = start + part.size_bytes
            if end > disk_size:
                raise _invalid(f"{where}/size_bytes", f"part {part.name} ends at byte {end}, beyond the "
                                                      f"{disk_size}-byte disk")
        total = sum(p.size_bytes for p in self.parts)
        if self.total_size_bytes != total:
            raise _invalid("/total_size_bytes", f"is {self.total_size_bytes}, but the parts add up to {total}")


def _part(doc: Any, where: str, fmt: int) -> ManifestPart:
    if not isinstance(doc, dict):
        raise _invalid(where, "is not a JSON object")
    name = _get(doc, "name", str, where)
    file = _get(doc, "file", str, where)
    expected_file = {1: "disk.img"}.get(fmt)
    if fmt == 1 and file != expected_file:
        raise _invalid(f"{where}/file", f"is {file!r}, not 'disk.img'")
    if fmt != 1 and file not in (f"parts/{name}.img", f"parts/{name}.sparse"):
        # The manifest names the ZIP entries it covers; anything else could point outside the GMI.
        raise _invalid(f"{where}/file", f"is {file!r}, not parts/{name}.img")
    size = _get(doc, "size_bytes", int, where)
    if size < 0 or size % SECTOR:
        raise _invalid(f"{where}/size_bytes", f"is {size}, not a multiple of 512")
    sha = _get(doc, "sha256", str, where)
    if not _HEX64.match(sha):
        raise _invalid(f"{where}/sha256", "is not a lowercase hex sha256")
    encoding = doc.get("encoding", "raw")
    if encoding not in ("raw", "sparse") or (encoding == "sparse" and fmt != 3):
        raise _invalid(f"{where}/encoding", f"{encoding!r} is not allowed in format {fmt}")
    if (encoding == "sparse") != file.endswith(".sparse"):
        raise _invalid(f"{where}/file", f"{file!r} does not match encoding {encoding!r}")
    start_lba = doc.get("start_lba", 0)
    if not isinstance(start_lba, int) or isinstance(start_lba, bool) or start_lba < 0:
        raise _invalid(f"{where}/start_lba", f"is {start_lba!r}, not a non-negative integer")
    part = ManifestPart(name=name, file=file, start_lba=start_lba, size_bytes=size, sha256=sha,
                        encoding=encoding, mbr_index=doc.get("mbr_index"), type=doc.get("type"))
    if encoding == "sparse":
        part.stored_size_bytes = _get(doc, "stored_size_bytes", int, where)
        part.stored_sha256 = _get(doc, "stored_sha256", str, where)
        if not _HEX64.match(part.stored_sha256):
            raise _invalid(f"{where}/stored_sha256", "is not a lowercase hex sha256")
    return part


def _get(doc: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in doc:
        raise _invalid(f"{where}/{key}", "is missing")
    value = doc[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _invalid(f"{where}/{key}", f"is {value!r}, not an integer")
    if not isinstance(value, kind):
        raise _invalid(f"{where}/{key}", f"is {type(value).__name__}, not {kind.__name__}")
    return value


def _invalid(pointer: str, problem: str) -> BadInput:
    return BadInput(f"manifest.json is invalid: {pointer or '/'} {problem}")


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
