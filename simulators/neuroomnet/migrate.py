"""Schema migrations of the configuration tables (§5), as the server runs them on apply and on upgrade.

Each step rebuilds the tables it changes (CREATE new, INSERT … SELECT, DROP, RENAME), so a migrated database
has the same column order as a fresh one of the new schema. Every step preserves the schema-independent
summary (§3.5). Callers wrap a whole migration in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from harness.targets.neuroomnet.config import table_columns
from harness.targets.neuroomnet.versions import SCHEMA_RELEASE, migration_steps


def _rebuild(conn: sqlite3.Connection, table: str, schema: int, select: str) -> None:
    conn.execute(f'CREATE TABLE "{table}__new" ({table_columns(schema)[table]})')
    conn.execute(f'INSERT INTO "{table}__new" {select}')
    conn.execute(f'DROP TABLE "{table}"')
    conn.execute(f'ALTER TABLE "{table}__new" RENAME TO "{table}"')


def _17_to_18(conn: sqlite3.Connection, time_zone: str) -> str:
    conn.execute(f"CREATE TABLE component_group ({table_columns(18)['component_group']})")
    conn.execute("INSERT INTO component_group VALUES (1, 'All')")
    conn.execute(f"CREATE TABLE component_property ({table_columns(18)['component_property']})")
    for cid, props in conn.execute("SELECT id, properties FROM component").fetchall():
        try:
            loaded = json.loads(props or "{}")
        except ValueError:
            loaded = {}
        for key, value in sorted(loaded.items() if isinstance(loaded, dict) else []):
            conn.execute("INSERT INTO component_property VALUES (?, ?, ?)", (cid, str(key), str(value)))
    _rebuild(conn, "component", 18, "SELECT id, module, 1, name, kind, address, protocol, enabled, modified "
                                    "FROM component")
    return 'splitting component properties, adding default component group "All"'


def _18_to_19(conn: sqlite3.Connection, time_zone: str) -> str:
    conn.execute("CREATE TEMP TABLE _tz (tz TEXT)")
    conn.execute("INSERT INTO _tz VALUES (?)", (time_zone,))
    _rebuild(conn, "schedule", 19, "SELECT id, name, cron, action, enabled, (SELECT tz FROM _tz) FROM schedule")
    conn.execute("DROP TABLE _tz")
    return f"adding schedule time zones ({time_zone})"


def _19_to_20(conn: sqlite3.Connection, time_zone: str) -> str:
    n = conn.execute("SELECT count(*) FROM app_user WHERE password_hash NOT LIKE 'pbkdf2-sha256$%'").fetchone()[0]
    _rebuild(conn, "app_user", 20, "SELECT id, name, role, password_hash, "
                                   "CASE WHEN password_hash LIKE 'pbkdf2-sha256$%' THEN 'pbkdf2-sha256' "
                                   "ELSE 'legacy' END, disabled FROM app_user")
    return f"{n} passwords will be re-hashed at next login"


def _20_to_21(conn: sqlite3.Connection, time_zone: str) -> str:
    rows = conn.execute("SELECT id, cues FROM show").fetchall()
    for sid, cues_text in rows:
        try:
            cues = json.loads(cues_text)
        except ValueError:
            continue
        if isinstance(cues, list):
            for cue in cues:
                if isinstance(cue, dict) and "at_s" in cue:
                    cue["at_ms"] = int(round(float(cue.pop("at_s")) * 1000))
            conn.execute("UPDATE show SET cues = ? WHERE id = ?", (json.dumps(cues), sid))
    return f"cue times in milliseconds ({len(rows)} shows)"


def _21_to_22(conn: sqlite3.Connection, time_zone: str) -> str:
    conn.execute("CREATE INDEX IF NOT EXISTS component_by_module ON component(module, name)")
    return "indexing components by module"


STEPS: dict[tuple[int, int], Callable[[sqlite3.Connection, str], str]] = {
    (17, 18): _17_to_18, (18, 19): _18_to_19, (19, 20): _19_to_20, (20, 21): _20_to_21, (21, 22): _21_to_22,
}


def migrate(conn: sqlite3.Connection, schema: int, target: int, *, time_zone: str,
            log: Callable[[str], None] = lambda line: None) -> None:
    """Run every step from ``schema`` to ``target``; one log line per released schema reached."""
    if schema == target:
        return
    start = schema
    notes: list[str] = []
    for a, b in migration_steps(schema, target):
        notes.append(STEPS[(a, b)](conn, time_zone))
        conn.execute(f"PRAGMA user_version = {b}")
        if b in SCHEMA_RELEASE:
            log(f"Migrating schema {start} -> {b}: {'; '.join(notes)}")
            start, notes = b, []
