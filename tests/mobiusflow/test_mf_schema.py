"""MobiusFlow schemas: MPV value files (construct), manifest, digests, file names."""

from __future__ import annotations

import datetime as dt
import json
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.targets.mobiusflow.schema import (
    MpvBody,
    MpvFile,
    MpvRecord,
    SchemaError,
    backup_file_name,
    build_mpv,
    mpv_v1_to_v2,
    normalise_hub_id,
    parse_manifest,
    parse_mpv,
    sanitise_name,
)
from simulators.mobiusflow.profiles import seed_content

values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                   st.floats(allow_nan=False), st.text(max_size=40),
                   st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3))
keys = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFF))


@st.composite
def mpv_files(draw: st.DrawFn) -> MpvFile:
    layout = draw(st.sampled_from([1, 2]))
    chosen = draw(st.lists(keys, unique=True, max_size=12))
    records = []
    for pid, ins, rid in sorted(chosen):
        slots = {}
        updated = None
        if layout == 2:
            slots = draw(st.dictionaries(st.integers(1, 16), values, max_size=3))
            updated = draw(st.integers(0, 2**63))
        records.append(MpvRecord(pid, ins, rid, draw(values), updated, slots))
    return MpvFile(layout, draw(st.sampled_from(["00A1F3", "000001"])), draw(st.sampled_from(["020", "0FF"])),
                   draw(st.integers(0, 3)), draw(st.integers(0, 2**63)), records)


@given(mpv_files())
@settings(max_examples=150, deadline=None)
def test_mpv_round_trip(mpv: MpvFile) -> None:
    data = build_mpv(mpv)
    back = parse_mpv(data)
    assert back.records == mpv.records
    assert (back.layout_version, back.hub_id, back.sid, back.flags, back.persisted_at_unix_ms) == \
        (mpv.layout_version, mpv.hub_id, mpv.sid, mpv.flags, mpv.persisted_at_unix_ms)
    assert build_mpv(back) == data


@given(mpv_files(), st.data())
@settings(max_examples=100, deadline=None)
def test_any_flipped_byte_is_refused(mpv: MpvFile, data: st.DataObject) -> None:
    raw = bytearray(build_mpv(mpv))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SchemaError) as err:
        parse_mpv(bytes(raw))
    assert err.value.code == "values_corrupt"


def _mpv() -> MpvFile:
    return MpvFile(2, "00A1F3", "020", 3, 1_700_000_000_000,
                   [MpvRecord(0x28, 1, 1, 21.5, 1_700_000_000_000, {}),
                    MpvRecord(0x3A, 2, 1, True, 1_699_000_000_000, {1: False, 8: True})])


def test_header_layout_is_the_spec() -> None:
    data = build_mpv(_mpv())
    assert data[:4] == b"MFPV"
    assert struct.unpack_from("<HH", data, 4) == (2, 32)
    assert data[8:14] == b"00A1F3" and data[14:17] == b"020"
    assert struct.unpack_from("<I", data, 20)[0] == 2
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    # record 2: priority mask has bits 0 and 7 set (slots 1 and 8)
    rec = MpvBody.parse(data[:-4]).records[1]
    assert rec.priority_mask == 0b1000_0001 and len(rec.slots) == 2


def test_hub_rewrite_changes_only_the_hub_bytes_and_crc() -> None:
    a = build_mpv(_mpv())
    m = _mpv()
    m.hub_id = "000001"
    b = build_mpv(m)
    changed = [i for i in range(len(a)) if a[i] != b[i]]
    assert changed and all(8 <= i < 14 or i >= len(a) - 4 for i in changed)


def test_record_count_must_match() -> None:
    data = bytearray(build_mpv(_mpv()))
    struct.pack_into("<I", data, 20, 3)
    body = bytes(data[:-4])
    with pytest.raises(SchemaError, match="3 records"):
        parse_mpv(body + struct.pack("<I", zlib.crc32(body)))


def test_records_must_be_sorted() -> None:
    m = _mpv()
    body_records = [m.records[1], m.records[0]]
    # build through construct directly to get an unsorted file with a valid CRC
    from harness.targets.mobiusflow.schema import encode_value

    built = []
    for r in body_records:
        vt, raw = encode_value(r.value)
        built.append({"pid": r.pid, "ins": r.ins, "rid": r.rid, "value_type": vt, "value_len": len(raw),
                      "value": raw, "updated_unix_ms": 1, "priority_mask": 0, "slots": []})
    body = MpvBody.build({"header": {"layout_version": 2, "hub_id": "00A1F3", "sid": "020", "flags": 0,
                                     "record_count": 2, "persisted_at_unix_ms": 0}, "records": built})
    with pytest.raises(SchemaError, match="sorted"):
        parse_mpv(body + struct.pack("<I", zlib.crc32(body)))


def test_v1_to_v2_migration() -> None:
    v1 = MpvFile(1, "00A1F3", "020", 1, 123, [MpvRecord(1, 1, 1, 5, None, {})])
    v2 = mpv_v1_to_v2(v1)
    assert v2.layout_version == 2 and v2.records[0].updated_unix_ms == 123 and v2.records[0].slots == {}
    assert parse_mpv(build_mpv(v2)).records == v2.records


def test_hub_ids() -> None:
    assert normalise_hub_id("00a1f3") == "00A1F3"
    for bad in ("00A1F", "00A1F3X", "GGGGGG", "", None, 123456):
        with pytest.raises(ValueError):
            normalise_hub_id(bad)


def test_file_names() -> None:
    when = dt.datetime(2026, 1, 9, 14, 3, 27, tzinfo=dt.UTC)
    assert backup_file_name("example-backup", when) == "example-backup_2026-01-09_14-03-27.zip"
    assert sanitise_name("  my backup/../x  ") == "my-backup..x"
    assert sanitise_name("") == sanitise_name("///") == "backup"
    assert len(sanitise_name("a" * 100)) == 64


@given(st.text(max_size=80))
def test_sanitised_names_are_plain(name: str) -> None:
    clean = sanitise_name(name)
    assert clean and "/" not in clean and "\\" not in clean and len(clean) <= 64


def test_manifest_refusals() -> None:
    with pytest.raises(SchemaError) as err:
        parse_manifest(b'{"product": "NeuroomNet"}')
    assert err.value.code == "not_a_mobiusflow_backup"
    with pytest.raises(SchemaError, match="format"):
        parse_manifest(json.dumps({"product": "MobiusFlow", "format": "2.0", "name": "x",
                                   "created": "2026-01-09T14:03:27Z"}).encode())
    with pytest.raises(SchemaError, match="not JSON"):
        parse_manifest(b"\xff\xfe")
    ok = parse_manifest(json.dumps({"product": "MobiusFlow", "format": "1.0", "name": "x",
                                    "created": "2026-01-09T14:03:27Z", "hubId": "000001",
                                    "version": "1.16.4"}).encode())
    assert ok.files is None and ok.kind == "config" and ok.hub_id == "000001"


def test_digests_survive_a_hub_rewrite() -> None:
    from harness.targets.mobiusflow.versions import migrate

    content = seed_content("3021", "000001", "tiny")
    moved, lines = migrate(content, backup_format="3.1", backup_kind="full", backup_hub="000001",
                           node_version="3021", node_hub="00A1F3")
    assert "000001" not in json.dumps(moved.flows) and "00A1F3" in json.dumps(moved.flows)
    assert moved.config_digest("00A1F3") == content.config_digest("000001")
    assert moved.summary_digest("00A1F3") == content.summary_digest("000001")
    assert all(m.hub_id == "00A1F3" for m in moved.values.values())
    assert any(line.startswith("Rewriting hub ID 000001 -> 00A1F3") for line in lines)
    moved.services[0]["enabled"] = False
    assert moved.config_digest("00A1F3") != content.config_digest("000001")
