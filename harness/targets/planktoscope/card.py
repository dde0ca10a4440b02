"""Whole-SD-card images taken with ``dd`` (the users' own backup of a PlanktoScope): the MBR partition
table and the FAT boot sector of the boot partition, as construct layouts (DESIGN rule 2).

``check_card(path)`` reads only the first sectors of each partition (an image is 8-64 GB), and refuses an
image whose table is malformed, whose partitions overlap or run past the end of the file (a truncated
copy), or whose boot partition does not hold a valid FAT boot sector. A Raspberry Pi OS card has a FAT32
(or FAT16) ``bootfs`` first and a Linux ``rootfs`` (ext4) second; the ext4 superblock magic is checked too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from construct import (
    Array,
    Bytes,
    Const,
    ConstructError,
    Int8ul,
    Int16ul,
    Int32ul,
    Padding,
    Struct,
)

from harness.errors import BadInput

SECTOR = 512
MBR_SIGNATURE = b"\x55\xaa"
FAT_TYPES = {0x01: "FAT12", 0x04: "FAT16 <32M", 0x06: "FAT16", 0x0B: "FAT32 CHS", 0x0C: "FAT32 LBA",
             0x0E: "FAT16 LBA"}
LINUX = 0x83
EXT_MAGIC = 0xEF53

PartitionEntry = Struct(
    "status" / Int8ul,  # 0x80 bootable, 0x00 not
    "chs_first" / Bytes(3),
    "type" / Int8ul,
    "chs_last" / Bytes(3),
    "lba_first" / Int32ul,
    "sectors" / Int32ul,
)

MBR = Struct(
    "bootstrap" / Bytes(440),
    "disk_signature" / Int32ul,
    "reserved" / Bytes(2),
    "partitions" / Array(4, PartitionEntry),
    "signature" / Const(MBR_SIGNATURE),
)

# BIOS parameter block and the FAT32 extension (Microsoft FAT specification, offsets 0..511).
FatBootSector = Struct(
    "jump" / Bytes(3),
    "oem_name" / Bytes(8),
    "bytes_per_sector" / Int16ul,
    "sectors_per_cluster" / Int8ul,
    "reserved_sectors" / Int16ul,
    "fat_count" / Int8ul,
    "root_entries" / Int16ul,
    "total_sectors_16" / Int16ul,
    "media" / Int8ul,
    "sectors_per_fat_16" / Int16ul,
    "sectors_per_track" / Int16ul,
    "heads" / Int16ul,
    "hidden_sectors" / Int32ul,
    "total_sectors_32" / Int32ul,
    "sectors_per_fat_32" / Int32ul,
    "ext_flags" / Int16ul,
    "fs_version" / Int16ul,
    "root_cluster" / Int32ul,
    "fs_info_sector" / Int16ul,
    "backup_boot_sector" / Int16ul,
    Padding(12),
    "drive_number" / Int8ul,
    Padding(1),
    "boot_signature" / Int8ul,
    "volume_id" / Int32ul,
    "volume_label" / Bytes(11),
    "fs_type" / Bytes(8),
    "boot_code" / Bytes(420),
    "signature" / Const(MBR_SIGNATURE),
)


@dataclass
class CardImage:
    size: int
    disk_signature: int
    partitions: list[dict[str, Any]]
    boot: dict[str, Any]
    rootfs: bool
    warnings: list[str] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        return {"size": self.size, "disk_signature": f"{self.disk_signature:08x}",
                "partitions": self.partitions, "boot": self.boot, "rootfs_ext4": self.rootfs}


def looks_like_card(head: bytes) -> bool:
    """Cheap test: an MBR signature and at least one non-empty partition entry."""
    if len(head) < SECTOR or head[510:512] != MBR_SIGNATURE:
        return False
    return any(head[446 + 16 * i + 4] != 0 for i in range(4))


def _read(f, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def check_card(path: Path) -> CardImage:
    """Parse and check a card image; BadInput with a one-line reason if it is not a sound one."""
    path = Path(path)
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = _read(f, 0, SECTOR)
            if len(head) < SECTOR:
                raise BadInput(f"{path.name}: {len(head)} bytes is too short for a card image")
            try:
                mbr = MBR.parse(head)
            except ConstructError as exc:
                raise BadInput(f"{path.name}: no MBR partition table (missing 55 AA signature)") from exc
            parts = [p for p in mbr.partitions if p.type != 0]
            if not parts:
                raise BadInput(f"{path.name}: the MBR has no partitions")
            table = []
            spans = []
            for index, p in enumerate(mbr.partitions, start=1):
                if p.type == 0:
                    continue
                if p.status not in (0x00, 0x80):
                    raise BadInput(f"{path.name}: partition {index} has an invalid status byte {p.status:#04x}")
                if p.lba_first == 0 or p.sectors == 0:
                    raise BadInput(f"{path.name}: partition {index} starts at sector 0 or is empty")
                start, end = p.lba_first * SECTOR, (p.lba_first + p.sectors) * SECTOR
                if end > size:
                    raise BadInput(f"{path.name}: partition {index} ends at byte {end} but the image has {size} "
                                   f"bytes: a truncated copy of the card")
                for other_index, (a, b) in spans:
                    if start < b and a < end:
                        raise BadInput(f"{path.name}: partitions {other_index} and {index} overlap")
                spans.append((index, (start, end)))
                table.append({"index": index, "type": f"{p.type:#04x}", "bootable": p.status == 0x80,
                              "lba_first": p.lba_first, "sectors": p.sectors})
            first = mbr.partitions[0]
            if first.type not in FAT_TYPES:
                raise BadInput(f"{path.name}: partition 1 has type {first.type:#04x}, not FAT: not a Raspberry "
                               f"Pi OS card")
            boot = _check_fat(_read(f, first.lba_first * SECTOR, SECTOR), first.sectors, path.name)
            warnings: list[str] = []
            rootfs = False
            second = mbr.partitions[1]
            if second.type == LINUX:
                sb = _read(f, second.lba_first * SECTOR + 1024, 1024)
                rootfs = len(sb) >= 58 and int.from_bytes(sb[56:58], "little") == EXT_MAGIC
                if not rootfs:
                    raise BadInput(f"{path.name}: partition 2 is a Linux partition without an ext2/3/4 "
                                   f"superblock")
            else:
                warnings.append("partition 2 is not a Linux rootfs partition (type 0x83)")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    return CardImage(size, mbr.disk_signature, table, boot, rootfs, warnings)


def _check_fat(sector: bytes, partition_sectors: int, name: str) -> dict[str, Any]:
    try:
        bs = FatBootSector.parse(sector)
    except ConstructError as exc:
        raise BadInput(f"{name}: the boot partition has no FAT boot sector (missing 55 AA signature)") from exc
    if bs.jump[0] not in (0xEB, 0xE9):
        raise BadInput(f"{name}: the FAT boot sector does not start with a jump instruction")
    if bs.bytes_per_sector not in (512, 1024, 2048, 4096):
        raise BadInput(f"{name}: FAT bytes per sector {bs.bytes_per_sector} is invalid")
    spc = bs.sectors_per_cluster
    if spc == 0 or spc & (spc - 1):
        raise BadInput(f"{name}: FAT sectors per cluster {spc} is not a power of two")
    if bs.reserved_sectors == 0 or bs.fat_count not in (1, 2):
        raise BadInput(f"{name}: FAT reserved sectors / FAT count are invalid")
    total = bs.total_sectors_16 or bs.total_sectors_32
    per_fat = bs.sectors_per_fat_16 or bs.sectors_per_fat_32
    if total == 0 or per_fat == 0:
        raise BadInput(f"{name}: FAT total sectors or sectors per FAT is zero")
    scale = bs.bytes_per_sector // SECTOR
    if total * scale > partition_sectors:
        raise BadInput(f"{name}: the FAT file system ({total} sectors) is larger than its partition")
    root_dir = (bs.root_entries * 32 + bs.bytes_per_sector - 1) // bs.bytes_per_sector
    data = total - (bs.reserved_sectors + bs.fat_count * per_fat + root_dir)
    if data <= 0:
        raise BadInput(f"{name}: the FAT layout leaves no data area")
    clusters = data // spc
    fat_type = "FAT12" if clusters < 4085 else "FAT16" if clusters < 65525 else "FAT32"
    if fat_type == "FAT32" and (bs.sectors_per_fat_16 != 0 or bs.root_entries != 0):
        raise BadInput(f"{name}: a FAT32 volume with FAT16 fields set")
    label = bs.volume_label.decode("ascii", errors="replace").strip() if bs.boot_signature == 0x29 else ""
    return {"fat_type": fat_type, "clusters": clusters, "bytes_per_sector": bs.bytes_per_sector,
            "sectors_per_cluster": spc, "volume_label": label, "volume_id": f"{bs.volume_id:08x}"}


def build_card(path: Path, *, boot_mib: int = 512, root_mib: int = 64, label: str = "bootfs") -> None:
    """Write a sparse, structurally valid Raspberry Pi OS card image (for tests and demos)."""
    boot_first, boot_sectors = 8192, boot_mib * 2048
    root_first = boot_first + boot_sectors
    root_sectors = root_mib * 2048
    entry = dict(chs_first=b"\0\0\0", chs_last=b"\0\0\0")
    empty = dict(status=0, type=0, lba_first=0, sectors=0, **entry)
    mbr = MBR.build(dict(bootstrap=bytes(440), disk_signature=0x1C2A3B4D, reserved=b"\0\0", partitions=[
        dict(status=0, type=0x0C, lba_first=boot_first, sectors=boot_sectors, **entry),
        dict(status=0, type=LINUX, lba_first=root_first, sectors=root_sectors, **entry),
        empty, empty]))
    spc, reserved, fats = 1, 32, 2
    clusters_guess = boot_sectors // spc
    per_fat = (clusters_guess * 4 + 511) // 512
    fat = FatBootSector.build(dict(
        jump=b"\xeb\x58\x90", oem_name=b"mkfs.fat", bytes_per_sector=512, sectors_per_cluster=spc,
        reserved_sectors=reserved, fat_count=fats, root_entries=0, total_sectors_16=0, media=0xF8,
        sectors_per_fat_16=0, sectors_per_track=63, heads=255, hidden_sectors=boot_first,
        total_sectors_32=boot_sectors, sectors_per_fat_32=per_fat, ext_flags=0, fs_version=0, root_cluster=2,
        fs_info_sector=1, backup_boot_sector=6, drive_number=0x80, boot_signature=0x29,
        volume_id=0x5A1B2C3D, volume_label=label.encode("ascii").ljust(11)[:11], fs_type=b"FAT32   ",
        boot_code=bytes(420)))
    superblock = bytearray(1024)
    superblock[56:58] = EXT_MAGIC.to_bytes(2, "little")
    with open(path, "wb") as f:
        f.write(mbr)
        f.seek(boot_first * SECTOR)
        f.write(fat)
        f.seek(root_first * SECTOR + 1024)
        f.write(superblock)
        f.truncate((root_first + root_sectors) * SECTOR)
