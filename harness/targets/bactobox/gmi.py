"""GMI files (targets/bactobox.md §3): a ZIP container written and read in constant memory.

Writing (the simulator's backup, tests): ``ZipPlan`` lays out a *stored* ZIP whose entry sizes and CRC-32s
are known before the first byte (the device's preparing pass computes them), so every header is computed
up front, the total size is exact (``Content-Length``), and the image bytes are streamed straight from the
disk between the headers. ZIP64 records appear when a size, an offset or the entry count overflows its
field, or always with ``force_zip64`` (fault BB-F19). The ``mimetype`` entry never carries an extra field,
so bytes 30-64 of every GMI are ``mimetype`` + the media type (a magic-number sniff).

Reading, whole file (the harness, before anything destructive): ``inspect_gmi`` checks the structure from
the end (EOCD, ZIP64 locator and record, central directory) and the local headers, bounds everything a
hostile file could inflate (entry count, central directory size, manifest size, names escaping the archive,
decompressed sizes), and reads the manifest; ``verify_gmi`` also hashes every part and compares it with the
manifest. Reading, as a stream (the simulator's restore upload): ``GmiStreamReader`` consumes the bytes in
order and hands each part's data to a sink as it arrives, never buffering more than one chunk.

Format 1 (software 1.x): ``stream_gmi_v1`` deflates the whole disk into one ``disk.img`` while it streams
(data descriptor, size unknown up front); ``GmiStreamReader`` inflates it as it arrives (bounded by the
manifest) and checks the descriptor; ``InflatedImage`` reads it by offset for the field view.

Sparse parts (format 3, §4.6): ``SparseLayout`` plans and streams one (the simulator's backup);
``SparseExpander`` expands the stored bytes as they are fed (the file check, the download follower, the
simulator's restore, the field view); ``SparseHasher`` gives both sha256s a manifest states for such a part.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from construct import ConstructError

from harness.errors import BadInput
from harness.targets.bactobox.schema import (
    MEDIA_TYPE,
    SPARSE_BLOCK,
    SPARSE_CHUNK,
    SPARSE_CHUNK_SIZE,
    SPARSE_FILL,
    SPARSE_HEADER,
    SPARSE_HEADER_SIZE,
    SPARSE_RAW,
    SPARSE_ZERO,
    ZIP64_EOCD,
    ZIP64_EOCD_SIZE,
    ZIP64_EXTRA_ID,
    ZIP64_LOCATOR,
    ZIP64_LOCATOR_SIZE,
    ZIP_CENTRAL_HEADER,
    ZIP_CENTRAL_HEADER_SIZE,
    ZIP_EOCD,
    ZIP_EOCD_SIG,
    ZIP_EOCD_SIZE,
    ZIP_LOCAL_HEADER,
    ZIP_LOCAL_HEADER_SIZE,
    Manifest,
    ManifestPart,
    build_sparse_chunk,
    build_sparse_header,
)
from harness.ziparchive import Entry
from harness.ziparchive import dos_date_time as dos_datetime  # (time, date) as a GMI stores them

log = logging.getLogger(__name__)

MIMETYPE = "mimetype"
MANIFEST = "manifest.json"
MEDIA_BYTES = MEDIA_TYPE.encode("ascii")
STORED, DEFLATED = 0, 8
FLAG_DESCRIPTOR = 0x8
FLAG_UTF8 = 0x800
FLAG_ENCRYPTED = 0x1
U32_MAX = 0xFFFFFFFF
U16_MAX = 0xFFFF

MAX_ENTRIES = 16  # a GMI has at most 7; more is not a GMI (and bounds the central directory parse)
MAX_CENTRAL_DIRECTORY = 64 * 1024
MAX_MANIFEST = 1 << 20
MAX_DISK = 64 << 30  # no BactoBox has more; a manifest claiming more is hostile (a decompression bomb)
READ_CHUNK = 8 << 20  # hashing reads: large reads keep Python's per-call cost out of the way


# ------------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class EntrySpec:
    """One entry: its name, size and CRC-32 (all known before the data is sent for a stored entry; a
    deflated format-1 ``disk.img`` learns its CRC-32 and compressed size only when it has been sent)."""

    name: str
    size: int
    crc32: int
    method: int = STORED
    compressed_size: int | None = None  # None: stored, the same as ``size``
    flags: int = 0

    @property
    def stored_size(self) -> int:
        return self.size if self.compressed_size is None else self.compressed_size


class ZipPlan:
    """The byte layout of a stored ZIP (see the module docstring). Pure: no I/O."""

    def __init__(self, entries: list[EntrySpec], *, modified: dt.datetime, force_zip64: bool = False) -> None:
        if not entries or entries[0].name != MIMETYPE:
            raise ValueError("the first entry of a GMI is 'mimetype'")
        self.entries = entries
        self.force_zip64 = force_zip64
        self.mod_time, self.mod_date = dos_datetime(modified)
        self.local_headers: list[bytes] = []
        self.offsets: list[int] = []
        pos = 0
        for i, entry in enumerate(entries):
            header = self._local_header(entry, zip64=self._entry_zip64(i, entry))
            self.offsets.append(pos)
            self.local_headers.append(header)
            pos += len(header) + entry.size
        self.cd_offset = pos
        self.tail = self._central_directory()
        self.total_size = pos + len(self.tail)

    def _entry_zip64(self, index: int, entry: EntrySpec) -> bool:
        if index == 0:
            return False  # the mimetype entry never carries an extra field (§3.2)
        return self.force_zip64 or entry.size >= U32_MAX

    def data_offset(self, index: int) -> int:
        return self.offsets[index] + len(self.local_headers[index])

    def _local_header(self, entry: EntrySpec, *, zip64: bool) -> bytes:
        name = entry.name.encode("ascii")
        extra = struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, entry.size, entry.size) if zip64 else b""
        size32 = U32_MAX if zip64 else entry.size
        header = ZIP_LOCAL_HEADER.build({
            "version_needed": 45 if zip64 else 20, "flags": 0, "method": STORED, "mod_time": self.mod_time,
            "mod_date": self.mod_date, "crc32": entry.crc32, "compressed_size": size32,
            "uncompressed_size": size32, "name_length": len(name), "extra_length": len(extra)})
        return header + name + extra

    def _central_directory(self) -> bytes:
        return central_directory(self.entries, self.offsets, self.cd_offset, mod_time=self.mod_time,
                                 mod_date=self.mod_date, force_zip64=self.force_zip64)


def central_directory(entries: list[EntrySpec], offsets: list[int], cd_offset: int, *, mod_time: int,
                      mod_date: int, force_zip64: bool = False) -> bytes:
    """Central directory and end records of a GMI (both writers: the stored plan and the format-1 stream)."""
    out = bytearray()
    for i, entry in enumerate(entries):
        name = entry.name.encode("ascii")
        offset = offsets[i]
        big_size = i > 0 and (force_zip64 or max(entry.size, entry.stored_size) >= U32_MAX)
        big_offset = i > 0 and (force_zip64 or offset >= U32_MAX)
        values = b""
        if big_size:
            values += struct.pack("<QQ", entry.size, entry.stored_size)
        if big_offset:
            values += struct.pack("<Q", offset)
        extra = struct.pack("<HH", ZIP64_EXTRA_ID, len(values)) + values if values else b""
        out += ZIP_CENTRAL_HEADER.build({
            "version_made_by": 45 if extra else 20, "version_needed": 45 if extra else 20, "flags": entry.flags,
            "method": entry.method, "mod_time": mod_time, "mod_date": mod_date, "crc32": entry.crc32,
            "compressed_size": U32_MAX if big_size else entry.stored_size,
            "uncompressed_size": U32_MAX if big_size else entry.size,
            "name_length": len(name), "extra_length": len(extra), "comment_length": 0, "disk_start": 0,
            "internal_attributes": 0, "external_attributes": 0o100444 << 16,
            "local_header_offset": U32_MAX if big_offset else offset})
        out += name + extra
    cd_size = len(out)
    count = len(entries)
    zip64 = force_zip64 or count >= U16_MAX or cd_size >= U32_MAX or cd_offset >= U32_MAX
    if zip64:
        eocd64_offset = cd_offset + cd_size
        out += ZIP64_EOCD.build({
            "record_size": ZIP64_EOCD_SIZE - 12, "version_made_by": 45, "version_needed": 45,
            "disk_number": 0, "cd_disk": 0, "entries_on_disk": count, "entries_total": count,
            "cd_size": cd_size, "cd_offset": cd_offset})
        out += ZIP64_LOCATOR.build({"eocd64_disk": 0, "eocd64_offset": eocd64_offset, "total_disks": 1})
    out += ZIP_EOCD.build({
        "disk_number": 0, "cd_disk": 0, "entries_on_disk": min(count, U16_MAX),
        "entries_total": min(count, U16_MAX), "cd_size": min(cd_size, U32_MAX),
        "cd_offset": min(cd_offset, U32_MAX), "comment_length": 0})
    return bytes(out)


def gmi_entries(manifest_bytes: bytes, parts: list[tuple[ManifestPart, int]]) -> list[EntrySpec]:
    """The entries of a format-2/3 GMI: mimetype, manifest, then each part with its CRC-32."""
    return [EntrySpec(MIMETYPE, len(MEDIA_BYTES), zlib.crc32(MEDIA_BYTES)),
            EntrySpec(MANIFEST, len(manifest_bytes), zlib.crc32(manifest_bytes)),
            *(EntrySpec(part.file, part.entry_size, crc) for part, crc in parts)]


def stream_gmi(plan: ZipPlan, manifest_bytes: bytes,
               part_chunks: Callable[[int], Iterable[bytes]]) -> Iterator[bytes]:
    """The GMI bytes in order: headers from the plan, part data from ``part_chunks(index)``.

    ``part_chunks(i)`` yields the data of entry ``i`` (2 and up); the writer checks that it yields exactly
    the planned size, so a short source can never produce a ZIP whose headers lie.
    """
    yield plan.local_headers[0] + MEDIA_BYTES + plan.local_headers[1] + manifest_bytes
    for i in range(2, len(plan.entries)):
        yield plan.local_headers[i]
        sent = 0
        for chunk in part_chunks(i):
            sent += len(chunk)
            yield chunk
        if sent != plan.entries[i].size:
            raise ValueError(f"entry {plan.entries[i].name}: source gave {sent} bytes, planned "
                             f"{plan.entries[i].size}")
    yield plan.tail


def write_gmi(path: Path, manifest: Manifest, part_sources: list[BinaryIO | bytes], *,
              force_zip64: bool = False, modified: dt.datetime | None = None) -> Path:
    """Write a format-2/3 GMI from in-order part sources (files at position 0, or bytes). For tests and tools.

    CRC-32s are computed in a first pass over each source, as the device's preparing pass does.
    """
    def chunks(src: BinaryIO | bytes) -> Iterator[bytes]:
        if isinstance(src, bytes | bytearray | memoryview):
            yield bytes(src)
            return
        src.seek(0)
        while block := src.read(READ_CHUNK):
            yield block

    crcs = []
    for src in part_sources:
        crc = 0
        for block in chunks(src):
            crc = zlib.crc32(block, crc)
        crcs.append(crc)
    manifest_bytes = manifest.to_json()
    plan = ZipPlan(gmi_entries(manifest_bytes, list(zip(manifest.parts, crcs, strict=True))),
                   modified=modified or dt.datetime.now(dt.UTC), force_zip64=force_zip64)
    with open(path, "xb") as f:
        for block in stream_gmi(plan, manifest_bytes, lambda i: chunks(part_sources[i - 2])):
            f.write(block)
    return path


# ------------------------------------------------------------------------------------- format 1 (1.x)
# Software 1.x writes the whole disk as one deflated ``disk.img`` while it streams (§3.2): the compressed
# size and the CRC-32 are known only at the end, so the local header has flag bit 3 and zeros, a data
# descriptor follows the data, and the total size is unknown up front (the download is chunked).

DEFLATE_LEVEL = 6
DISK_ENTRY = "disk.img"


def stream_gmi_v1(manifest_bytes: bytes, disk_chunks: Iterable[bytes], *, disk_size: int,
                  modified: dt.datetime, force_zip64: bool = False,
                  level: int = DEFLATE_LEVEL) -> Iterator[bytes]:
    """The bytes of a format-1 GMI in order, in constant memory: mimetype and manifest stored, then the disk
    from ``disk_chunks`` through ``zlib.compressobj``, its data descriptor, the central directory.

    ZIP64 (the local extra field with zero sizes, 8-byte sizes in the descriptor) when the disk reaches 4 GiB
    or with ``force_zip64``; the disk's size is known up front, so the choice is made before the first byte.
    """
    mod_time, mod_date = dos_datetime(modified)
    zip64 = force_zip64 or disk_size >= U32_MAX
    head = [EntrySpec(MIMETYPE, len(MEDIA_BYTES), zlib.crc32(MEDIA_BYTES)),
            EntrySpec(MANIFEST, len(manifest_bytes), zlib.crc32(manifest_bytes))]
    plan = ZipPlan(head, modified=modified)  # the two stored entries: their headers and offsets
    yield plan.local_headers[0] + MEDIA_BYTES + plan.local_headers[1] + manifest_bytes
    offset = plan.cd_offset  # where disk.img's local header starts
    name = DISK_ENTRY.encode("ascii")
    extra = struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, 0, 0) if zip64 else b""
    flags = FLAG_DESCRIPTOR
    local = ZIP_LOCAL_HEADER.build({
        "version_needed": 45 if zip64 else 20, "flags": flags, "method": DEFLATED, "mod_time": mod_time,
        "mod_date": mod_date, "crc32": 0, "compressed_size": U32_MAX if zip64 else 0,
        "uncompressed_size": U32_MAX if zip64 else 0, "name_length": len(name),
        "extra_length": len(extra)}) + name + extra
    yield local
    deflater = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = size = compressed = 0
    for chunk in disk_chunks:
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
        out = deflater.compress(chunk)
        if out:
            compressed += len(out)
            yield out
    out = deflater.flush()
    compressed += len(out)
    yield out
    if size != disk_size:
        raise ValueError(f"{DISK_ENTRY}: source gave {size} bytes, planned {disk_size}")
    sizes = struct.pack("<QQ", compressed, size) if zip64 else struct.pack("<II", compressed, size)
    descriptor = b"PK\x07\x08" + struct.pack("<I", crc) + sizes
    yield descriptor
    entries = [*head, EntrySpec(DISK_ENTRY, size, crc, DEFLATED, compressed, flags)]
    cd_offset = offset + len(local) + compressed + len(descriptor)
    yield central_directory(entries, [*plan.offsets, offset], cd_offset, mod_time=mod_time, mod_date=mod_date,
                            force_zip64=zip64)


class InflatedImage:
    """Reads of a format-1 ``disk.img`` by offset, inflating from the start in bounded pieces.

    Forward reads continue where the last one stopped; a read behind it inflates from the start again (the
    field view reads the MBR, the EBRs, the boot and config blocks and the store's head: a few MiB in).
    """

    def __init__(self, path: Path, entry: ZipEntry, expected: int) -> None:
        self.path, self.entry, self.expected = Path(path), entry, expected
        self._restart()

    def _restart(self) -> None:
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._in_pos = self.entry.data_offset
        self._in_left = self.entry.compressed_size
        self._pos = 0  # inflated bytes handed out or skipped
        self._pending = b""  # inflated, not yet consumed

    def _more(self) -> bytes:
        data = self._inflater.unconsumed_tail
        if not data:
            if self._in_left <= 0:
                return self._inflater.flush()
            with open(self.path, "rb") as f:
                data = _pread(f, self._in_pos, min(self._in_left, 1 << 20))
            if not data:
                raise BadInput(f"{self.path.name}: {self.entry.name} ends early (truncated)")
            self._in_pos += len(data)
            self._in_left -= len(data)
        return self._inflater.decompress(data, 1 << 20)

    def read(self, offset: int, size: int) -> bytes:
        if offset + size > self.expected:
            raise BadInput(f"{self.path.name}: {self.entry.name} has no bytes {offset}..{offset + size}")
        if offset < self._pos:
            self._restart()
        out = bytearray()
        while len(out) < size:
            if not self._pending:
                self._pending = self._more()
                if not self._pending:
                    raise BadInput(f"{self.path.name}: {self.entry.name} inflates to fewer than "
                                   f"{offset + size} bytes")
            piece = self._pending
            if self._pos < offset:  # skip to the offset
                skip = min(len(piece), offset - self._pos)
                self._pending, self._pos = piece[skip:], self._pos + skip
                continue
            take = min(len(piece), size - len(out))
            out += piece[:take]
            self._pending, self._pos = piece[take:], self._pos + take
        return bytes(out)


# ------------------------------------------------------------------------------- sparse images (§4.6)
# One implementation for every side: the simulator's backup writes with ``SparseLayout``; the file check
# (``verify_gmi``), the download follower, the simulator's restore and the field view all read with
# ``SparseExpander``, which is fed the stored bytes in order and never buffers more than a chunk header.

SPARSE_MAX_RAW_BLOCKS = U32_MAX // SPARSE_BLOCK  # a raw chunk's data_len is a u32: longer runs are split
_PATTERN_BYTES = 1 << 20
_ZEROS = bytes(_PATTERN_BYTES)


@dataclass(frozen=True)
class SparseLayout:
    """The chunk map of a sparse image written by the device: ``(type, blocks)`` of raw and zero chunks, in
    order. Pure: the stored size and every header are known before a byte is read (the preparing pass)."""

    block_size: int
    chunks: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size % 512:
            raise ValueError(f"block size {self.block_size} is not a positive multiple of 512")
        for kind, blocks in self.chunks:
            if kind not in (SPARSE_RAW, SPARSE_ZERO) or blocks <= 0 \
                    or (kind == SPARSE_RAW and blocks > SPARSE_MAX_RAW_BLOCKS):
                raise ValueError(f"chunk ({kind}, {blocks}) cannot be written")

    @classmethod
    def used_prefix(cls, used: int, size: int, block_size: int = SPARSE_BLOCK) -> SparseLayout:
        """Raw bytes for [0, ``used`` rounded up to a block), one zero chunk for the rest (§4.6 typical)."""
        if size % block_size:
            raise ValueError(f"a {size}-byte image is not a whole number of {block_size}-byte blocks")
        total = size // block_size
        raw = min(total, -(-max(used, 0) // block_size))
        chunks = []
        while raw > 0:
            n = min(raw, SPARSE_MAX_RAW_BLOCKS)
            chunks.append((SPARSE_RAW, n))
            raw -= n
        used_blocks = sum(n for _, n in chunks)
        if total > used_blocks:
            chunks.append((SPARSE_ZERO, total - used_blocks))
        return cls(block_size, tuple(chunks))

    @property
    def total_blocks(self) -> int:
        return sum(blocks for _, blocks in self.chunks)

    @property
    def expanded_size(self) -> int:
        return self.total_blocks * self.block_size

    @property
    def raw_bytes(self) -> int:
        return sum(blocks for kind, blocks in self.chunks if kind == SPARSE_RAW) * self.block_size

    @property
    def stored_size(self) -> int:
        return SPARSE_HEADER_SIZE + SPARSE_CHUNK_SIZE * len(self.chunks) + self.raw_bytes

    def header(self) -> bytes:
        return build_sparse_header(self.block_size, self.total_blocks, len(self.chunks))

    def stream(self, read: Callable[[int, int], Iterable[bytes]]) -> Iterator[bytes]:
        """The stored bytes in order; the data of a raw chunk comes from ``read(offset, size)`` (offsets in
        the expanded image), which must give exactly ``size`` bytes."""
        pending = self.header()
        offset = 0
        for kind, blocks in self.chunks:
            pending += build_sparse_chunk(kind, blocks, self.block_size)
            size = blocks * self.block_size
            if kind == SPARSE_RAW:
                yield pending
                pending = b""
                got = 0
                for piece in read(offset, size):
                    got += len(piece)
                    yield piece
                if got != size:
                    raise ValueError(f"raw chunk at {offset}: the source gave {got} bytes, not {size}")
            offset += size
        if pending:
            yield pending


class SparseExpander:
    """Push parser of a sparse image: ``feed`` it the stored bytes in order, in pieces of any size.

    The expanded image comes out in order as ``on_raw(offset, view)`` (views of the fed pieces, not copies)
    and ``on_fill(offset, size, pattern)`` (a fill chunk's 4-byte pattern; a zero chunk gives four zero
    bytes). ``finish()`` checks that the chunks add up to ``expected_size``. Any malformation is a BadInput
    naming ``name``; nothing beyond one chunk header is buffered.
    """

    def __init__(self, name: str, expected_size: int, *, on_raw: Callable[[int, memoryview], None],
                 on_fill: Callable[[int, int, bytes], None]) -> None:
        self.name = name
        self.expected_size = expected_size
        self.on_raw = on_raw
        self.on_fill = on_fill
        self.offset = 0  # expanded bytes produced so far
        self.block_size = 0
        self.total_blocks = 0
        self.blocks = 0  # blocks of the chunks seen so far
        self._chunks_left = 0
        self._state = "header"  # header -> chunk -> (raw | fill) -> chunk ... -> done
        self._need = SPARSE_HEADER_SIZE
        self._buf = bytearray()
        self._raw_left = 0
        self._fill_blocks = 0

    def _bad(self, problem: str) -> BadInput:
        return BadInput(f"{self.name}: {problem}")

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            if self._state == "raw":
                take = min(self._raw_left, len(view))
                self.on_raw(self.offset, view[:take])
                self.offset += take
                self._raw_left -= take
                view = view[take:]
                if not self._raw_left:
                    self._next_chunk()
            elif self._state == "done":
                raise self._bad(f"{len(view)} bytes follow the last chunk")
            else:
                take = min(self._need - len(self._buf), len(view))
                self._buf += view[:take]
                view = view[take:]
                if len(self._buf) == self._need:
                    raw, self._buf = bytes(self._buf), bytearray()
                    self._parsed(raw)

    def _parsed(self, raw: bytes) -> None:
        if self._state == "header":
            try:
                header = SPARSE_HEADER.parse(raw)
            except ConstructError:
                raise self._bad("no valid sparse header (BBSP, version 1)") from None
            bs = header.block_size
            if bs <= 0 or bs % 512:
                raise self._bad(f"block size {bs} is not a positive multiple of 512")
            if header.total_blocks * bs != self.expected_size:
                raise self._bad(f"expands to {header.total_blocks * bs} bytes, not {self.expected_size}")
            self.block_size, self.total_blocks = bs, header.total_blocks
            self._chunks_left = header.chunk_count
            self._next_chunk(first=True)
        elif self._state == "chunk":
            chunk = SPARSE_CHUNK.parse(raw)
            self.blocks += chunk.blocks
            if self.blocks > self.total_blocks:
                raise self._bad("has more blocks than its header says")
            size = chunk.blocks * self.block_size
            if chunk.type == SPARSE_RAW and chunk.data_len == size:
                self._raw_left = size
                self._state = "raw"
                if not size:
                    self._next_chunk()
            elif chunk.type == SPARSE_FILL and chunk.data_len == 4:
                self._fill_blocks = chunk.blocks
                self._state, self._need = "fill", 4
            elif chunk.type == SPARSE_ZERO and chunk.data_len == 0:
                self._emit_fill(chunk.blocks, bytes(4))
            else:
                raise self._bad(f"malformed chunk (type {chunk.type}, {chunk.blocks} blocks, data_len "
                                f"{chunk.data_len})")
        else:  # fill pattern
            self._emit_fill(self._fill_blocks, raw)

    def _emit_fill(self, blocks: int, pattern: bytes) -> None:
        size = blocks * self.block_size
        if size:
            self.on_fill(self.offset, size, pattern)
        self.offset += size
        self._next_chunk()

    def _next_chunk(self, *, first: bool = False) -> None:
        if not first:
            self._chunks_left -= 1
        if self._chunks_left > 0:
            self._state, self._need = "chunk", SPARSE_CHUNK_SIZE
        else:
            self._state = "done"

    def finish(self) -> None:
        if self._state != "done" or self.blocks != self.total_blocks:
            raise self._bad("is shorter than its chunks say" if self._state != "done"
                            else "chunks do not add up to the image")


def fill_pieces(size: int, pattern: bytes) -> Iterator[memoryview]:
    """``size`` bytes of a repeated 4-byte pattern, in pieces of at most 1 MiB (one shared buffer)."""
    buf = _ZEROS if pattern == bytes(4) else pattern * (_PATTERN_BYTES // 4)
    view = memoryview(buf)
    while size > 0:
        n = min(size, len(buf))
        yield view[:n]
        size -= n


class SparseHasher:
    """sha256 of a sparse part's stored bytes and of its expanded image, from the stored bytes fed in order
    (what the manifest's ``stored_sha256`` and ``sha256`` describe)."""

    def __init__(self, name: str, expected_size: int) -> None:
        self.stored = hashlib.sha256()
        self.expanded = hashlib.sha256()
        self.expander = SparseExpander(name, expected_size, on_raw=lambda _, view: self.expanded.update(view),
                                       on_fill=self._fill)

    def _fill(self, offset: int, size: int, pattern: bytes) -> None:
        for piece in fill_pieces(size, pattern):
            self.expanded.update(piece)

    def update(self, data: bytes | memoryview) -> None:
        self.stored.update(data)
        self.expander.feed(data)

    def finish(self) -> tuple[str, str]:
        """(stored sha256, expanded sha256); BadInput if the image is incomplete."""
        self.expander.finish()
        return self.stored.hexdigest(), self.expanded.hexdigest()



# ------------------------------------------------------------------------------------------------ reading


ZipEntry = Entry  # the shared entry; data_offset is filled from the local header


@dataclass
class GmiInfo:
    """A GMI's structure and manifest, checked; ``parts`` maps each manifest part to its ZIP entry."""

    path: Path
    size: int
    manifest: Manifest
    manifest_bytes: bytes
    manifest_sha256: str
    entries: list[ZipEntry]
    zip64: bool
    parts: list[tuple[ManifestPart, ZipEntry]] = field(default_factory=list)

    @property
    def format(self) -> int:
        return self.manifest.format


def _bad(path: Path, problem: str) -> BadInput:
    return BadInput(f"{path.name}: not a valid GMI file ({problem})")


def _safe_name(name: str) -> bool:
    return bool(name) and not name.startswith(("/", "\\")) and "\\" not in name and ":" not in name \
        and all(p not in ("", ".", "..") for p in name.split("/"))


def inspect_gmi(path: Path) -> GmiInfo:
    """Check the ZIP structure and read the manifest (no hashing of the parts). BadInput on any problem."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a context manager would hide the OSError text
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = _pread(f, 0, ZIP_LOCAL_HEADER_SIZE + len(MIMETYPE) + len(MEDIA_BYTES))
        if head[30:38] != MIMETYPE.encode() or head[38:65] != MEDIA_BYTES or head[:4] != b"PK\x03\x04":
            raise BadInput(f"{path.name}: this file is not a GMI file (no GMI mimetype entry at its start)")
        entries, cd_offset, zip64 = _central_directory(f, path, size)
        for entry in entries:
            _read_local_header(f, path, entry, cd_offset)
        _check_order(path, entries, cd_offset)
        first, second = entries[0], entries[1] if len(entries) > 1 else None
        if first.name != MIMETYPE or first.method != STORED or first.compressed_size != len(MEDIA_BYTES):
            raise _bad(path, "the first entry is not a stored 'mimetype'")
        if second is None or second.name != MANIFEST:
            raise _bad(path, "the second entry is not 'manifest.json'")
        if second.method != STORED or second.compressed_size > MAX_MANIFEST:
            raise _bad(path, f"manifest.json is not stored or larger than {MAX_MANIFEST} bytes")
        manifest_bytes = _pread(f, second.data_offset, second.compressed_size)
        if zlib.crc32(manifest_bytes) != second.crc32:
            raise _bad(path, "manifest.json fails its CRC-32")
        manifest = Manifest.from_json(manifest_bytes)
    if manifest.disk_size_bytes > MAX_DISK:
        # Every part lies inside the disk: this bounds what a deflated or sparse part may expand to.
        raise _bad(path, f"the manifest claims a {manifest.disk_size_bytes >> 30} GiB disk; a BactoBox has at "
                         f"most {MAX_DISK >> 30} GiB")
    by_name = {e.name: e for e in entries[2:]}
    expected = [p.file for p in manifest.parts]
    if [e.name for e in entries[2:]] != expected:
        raise _bad(path, f"entries {[e.name for e in entries[2:]]} do not match the manifest's {expected}")
    info = GmiInfo(path=path, size=size, manifest=manifest, manifest_bytes=manifest_bytes,
                   manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(), entries=entries, zip64=zip64)
    for part in manifest.parts:
        entry = by_name[part.file]
        if manifest.format == 1:
            if entry.method not in (STORED, DEFLATED) or entry.uncompressed_size != part.size_bytes:
                raise _bad(path, f"{part.file}: {entry.uncompressed_size} bytes, the manifest says "
                                 f"{part.size_bytes}")
        elif entry.method != STORED or entry.compressed_size != part.entry_size \
                or entry.uncompressed_size != part.entry_size:
            raise _bad(path, f"{part.file}: entry holds {entry.compressed_size} bytes, the manifest says "
                             f"{part.entry_size}")
        info.parts.append((part, entry))
    return info


def _pread(f: BinaryIO, offset: int, size: int) -> bytes:
    return os.pread(f.fileno(), size, offset)


def _central_directory(f: BinaryIO, path: Path, size: int) -> tuple[list[ZipEntry], int, bool]:
    if size < ZIP_EOCD_SIZE + 30:
        raise _bad(path, f"only {size} bytes: truncated")
    tail_len = min(size, 65535 + ZIP_EOCD_SIZE)
    tail = _pread(f, size - tail_len, tail_len)
    pos = tail.rfind(ZIP_EOCD_SIG)
    while pos >= 0:
        comment_len = int.from_bytes(tail[pos + 20:pos + 22], "little")
        if pos + ZIP_EOCD_SIZE + comment_len == len(tail):
            break
        pos = tail.rfind(ZIP_EOCD_SIG, 0, pos)
    if pos < 0:
        raise _bad(path, "no end-of-central-directory record: the file is truncated or not a ZIP")
    eocd_offset = size - tail_len + pos
    eocd = ZIP_EOCD.parse(tail[pos:pos + ZIP_EOCD_SIZE])
    count, cd_size, cd_offset = eocd.entries_total, eocd.cd_size, eocd.cd_offset
    zip64 = False
    locator_at = eocd_offset - ZIP64_LOCATOR_SIZE
    if locator_at >= 0 and _pread(f, locator_at, 4) == b"PK\x06\x07":
        zip64 = True
        try:
            locator = ZIP64_LOCATOR.parse(_pread(f, locator_at, ZIP64_LOCATOR_SIZE))
            if locator.eocd64_offset + ZIP64_EOCD_SIZE > locator_at:
                raise _bad(path, "the ZIP64 locator points past itself")
            record = ZIP64_EOCD.parse(_pread(f, locator.eocd64_offset, ZIP64_EOCD_SIZE))
        except ConstructError as exc:
            raise _bad(path, f"broken ZIP64 end record ({_why(exc)})") from None
        count, cd_size, cd_offset = record.entries_total, record.cd_size, record.cd_offset
        end_of_cd = locator.eocd64_offset
    elif U32_MAX in (cd_size, cd_offset) or count == U16_MAX:
        raise _bad(path, "ZIP64 values without a ZIP64 end record")
    else:
        end_of_cd = eocd_offset
    if eocd.disk_number or eocd.cd_disk:
        raise _bad(path, "multi-disk archives are not GMI files")
    if not 2 <= count <= MAX_ENTRIES:
        raise _bad(path, f"{count} entries (a GMI has 2 to {MAX_ENTRIES})")
    if cd_size > MAX_CENTRAL_DIRECTORY or cd_offset + cd_size != end_of_cd:
        raise _bad(path, "the central directory is not where the end record says (truncated or damaged)")
    raw = _pread(f, cd_offset, cd_size)
    entries: list[ZipEntry] = []
    at = 0
    for _ in range(count):
        try:
            h = ZIP_CENTRAL_HEADER.parse(raw[at:at + ZIP_CENTRAL_HEADER_SIZE])
        except ConstructError:
            raise _bad(path, "damaged central directory") from None
        at += ZIP_CENTRAL_HEADER_SIZE
        name_raw = raw[at:at + h.name_length]
        extra = raw[at + h.name_length:at + h.name_length + h.extra_length]
        at += h.name_length + h.extra_length + h.comment_length
        if at > len(raw):
            raise _bad(path, "damaged central directory")
        try:
            name = name_raw.decode("ascii")
        except UnicodeDecodeError:
            raise _bad(path, f"entry name {name_raw[:40]!r} is not ASCII") from None
        if not _safe_name(name):
            raise _bad(path, f"entry name {name!r} would escape the archive's folder")
        if h.flags & FLAG_ENCRYPTED:
            raise _bad(path, f"entry {name} is encrypted")
        entry = ZipEntry(name, h.method, h.flags, h.crc32, h.compressed_size, h.uncompressed_size,
                         h.local_header_offset)
        _apply_zip64_extra(path, entry, extra)
        entries.append(entry)
    if len({e.name for e in entries}) != len(entries):
        raise _bad(path, "duplicate entry names")
    return entries, cd_offset, zip64


def _apply_zip64_extra(path: Path, entry: ZipEntry, extra: bytes) -> None:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        pos += 4 + length
        if tag != ZIP64_EXTRA_ID:
            continue
        values = list(struct.unpack_from(f"<{len(body) // 8}Q", body)) if len(body) >= 8 else []
        try:
            if entry.uncompressed_size == U32_MAX:
                entry.uncompressed_size = values.pop(0)
            if entry.compressed_size == U32_MAX:
                entry.compressed_size = values.pop(0)
            if entry.header_offset == U32_MAX:
                entry.header_offset = values.pop(0)
        except IndexError:
            raise _bad(path, f"entry {entry.name}: ZIP64 extra field too short") from None
    if U32_MAX in (entry.compressed_size, entry.uncompressed_size, entry.header_offset):
        raise _bad(path, f"entry {entry.name}: ZIP64 sizes without a ZIP64 extra field")


def _read_local_header(f: BinaryIO, path: Path, entry: ZipEntry, cd_offset: int) -> None:
    raw = _pread(f, entry.header_offset, ZIP_LOCAL_HEADER_SIZE)
    try:
        h = ZIP_LOCAL_HEADER.parse(raw)
    except ConstructError:
        raise _bad(path, f"entry {entry.name}: no local header at offset {entry.header_offset}") from None
    name = _pread(f, entry.header_offset + ZIP_LOCAL_HEADER_SIZE, h.name_length)
    if name != entry.name.encode("ascii"):
        raise _bad(path, f"entry {entry.name}: the local header names {name[:40]!r}")
    if h.method != entry.method:
        raise _bad(path, f"entry {entry.name}: local and central headers disagree on the method")
    entry.data_offset = entry.header_offset + ZIP_LOCAL_HEADER_SIZE + h.name_length + h.extra_length
    if entry.data_offset + entry.compressed_size > cd_offset:
        raise _bad(path, f"entry {entry.name} runs into the central directory (truncated or damaged)")


def _check_order(path: Path, entries: list[ZipEntry], cd_offset: int) -> None:
    end = 0
    for entry in entries:
        if entry.header_offset < end:
            raise _bad(path, f"entry {entry.name} overlaps the entry before it")
        end = entry.data_offset + entry.compressed_size
    if end > cd_offset:
        raise _bad(path, "entries overlap the central directory")


# ------------------------------------------------------------------------------------------------ hashing


ProgressFn = Callable[[int, int | None, str], None]


def _no_progress(done: int, total: int | None, message: str) -> None:
    """Default progress sink."""


class _Counter:
    """Bytes hashed so far across worker threads, reported to ``progress`` (the GIL makes += safe enough
    for a progress value; the total is exact once every worker has finished)."""

    def __init__(self, total: int, progress: ProgressFn) -> None:
        self.done = 0
        self.total = total
        self.progress = progress

    def add(self, n: int) -> None:
        self.done += n
        self.progress(self.done, self.total, "")


def sha256_range(path: Path, offset: int, size: int, counter: _Counter | None = None) -> str:
    """sha256 of ``size`` bytes at ``offset``, read into one reused buffer (constant memory)."""
    digest = hashlib.sha256()
    buf = bytearray(min(READ_CHUNK, max(size, 1)))
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        left = size
        pos = offset
        while left > 0:
            n = os.preadv(fd, [view[:min(left, len(buf))]], pos)
            if n <= 0:
                raise BadInput(f"{Path(path).name}: ends early (truncated)")
            digest.update(view[:n])
            pos += n
            left -= n
            if counter is not None:
                counter.add(n)
    finally:
        os.close(fd)
    return digest.hexdigest()


def verify_gmi(path: Path, *, progress: ProgressFn = _no_progress, workers: int = 2) -> GmiInfo:
    """``inspect_gmi`` plus every part's sha256 against the manifest (the expanded sha256 for sparse and
    deflated parts). BadInput names the first part that does not match. Parts are hashed on ``workers``
    threads (hashlib releases the GIL, so two parts hash at once on two cores).
    """
    info = inspect_gmi(path)
    total = sum(entry.compressed_size for _, entry in info.parts)
    counter = _Counter(total, progress)
    progress(0, total, f"checking {info.path.name}: {len(info.parts)} parts, {total} bytes")

    def check(item: tuple[ManifestPart, ZipEntry]) -> str | None:
        part, entry = item
        if entry.method == DEFLATED:
            got = _inflate_sha256(info.path, entry, part.size_bytes, counter)
        elif part.encoding == "sparse":
            stored, got = _sparse_sha256(info.path, entry, part.size_bytes, counter)
            if stored != part.stored_sha256:  # the image may still expand right: its headers changed
                return "; ".join([f"{part.name} sha256 mismatch"] * (got != part.sha256)
                                 + [f"{part.name} stored sha256 mismatch"])
        else:
            got = sha256_range(info.path, entry.data_offset, entry.compressed_size, counter)
        return None if got == part.sha256 else f"{part.name} sha256 mismatch"

    # Largest first: the longest part starts at once and the others fill the second worker.
    order = sorted(info.parts, key=lambda item: -item[1].compressed_size)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = [p for p in pool.map(check, order) if p]
    if problems:
        raise BadInput(f"{info.path.name}: local_gmi_corrupt: {'; '.join(sorted(problems))}; the file is "
                       f"damaged: nothing was sent to the unit")
    return info


def _inflate_sha256(path: Path, entry: ZipEntry, expected: int, counter: _Counter) -> str:
    """Inflate a deflated entry in bounded pieces; refuse output beyond ``expected`` (a decompression bomb)."""
    digest = hashlib.sha256()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out_total = 0
    with open(path, "rb") as f:
        f.seek(entry.data_offset)
        left = entry.compressed_size
        while left > 0 or inflater.unconsumed_tail:
            data = inflater.unconsumed_tail
            if not data:
                data = f.read(min(left, 1 << 20))
                if not data:
                    raise BadInput(f"{path.name}: {entry.name} ends early (truncated)")
                left -= len(data)
                counter.add(len(data))
            out = inflater.decompress(data, 1 << 20)
            out_total += len(out)
            if out_total > expected:
                raise BadInput(f"{path.name}: {entry.name} inflates beyond its stated {expected} bytes")
            digest.update(out)
        out = inflater.flush()
        out_total += len(out)
        digest.update(out)
    if out_total != expected:
        raise BadInput(f"{path.name}: {entry.name} inflates to {out_total} bytes, not {expected}")
    return digest.hexdigest()


def _sparse_sha256(path: Path, entry: ZipEntry, expected: int, counter: _Counter) -> tuple[str, str]:
    """(sha256 of the stored bytes, sha256 of the expanded image) of a format-3 sparse part."""
    hasher = SparseHasher(f"{path.name}: {entry.name}", expected)
    buf = bytearray(min(READ_CHUNK, max(entry.compressed_size, 1)))
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        pos, end = entry.data_offset, entry.data_offset + entry.compressed_size
        while pos < end:
            n = os.preadv(fd, [view[:min(end - pos, len(buf))]], pos)
            if n <= 0:
                raise BadInput(f"{path.name}: ends early (truncated)")
            hasher.update(view[:n])
            counter.add(n)
            pos += n
    finally:
        os.close(fd)
    return hasher.finish()


def read_sparse_range(path: Path, entry: ZipEntry, expected: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of a sparse part's expanded image, read from the stored entry up to the
    chunk that holds them (the settings block of a format-3 data part is in its first raw chunk)."""
    out = bytearray(size)
    filled = [0]

    def raw(at: int, view: memoryview) -> None:
        lo, hi = max(at, offset), min(at + len(view), offset + size)
        if lo < hi:
            out[lo - offset:hi - offset] = view[lo - at:hi - at]
            filled[0] += hi - lo

    def fill(at: int, n: int, pattern: bytes) -> None:
        lo, hi = max(at, offset), min(at + n, offset + size)
        if lo < hi:  # chunks start on a block boundary: the pattern's phase is the offset mod 4
            rep = (pattern * ((hi - lo) // 4 + 2))[lo % 4:lo % 4 + hi - lo]
            out[lo - offset:hi - offset] = rep
            filled[0] += hi - lo

    expander = SparseExpander(f"{path.name}: {entry.name}", expected, on_raw=raw, on_fill=fill)
    with open(path, "rb") as f:
        pos, end = entry.data_offset, entry.data_offset + entry.compressed_size
        while filled[0] < size:
            data = _pread(f, pos, min(64 * 1024, end - pos))
            if not data:
                raise BadInput(f"{path.name}: {entry.name} ends before byte {offset + size} of its image")
            expander.feed(data)
            pos += len(data)
    return bytes(out)


# ---------------------------------------------------------------------------------------- stream reading


class GmiStreamError(Exception):
    """The uploaded stream is not the GMI it should be; ``code`` is the device's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class GmiStreamReader:
    """Sequential reader of an uploaded GMI (the device side of a restore), fed chunk by chunk.

    Events go to callbacks as the bytes arrive: ``on_manifest(bytes)`` once the manifest entry is complete
    (it may raise to refuse the upload before any image byte is used), then ``on_part_data(file, memoryview)``
    for each piece of part data, and ``on_part_end(file)`` at the end of each part. Data is passed through
    as views of the incoming chunks: nothing is buffered beyond one local header. ``finish()`` checks the
    central directory against what was received (names, sizes, offsets).
    """

    def __init__(self, *, on_manifest: Callable[[bytes], Manifest],
                 on_part_data: Callable[[str, memoryview], None],
                 on_part_end: Callable[[str], None]) -> None:
        self.on_manifest = on_manifest
        self.on_part_data = on_part_data
        self.on_part_end = on_part_end
        self.received = 0
        self.manifest: Manifest | None = None
        self.seen: list[tuple[str, int, int]] = []  # (name, local header offset, size)
        self.image_bytes = 0  # part bytes handed on: 0 means nothing destructive can have happened
        self._state = "header"  # header -> data -> header ... -> tail
        self._buf = bytearray()  # the local header being collected
        self._small = bytearray()  # mimetype and manifest data
        self._name = ""
        self._left = 0
        self._tail = bytearray()
        self._inflate: _Inflate | None = None  # the deflated entry being inflated (format 1)
        self.done = False

    @property
    def _expected_entries(self) -> int | None:
        return None if self.manifest is None else 2 + len(self.manifest.parts)

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            if self._state == "header":
                view = self._feed_header(view)
            elif self._state == "data":
                view = self._feed_data(view)
            elif self._state == "inflate":
                view = self._feed_inflate(view)
            elif self._state == "descriptor":
                view = self._feed_descriptor(view)
            else:  # the central directory and end records: small, kept for the final check
                if len(self._tail) + len(view) > MAX_CENTRAL_DIRECTORY:
                    raise GmiStreamError("not_a_gmi", "The GMI's central directory is too large.")
                self._tail += view
                self.received += len(view)
                return

    def _feed_header(self, view: memoryview) -> memoryview:
        view = self._collect(view, ZIP_LOCAL_HEADER_SIZE)
        if len(self._buf) >= 4 and self._buf[:4] != b"PK\x03\x04":
            if not self.seen:
                raise GmiStreamError("not_a_gmi", "This file is not a GMI file (no GMI mimetype entry). "
                                                  "Nothing was changed.")
            raise GmiStreamError("not_a_gmi", f"The GMI has no local header where entry {len(self.seen) + 1} "
                                              f"should begin.")
        if len(self._buf) < ZIP_LOCAL_HEADER_SIZE:
            return view
        name_len, extra_len = struct.unpack_from("<HH", self._buf, 26)
        view = self._collect(view, ZIP_LOCAL_HEADER_SIZE + name_len + extra_len)
        if len(self._buf) == ZIP_LOCAL_HEADER_SIZE + name_len + extra_len:
            self._begin_entry()
        return view

    def _collect(self, view: memoryview, upto: int) -> memoryview:
        take = max(0, min(upto - len(self._buf), len(view)))
        self._buf += view[:take]
        self.received += take
        return view[take:]

    def _begin_entry(self) -> None:
        h = ZIP_LOCAL_HEADER.parse(bytes(self._buf[:ZIP_LOCAL_HEADER_SIZE]))
        name_raw = bytes(self._buf[ZIP_LOCAL_HEADER_SIZE:ZIP_LOCAL_HEADER_SIZE + h.name_length])
        extra = bytes(self._buf[ZIP_LOCAL_HEADER_SIZE + h.name_length:])
        offset = self.received - len(self._buf)
        self._buf = bytearray()
        name = name_raw.decode("ascii", errors="replace")
        index = len(self.seen)
        if index == 0 and (name != MIMETYPE or h.method != STORED or h.compressed_size != len(MEDIA_BYTES)):
            raise GmiStreamError("not_a_gmi", "This file is not a GMI file (no GMI mimetype entry). "
                                              "Nothing was changed.")
        # Format 1's disk.img is the one entry that may be deflated with a data descriptor (§3.2).
        deflated = index >= 2 and self.manifest is not None and self.manifest.format == 1 \
            and h.method == DEFLATED and not h.flags & FLAG_ENCRYPTED
        if not deflated and (h.method != STORED or h.flags & (FLAG_DESCRIPTOR | FLAG_ENCRYPTED)):
            raise GmiStreamError("not_a_gmi", f"GMI entry {name} is not stored as this software writes it.")
        size = h.compressed_size
        if size == U32_MAX:
            size = _local_zip64_size(extra)
        if deflated:
            assert self.manifest is not None
            want = self.manifest.parts[index - 2]
            if want.file != name:
                raise GmiStreamError("manifest_mismatch", f"GMI entry {name} is not the part the manifest lists "
                                                          f"next ({want.file}).")
            self.seen.append((name, offset, 0))  # the compressed size is known at the end of the data
            self._name = name
            zip64 = _extra_id(extra) == ZIP64_EXTRA_ID
            plain = h.uncompressed_size  # without a descriptor the local header holds the sizes
            if plain == U32_MAX and zip64 and len(extra) >= 12:
                plain = struct.unpack_from("<Q", extra, 4)[0]
            self._inflate = _Inflate(want.size_bytes, descriptor=bool(h.flags & FLAG_DESCRIPTOR), zip64=zip64,
                                     crc32=h.crc32, size=plain)
            self._state = "inflate"
            return
        if index == 1 and (name != MANIFEST or size > MAX_MANIFEST):
            raise GmiStreamError("not_a_gmi", "The GMI's second entry is not its manifest.")
        if index >= 2:
            assert self.manifest is not None
            want = self.manifest.parts[index - 2]
            if want.file != name or want.entry_size != size:
                raise GmiStreamError("manifest_mismatch", f"GMI entry {name} ({size} bytes) is not the part "
                                                          f"the manifest lists next ({want.file}).")
        self.seen.append((name, offset, size))
        self._name, self._left = name, size
        self._state = "data"
        if size == 0:
            self._end_entry()

    def _feed_data(self, view: memoryview) -> memoryview:
        take = min(self._left, len(view))
        piece = view[:take]
        if len(self.seen) <= 2:
            self._small += piece  # mimetype, manifest: checked when complete
        else:
            self.image_bytes += take
            self.on_part_data(self._name, piece)
        self.received += take
        self._left -= take
        if self._left == 0:
            self._end_entry()
        return view[take:]

    def _feed_inflate(self, view: memoryview) -> memoryview:
        """Deflated data: inflated in bounded pieces and handed on; at the end of the deflate stream the
        rest of ``view`` belongs to the data descriptor (or the next header)."""
        inf = self._inflate
        assert inf is not None
        data: bytes | memoryview = view
        used = len(view)
        while True:
            out = inf.inflater.decompress(data, 4 << 20)
            if out:
                inf.out += len(out)
                if inf.out > inf.expected:
                    raise GmiStreamError("part_hash_mismatch", f"{self._name} inflates beyond its stated "
                                                               f"{inf.expected} bytes.")
                inf.crc = zlib.crc32(out, inf.crc)
                self.image_bytes += len(out)
                self.on_part_data(self._name, memoryview(out))
            if inf.inflater.eof:
                used = len(view) - len(inf.inflater.unused_data)
                break
            data = inf.inflater.unconsumed_tail
            if not data:
                break
        inf.compressed += used
        self.received += used
        if inf.inflater.eof:
            name, offset, _ = self.seen[-1]
            self.seen[-1] = (name, offset, inf.compressed)
            self._state = "descriptor" if inf.descriptor else "header"
            if not inf.descriptor:
                self._check_inflated(inf.crc32, inf.size, inf.out)
        return view[used:]

    def _feed_descriptor(self, view: memoryview) -> memoryview:
        inf = self._inflate
        assert inf is not None
        view = self._collect(view, 4)
        if len(self._buf) < 4:
            return view
        signed = self._buf[:4] == b"PK\x07\x08"  # the signature is optional (APPNOTE 4.3.9.3)
        need = 4 * signed + 4 + (16 if inf.zip64 else 8)
        view = self._collect(view, need)
        if len(self._buf) < need:
            return view
        body = bytes(self._buf[4 * signed:need])
        self._buf = bytearray()
        crc, compressed, size = struct.unpack("<IQQ" if inf.zip64 else "<III", body)
        if compressed != inf.compressed:
            raise GmiStreamError("not_a_gmi", f"The data descriptor of {self._name} states {compressed} "
                                              f"compressed bytes; {inf.compressed} arrived.")
        self._check_inflated(crc, size, inf.out)
        return view

    def _check_inflated(self, crc: int, size: int, got: int) -> None:
        inf = self._inflate
        assert inf is not None
        self._inflate = None
        if size != got or got != inf.expected:
            raise GmiStreamError("part_hash_mismatch", f"{self._name} inflates to {got} bytes; the GMI states "
                                                       f"{size} and the manifest {inf.expected}.")
        if crc != inf.crc:
            raise GmiStreamError("part_hash_mismatch", f"{self._name} fails its CRC-32.")
        self._end_entry()

    def _end_entry(self) -> None:
        index = len(self.seen) - 1
        self._state = "header"
        if index == 0:
            if bytes(self._small) != MEDIA_BYTES:
                raise GmiStreamError("not_a_gmi", "This file is not a GMI file (no GMI mimetype entry). "
                                                  "Nothing was changed.")
            self._small = bytearray()
        elif index == 1:
            raw, self._small = bytes(self._small), bytearray()
            self.manifest = self.on_manifest(raw)
        else:
            self.on_part_end(self._name)
        if self._expected_entries is not None and len(self.seen) == self._expected_entries:
            self._state = "tail"

    def finish(self) -> None:
        """The body has ended: every part must have arrived, and the central directory must agree."""
        if self._state != "tail":
            raise GmiStreamError("transfer_interrupted", "The GMI upload ended before every part arrived.")
        cd = bytes(self._tail)
        at = 0
        for name, offset, size in self.seen:
            if cd[at:at + 4] != b"PK\x01\x02":
                raise GmiStreamError("not_a_gmi", "The GMI's central directory is missing or damaged.")
            h = ZIP_CENTRAL_HEADER.parse(cd[at:at + ZIP_CENTRAL_HEADER_SIZE])
            at += ZIP_CENTRAL_HEADER_SIZE
            got = cd[at:at + h.name_length].decode("ascii", errors="replace")
            extra = cd[at + h.name_length:at + h.name_length + h.extra_length]
            at += h.name_length + h.extra_length + h.comment_length
            entry = ZipEntry(got, h.method, h.flags, h.crc32, h.compressed_size, h.uncompressed_size,
                             h.local_header_offset)
            try:
                _apply_zip64_extra(Path("upload"), entry, extra)
            except BadInput as exc:
                raise GmiStreamError("not_a_gmi", str(exc)) from None
            if got != name or entry.compressed_size != size or entry.header_offset != offset:
                raise GmiStreamError("not_a_gmi", f"The GMI's central directory disagrees with entry {name}.")
        if cd.rfind(ZIP_EOCD_SIG) < 0:
            raise GmiStreamError("not_a_gmi", "The GMI has no end-of-central-directory record.")
        self.done = True


@dataclass
class _Inflate:
    """The state of a deflated entry while it streams through ``GmiStreamReader``."""

    expected: int  # the manifest's size_bytes: more output is refused (a decompression bomb)
    descriptor: bool
    zip64: bool
    crc32: int  # from the local header (used when there is no descriptor)
    size: int
    inflater: Any = field(default_factory=lambda: zlib.decompressobj(-zlib.MAX_WBITS))
    out: int = 0
    crc: int = 0
    compressed: int = 0


def _extra_id(extra: bytes) -> int:
    """The ID of the first extra field (0 if none)."""
    return struct.unpack_from("<H", extra)[0] if len(extra) >= 4 else 0


def _local_zip64_size(extra: bytes) -> int:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == ZIP64_EXTRA_ID and length >= 16:
            return struct.unpack_from("<Q", extra, pos + 4 + 8)[0]  # (uncompressed, compressed): compressed
        pos += 4 + length
    raise GmiStreamError("not_a_gmi", "A GMI entry has ZIP64 sizes but no ZIP64 extra field.")


def _why(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__




# ------------------------------------------------------------------------------------ hashing alongside


class GmiFollower:
    """Hashes every part of a GMI while another writer is still streaming it to ``path`` (the download).

    It follows the growing file from the page cache on a thread of its own (hashlib releases the GIL, so the
    hashing overlaps the transfer instead of coming after it), parses it with ``GmiStreamReader`` and checks
    each part's sha256 against the manifest at the end of the part (a sparse part: the stored bytes' sha256
    and the expanded image's), and the central directory against what was streamed. ``finish(size)`` waits for it; ``result()`` raises BadInput on the first mismatch.
    The writer may rename the file when it is done: the follower keeps its open descriptor.

    With ``inline=True`` there is no thread and no file reading: the writer hands every piece it writes to
    ``feed`` (the download's per-chunk hook), so the bytes are hashed once, from the buffer they arrived in;
    ``restart`` starts over when the writer does (a retried download).
    """

    def __init__(self, *paths: Path, inline: bool = False) -> None:
        import threading

        self.paths = [Path(p) for p in paths]  # where the writer's file may be, in order (part name, final)
        self.path = self.paths[-1]
        self.inline = inline
        self._stop = threading.Event()
        self._size: int | None = None
        self.restart()
        self._thread: threading.Thread | None = None
        if not inline:
            self._thread = threading.Thread(target=self._run, name=f"follow {self.path.name}", daemon=True)
            self._thread.start()

    def restart(self) -> None:
        """Forget everything fed so far (inline mode: the writer starts the file again)."""
        self.completed = False
        self.manifest_bytes = b""
        self.problems: list[str] = []
        self.error: BaseException | None = None
        self._part: tuple[ManifestPart, Any] | None = None
        self._reader = GmiStreamReader(on_manifest=self._manifest, on_part_data=self._data,
                                       on_part_end=self._end)

    def feed(self, data: bytes | memoryview) -> None:
        """Inline mode: the next piece of the file as it is written. A damaged stream is recorded (``result``
        reports it), not raised, so the writer still finishes and the caller decides."""
        if self.error is not None:
            return
        try:
            self._reader.feed(data)
        except (GmiStreamError, BadInput, ConstructError) as exc:
            self.error = exc

    def _manifest(self, raw: bytes) -> Manifest:
        self.manifest_bytes = raw
        return Manifest.from_json(raw)

    def _begin(self, name: str) -> tuple[ManifestPart, Any]:
        assert self._reader.manifest is not None
        part = next(p for p in self._reader.manifest.parts if p.file == name)
        # A sparse part: the stored bytes' sha256 and the expanded image's, both in the manifest.
        digest = SparseHasher(part.name, part.size_bytes) if part.encoding == "sparse" else hashlib.sha256()
        return part, digest

    def _data(self, name: str, view: memoryview) -> None:
        if self._part is None or self._part[0].file != name:
            self._part = self._begin(name)
        part, digest = self._part
        if digest is None:
            return  # a malformed sparse image: already recorded
        try:
            digest.update(view)
        except BadInput as exc:
            self.problems.append(f"{part.name}: malformed sparse image ({exc})")
            self._part = (part, None)

    def _end(self, name: str) -> None:
        if self._part is None:  # an empty part: nothing was hashed
            self._part = self._begin(name)
        part, digest = self._part
        self._part = None
        if digest is None:
            return
        if part.encoding == "sparse":
            try:
                stored, expanded = digest.finish()
            except BadInput as exc:
                self.problems.append(f"{part.name}: malformed sparse image ({exc})")
                return
            if expanded != part.sha256:
                self.problems.append(f"{part.name} sha256 mismatch")
            if stored != part.stored_sha256:
                self.problems.append(f"{part.name} stored sha256 mismatch")
        elif part.encoding != "raw":
            self.problems.append(f"{part.name} is {part.encoding}; followed GMIs must be raw or sparse")
        elif digest.hexdigest() != part.sha256:
            self.problems.append(f"{part.name} sha256 mismatch")

    def _run(self) -> None:
        fd = -1
        try:
            while fd < 0:
                for candidate in self.paths:
                    try:
                        fd = os.open(candidate, os.O_RDONLY)
                        break
                    except FileNotFoundError:
                        continue
                if fd < 0 and self._stop.wait(0.002) and self._size is None:
                    return
            buf = bytearray(READ_CHUNK)
            view = memoryview(buf)
            pos = 0
            while True:
                size = os.fstat(fd).st_size
                if size > pos:
                    n = os.preadv(fd, [view[:min(size - pos, len(buf))]], pos)
                    self._reader.feed(view[:n])
                    pos += n
                    continue
                if self._size is not None and pos >= self._size:
                    break
                if self._stop.wait(0.002) and self._size is None:
                    return  # abandoned: the download failed
            self._reader.finish()
            self.completed = True
        except (GmiStreamError, BadInput, OSError, ConstructError) as exc:
            self.error = exc
        finally:
            if fd >= 0:
                os.close(fd)

    def finish(self, size: int) -> None:
        """The writer is done and wrote ``size`` bytes: read to the end, then stop."""
        self._size = size
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            return
        if self.error is None:
            try:
                self._reader.finish()
                self.completed = True
            except (GmiStreamError, BadInput, ConstructError) as exc:
                self.error = exc

    def abandon(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> str:
        """sha256 of the manifest bytes; BadInput naming what did not match."""
        if self.error is not None:
            raise BadInput(f"{self.path.name}: not a valid GMI file ({self.error})")
        if self.problems:
            raise BadInput(f"{self.path.name}: local_gmi_corrupt: {'; '.join(self.problems)}")
        if not self.completed:
            raise BadInput(f"{self.path.name}: the file could not be followed to its end")
        return hashlib.sha256(self.manifest_bytes).hexdigest()


__all__ = ["EntrySpec", "GmiFollower", "GmiInfo", "GmiStreamError", "GmiStreamReader", "InflatedImage", "MANIFEST",
           "MEDIA_BYTES", "MIMETYPE", "SparseExpander", "SparseHasher", "SparseLayout", "ZipEntry", "ZipPlan",
           "central_directory", "dos_datetime", "fill_pieces", "gmi_entries", "inspect_gmi", "read_sparse_range",
           "sha256_range", "stream_gmi", "stream_gmi_v1", "verify_gmi", "write_gmi"]
