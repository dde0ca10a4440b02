"""SQLite/WAL header layouts (construct) and restorepoint.json: round trips and every refusal."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nn_helpers import make_db

from harness.errors import BadInput
from harness.targets.neuroomnet.schema import (
    APP_ID_LIVE,
    APP_ID_SNAPSHOT,
    SQLITE_HEADER,
    WAL_HEADER,
    build_sqlite_header,
    check_snapshot_header,
    parse_manifest,
    parse_sqlite_header,
    parse_wal_header,
)

pytestmark = pytest.mark.target_neuroomnet

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@given(page=u16, w=u8, r=u8, cc=u32, pages=u32, uv=u32, app=u32, vvf=u32, ver=u32,
       reserved=st.binary(min_size=20, max_size=20))
def test_header_build_parse_round_trip(page, w, r, cc, pages, uv, app, vvf, ver, reserved):
    raw = build_sqlite_header(page_size_raw=page, write_version=w, read_version=r, change_counter=cc,
                              size_in_pages=pages, user_version=uv, application_id=app, version_valid_for=vvf,
                              sqlite_version_number=ver, reserved=reserved)
    assert len(raw) == 100
    assert SQLITE_HEADER.build(SQLITE_HEADER.parse(raw)) == raw
    h = parse_sqlite_header(raw)
    assert (h.page_size, h.user_version, h.application_id) == (65536 if page == 1 else page, uv, app)


def test_real_database_header_matches_its_pragmas(tmp_path):
    db = make_db(tmp_path / "c.sqlite", app_id=APP_ID_SNAPSHOT, schema=20)
    conn = sqlite3.connect(db)
    page_size, page_count = conn.execute("PRAGMA page_size").fetchone()[0], conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    data = db.read_bytes()
    h = check_snapshot_header(data, len(data), expected_schema=20)
    assert (h.page_size, h.size_in_pages, h.user_version, h.application_id) == (page_size, page_count, 20,
                                                                                 APP_ID_SNAPSHOT)
    assert h.write_version == h.read_version == 1
    assert h.sqlite_version == sqlite3.sqlite_version


def _refusal(data: bytes, size: int | None = None, **kw) -> str:
    with pytest.raises(BadInput) as info:
        check_snapshot_header(data, len(data) if size is None else size, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_header_refusals(tmp_path):
    good = make_db(tmp_path / "c.sqlite", app_id=APP_ID_SNAPSHOT).read_bytes()
    assert "not an SQLite database" in _refusal(b"SQLite format 2\x00" + good[16:])
    assert "truncated" in _refusal(good[:60])
    assert "pages" in _refusal(good[: len(good) - 4096])  # header size vs file size
    assert "power of two" in _refusal(good[:16] + (3000).to_bytes(2, "big") + good[18:])
    assert "WAL" in _refusal(good[:18] + b"\x02\x02" + good[20:])
    assert "live server database" in _refusal(good[:68] + APP_ID_LIVE.to_bytes(4, "big") + good[72:])
    assert "expected" in _refusal(good[:68] + (0x12345678).to_bytes(4, "big") + good[72:])
    assert "schema_mismatch" in _refusal(good, expected_schema=18)
    assert "reserved" in _refusal(good[:72] + b"\x01" + good[73:])
    assert "payload" in _refusal(good[:21] + b"\x40\x40\x20" + good[24:])


def test_live_wal_database_is_detected_by_its_header_and_wal_file(tmp_path):
    db = make_db(tmp_path / "live.db", app_id=APP_ID_LIVE, wal=True)
    conn = sqlite3.connect(db)  # keep it open so the -wal file exists
    conn.execute("INSERT INTO system_setting VALUES ('x', 'y')")
    conn.commit()
    data = db.read_bytes()
    assert data[18:20] == b"\x02\x02"
    assert "WAL" in _refusal(data)
    wal = parse_wal_header((tmp_path / "live.db-wal").read_bytes())
    assert wal["magic"] in (0x377F0682, 0x377F0683) and wal["format_version"] == 3007000
    conn.close()
    with pytest.raises(BadInput):
        parse_wal_header(WAL_HEADER.build(dict(magic=1, format_version=0, page_size=0, checkpoint_sequence=0,
                                               salt1=0, salt2=0, checksum1=0, checksum2=0)))


MANIFEST = {"format": 2, "product": "NeuroomNet", "restore_point_id": "rp-20260109-101502-3f9a", "label": "x",
            "created": "2026-01-09T10:15:02+01:00",
            "source": {"server_id": "srv-1", "server_name": "N", "software_version": "4.2.0", "config_schema": 20},
            "modules": [], "files": [{"path": "config.sqlite", "size_bytes": 1, "sha256": "0" * 64}],
            "config_digest": "1" * 64, "summary_digest": "2" * 64}


def test_manifest_parses_and_refuses():
    m = parse_manifest(json.dumps(MANIFEST).encode())
    assert (m.format, m.server_id, m.config_schema, m.file("config.sqlite").size_bytes) == (2, "srv-1", 20, 1)
    for change, text in (({"product": "MobiusFlow"}, "not a NeuroomNet"), ({"format": 3}, "unknown"),
                         ({"files": [{"path": "../x", "size_bytes": 1, "sha256": "0" * 64}]}, "unsafe_path"),
                         ({"files": [{"path": "assets/a/b", "size_bytes": 1, "sha256": "0" * 64}]}, "no config.sqlite"),
                         ({"restore_point_id": "x"}, "malformed"), ({"config_digest": "zz"}, "sha256")):
        with pytest.raises(BadInput, match=text):
            parse_manifest(json.dumps({**MANIFEST, **change}).encode())
    with pytest.raises(BadInput, match="JSON"):
        parse_manifest(b"{not json")
    v1 = parse_manifest(json.dumps({"format": 1, "id": "rp-20250101-010101-abcd", "label": "", "created": "c",
                                    "version": "3.9.4", "schema": 17, "md5": "a" * 32}).encode())
    assert (v1.format, v1.server_id, v1.config_schema, v1.md5) == (1, "unknown", 17, "a" * 32)


@given(st.text(min_size=1, max_size=30))
def test_unsafe_names_never_pass(name):
    from harness.targets.neuroomnet.schema import check_member_path

    if check_member_path(name) is None:
        parts = name.split("/")
        assert ".." not in parts and not name.startswith("/") and "\\" not in name
        assert not (len(name) > 1 and name[1] == ":" and name[0].isalpha())
