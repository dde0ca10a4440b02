"""The simulated BactoBox's storage: a sparse disk image file and the layouts on it (bactobox.md §4).

``DiskImage`` is the raw device: positional reads and writes on a file created with ``truncate`` (holes
cost nothing), streamed in chunks of at least 1 MiB, never held in memory. The functions below build a
fresh unit's disk (MBR, boot environment and bootloader, two system slots, the data store) and read and
write its structures through the construct layouts of ``harness.targets.bactobox.schema``. No HTTP here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from construct import ConstructError

from harness.errors import BadInput
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.versions import VERSIONS, Version, get_version, version_key
from simulators.bactobox.profiles import Profile

CHUNK = 4 << 20  # streaming reads and writes: 4 MiB


class DiskImage:
    """A sparse image file as a block device: pread/pwrite at byte offsets, thread-safe counters."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.generation = 0  # bumped by every write: cached digests know when they are stale
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, size: int) -> DiskImage:
        """A new all-zero disk of ``size`` bytes that uses no space until written (a sparse file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".new")
        with open(tmp, "wb") as f:
            f.truncate(size)
        os.replace(tmp, path)
        return cls(path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def sync(self) -> None:
        os.fsync(self.fd)

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > self.size:
            raise OSError(f"read of {size} bytes at {offset} is outside the {self.size}-byte disk")
        data = os.pread(self.fd, size, offset)
        if len(data) != size:  # pread may return less on a huge request; finish it
            parts = [data]
            got = len(data)
            while got < size:
                more = os.pread(self.fd, size - got, offset + got)
                if not more:
                    raise OSError("short read from the disk image")
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if offset < 0 or offset + len(view) > self.size:
            raise OSError(f"write of {len(view)} bytes at {offset} is outside the {self.size}-byte disk")
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            offset += n
            view = view[n:]
        with self._lock:
            self.generation += 1

    def chunks(self, offset: int, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """The bytes of [offset, offset+size) in pieces of ``chunk`` (fresh bytes objects: safe to hand on)."""
        end = offset + size
        while offset < end:
            n = min(chunk, end - offset)
            yield self.read(offset, n)
            offset += n

    def digest(self, offset: int, size: int) -> tuple[str, int]:
        """(sha256 hex, CRC-32) of a region, in one pass, reading into a reused buffer."""
        sha = hashlib.sha256()
        crc = 0
        buf = bytearray(min(CHUNK, max(size, 1)))
        view = memoryview(buf)
        end = offset + size
        while offset < end:
            n = os.preadv(self.fd, [view[:min(len(buf), end - offset)]], offset)
            if n <= 0:
                raise OSError("short read from the disk image")
            sha.update(view[:n])
            crc = zlib.crc32(view[:n], crc)
            offset += n
        return sha.hexdigest(), crc


@dataclass(frozen=True)
class Region:
    """One part of the disk as a GMI names it: head (LBA 0 to the first partition) or a partition."""

    name: str
    start_lba: int
    size: int
    mbr_index: int | None = None
    type: int | None = None

    @property
    def offset(self) -> int:
        return self.start_lba * S.SECTOR


def read_regions(disk: DiskImage) -> list[Region]:
    """head, boot, system0, system1(, config), data from the MBR and, under L1, the EBR chain (§4.1-§4.2).

    BadInput if the table is neither layout L2 (4 primaries, data last) nor L1 (3 primaries, an extended
    partition with logical p5 config and p6 data).
    """
    _, parts = S.parse_partitions(lambda lba: disk.read(lba * S.SECTOR, S.SECTOR), disk.size // S.SECTOR)
    by_index = {p.index: p for p in parts}
    if sorted(by_index) == [1, 2, 3, 4] and by_index[4].type == S.PART_LINUX:
        names = S.PART_NAMES_L2
    elif sorted(by_index) == [1, 2, 3, 5, 6] and by_index[6].type == S.PART_LINUX:
        names = S.PART_NAMES_L1
    else:
        raise BadInput("the partition table is neither layout L2 (boot, system0, system1, data) nor L1 "
                       "(boot, system0, system1, extended: config, data)")
    first = min(p.lba_first for p in parts)
    regions = [Region("head", 0, first * S.SECTOR)]
    for index, name in names.items():
        p = by_index[index]
        regions.append(Region(name, p.lba_first, p.size, index, p.type))
    return regions


def layout_of(regions: list[Region]) -> str:
    return "L1" if any(r.name == "config" for r in regions) else "L2"


def write_partition_table(disk: DiskImage, profile: Profile, device_id: str, layout: str) -> None:
    """The MBR of a fresh unit, and under L1 the two EBRs of the extended partition (§4.2)."""
    head, boot, system0, system1, data = profile.regions
    primaries = [S.part_entry(lba, size // S.SECTOR, S.PART_FAT32_LBA, boot=name == "boot")
                 for name, lba, size in (boot, system0, system1)]
    ext_lba, ext_sectors = data[1], data[2] // S.SECTOR
    if layout == "L2":
        primaries.append(S.part_entry(ext_lba, ext_sectors, S.PART_LINUX))
        disk.write(0, S.build_mbr(S.disk_signature(device_id), primaries))
        return
    # Each EBR sits the profile's gap before its logical partition (1 MiB: the spec's tiny example).
    gap = profile.l1_ebr_gap_bytes // S.SECTOR
    config_sectors = profile.l1_config_bytes // S.SECTOR
    link = gap + config_sectors  # EBR2, relative to the extended partition
    data_sectors = ext_sectors - link - gap
    if data_sectors * S.SECTOR < S.MIB:
        raise BadInput(f"profile {profile.name}: a {profile.disk_bytes >> 20} MiB disk has no room for layout "
                       f"L1 (extended partition: config and data)")
    primaries.append(S.part_entry(ext_lba, ext_sectors, S.PART_EXTENDED_LBA))
    disk.write(0, S.build_mbr(S.disk_signature(device_id), primaries))
    # Entry 1 is relative to its EBR, entry 2 (the link) to the start of the extended partition.
    disk.write(ext_lba * S.SECTOR, S.build_mbr(0, [
        S.part_entry(gap, config_sectors, S.PART_FAT32_LBA),
        S.part_entry(link, ext_sectors - link, S.PART_EBR_LINK)]))
    disk.write((ext_lba + link) * S.SECTOR, S.build_mbr(0, [
        S.part_entry(gap, data_sectors, S.PART_LINUX)]))


def region(regions: list[Region], name: str) -> Region:
    return next(r for r in regions if r.name == name)


# -- deterministic contents --------------------------------------------------------------------------------


def pattern_chunks(tag: str, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes for ``tag``: 64 KiB of SHAKE-128 per chunk, repeated to fill it.

    Cheap (a slot image of 768 MiB takes well under a second) and the same for the same tag on any machine.
    """
    done = 0
    index = 0
    while done < size:
        n = min(chunk, size - done)
        seed = hashlib.shake_128(f"{tag}:{index}".encode()).digest(65536)
        block = (seed * (n // 65536 + 1))[:n]
        yield block
        done += n
        index += 1


def slot_payload_size(slot_bytes: int) -> int:
    """A slot holds its header, then a payload of 60 % of the slot (rounded to 4 KiB), then zeros."""
    return int((slot_bytes - S.SLOT_HEADER_SIZE) * 0.6) // 4096 * 4096


def build_unix(version: str) -> int:
    year, month = VERSIONS[version].released.split("-") if version in VERSIONS else ("2024", "01")
    return int(dt.datetime(int(year), int(month), 15, tzinfo=dt.UTC).timestamp())


def write_slot(disk: DiskImage, slot: Region, version: str) -> None:
    """Install software ``version`` in a system slot: header, payload, zeros to the end."""
    size = slot_payload_size(slot.size)
    sha = hashlib.sha256()
    pos = slot.offset + S.SLOT_HEADER_SIZE
    for block in pattern_chunks(f"bactobox-slot:{version}", size):
        disk.write(pos, block)
        sha.update(block)
        pos += len(block)
    zero_tail(disk, pos, slot.offset + slot.size - pos)
    disk.write(slot.offset, S.build_slot_header(version, build_unix(version), size, sha.digest()))


def zero_tail(disk: DiskImage, offset: int, size: int) -> None:
    """Zero a range by punching a hole (sparse stays sparse); plain zero writes where that is unsupported."""
    if size <= 0:
        return
    try:
        _punch_hole(disk, offset, size)
    except (OSError, AttributeError):
        zeros = bytes(min(CHUNK, size))
        end = offset + size
        while offset < end:
            n = min(len(zeros), end - offset)
            disk.write(offset, zeros[:n])
            offset += n


def _punch_hole(disk: DiskImage, offset: int, size: int) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE) through libc: os has no fallocate with flags on Python 3.11."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    falloc_fl_keep_size, falloc_fl_punch_hole = 0x01, 0x02
    fallocate = libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    if fallocate(disk.fd, falloc_fl_punch_hole | falloc_fl_keep_size, offset, size) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    with disk._lock:
        disk.generation += 1


def slot_version(disk: DiskImage, slot: Region) -> str | None:
    """The version in a slot's header, or None if the header is not valid (the slot cannot boot)."""
    header = S.parse_slot_header(disk.read(slot.offset, S.SLOT_HEADER_SIZE))
    return None if header is None else header.sw_version


def slot_payload_ok(disk: DiskImage, slot: Region) -> bool:
    """The full bootability check of §4.4: the payload hash too (only when a fault asks for it: slow)."""
    header = S.parse_slot_header(disk.read(slot.offset, S.SLOT_HEADER_SIZE))
    if header is None or header.payload_size > slot.size - S.SLOT_HEADER_SIZE:
        return False
    sha = hashlib.sha256()
    for block in disk.chunks(slot.offset + S.SLOT_HEADER_SIZE, header.payload_size):
        sha.update(block)
    return sha.digest() == header.payload_sha256


# -- boot partition ---------------------------------------------------------------------------------------


def env_values(active: str, slots: Mapping[str, str], env_format: int, boot_count: int = 0) -> dict[str, str]:
    return {"active_slot": active, "boot_count": str(boot_count), "boot_limit": "3",
            "sw_version": slots[active], "sw_version_system0": slots["system0"],
            "sw_version_system1": slots["system1"], "env_format": str(env_format)}


def write_boot_partition(disk: DiskImage, boot: Region, values: Mapping[str, str], env_format: int,
                         bootloader_version: str) -> None:
    """A fresh boot partition: environment copy A (and an older copy B under v2), the bootloader blob."""
    zero_tail(disk, boot.offset, boot.size)
    disk.write(boot.offset, S.build_env(values, env_format, flags=1))
    if env_format == 2:
        disk.write(boot.offset + S.ENV_COPY_B_OFFSET, S.build_env(values, 2, flags=0))
    write_bootloader(disk, boot, bootloader_version)


def write_bootloader(disk: DiskImage, boot: Region, version: str) -> None:
    blob = next(pattern_chunks(f"bactobox-bootloader:{version}", S.BOOTLOADER_SIZE))
    disk.write(boot.offset + S.BOOTLOADER_OFFSET, blob)


def read_env(disk: DiskImage, boot: Region) -> S.EnvState | None:
    return S.parse_env_pair(disk.read(boot.offset, 2 * S.ENV_SIZE))


def write_env(disk: DiskImage, boot: Region, state: S.EnvState, values: Mapping[str, Any]) -> S.EnvState:
    """One environment write by the rules of §4.3; returns the new state."""
    offset, block = S.next_env_write(state, {k: str(v) for k, v in values.items()})
    disk.write(boot.offset + offset, block)
    new = read_env(disk, boot)
    assert new is not None
    return new


# -- data store (store v2) ---------------------------------------------------------------------------------

SETTINGS_DEFAULTS = {"timezone": "UTC", "last_clean_unix": "0", "clean_interval_h": "24",
                     "liquid_in_flow_paths": "0", "wifi_mode": "off"}


class DataStore:
    """The data partition: superblock, settings, append-only measurement records (§4.5).

    Store v2 (layout L2) keeps the settings block in the data partition; store v1 (layout L1, software 1.x)
    has a 512-byte superblock, 32-byte record headers, and its settings in partition p5 ``config``.
    """

    def __init__(self, disk: DiskImage, data: Region, config: Region | None = None) -> None:
        self.disk = disk
        self.region = data
        self.config = config
        self.version = 1 if config is not None else 2
        self._sb = S.SUPERBLOCK_V1 if self.version == 1 else S.SUPERBLOCK_V2
        self._sb_size = S.SECTOR if self.version == 1 else S.SUPERBLOCK_SIZE
        self._record_size = S.RECORD_V1_SIZE if self.version == 1 else S.RECORD_V2_SIZE

    @classmethod
    def of(cls, disk: DiskImage, regions: list[Region]) -> DataStore:
        """The store of a disk whatever its layout (L1: settings in config)."""
        config = region(regions, "config") if layout_of(regions) == "L1" else None
        return cls(disk, region(regions, "data"), config)

    def superblock(self) -> Any:
        try:
            return self._sb.parse(self.disk.read(self.region.offset, self._sb_size)).body.value
        except ConstructError as exc:
            raise BadInput(f"the data store has no valid superblock ({str(exc).splitlines()[-1]})") from None

    def _write_superblock(self, sb: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in sb.items() if not k.startswith("_") and k not in ("magic", "store_version",
                                                                                    "header_size")}
        self.disk.write(self.region.offset, self._sb.build({"body": {"value": fields}}))

    def format(self, device_id: str, created_ms: int) -> None:
        if self.version == 1:
            zero_tail(self.disk, self.region.offset, min(self.region.size, S.SECTOR + 4096))
            self._write_superblock({
                "reserved": 0, "partition_blocks": self.region.size // 4096, "records_offset": S.SECTOR,
                "end_offset": S.SECTOR, "record_count": 0, "next_record_id": 1, "device_id": device_id,
                "reserved2": bytes(464)})
        else:
            zero_tail(self.disk, self.region.offset, min(self.region.size, S.RECORDS_OFFSET + 4096))
            self._write_superblock({
                "block_size": 4096, "flags": S.FLAG_CLEAN_SHUTDOWN, "partition_size_bytes": self.region.size,
                "records_offset": S.RECORDS_OFFSET, "end_offset": S.RECORDS_OFFSET, "record_count": 0,
                "next_record_id": 1, "created_unix_ms": created_ms, "device_id": device_id,
                "reserved": bytes(4020)})
        self.write_settings(SETTINGS_DEFAULTS)

    @property
    def _settings_offset(self) -> int:
        return self.config.offset if self.config is not None else self.region.offset + S.SETTINGS_OFFSET

    def settings(self) -> dict[str, str]:
        block = S.parse_env(self.disk.read(self._settings_offset, S.SETTINGS_SIZE))
        return dict(block.values) if block is not None else {}

    def write_settings(self, values: Mapping[str, Any]) -> None:
        self.disk.write(self._settings_offset, S.build_env({k: str(v) for k, v in values.items()}, 1))

    def append(self, *, program: int, flags: int, started_ms: int, duration_ms: int, sampling_time_s: int,
               dilution: float, label: str, payload: bytes) -> int:
        sb = dict(self.superblock())
        record_id = sb["next_record_id"]
        if self.version == 1:  # header v1 has seconds, no duration and no label
            record = S.build_record_v1(record_id=record_id, program=program, flags=flags, payload=payload,
                                       started_unix=started_ms // 1000, sampling_time_s=sampling_time_s,
                                       dilution_factor=dilution)
        else:
            record = S.build_record_v2(record_id=record_id, program=program, flags=flags, payload=payload,
                                       started_unix_ms=started_ms, duration_ms=duration_ms,
                                       sampling_time_s=sampling_time_s, dilution_factor=dilution, label=label)
        end = sb["end_offset"]
        if end + len(record) > self.region.size:
            raise OSError("the data partition is full")
        self.disk.write(self.region.offset + end, record)
        sb.update(end_offset=end + len(record), record_count=sb["record_count"] + 1,
                  next_record_id=record_id + 1)
        self._write_superblock(sb)
        return record_id

    def records(self, after_id: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Record headers in order (payloads are checked by CRC, never returned)."""
        sb = self.superblock()
        pos = sb["records_offset"]
        count = 0
        while pos < sb["end_offset"]:
            raw = self.disk.read(self.region.offset + pos, self._record_size)
            try:
                header = S.parse_record_header(raw)
            except ConstructError as exc:
                raise BadInput(f"corrupt data store at offset {pos}: {str(exc).splitlines()[-1]}") from None
            size = S.record_size(self._record_size, header.payload_size)
            if header.record_id > after_id:
                payload = self.disk.read(self.region.offset + pos + self._record_size, header.payload_size)
                v1 = self.version == 1
                yield {"id": header.record_id, "program": S.PROGRAM_NAMES.get(header.program, "?"),
                       "flags": header.flags,
                       "started_unix_ms": header.started_unix * 1000 if v1 else header.started_unix_ms,
                       "duration_ms": None if v1 else header.duration_ms, "sampling_time_s": header.sampling_time_s,
                       "dilution": round(float(header.dilution_factor), 6), "label": "" if v1 else header.label,
                       "payload_size": header.payload_size,
                       "payload_ok": zlib.crc32(payload) == header.payload_crc32}
                count += 1
                if limit is not None and count >= limit:
                    return
            pos += size


def measurement_payload(seed: int, record_id: int, size: int) -> bytes:
    """Opaque, deterministic payload of a record (§2.9): the same (seed, id) gives the same bytes."""
    return next(pattern_chunks(f"bactobox-measurement:{seed}:{record_id}", size, chunk=max(size, 1)))


# -- a fresh unit ----------------------------------------------------------------------------------------


def previous_version(version: str) -> str:
    """The release before ``version`` in the table (the inactive slot of a fresh unit), else itself."""
    older = sorted((v for v in VERSIONS if version_key(v) < version_key(version)), key=version_key)
    return older[-1] if older else version


def build_fresh_disk(path: Path, profile: Profile, *, device_id: str, version: str, seed: int,
                     measurements: int | None = None, now: dt.datetime | None = None) -> DiskImage:
    """Create a new unit's disk: partition table (the version's layout), boot partition, both slots, a data
    store (its store version) with records."""
    info: Version = get_version(version)
    disk = DiskImage.create(path, profile.disk_bytes)
    try:
        write_partition_table(disk, profile, device_id, info.layout)
    except BadInput:
        disk.close()
        path.unlink(missing_ok=True)
        raise
    regions = read_regions(disk)
    slots = {"system0": version, "system1": previous_version(version)}
    for name in ("system0", "system1"):
        write_slot(disk, region(regions, name), slots[name])
    write_boot_partition(disk, region(regions, "boot"), env_values("system0", slots, info.env_format),
                         info.env_format, version)
    now = now or dt.datetime.now(dt.UTC)
    store = DataStore.of(disk, regions)
    store.format(device_id, int(now.timestamp() * 1000))
    store.write_settings({**SETTINGS_DEFAULTS, "last_clean_unix": str(int(now.timestamp()))})
    count = profile.measurements if measurements is None else measurements
    start_ms = int(now.timestamp() * 1000) - count * 3_600_000
    for i in range(count):
        rid = i + 1
        store.append(program=S.PROGRAM_MEASURE, flags=S.REC_COMPLETED, started_ms=start_ms + i * 3_600_000,
                     duration_ms=90_000, sampling_time_s=30, dilution=1.0 + (rid % 7), label=f"sample {rid}",
                     payload=measurement_payload(seed, rid, profile.payload_bytes))
    disk.sync()
    return disk
