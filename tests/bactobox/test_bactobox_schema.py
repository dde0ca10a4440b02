"""BactoBox binary layouts (bactobox.md §4) and the manifest (§3.3): offsets, round trips, CRCs, refusals."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from construct import ChecksumError, ConstError, ConstructError
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import BadInput
from harness.targets.bactobox import schema as S

# --- §4.1 MBR -------------------------------------------------------------------------------------------


def tiny_l2_mbr(signature: int = 0xE32F81BD) -> bytes:
    return S.build_mbr(signature, [
        S.part_entry(2048, 4096, S.PART_FAT32_LBA, boot=True),
        S.part_entry(6144, 12288, S.PART_FAT32_LBA),
        S.part_entry(18432, 12288, S.PART_FAT32_LBA),
        S.part_entry(30720, 34816, S.PART_LINUX),
    ])


def test_mbr_offsets_are_the_standard_ones():
    raw = tiny_l2_mbr()
    assert len(raw) == 512
    assert raw[510:] == b"\x55\xaa"
    assert struct.unpack_from("<I", raw, 440)[0] == 0xE32F81BD
    first = raw[446:462]
    assert first[0] == 0x80 and first[1:4] == b"\xfe\xff\xff" and first[4] == 0x0C
    assert struct.unpack_from("<II", first, 8) == (2048, 4096)
    assert raw[446 + 48 + 4] == 0x83


def test_disk_signature_is_crc32_of_the_id():
    assert S.disk_signature("bb2241039") == zlib.crc32(b"bb2241039")


def test_parse_partitions_l2():
    raw = tiny_l2_mbr()
    sig, parts = S.parse_partitions(lambda lba: raw if lba == 0 else bytes(512), 65536)
    assert sig == 0xE32F81BD
    assert [(p.index, p.lba_first, p.num_sectors) for p in parts] == [
        (1, 2048, 4096), (2, 6144, 12288), (3, 18432, 12288), (4, 30720, 34816)]
    assert parts[3].offset == 30720 * 512 and parts[3].size == 17 * (1 << 20)


def test_mbr_without_boot_signature_is_refused():
    raw = bytearray(tiny_l2_mbr())
    raw[511] = 0
    with pytest.raises(BadInput, match="no valid MBR"):
        S.parse_partitions(lambda lba: bytes(raw), 65536)


def test_partition_beyond_the_disk_is_refused():
    raw = tiny_l2_mbr()
    with pytest.raises(BadInput, match="outside the disk"):
        S.parse_partitions(lambda lba: raw, 60000)


def test_overlapping_partitions_are_refused():
    raw = S.build_mbr(1, [S.part_entry(2048, 8192, S.PART_FAT32_LBA), S.part_entry(6144, 100, S.PART_LINUX)])
    with pytest.raises(BadInput, match="overlap"):
        S.parse_partitions(lambda lba: raw, 65536)


def _l1_sectors() -> dict[int, bytes]:
    """The tiny L1 example of §4.2: extended 30720..65535, EBR1 at 30720 (p5), EBR2 at 34816 (p6)."""
    mbr = S.build_mbr(7, [S.part_entry(2048, 4096, S.PART_FAT32_LBA, boot=True),
                          S.part_entry(6144, 12288, S.PART_FAT32_LBA),
                          S.part_entry(18432, 12288, S.PART_FAT32_LBA),
                          S.part_entry(30720, 34816, S.PART_EXTENDED_LBA)])
    ebr1 = S.build_mbr(0, [S.part_entry(2048, 2048, S.PART_FAT32_LBA), S.part_entry(4096, 30720, S.PART_EBR_LINK)])
    ebr2 = S.build_mbr(0, [S.part_entry(2048, 28672, S.PART_LINUX)])
    return {0: mbr, 30720: ebr1, 34816: ebr2}


def test_ebr_chain_of_layout_l1():
    sectors = _l1_sectors()
    _, parts = S.parse_partitions(lambda lba: sectors.get(lba, bytes(512)), 65536)
    logical = [(p.index, p.lba_first, p.num_sectors, p.type) for p in parts if p.index >= 5]
    assert logical == [(5, 32768, 2048, S.PART_FAT32_LBA), (6, 36864, 28672, S.PART_LINUX)]
    assert parts[-1].size == 14 * (1 << 20)


def test_ebr_loop_is_refused():
    sectors = _l1_sectors()
    # EBR2 links back to EBR1 (relative 0 from the extended partition's start).
    sectors[34816] = S.build_mbr(0, [S.part_entry(2048, 28672, S.PART_LINUX),
                                     S.part_entry(0, 30720, S.PART_EBR_LINK)])
    with pytest.raises(BadInput, match="loops"):
        S.parse_partitions(lambda lba: sectors.get(lba, bytes(512)), 65536)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2**31), st.integers(1, 2**31), st.sampled_from([0x0C, 0x83, 0x0F]),
                          st.booleans()), min_size=0, max_size=4),
       st.integers(0, 2**32 - 1))
def test_mbr_round_trip(entries, signature):
    raw = S.build_mbr(signature, [S.part_entry(a, b, t, boot=boot) for a, b, t, boot in entries])
    parsed = S.MBR.parse(raw)
    assert parsed.disk_signature == signature
    assert S.MBR.build(parsed) == raw
    for (a, b, t, _), entry in zip(entries, parsed.partitions, strict=False):
        assert (entry.lba_first, entry.num_sectors, entry.type) == (a, b, t)


# --- §4.3 boot environment -----------------------------------------------------------------------------

ENV = {"active_slot": "system0", "boot_count": "0", "boot_limit": "3", "sw_version": "2.6.3",
       "sw_version_system0": "2.6.3", "sw_version_system1": "2.2.0", "env_format": "2"}


def test_env_v1_layout():
    block = S.build_env(ENV, 1)
    assert len(block) == S.ENV_SIZE
    assert struct.unpack_from("<I", block, 0)[0] == zlib.crc32(block[4:])
    assert block[4:].startswith(b"active_slot=system0\0boot_count=0\0")
    end = block.index(b"\0\0", 4)
    assert set(block[end + 2:]) == {0}
    parsed = S.parse_env(block)
    assert parsed == S.EnvBlock(1, ENV, 0)


def test_env_v2_layout():
    block = S.build_env(ENV, 2, flags=7)
    assert struct.unpack_from("<I", block, 0)[0] == zlib.crc32(block[5:])
    assert block[4] == 7
    assert S.parse_env(block) == S.EnvBlock(2, ENV, 7)


def test_env_with_a_flipped_byte_is_invalid():
    block = bytearray(S.build_env(ENV, 2, flags=1))
    block[100] ^= 0x20
    assert S.parse_env(bytes(block)) is None


@pytest.mark.parametrize("values", [{"Bad": "x"}, {"key": "a\0b"}, {"k": "x" * 20000}])
def test_env_refuses_what_would_not_parse_back(values):
    with pytest.raises(ConstructError):
        S.build_env(values, 1)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True),
                       st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40),
                       max_size=20),
       st.sampled_from([1, 2]), st.integers(0, 255))
def test_env_round_trip(values, env_format, flags):
    block = S.build_env(values, env_format, flags)
    parsed = S.parse_env(block)
    assert parsed is not None and parsed.values == values and parsed.format == env_format
    if env_format == 2:
        assert parsed.flags == flags


@pytest.mark.parametrize(("a", "b", "newer"), [(1, 0, "A"), (0, 1, "B"), (0, 255, "A"), (255, 0, "B"),
                                               (199, 72, "A"), (72, 199, "B"), (200, 72, "B")])
def test_v2_selection_by_generation(a, b, newer):
    area = S.build_env({**ENV, "boot_count": "1"}, 2, a) + S.build_env({**ENV, "boot_count": "2"}, 2, b)
    state = S.parse_env_pair(area)
    assert state is not None and state.copy == newer


def test_v2_one_valid_copy_is_used():
    area = bytes(S.ENV_SIZE) + S.build_env(ENV, 2, 9)
    state = S.parse_env_pair(area)
    assert state.copy == "B" and state.current.flags == 9
    assert S.parse_env_pair(bytes(2 * S.ENV_SIZE)) is None


def test_v2_write_goes_to_the_older_copy_with_the_next_generation():
    area = bytearray(S.build_env(ENV, 2, 255) + S.build_env(ENV, 2, 254))
    state = S.parse_env_pair(bytes(area))
    assert state.copy == "A"
    offset, block = S.next_env_write(state, {**ENV, "boot_count": "1"})
    assert offset == S.ENV_COPY_B_OFFSET and S.parse_env(block).flags == 0  # 255 + 1 wraps
    area[offset:offset + S.ENV_SIZE] = block
    after = S.parse_env_pair(bytes(area))
    assert after.copy == "B" and after.current.values["boot_count"] == "1"


def test_v1_write_rewrites_its_single_copy():
    state = S.parse_env_pair(S.build_env(ENV, 1) + bytes(S.ENV_SIZE))
    offset, block = S.next_env_write(state, {**ENV, "boot_count": "2"})
    assert offset == 0 and S.parse_env(block).format == 1


# --- §4.4 slot header ----------------------------------------------------------------------------------


def test_slot_header_layout_and_crc():
    raw = S.build_slot_header("2.6.3", 1739577600, 123456, bytes(range(32)))
    assert len(raw) == 512 and raw[:4] == b"BBSY"
    assert struct.unpack_from("<H", raw, 4)[0] == 1
    assert raw[8:24].rstrip(b"\0") == b"2.6.3"
    assert struct.unpack_from("<QQ", raw, 24) == (1739577600, 123456)
    assert raw[40:72] == bytes(range(32))
    assert struct.unpack_from("<I", raw, 508)[0] == zlib.crc32(raw[:508])
    header = S.parse_slot_header(raw)
    assert header.sw_version == "2.6.3" and header.payload_size == 123456


def test_slot_header_with_a_bad_crc_does_not_boot():
    raw = bytearray(S.build_slot_header("2.6.3", 1, 2, bytes(32)))
    raw[30] ^= 1
    assert S.parse_slot_header(bytes(raw)) is None
    assert S.parse_slot_header(bytes(512)) is None


# --- §4.5 data store -----------------------------------------------------------------------------------


def test_superblock_v2_round_trip():
    fields = {"block_size": 4096, "flags": 1, "partition_size_bytes": 17 << 20, "records_offset": 20480,
              "end_offset": 30000, "record_count": 3, "next_record_id": 4, "created_unix_ms": 1700000000000,
              "device_id": "bb2241039", "reserved": bytes(4020)}
    raw = S.SUPERBLOCK_V2.build({"body": {"value": fields}})
    assert len(raw) == 4096 and raw[:4] == b"BBDS" and struct.unpack_from("<HH", raw, 4) == (2, 4096)
    assert struct.unpack_from("<I", raw, 4092)[0] == zlib.crc32(raw[:4092])
    assert raw[56:72].rstrip(b"\0") == b"bb2241039"
    parsed = S.SUPERBLOCK_V2.parse(raw).body.value
    assert parsed.end_offset == 30000 and parsed.record_count == 3
    bad = bytearray(raw)
    bad[40] ^= 1
    with pytest.raises(ChecksumError):
        S.SUPERBLOCK_V2.parse(bytes(bad))


def test_superblock_v1_is_512_bytes():
    fields = {"reserved": 0, "partition_blocks": 3584, "records_offset": 512, "end_offset": 512,
              "record_count": 0, "next_record_id": 1, "device_id": "bb2241039", "reserved2": bytes(464)}
    raw = S.SUPERBLOCK_V1.build({"body": {"value": fields}})
    assert len(raw) == 512 and struct.unpack_from("<H", raw, 4)[0] == 1
    assert S.SUPERBLOCK_V1.parse(raw).body.value.partition_blocks == 3584


def test_record_v2_layout():
    payload = b"measurement" * 10
    raw = S.build_record_v2(record_id=42, program=S.PROGRAM_MEASURE, flags=S.REC_COMPLETED, payload=payload,
                            started_unix_ms=1736417712000, duration_ms=90000, sampling_time_s=30,
                            dilution_factor=2.5, label="E. coli run")
    assert len(raw) % 8 == 0 and len(raw) == S.record_size(64, len(payload))
    assert raw[:4] == b"BBMR" and raw[4] == 2 and raw[5] == 64 and raw[6] == 1 and raw[7] == 1
    assert struct.unpack_from("<IIQIH", raw, 8) == (42, len(payload), 1736417712000, 90000, 30)
    assert struct.unpack_from("<f", raw, 32)[0] == 2.5
    assert raw[36:56].rstrip(b"\0") == b"E. coli run"
    assert struct.unpack_from("<II", raw, 56) == (zlib.crc32(payload), zlib.crc32(raw[:60]))
    header = S.parse_record_header(raw[:64])
    assert header.record_id == 42 and header.label == "E. coli run"


def test_record_v1_is_read_by_the_same_reader():
    raw = S.RECORD_V1.build({"program": 1, "flags": 1, "reserved": 0, "record_id": 7, "started_unix": 1684000000,
                             "payload_size": 100, "dilution_factor": 1.0, "sampling_time_s": 30, "reserved2": 0,
                             "payload_crc32": 5})
    assert len(raw) == 32
    header = S.parse_record_header(raw + bytes(32))
    assert header.header_version == 1 and header.record_id == 7 and header.started_unix == 1684000000


def test_record_with_a_bad_header_crc_or_magic_is_refused():
    raw = bytearray(S.build_record_v2(record_id=1, program=1, flags=1, payload=b"", started_unix_ms=0,
                                      duration_ms=0, sampling_time_s=1, dilution_factor=1.0, label=""))
    raw[20] ^= 1
    with pytest.raises(ChecksumError):
        S.parse_record_header(bytes(raw[:64]))
    with pytest.raises(ConstError):
        S.parse_record_header(b"XXXX" + bytes(60))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2**32 - 1), st.sampled_from([1, 2, 3]), st.integers(0, 7), st.binary(max_size=300),
       st.integers(0, 2**63), st.integers(0, 2**32 - 1), st.integers(0, 65535),
       st.floats(0.5, 1024.0, width=32), st.text(st.characters(blacklist_characters="\0",
                                                               blacklist_categories=("Cs",)), max_size=5))
def test_record_v2_round_trip(rid, program, flags, payload, started, duration, sampling, dilution, label):
    raw = S.build_record_v2(record_id=rid, program=program, flags=flags, payload=payload, started_unix_ms=started,
                            duration_ms=duration, sampling_time_s=sampling, dilution_factor=dilution, label=label)
    header = S.parse_record_header(raw[:64])
    assert (header.record_id, header.program, header.flags, header.payload_size) == (rid, program, flags,
                                                                                      len(payload))
    assert header.started_unix_ms == started and header.label == label and header.dilution_factor == dilution
    assert raw[64:64 + len(payload)] == payload


# --- §4.6 sparse, §4.7 ZIP records ---------------------------------------------------------------------


def test_sparse_header_and_chunk_sizes():
    raw = S.SPARSE_HEADER.build({"reserved": 0, "block_size": 4096, "total_blocks": 10, "chunk_count": 2,
                                 "reserved2": bytes(8)})
    assert len(raw) == 32 and raw[:4] == b"BBSP" and struct.unpack_from("<HHH", raw, 4) == (1, 32, 12)
    chunk = S.SPARSE_CHUNK.build({"type": S.SPARSE_ZERO, "reserved": bytes(3), "blocks": 9, "data_len": 0})
    assert len(chunk) == 12


def test_zip_record_sizes():
    assert S.ZIP_LOCAL_HEADER.sizeof() == S.ZIP_LOCAL_HEADER_SIZE == 30
    assert S.ZIP_CENTRAL_HEADER.sizeof() == S.ZIP_CENTRAL_HEADER_SIZE == 46
    assert S.ZIP64_EOCD.sizeof() == S.ZIP64_EOCD_SIZE == 56
    assert S.ZIP64_LOCATOR.sizeof() == S.ZIP64_LOCATOR_SIZE == 20
    assert S.ZIP_EOCD.sizeof() == S.ZIP_EOCD_SIZE == 22


# --- §3.3 manifest -------------------------------------------------------------------------------------

SHA = "ab" * 32


def manifest_doc(**changes):
    parts = []
    layout = [("head", 0, 1 << 20), ("boot", 2048, 2 << 20), ("system0", 6144, 6 << 20),
              ("system1", 18432, 6 << 20), ("data", 30720, 17 << 20)]
    for i, (name, lba, size) in enumerate(layout):
        part = {"name": name, "file": f"parts/{name}.img", "start_lba": lba, "size_bytes": size,
                "encoding": "raw", "sha256": SHA}
        if i:
            part.update(mbr_index=i, type="0x83" if name == "data" else "0x0c")
        parts.append(part)
    doc = {"media_type": S.MEDIA_TYPE, "format": 2, "device_id": "bb2241039", "software_version": "2.6.3",
           "created": "2026-01-09T10:15:02Z", "clock_valid": True, "producer": "bactobox-backup 2.6.3",
           "disk": {"size_bytes": 33554432, "sector_size": 512, "layout": "L2", "mbr_signature": "0xe32f81bd"},
           "boot": {"env_format": 2, "active_slot": "system0", "boot_count": 0,
                    "slots": {"system0": "2.6.3", "system1": "2.2.0"}},
           "data": {"store_version": 2, "record_count": 50, "last_record_id": 50, "last_record_started": None},
           "parts": parts, "total_size_bytes": 33554432}
    doc.update(changes)
    return doc


def test_manifest_round_trip_and_unknown_keys_kept():
    doc = manifest_doc(future_field={"x": 1})
    manifest = S.Manifest.from_json(json.dumps(doc).encode())
    assert manifest.part("data").start_lba == 30720 and manifest.extra == {"future_field": {"x": 1}}
    again = json.loads(manifest.to_json())
    assert again == doc


@pytest.mark.parametrize(("change", "pointer"), [
    ({"format": 9}, "/format"),
    ({"device_id": "bb22"}, "/device_id"),
    ({"device_id": "../../x"}, "/device_id"),
    ({"total_size_bytes": 1}, "/total_size_bytes"),
    ({"media_type": "application/zip"}, "/media_type"),
    ({"disk": {"size_bytes": 1 << 20, "sector_size": 512}}, "/parts/1/size_bytes"),
    ({"disk": {"size_bytes": 33554432, "sector_size": 4096}}, "/disk/sector_size"),
])
def test_manifest_violations_name_the_field(change, pointer):
    with pytest.raises(BadInput, match="manifest.json is invalid: " + pointer):
        S.Manifest.from_dict(manifest_doc(**change))


def test_manifest_parts_rules():
    doc = manifest_doc()
    doc["parts"][2]["file"] = "../../etc/passwd"
    with pytest.raises(BadInput, match="/parts/2/file"):
        S.Manifest.from_dict(doc)
    doc = manifest_doc()
    doc["parts"][3]["start_lba"] = 6144  # overlaps system0
    with pytest.raises(BadInput, match="overlaps"):
        S.Manifest.from_dict(doc)
    doc = manifest_doc()
    doc["parts"] = doc["parts"][:4]
    with pytest.raises(BadInput, match="/parts"):
        S.Manifest.from_dict(doc)
    doc = manifest_doc()
    doc["parts"][0]["sha256"] = "AB" * 32
    with pytest.raises(BadInput, match="/parts/0/sha256"):
        S.Manifest.from_dict(doc)


def test_manifest_not_json():
    with pytest.raises(BadInput, match="not UTF-8 JSON"):
        S.Manifest.from_json(b"\xff{")
