"""The NeuroomNet configuration tables (§3.4) and what is computed from them: digests (§3.5), the field view.

The simulator and the driver share this module: the server computes ``config_digest`` and
``summary_digest`` when it stores a restore point; the harness recomputes them from the ``config.sqlite`` of a
downloaded ZIP to prove the file is the one the manifest describes, and reads the same tables into the
field view that ``harness diff`` compares (``<table>.<primary key>.<column>``).

Works on an open ``sqlite3.Connection``; opening files is the caller's business.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

# Column lists per schema, in the order a fresh database of that schema has them (migrations rebuild tables,
# so a migrated database has the same order as a fresh one and the digests are comparable).
_MODULE = "name TEXT PRIMARY KEY, enabled INTEGER NOT NULL, settings TEXT NOT NULL, modified TEXT NOT NULL"
_GROUP = "id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE"
_COMPONENT_17 = ("id INTEGER PRIMARY KEY, module TEXT NOT NULL REFERENCES module(name), name TEXT NOT NULL, "
                 "kind TEXT NOT NULL, address TEXT NOT NULL, protocol TEXT NOT NULL, enabled INTEGER NOT NULL, "
                 "properties TEXT NOT NULL, modified TEXT NOT NULL")
_COMPONENT_18 = ("id INTEGER PRIMARY KEY, module TEXT NOT NULL REFERENCES module(name), "
                 "group_id INTEGER REFERENCES component_group(id), name TEXT NOT NULL, kind TEXT NOT NULL, "
                 "address TEXT NOT NULL, protocol TEXT NOT NULL, enabled INTEGER NOT NULL, modified TEXT NOT NULL")
_PROPERTY = ("component_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
             "PRIMARY KEY (component_id, key)")
_SCHEDULE_17 = ("id INTEGER PRIMARY KEY, name TEXT NOT NULL, cron TEXT NOT NULL, action TEXT NOT NULL, "
                "enabled INTEGER NOT NULL")
_SCHEDULE_19 = _SCHEDULE_17 + ", time_zone TEXT NOT NULL"
_SHOW = "id INTEGER PRIMARY KEY, name TEXT NOT NULL, cues TEXT NOT NULL"
_USER_17 = ("id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, password_hash TEXT NOT NULL, "
            "disabled INTEGER NOT NULL")
_USER_20 = ("id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, password_hash TEXT NOT NULL, "
            "password_scheme TEXT NOT NULL, disabled INTEGER NOT NULL")
_SETTING = "key TEXT PRIMARY KEY, value TEXT NOT NULL"


def table_columns(schema: int) -> dict[str, str]:
    """``{table: column definitions}`` of the configuration tables at ``schema`` (17..22)."""
    if not 17 <= schema <= 22:
        raise ValueError(f"configuration schema {schema} is not modelled (17..22)")
    tables = {"module": _MODULE}
    if schema >= 18:
        tables["component_group"] = _GROUP
    tables["component"] = _COMPONENT_17 if schema == 17 else _COMPONENT_18
    if schema >= 18:
        tables["component_property"] = _PROPERTY
    tables["schedule"] = _SCHEDULE_17 if schema < 19 else _SCHEDULE_19
    tables["show"] = _SHOW
    tables["app_user"] = _USER_17 if schema < 20 else _USER_20
    tables["system_setting"] = _SETTING
    return tables


CONFIG_TABLES_ALL = ("app_user", "component", "component_group", "component_property", "module", "schedule",
                     "show", "system_setting")
# Primary-key columns, for the row order of the digest and the names of the field view.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "module": ("name",), "component_group": ("id",), "component": ("id",),
    "component_property": ("component_id", "key"), "schedule": ("id",), "show": ("id",), "app_user": ("id",),
    "system_setting": ("key",),
}
JSON_COLUMNS = {("module", "settings"), ("schedule", "action"), ("show", "cues"), ("component", "properties")}
SECRET_COLUMNS = {("app_user", "password_hash")}


def create_config_tables(conn: sqlite3.Connection, schema: int) -> None:
    for name, columns in table_columns(schema).items():
        conn.execute(f'CREATE TABLE "{name}" ({columns})')
    if schema >= 22:
        # 21 -> 22 adds this index (no table change): it does not enter the digest, which covers rows only.
        conn.execute('CREATE INDEX component_by_module ON component(module, name)')


def present_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    names = {r[0] for r in rows}
    return sorted(n for n in CONFIG_TABLES_ALL if n in names)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


def _rows(conn: sqlite3.Connection, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cols = _columns(conn, table)
    order = ", ".join(f'"{c}"' for c in PRIMARY_KEYS[table])
    return cols, conn.execute(f'SELECT * FROM "{table}" ORDER BY {order}').fetchall()


def _json_value(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes | bytearray | memoryview) else value


def _canonical(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode("utf-8")


def config_digest(conn: sqlite3.Connection) -> str:
    """sha256 of ``table:<name>`` then one JSON array per row (PK order), tables in name order (§3.5)."""
    h = hashlib.sha256()
    for table in present_tables(conn):
        h.update(f"table:{table}\n".encode())
        _, rows = _rows(conn, table)
        for row in rows:
            h.update(json.dumps([_json_value(v) for v in row], separators=(",", ":"),
                                ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def _cue_count(cues_text: str) -> int:
    try:
        cues = json.loads(cues_text)
    except ValueError:
        return 0
    return len(cues) if isinstance(cues, list) else 0


def summary(conn: sqlite3.Connection) -> dict[str, Any]:
    """The schema-independent summary of §3.5 (every modelled migration preserves it)."""
    tables = set(present_tables(conn))

    def select(table: str, columns: str) -> list[tuple[Any, ...]]:
        # A server in maintenance has no configuration tables at all: an empty summary, not an error.
        return conn.execute(f'SELECT {columns} FROM "{table}"').fetchall() if table in tables else []

    modules = [{"name": n, "enabled": e} for n, e in select("module", "name, enabled")]
    props: dict[int, dict[str, str]] = {}
    if "component_property" in tables:
        for cid, key, value in select("component_property", "component_id, key, value"):
            props.setdefault(cid, {})[key] = value
    components = []
    has_json_props = "component" in tables and "properties" in _columns(conn, "component")
    extra = ", properties" if has_json_props else ""
    for row in select("component", f"id, module, name, kind, address, protocol, enabled{extra}"):
        cid = row[0]
        properties = props.get(cid, {})
        if has_json_props:
            try:
                loaded = json.loads(row[7] or "{}")
            except ValueError:
                loaded = {}
            properties = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        components.append({"module": row[1], "name": row[2], "kind": row[3], "address": row[4],
                           "protocol": row[5], "enabled": row[6], "properties": properties})
    schedules = [{"name": n, "cron": c, "enabled": e}
                 for n, c, e in select("schedule", "name, cron, enabled")]
    shows = [{"name": n, "cue_count": _cue_count(c)} for n, c in select("show", "name, cues")]
    users = [{"name": n, "role": r, "disabled": d} for n, r, d in select("app_user", "name, role, disabled")]
    settings = dict(select("system_setting", "key, value"))

    def ordered(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(items, key=_canonical)

    return {"modules": ordered(modules), "components": ordered(components), "schedules": ordered(schedules),
            "shows": ordered(shows), "users": ordered(users), "settings": settings}


def summary_digest(conn: sqlite3.Connection) -> str:
    return hashlib.sha256(_canonical(summary(conn))).hexdigest()


def redact_secret(value: Any) -> str:
    """A password hash shown as a short fingerprint: a change is visible, the hash itself never is."""
    return "redacted:" + hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:12]


def field_view(conn: sqlite3.Connection) -> dict[str, Any]:
    """``{"<table>.<pk>.<column>": value}`` for every configuration row; JSON columns parsed.

    Composite keys join with ``/`` (``component_property.3/dmx_universe.value``). Password hashes are
    fingerprinted, never shown.
    """
    out: dict[str, Any] = {}
    for table in present_tables(conn):
        cols, rows = _rows(conn, table)
        pk = PRIMARY_KEYS[table]
        for row in rows:
            values = dict(zip(cols, row, strict=True))
            key = "/".join(str(values[c]) for c in pk)
            for col in cols:
                if col in pk:
                    continue  # already in the field name
                value = _json_value(values[col])
                if (table, col) in JSON_COLUMNS and isinstance(value, str):
                    try:
                        value = json.loads(value)
                    except ValueError:
                        pass  # shown as text: a broken JSON cell is a difference worth seeing as it is
                if (table, col) in SECRET_COLUMNS:
                    value = redact_secret(value)
                out[f"{table}.{key}.{col}"] = value
    return out
