"""Building NeuroomNet ZIPs and databases for tests: real SQLite files, real ZIP files."""

from __future__ import annotations

import io
import sqlite3
import zipfile
import zlib
from pathlib import Path

from harness.ziparchive import Member, write_zip


def rewrite_zip(src: Path, dest: Path, *, drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None,
                replace: dict[str, bytes] | None = None, prefix: str = "",
                compression: int = zipfile.ZIP_STORED) -> Path:
    """A copy of ``src`` with entries dropped, replaced or added (Python's zipfile, like a user's tool)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", compression) as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = (replace or {}).get(info.filename, zin.read(info))
            zout.writestr(prefix + info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dest


def stored_zip(entries: dict[str, bytes]) -> bytes:
    members = [Member(n, len(d), zlib.crc32(d), 1_700_000_000, (lambda d=d: io.BytesIO(d)))
               for n, d in entries.items()]
    return b"".join(write_zip(members))


def make_db(path: Path, *, app_id: int, schema: int = 20, wal: bool = False) -> Path:
    from harness.targets.neuroomnet.config import create_config_tables

    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    create_config_tables(conn, schema)
    conn.execute(f"PRAGMA user_version = {schema}")
    conn.execute(f"PRAGMA application_id = {app_id}")
    conn.execute("INSERT INTO system_setting VALUES ('language', 'en')")
    conn.close()
    return path
