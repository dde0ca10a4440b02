"""The simulated NeuroomNet server's state: its live SQLite database, assets, restore points, operations and
local copies (targets/neuroomnet.md §2-§3). No HTTP here: ``interface.py`` maps routes onto these methods.

On disk, in the state directory (what survives a power cut, as on a real server):

- ``neuroomnet.db``: the live database (WAL mode, application id NRNS, user_version = configuration
  schema) holding the *configuration* tables and the *server-local* tables: ``server_meta``,
  ``restore_point``/``restore_point_file``/``restore_point_chunk`` (files as 4 MiB BLOB chunks),
  ``operation``/``operation_log``;
- ``assets/<module>/<file>``: small uploaded files (floor plans, icons), part of the configuration;
- ``restore-points/``: ``local_copy_root``, the "predefined path" of local copies (one folder each).

Backup-type operations (create, export, import, apply) run one at a time in a worker thread and write their
log into the database, so the operations list and logs survive the restart an apply causes. An apply first
checks everything it can, then (past the point of no return) replaces the configuration tables, migrates
them to the server's schema, restores the assets and restarts the server through ``restart_hook``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from harness.errors import BadInput
from harness.targets.neuroomnet import config as cfg
from harness.targets.neuroomnet.schema import (
    APP_ID_LIVE,
    APP_ID_SNAPSHOT,
    CONFIG_NAME,
    HEADER_SIZE,
    MANIFEST_NAME,
    WAL_SIDECARS,
    check_member_path,
    manifest_format1,
    manifest_format2,
    parse_manifest,
    parse_sqlite_header,
)
from harness.targets.neuroomnet.versions import (
    DEFAULT_VERSION,
    REFUSE,
    Release,
    apply_verdict,
    import_verdict,
    release,
    update_refusal,
)
from harness.ziparchive import Member
from simulators.core.api_error import DeviceApiError
from simulators.core.clock import Clock
from simulators.neuroomnet import profiles
from simulators.neuroomnet.migrate import migrate

log = logging.getLogger(__name__)

DB_NAME = "neuroomnet.db"
ASSETS = "assets"
LOCAL_COPY_ROOT = "restore-points"
CHUNK = 4 << 20  # restore_point_chunk rows: SQLite's default BLOB limit is 1e9 bytes; chunks keep memory flat
UPLOAD_LIMIT = 4 << 30
MAX_COMPLETED = 200
MAX_ENTRIES = 10_000
LOCAL_TABLES = ("server_meta", "restore_point", "restore_point_file", "restore_point_chunk", "operation",
                "operation_log")
BACKUP_KINDS = ("create_restore_point", "export_local_copy", "import_local_copy", "apply_restore_point")
KIND_TEXT = {"create_restore_point": "create restore point", "export_local_copy": "export local copy",
             "import_local_copy": "import local copy", "apply_restore_point": "apply restore point"}
# Device seconds of one operation step (§2.7 realistic column is for the restart; steps are modelled).
STEP_S = 0.5
STEP_FLOOR_S = 0.01  # wall-clock floor even in fast mode: "running" must be observable

_LOCAL_DDL = (
    "CREATE TABLE IF NOT EXISTS server_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS restore_point (id TEXT PRIMARY KEY, label TEXT NOT NULL, created TEXT NOT NULL, "
    "created_precise TEXT NOT NULL, origin TEXT NOT NULL, format INTEGER NOT NULL, source_json TEXT NOT NULL, "
    "config_schema INTEGER NOT NULL, size_bytes INTEGER NOT NULL, config_digest TEXT NOT NULL, "
    "summary_digest TEXT NOT NULL, manifest BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS restore_point_file (restore_point_id TEXT NOT NULL, path TEXT NOT NULL, "
    "size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL, "
    "PRIMARY KEY (restore_point_id, path))",
    "CREATE TABLE IF NOT EXISTS restore_point_chunk (restore_point_id TEXT NOT NULL, path TEXT NOT NULL, "
    "seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (restore_point_id, path, seq))",
    "CREATE TABLE IF NOT EXISTS operation (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, "
    "title TEXT NOT NULL, created TEXT NOT NULL, started TEXT, finished TEXT, dismissed INTEGER NOT NULL "
    "DEFAULT 0, log_viewed INTEGER NOT NULL DEFAULT 0, params TEXT NOT NULL, result TEXT, error TEXT, "
    "progress TEXT, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS operation_log (operation_id TEXT NOT NULL, line INTEGER NOT NULL, "
    "ts TEXT NOT NULL, level TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (operation_id, line))",
)


class ServerError(DeviceApiError):
    """An API error: HTTP status, the spec's code, a full-sentence message, optional details."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, code, message, details or {}, headers)


def _size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def slug(label: str) -> str:
    """§3.1: lowercased, runs outside [a-z0-9] -> '-', trimmed, at most 40 characters."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40].strip("-")


def _sha256_file(path: Path) -> tuple[str, int, int]:
    sha = hashlib.sha256()
    crc = 0
    size = 0
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            sha.update(data)
            crc = zlib.crc32(data, crc)
            size += len(data)
    return sha.hexdigest(), size, crc


@dataclass
class OpContext:
    """What an operation's body uses to log, show progress and pace itself."""

    server: NeuroomNetServer
    op_id: str
    steps: int
    step: int = 0

    def log(self, text: str, level: str = "INFO") -> None:
        self.server._append_log(self.op_id, level, text)

    def next(self, text: str, level: str = "INFO") -> None:
        """A new step: log line, progress, and the step's (scaled) duration."""
        self.step += 1
        self.log(text, level)
        percent = round(100.0 * self.step / max(self.steps, 1), 1)
        self.server._set_progress(self.op_id, {"step": self.step, "steps": self.steps, "percent": percent,
                                               "message": text})
        self.server.pace(STEP_S)


class NeuroomNetServer:
    def __init__(self, state_dir: Path, *, version: str | None = None, profile: str | None = None,
                 server_id: str | None = None, time_zone: str = "Europe/Berlin", admin: str = "admin",
                 admin_password: str = "admin", clock: Clock | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock or Clock(None)
        self.admin = admin
        self.admin_password = admin_password
        self.lock = threading.RLock()
        self.log_view_once = False
        self.instance_id = ""
        self.started_at = ""
        self.runtime_state = "running"  # running | restarting (the interface's window) | maintenance (meta)
        # Set by the interface: performs the restart of §2.7 (503, refused, 503) and returns when up again.
        self.restart_hook: Callable[[], None] = lambda: None
        self.fault: Callable[[str], dict[str, Any] | None] = lambda kind: None
        self._threads: list[threading.Thread] = []
        self._crc_cache: dict[tuple[str, int, int], int] = {}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.local_copy_root.mkdir(exist_ok=True)
        self.assets_dir.mkdir(exist_ok=True)
        fresh = not self.db_path.exists()
        self.conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        for ddl in _LOCAL_DDL:
            self.conn.execute(ddl)
        if fresh or self.meta("software_version") is None:
            self._initialise(version or DEFAULT_VERSION, profile, server_id, time_zone)
        elif version and version != self.meta("software_version"):
            self.upgrade(version)
        self._ensure_admin()
        self._recover()

    # -- paths, meta, time ------------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_NAME

    @property
    def assets_dir(self) -> Path:
        return self.state_dir / ASSETS

    @property
    def local_copy_root(self) -> Path:
        return self.state_dir / LOCAL_COPY_ROOT

    def meta(self, key: str) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT value FROM server_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self.conn.execute("INSERT OR REPLACE INTO server_meta VALUES (?, ?)", (key, value))

    @property
    def release(self) -> Release:
        return release(self.meta("software_version") or DEFAULT_VERSION)

    @property
    def tz(self) -> dt.tzinfo:
        try:
            return ZoneInfo(self.meta("time_zone") or "UTC")
        except Exception:  # noqa: BLE001 - no tz database: UTC rather than no server
            return dt.UTC

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.tz)

    def iso(self, when: dt.datetime | None = None) -> str:
        return (when or self.now()).isoformat(timespec="seconds")

    @staticmethod
    def utc_precise() -> str:
        return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    def pace(self, device_seconds: float) -> None:
        time.sleep(max(STEP_FLOOR_S, self.clock.real(device_seconds)))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def schema(self) -> int:
        with self.lock:
            return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # -- first start, upgrade, boot recovery ------------------------------------------------------------

    def _initialise(self, version: str, profile_name: str | None, server_id: str | None, time_zone: str) -> None:
        rel = release(version)
        prof = profiles.profile(profile_name)
        server_id = server_id or f"srv-{secrets.token_hex(4)}"
        try:
            now = self.iso(dt.datetime.now(ZoneInfo(time_zone)))  # the meta row with the zone comes below
        except Exception:  # noqa: BLE001 - no tz database: UTC
            now = self.iso(dt.datetime.now(dt.UTC))
        with self._tx() as c:
            c.execute(f"PRAGMA application_id = {APP_ID_LIVE}")
            cfg.create_config_tables(c, 17)
            c.execute("PRAGMA user_version = 17")
            profiles.seed_schema17(c, prof, server_id, now, admin=self.admin, admin_password=self.admin_password)
            migrate(c, 17, rel.config_schema, time_zone=time_zone)
            if rel.config_schema >= 22:
                c.execute("CREATE INDEX IF NOT EXISTS component_by_module ON component(module, name)")
            for key, value in (("server_id", server_id), ("server_name", f"NRN-{server_id[4:].upper()}"),
                               ("software_version", rel.version), ("time_zone", time_zone),
                               ("profile", prof.name), ("state", "running"),
                               ("config_changed_at", self.utc_precise())):
                c.execute("INSERT OR REPLACE INTO server_meta VALUES (?, ?)", (key, value))
        profiles.write_assets(self.assets_dir, prof, server_id)
        log.info("new NeuroomNet %s server %s (profile %s, schema %d)", rel.version, server_id, prof.name,
                 rel.config_schema)

    def upgrade(self, version: str) -> dict[str, Any]:
        """The new software's first start on this database: the configuration is migrated in place.

        Forward only, and only from a schema the new release can migrate (``versions.update_refusal``);
        a refusal is ``BadInput`` and changes nothing. The same version is a reinstall: nothing to migrate.
        """
        new = release(version)
        old = self.release
        schema = self.schema()
        refusal = update_refusal(old, schema, new)
        if refusal is not None:
            raise BadInput(refusal)
        if new.version != old.version or new.config_schema != schema:
            with self._tx() as c:
                migrate(c, schema, new.config_schema, time_zone=self.meta("time_zone") or "UTC")
                c.execute("INSERT OR REPLACE INTO server_meta VALUES ('software_version', ?)", (new.version,))
                if new.config_schema != schema:
                    self._touch_config(c)  # the rows were rewritten: an earlier safety point is stale
            log.info("upgraded %s -> %s (schema %d -> %d)", old.version, new.version, schema, new.config_schema)
        return {"software_version": new.version, "config_schema": new.config_schema, "previous": old.version}

    def update_software(self, version: str) -> dict[str, Any]:
        """A software update of the running server (``_sim/upgrade``, ``_sim/firmware``): refused while a backup
        operation runs; the database is migrated in place and the server starts again (a new instance id; the
        interface ends the sessions, which live in its memory)."""
        with self.lock:
            self._busy()
            result = self.upgrade(version)
        self.boot()
        return {**result, "instance_id": self.instance_id}

    def _ensure_admin(self) -> None:
        """The simulator's --username/--password-file account exists with that password (an installer's job)."""
        if self.meta("state") == "maintenance":
            return
        with self.lock:
            row = self.conn.execute("SELECT password_hash, role, disabled FROM app_user WHERE name = ?",
                                    (self.admin,)).fetchone()
        if row and profiles.check_password(self.admin_password, row[0]) and row[1] == "administrator" \
                and not row[2]:
            return
        scheme = ", password_scheme" if self.schema() >= 20 else ""
        with self._tx() as c:
            if row:
                c.execute("UPDATE app_user SET password_hash = ?, role = 'administrator', disabled = 0 "
                          "WHERE name = ?", (profiles.hash_password(self.admin_password), self.admin))
            else:
                uid = c.execute("SELECT coalesce(max(id), 0) + 1 FROM app_user").fetchone()[0]
                values = [uid, self.admin, "administrator", profiles.hash_password(self.admin_password)]
                if scheme:
                    values.append("pbkdf2-sha256")
                values.append(0)
                c.execute(f"INSERT INTO app_user VALUES ({', '.join('?' * len(values))})", values)
            self._touch_config(c)

    def _recover(self) -> None:
        """After a power cut: unfinished operations end as interrupted; half-written local copies go away."""
        with self._tx() as c:
            for op_id, kind in c.execute(
                    "SELECT id, kind FROM operation WHERE state IN ('queued', 'running')").fetchall():
                lines = [r[0] for r in c.execute("SELECT text FROM operation_log WHERE operation_id = ?",
                                                 (op_id,))]
                if kind == "apply_restore_point" and "Deleting current configuration" in lines:
                    error = {"code": "apply_incomplete", "message": APPLY_INCOMPLETE}
                    c.execute("INSERT OR REPLACE INTO server_meta VALUES ('state', 'maintenance')")
                    state = "failed"
                else:
                    error = {"code": "interrupted", "message": "The server restarted while this operation "
                             "was running. Nothing was stored; run it again."}
                    state = "interrupted"
                c.execute("UPDATE operation SET state = ?, finished = ?, error = ? WHERE id = ?",
                          (state, self.iso(), json.dumps(error), op_id))
        for tmp in self.local_copy_root.glob("*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)
        for tmp in self.local_copy_root.glob(".upload-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def boot(self) -> None:
        """Every server start: a new instance id (sessions are the interface's, and die with it)."""
        self.instance_id = secrets.token_hex(16)
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    def close(self) -> None:
        for thread in self._threads:
            thread.join(timeout=10)
        with self.lock:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()

    # -- system -----------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.runtime_state != "running":
            return self.runtime_state
        return self.meta("state") or "running"

    def system(self) -> dict[str, Any]:
        rel = self.release
        return {
            "product": "NeuroomNet", "server_id": self.meta("server_id"), "server_name": self.meta("server_name"),
            "software_version": rel.version, "config_schema": self.schema(),
            "min_config_schema": rel.min_config_schema, "restore_point_formats": list(rel.reads_formats),
            "state": self.state, "instance_id": self.instance_id, "started_at": self.started_at,
            "config_changed_at": self.meta("config_changed_at"), "time_zone": self.meta("time_zone"),
        }

    def settings(self) -> dict[str, Any]:
        return {"local_copy_root": str(self.local_copy_root), "upload_limit_bytes": UPLOAD_LIMIT,
                "max_completed_operations": MAX_COMPLETED}

    def current_summary(self) -> dict[str, Any]:
        with self.lock:
            return {"config_schema": self.schema(), "config_digest": cfg.config_digest(self.conn),
                    "summary_digest": cfg.summary_digest(self.conn), "summary": cfg.summary(self.conn)}

    def _touch_config(self, c: sqlite3.Connection) -> None:
        c.execute("INSERT OR REPLACE INTO server_meta VALUES ('config_changed_at', ?)", (self.utc_precise(),))

    def authenticate(self, name: Any, password: Any) -> str | None:
        """The user's role if the password is right and the user enabled; None otherwise."""
        if not isinstance(name, str) or not isinstance(password, str):
            return None
        try:
            with self.lock:
                row = self.conn.execute("SELECT password_hash, role, disabled FROM app_user WHERE name = ?",
                                        (name,)).fetchone()
        except sqlite3.OperationalError:  # maintenance: the configuration tables are gone
            row = None
        if row and not row[2] and profiles.check_password(password, row[0]):
            return str(row[1])
        # [modelled] In maintenance the configuration (and its users) is gone; the installation's service
        # account (the simulator's --username) still logs in, or nobody could apply the way out.
        if self.state == "maintenance" and name == self.admin and password == self.admin_password:
            return "administrator"
        return None

    # -- configuration, as an administrator edits it (modelled admin API) -----------------------------

    def _require_running(self) -> None:
        if self.state == "maintenance":
            raise ServerError(503, "maintenance", "NeuroomNet is in maintenance mode after an incomplete apply. "
                              "Apply a restore point to continue.")

    def _columns(self, table: str) -> list[str]:
        if table not in cfg.table_columns(self.schema()):
            raise ServerError(404, "not_found", f"There is no configuration table {table!r}.")
        with self.lock:
            return [r[1] for r in self.conn.execute(f'PRAGMA table_info("{table}")')]

    def config_rows(self, table: str) -> list[dict[str, Any]]:
        self._require_running()
        cols = self._columns(table)
        order = ", ".join(f'"{c}"' for c in cfg.PRIMARY_KEYS[table])
        with self.lock:
            rows = self.conn.execute(f'SELECT * FROM "{table}" ORDER BY {order}').fetchall()
        out = [dict(zip(cols, r, strict=True)) for r in rows]
        for row in out:
            row.pop("password_hash", None)  # never over the API
        return out

    def _where(self, table: str, key: str) -> tuple[str, list[Any]]:
        pk = cfg.PRIMARY_KEYS[table]
        parts = key.split("/")
        if len(parts) != len(pk):
            raise ServerError(400, "bad_request", f"{table} rows are addressed by {'/'.join(pk)}.")
        values: list[Any] = [int(p) if p.lstrip("-").isdigit() and c in ("id", "component_id") else p
                             for p, c in zip(parts, pk, strict=True)]
        return " AND ".join(f'"{c}" = ?' for c in pk), values

    def _clean(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        cols = self._columns(table)
        out: dict[str, Any] = {}
        for k, v in values.items():
            if k == "password" and table == "app_user":
                out["password_hash"] = profiles.hash_password(str(v))
                continue
            if k not in cols or k == "password_hash" or (table, k) in {("module", "modified"),
                                                                       ("component", "modified")}:
                raise ServerError(400, "bad_request", f"{table} has no writable field {k!r}.")
            if (table, k) in cfg.JSON_COLUMNS and not isinstance(v, str):
                v = json.dumps(v)
            if isinstance(v, bool):
                v = int(v)
            if v is not None and not isinstance(v, str | int | float):
                raise ServerError(400, "bad_request", f"{table}.{k} takes a string or a number.")
            out[k] = v
        if "modified" in cols:
            out["modified"] = self.iso()
        return out

    def config_update(self, table: str, key: str, values: dict[str, Any]) -> dict[str, Any]:
        self._require_running()
        clean = self._clean(table, values)
        where, args = self._where(table, key)
        with self._tx() as c:
            sets = ", ".join(f'"{k}" = ?' for k in clean)
            try:
                n = c.execute(f'UPDATE "{table}" SET {sets} WHERE {where}', [*clean.values(), *args]).rowcount
            except sqlite3.IntegrityError as exc:
                raise ServerError(409, "conflict", f"The change conflicts with the configuration ({exc}).") from None
            if not n:
                raise ServerError(404, "not_found", f"There is no {table} {key!r}.")
            self._touch_config(c)
        return {"updated": n}

    def config_insert(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        self._require_running()
        clean = self._clean(table, values)
        with self._tx() as c:
            cols = ", ".join(f'"{k}"' for k in clean)
            try:
                cur = c.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(clean))})',
                                list(clean.values()))
            except sqlite3.IntegrityError as exc:
                raise ServerError(409, "conflict", f"The row conflicts with the configuration ({exc}).") from None
            self._touch_config(c)
        return {"id": cur.lastrowid}

    def config_delete(self, table: str, key: str) -> None:
        self._require_running()
        self._columns(table)
        where, args = self._where(table, key)
        with self._tx() as c:
            if not c.execute(f'DELETE FROM "{table}" WHERE {where}', args).rowcount:
                raise ServerError(404, "not_found", f"There is no {table} {key!r}.")
            self._touch_config(c)

    # -- operations -------------------------------------------------------------------------------------

    def _op_row(self, op_id: str) -> dict[str, Any] | None:
        with self.lock:
            cur = self.conn.execute("SELECT * FROM operation WHERE id = ?", (op_id,))
            row = cur.fetchone()
            if row is None:
                return None
            names = [d[0] for d in cur.description]
            lines = self.conn.execute("SELECT count(*) FROM operation_log WHERE operation_id = ?",
                                      (op_id,)).fetchone()[0]
        op = dict(zip(names, row, strict=True))
        return {"id": op["id"], "kind": op["kind"], "state": op["state"], "title": op["title"],
                "created": op["created"], "started": op["started"], "finished": op["finished"],
                "progress": json.loads(op["progress"]) if op["progress"] else None, "log_lines": lines,
                "log_viewed": bool(op["log_viewed"]), "result": json.loads(op["result"]) if op["result"] else None,
                "error": json.loads(op["error"]) if op["error"] else None, "dismissed": bool(op["dismissed"])}

    def operation(self, op_id: str) -> dict[str, Any]:
        op = self._op_row(op_id)
        if op is None or op["dismissed"]:
            raise ServerError(404, "operation_not_found", f"There is no operation {op_id}.")
        op.pop("dismissed")
        return op

    def operations(self) -> dict[str, Any]:
        with self.lock:
            ids = [r[0] for r in self.conn.execute("SELECT id FROM operation WHERE dismissed = 0 ORDER BY seq DESC")]
        running, completed = [], []
        for op_id in ids:
            op = self.operation(op_id)
            (running if op["state"] in ("queued", "running") else completed).append(op)
        return {"running": running, "completed": completed[:MAX_COMPLETED]}

    def dismiss(self, op_id: str) -> None:
        op = self.operation(op_id)
        if op["state"] in ("queued", "running"):
            raise ServerError(409, "operation_running", "This operation is still running; it can be removed "
                              "from the display once it has finished.")
        with self.lock:
            self.conn.execute("UPDATE operation SET dismissed = 1 WHERE id = ?", (op_id,))

    def log_lines(self, op_id: str, after: int = 0) -> tuple[list[str], int]:
        op = self.operation(op_id)
        if self.log_view_once and op["log_viewed"]:
            raise ServerError(410, "log_already_viewed", "This log was already viewed.")
        with self.lock:
            rows = self.conn.execute("SELECT ts, level, text FROM operation_log WHERE operation_id = ? AND line > ? "
                                     "ORDER BY line", (op_id, max(0, after))).fetchall()
            total = self.conn.execute("SELECT count(*) FROM operation_log WHERE operation_id = ?",
                                      (op_id,)).fetchone()[0]
            if after <= 0 and op["state"] not in ("queued", "running"):
                self.conn.execute("UPDATE operation SET log_viewed = 1 WHERE id = ?", (op_id,))
        return [f"{ts} {level} {text}" for ts, level, text in rows], total

    def _append_log(self, op_id: str, level: str, text: str) -> None:
        ts = self.now().isoformat(timespec="milliseconds")
        with self.lock:
            line = self.conn.execute("SELECT coalesce(max(line), 0) + 1 FROM operation_log WHERE operation_id = ?",
                                     (op_id,)).fetchone()[0]
            self.conn.execute("INSERT INTO operation_log VALUES (?, ?, ?, ?, ?)", (op_id, line, ts, level, text))
        log.info("%s: %s %s", op_id, level, text)

    def _set_progress(self, op_id: str, progress: dict[str, Any]) -> None:
        with self.lock:
            self.conn.execute("UPDATE operation SET progress = ? WHERE id = ?", (json.dumps(progress), op_id))

    def _busy(self) -> None:
        with self.lock:
            row = self.conn.execute("SELECT kind, started FROM operation WHERE state IN ('queued', 'running') "
                                    "AND kind IN (?, ?, ?, ?)", BACKUP_KINDS).fetchone()
        if row:
            started = (row[1] or "")[11:19]
            raise ServerError(409, "operation_running", f"Another backup operation is running ({KIND_TEXT[row[0]]}, "
                              f"started {started}). Wait for it to finish.")

    def _start(self, kind: str, title: str, params: dict[str, Any], steps: int,
               body: Callable[[OpContext], dict[str, Any]]) -> dict[str, Any]:
        """Register an operation (refused while another runs) and run ``body`` in a worker thread."""
        with self.lock:
            self._busy()
            op_id = f"op-{secrets.token_hex(3)}"
            now = self.iso()
            seq = self.conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM operation").fetchone()[0]
            self.conn.execute("INSERT INTO operation (id, kind, state, title, created, started, params, seq) "
                              "VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                              (op_id, kind, title, now, now, json.dumps(params), seq))
            self._prune()
        ctx = OpContext(self, op_id, steps)

        def run() -> None:
            try:
                result = body(ctx)
            except ServerError as exc:
                self._finish(op_id, "failed", None, {"code": exc.code, "message": exc.message,
                                                    "details": exc.details or None})
                ctx.log(exc.message, "ERROR")
            except Exception as exc:  # noqa: BLE001 - a worker reports, never dies silently
                log.exception("%s failed", op_id)
                self._finish(op_id, "failed", None, {"code": "internal_error", "message": str(exc)})
            else:
                self._finish(op_id, "succeeded", result, None)

        thread = threading.Thread(target=run, name=f"neuroomnet {op_id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return self.operation(op_id)

    def _finish(self, op_id: str, state: str, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
        with self.lock:
            self.conn.execute("UPDATE operation SET state = ?, finished = ?, result = ?, error = ? WHERE id = ?",
                              (state, self.iso(), json.dumps(result) if result is not None else None,
                               json.dumps(error) if error is not None else None, op_id))

    def _prune(self) -> None:
        # At most 200 completed operations are listed; the oldest drop off.
        self.conn.execute("UPDATE operation SET dismissed = 1 WHERE state NOT IN ('queued', 'running') AND "
                          "dismissed = 0 AND id NOT IN (SELECT id FROM operation WHERE state NOT IN "
                          "('queued', 'running') AND dismissed = 0 ORDER BY seq DESC LIMIT ?)", (MAX_COMPLETED,))

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Tests: wait for every worker thread."""
        for thread in list(self._threads):
            thread.join(timeout)

    # -- restore points ---------------------------------------------------------------------------------

    def _rp_row(self, rp_id: str) -> dict[str, Any]:
        with self.lock:
            cur = self.conn.execute("SELECT * FROM restore_point WHERE id = ?", (rp_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        if row is None:
            raise ServerError(404, "restore_point_not_found", f"There is no restore point {rp_id}.")
        return dict(zip(names, row, strict=True))

    def _rp_item(self, row: dict[str, Any]) -> dict[str, Any]:
        source = json.loads(row["source_json"])
        verdict = apply_verdict(row["id"], row["config_schema"], self.release,
                                version=source.get("software_version"))
        return {"id": row["id"], "label": row["label"], "created": row["created"], "origin": row["origin"],
                "source": source, "format": row["format"], "size_bytes": row["size_bytes"],
                "config_digest": row["config_digest"], "summary_digest": row["summary_digest"],
                "compatibility": verdict.as_json()}

    def restore_points(self) -> list[dict[str, Any]]:
        with self.lock:
            ids = [r[0] for r in self.conn.execute("SELECT id FROM restore_point ORDER BY created_precise DESC")]
        return [self._rp_item(self._rp_row(i)) for i in ids]

    def restore_point(self, rp_id: str) -> dict[str, Any]:
        row = self._rp_row(rp_id)
        item = self._rp_item(row)
        item["manifest"] = json.loads(bytes(row["manifest"]))
        return item

    def delete_restore_point(self, rp_id: str) -> None:
        self._rp_row(rp_id)
        with self.lock:
            for (params,) in self.conn.execute("SELECT params FROM operation WHERE state IN ('queued','running')"):
                if rp_id in params:
                    raise ServerError(409, "in_use", f"Restore point {rp_id} is used by a running operation.")
        with self._tx() as c:
            for table in ("restore_point_chunk", "restore_point_file"):
                c.execute(f"DELETE FROM {table} WHERE restore_point_id = ?", (rp_id,))
            c.execute("DELETE FROM restore_point WHERE id = ?", (rp_id,))

    def create_restore_point(self, label: Any = None) -> dict[str, Any]:
        label = "" if label is None else label
        if not isinstance(label, str) or len(label) > 80 or any(ord(ch) < 0x20 for ch in label):
            raise ServerError(400, "bad_request", "A label is at most 80 characters without control characters.")
        self._require_running()
        title = f'Create restore point "{label}"' if label else "Create restore point"
        return self._start("create_restore_point", title, {"label": label}, 7,
                           lambda ctx: {"restore_point_id": self._create(ctx, label)})

    def _snapshot(self, dest: Path) -> None:
        """Online backup API into ``dest``, server-local tables dropped, NRNC, rollback journal, VACUUM."""
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            dst = sqlite3.connect(dest, isolation_level=None)
            try:
                self.conn.backup(dst)
            except BaseException:
                dst.close()
                raise
        try:
            for table in LOCAL_TABLES:
                dst.execute(f"DROP TABLE IF EXISTS {table}")
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.execute(f"PRAGMA application_id = {APP_ID_SNAPSHOT}")
            dst.execute("VACUUM")
        finally:
            dst.close()

    def _asset_files(self) -> list[Path]:
        return sorted(p for p in self.assets_dir.rglob("*") if p.is_file())

    def _create(self, ctx: OpContext, label: str) -> str:
        rel = self.release
        ctx.next(f'Creating restore point "{label}"')
        now = self.now()
        created, precise = self.iso(now), self.utc_precise()
        rp_id = f"rp-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        ctx.next("Checkpointing database")
        work = self.state_dir / f".snap-{ctx.op_id}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            snap = work / CONFIG_NAME
            ctx.next("Snapshotting configuration: modules {" + ", ".join(profiles.MODULES) + "}")
            self._snapshot(snap)
            conn = sqlite3.connect(f"file:{snap}?mode=ro", uri=True)
            try:
                digest, sdigest = cfg.config_digest(conn), cfg.summary_digest(conn)
                counts = self._module_counts(conn)
            finally:
                conn.close()
            setup = counts[0]
            ctx.next(f"Setup: {setup['components']} components in {setup.get('groups', 0)} groups")
            assets = self._asset_files() if rel.writes_format >= 2 else []
            files: list[tuple[str, Path]] = [(CONFIG_NAME, snap)]
            files += [(f"{ASSETS}/{p.relative_to(self.assets_dir).as_posix()}", p) for p in assets]
            asset_bytes = sum(p.stat().st_size for p in assets)
            ctx.next(f"Copying assets ({len(assets)} files, {_size_text(asset_bytes)})")
            ctx.next("Computing digests")
            listed = []
            for path, src in files:
                sha, size, _ = _sha256_file(src)
                listed.append({"path": path, "size_bytes": size, "sha256": sha})
            source = {"server_id": self.meta("server_id"), "server_name": self.meta("server_name"),
                      "software_version": rel.version, "config_schema": self.schema()}
            if rel.writes_format == 1:
                md5 = hashlib.md5(snap.read_bytes(), usedforsecurity=False).hexdigest()
                manifest = manifest_format1(rp_id=rp_id, label=label, created=created, version=rel.version,
                                            schema=self.schema(), md5=md5, server_id=source["server_id"])
            else:
                manifest = manifest_format2(restore_point_id=rp_id, label=label, created=created, source=source,
                                            modules=counts, files=listed, config_digest=digest,
                                            summary_digest=sdigest)
            total = sum(f["size_bytes"] for f in listed)
            self._store_rp(rp_id, label, created, precise, "created", rel.writes_format, source, self.schema(),
                           total, digest, sdigest, manifest, files, listed)
            ctx.next(f"Stored restore point {rp_id} ({_size_text(total)})")
            return rp_id
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _module_counts(self, conn: sqlite3.Connection) -> list[dict[str, Any]]:
        enabled = dict(conn.execute("SELECT name, enabled FROM module").fetchall())
        tables = set(cfg.present_tables(conn))

        def count(table: str) -> int:
            return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]

        setup: dict[str, Any] = {"name": "Setup", "enabled": bool(enabled.get("Setup", 1)),
                                 "components": count("component")}
        if "component_group" in tables:
            setup["groups"] = count("component_group")
        return [setup] + [{"name": name, "enabled": bool(enabled.get(name, 1)), "items": count(table)}
                          for name, table in (("Schedules", "schedule"), ("Shows", "show"), ("Users", "app_user"),
                                              ("System", "system_setting"))]

    def _store_rp(self, rp_id: str, label: str, created: str, precise: str, origin: str, fmt: int,
                  source: dict[str, Any], schema: int, size: int, digest: str, sdigest: str, manifest: bytes,
                  files: list[tuple[str, Path]], listed: list[dict[str, Any]]) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO restore_point VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (rp_id, label, created, precise, origin, fmt, json.dumps(source), schema, size, digest,
                       sdigest, manifest))
            for (path, src), meta in zip(files, listed, strict=True):
                seq = 0
                with open(src, "rb") as f:
                    while data := f.read(CHUNK):
                        c.execute("INSERT INTO restore_point_chunk VALUES (?, ?, ?, ?)", (rp_id, path, seq, data))
                        seq += 1
                c.execute("INSERT INTO restore_point_file VALUES (?, ?, ?, ?, ?)",
                          (rp_id, path, meta["size_bytes"], meta["sha256"], seq))

    def _rp_files(self, rp_id: str) -> list[tuple[str, int, str]]:
        with self.lock:
            return self.conn.execute("SELECT path, size_bytes, sha256 FROM restore_point_file WHERE "
                                     "restore_point_id = ? ORDER BY path = 'config.sqlite' DESC, path",
                                     (rp_id,)).fetchall()

    def _write_rp_file(self, rp_id: str, path: str, dest: Path) -> str:
        sha = hashlib.sha256()
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            seq = 0
            while True:
                with self.lock:
                    row = self.conn.execute("SELECT data FROM restore_point_chunk WHERE restore_point_id = ? AND "
                                            "path = ? AND seq = ?", (rp_id, path, seq)).fetchone()
                if row is None:
                    break
                out.write(row[0])
                sha.update(row[0])
                seq += 1
            out.flush()
            os.fsync(out.fileno())
        return sha.hexdigest()

    # -- local copies -----------------------------------------------------------------------------------

    def _copy_name(self, created: str, label: str) -> str:
        when = dt.datetime.fromisoformat(created)
        base = f"RP_{when:%Y-%m-%d}_{when:%H-%M-%S}" + (f"_{slug(label)}" if slug(label) else "")
        name, n = base, 1
        while (self.local_copy_root / name).exists() or (self.local_copy_root / f"{name}.tmp").exists():
            n += 1
            name = f"{base}_{n}"
        return name

    def export(self, rp_id: str) -> dict[str, Any]:
        row = self._rp_row(rp_id)
        return self._start("export_local_copy", f"Export restore point {rp_id}", {"restore_point_id": rp_id}, 6,
                           lambda ctx: self._export(ctx, row))

    def _export(self, ctx: OpContext, row: dict[str, Any]) -> dict[str, Any]:
        rp_id = row["id"]
        name = self._copy_name(row["created"], row["label"])
        final = self.local_copy_root / name
        tmp = self.local_copy_root / f"{name}.tmp"
        tmp.mkdir()
        try:
            ctx.next(f"Exporting restore point {rp_id} to local copy {name}")
            files = self._rp_files(rp_id)
            mismatched = []
            for path, size, sha in files:
                if path == CONFIG_NAME:
                    ctx.next(f"Writing config.sqlite ({_size_text(size)})")
                if self._write_rp_file(rp_id, path, tmp / path) != sha:
                    mismatched.append(path)
            assets = [f for f in files if f[0] != CONFIG_NAME]
            ctx.next(f"Writing assets ({len(assets)} files)")
            (tmp / MANIFEST_NAME).write_bytes(bytes(row["manifest"]))
            ctx.next(f"Writing {MANIFEST_NAME}")
            stamp = dt.datetime.fromisoformat(row["created"]).timestamp()
            for p in [tmp / MANIFEST_NAME, *(tmp / f[0] for f in files)]:
                os.utime(p, (stamp, stamp))  # entry times of the ZIP come from these: deterministic bytes
            ctx.next(f"Verifying local copy (sha256 of {len(files)} files)")
            if mismatched:
                raise ServerError(500, "local_copy_write_failed", f"Local copy {name} does not verify: "
                                  f"{', '.join(mismatched)}.")
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        ctx.next(f"Local copy {final} written")
        return {"local_copy": name, "path": str(final)}

    def _copy_folder(self, name: str) -> Path:
        if check_member_path(name) or "/" in name or name.startswith(".") or name.endswith(".tmp"):
            raise ServerError(404, "local_copy_not_found", f"There is no local copy {name!r}.")
        folder = self.local_copy_root / name
        if not folder.is_dir():
            raise ServerError(404, "local_copy_not_found", f"There is no local copy {name!r}.")
        return folder

    def _scan_copy(self, folder: Path) -> dict[str, Any]:
        item: dict[str, Any] = {"name": folder.name, "path": str(folder), "state": "valid", "problem": None}
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.is_file():
            item.update(state="invalid", problem={"code": "manifest_missing",
                                                  "message": f"{folder.name} has no restorepoint.json."})
            return item
        try:
            m = parse_manifest(manifest_path.read_bytes())
        except (BadInput, OSError) as exc:
            item.update(state="invalid", problem={"code": "manifest_invalid", "message": str(exc)})
            return item
        paths = [f.path for f in m.files] if m.format == 2 else [CONFIG_NAME]
        missing = [p for p in paths if not (folder / p).is_file()]
        sizes = sum((folder / p).stat().st_size for p in paths if (folder / p).is_file())
        with self.lock:
            in_db = self.conn.execute("SELECT 1 FROM restore_point WHERE id = ?",
                                      (m.restore_point_id,)).fetchone() is not None
        item.update(restore_point_id=m.restore_point_id, label=m.label, created=m.created,
                    source={"server_id": m.server_id, "software_version": m.software_version,
                            "config_schema": m.config_schema},
                    format=m.format, files=len(paths), size_bytes=sizes, in_database=in_db)
        if missing:
            item.update(state="invalid", problem={"code": "file_missing",
                                                  "message": f"{folder.name} lacks {', '.join(missing)}."})
        return item

    def local_copies(self) -> list[dict[str, Any]]:
        folders = sorted(p for p in self.local_copy_root.iterdir()
                         if p.is_dir() and not p.name.endswith(".tmp") and not p.name.startswith("."))
        return [self._scan_copy(p) for p in folders]

    def delete_local_copy(self, name: str) -> None:
        folder = self._copy_folder(name)
        with self.lock:
            for (params,) in self.conn.execute("SELECT params FROM operation WHERE state IN ('queued','running')"):
                if json.loads(params).get("local_copy") == name:
                    raise ServerError(409, "in_use", f"Local copy {name} is used by a running operation.")
        shutil.rmtree(folder)

    def download_members(self, name: str) -> list[Member]:
        """The stored ZIP entries of a valid local copy: the manifest first, then the listed files in order."""
        folder = self._copy_folder(name)
        item = self._scan_copy(folder)
        if item["state"] != "valid":
            raise ServerError(409, "local_copy_invalid", f"Local copy {name} cannot be downloaded: "
                              f"{item['problem']['message']}")
        m = parse_manifest((folder / MANIFEST_NAME).read_bytes())
        paths = [MANIFEST_NAME] + ([f.path for f in m.files] if m.format == 2 else [CONFIG_NAME])
        members = []
        for rel_path in paths:
            p = folder / rel_path
            st = p.stat()
            key = (str(p), st.st_size, st.st_mtime_ns)
            crc = self._crc_cache.get(key)
            if crc is None:
                crc = _sha256_file(p)[2]
                self._crc_cache[key] = crc
            members.append(Member(rel_path, st.st_size, crc, st.st_mtime, lambda p=p: open(p, "rb")))
        return members

    def new_upload_path(self) -> Path:
        return self.local_copy_root / f".upload-{secrets.token_hex(6)}.zip"

    def accept_upload(self, upload: Path, name: str | None) -> dict[str, Any]:
        """Validate an uploaded ZIP's structure (§4.3 reader rules), unpack it into a new local copy folder."""
        try:
            return self._accept_upload(upload, name)
        finally:
            with contextlib.suppress(OSError):
                upload.unlink()

    def _accept_upload(self, upload: Path, name: str | None) -> dict[str, Any]:
        if name is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}", name)
                                 or name.endswith(".tmp")):
            raise ServerError(400, "bad_request", f"{name!r} cannot name a local copy.")
        try:
            zf = zipfile.ZipFile(upload)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ServerError(422, "not_a_zip", f"The upload is not a ZIP file ({exc}). Nothing was stored.") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                raise ServerError(422, "too_many_entries", f"The ZIP has {len(infos)} entries; at most "
                                  f"{MAX_ENTRIES} are accepted. Nothing was stored.")
            for info in infos:
                problem = check_member_path(info.filename.rstrip("/") or info.filename)
                if problem:
                    raise ServerError(422, "unsafe_path", f"ZIP entry {info.filename!r} has {problem}. Nothing was "
                                      "stored.", {"entry": info.filename})
                if info.flag_bits & 0x1:
                    raise ServerError(422, "encrypted_zip", f"ZIP entry {info.filename!r} is encrypted. Nothing "
                                      "was stored.")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ServerError(422, "layout_invalid", f"ZIP entry {info.filename!r} is a symbolic link. "
                                      "Nothing was stored.")
            files = [i for i in infos if not i.is_dir()]
            names = [i.filename for i in files]
            prefix = ""
            if MANIFEST_NAME not in names:
                tops = {n.split("/", 1)[0] for n in names}
                if len(tops) == 1 and all("/" in n for n in names) and f"{next(iter(tops))}/{MANIFEST_NAME}" in names:
                    prefix = next(iter(tops)) + "/"
                elif any(n.endswith("/" + MANIFEST_NAME) for n in names):
                    raise ServerError(422, "layout_invalid", "restorepoint.json must be at the ZIP root or in "
                                      "one top-level folder. Nothing was stored.")
                else:
                    raise ServerError(422, "manifest_missing", "The ZIP has no restorepoint.json. Nothing was "
                                      "stored.")
            total = sum(i.file_size for i in files)
            if total > UPLOAD_LIMIT:
                raise ServerError(413, "upload_too_large", "The ZIP unpacks to more than the upload limit.")
            try:
                m = parse_manifest(zf.read(prefix + MANIFEST_NAME))
            except BadInput as exc:
                raise ServerError(422, "manifest_invalid", f"{exc}. Nothing was stored.") from None
            folder_name = name or self._copy_name(m.created, m.label)
            n = 1
            while name and ((self.local_copy_root / folder_name).exists()
                            or (self.local_copy_root / f"{folder_name}.tmp").exists()):
                n += 1
                folder_name = f"{name}_{n}"
            tmp = self.local_copy_root / f"{folder_name}.tmp"
            tmp.mkdir()
            try:
                for info in files:
                    dest = tmp / info.filename[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    written = 0
                    with zf.open(info) as src, open(dest, "wb") as out:
                        while data := src.read(1 << 20):
                            written += len(data)
                            if written > info.file_size:
                                raise ServerError(422, "layout_invalid", f"ZIP entry {info.filename!r} inflates "
                                                  "beyond its declared size. Nothing was stored.")
                            out.write(data)
                    mtime = dt.datetime(*info.date_time, tzinfo=dt.UTC).timestamp()
                    os.utime(dest, (mtime, mtime))
                tmp.rename(self.local_copy_root / folder_name)
            except zipfile.BadZipFile as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ServerError(422, "not_a_zip", f"The ZIP is damaged ({exc}). Nothing was stored.") from None
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self._scan_copy(self.local_copy_root / folder_name)

    def import_copy(self, name: str) -> dict[str, Any]:
        folder = self._copy_folder(name)
        return self._start("import_local_copy", f"Import local copy {name}", {"local_copy": name}, 5,
                           lambda ctx: self._import(ctx, folder))

    def _import(self, ctx: OpContext, folder: Path) -> dict[str, Any]:
        name = folder.name
        rel = self.release
        ctx.next(f"Importing local copy {name}")
        manifest_file = folder / MANIFEST_NAME
        if not manifest_file.is_file():
            raise ServerError(422, "manifest_missing", f"Local copy {name} has no restorepoint.json. Nothing was "
                              "imported.")
        try:
            raw_manifest = manifest_file.read_bytes()
            m = parse_manifest(raw_manifest)
        except BadInput as exc:
            raise ServerError(422, "manifest_invalid", f"{exc}. Nothing was imported.") from None
        ctx.next(f"Reading restorepoint.json (format {m.format}, NeuroomNet {m.software_version}, schema "
                 f"{m.config_schema})")
        verdict = import_verdict(m.restore_point_id, m.format, m.config_schema, rel, version=m.software_version)
        if verdict.verdict == REFUSE:
            raise ServerError(422, verdict.code or "refused", verdict.message or "", dict(verdict.details))
        if m.format == 1 and rel.writes_format >= 2:
            ctx.log("Converting restore point format 1 (computing digests)")
        paths = [f.path for f in m.files] if m.format == 2 else [CONFIG_NAME]
        ctx.next(f"Verifying {len(paths)} files ({'sha256' if m.format == 2 else 'md5 of config.sqlite'})")
        bad = []
        listed = []
        for path in paths:
            p = folder / path
            if not p.is_file():
                bad.append(path)
                continue
            sha, size, _ = _sha256_file(p)
            listed.append({"path": path, "size_bytes": size, "sha256": sha})
            if m.format == 2:
                entry = m.file(path)
                if entry is None or (entry.size_bytes, entry.sha256) != (size, sha):
                    bad.append(path)
            elif hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest() != m.md5:
                bad.append(path)
        if bad:
            raise ServerError(422, "integrity_failed", f"{len(bad)} files of local copy {name} do not match "
                              f"restorepoint.json: {', '.join(bad)}. Nothing was imported.",
                              {"files": [{"path": b} for b in bad]})
        snap = folder / CONFIG_NAME
        ctx.next(f"Checking config.sqlite (application id, schema {m.config_schema}, quick_check)")
        digest, sdigest = self._check_snapshot(folder, snap, m.config_schema)
        if m.format == 2 and (digest, sdigest) != (m.config_digest, m.summary_digest):
            raise ServerError(422, "integrity_failed", f"config.sqlite of local copy {name} does not match the "
                              "digests in restorepoint.json. Nothing was imported.")
        source = {"server_id": m.server_id if m.format == 2 else "unknown", "server_name": m.server_name,
                  "software_version": m.software_version, "config_schema": m.config_schema}
        converted = m.format == 1 and rel.writes_format >= 2  # 3.9.4 keeps its own format
        if converted:
            raw_manifest = manifest_format2(restore_point_id=m.restore_point_id, label=m.label, created=m.created,
                                            source=source, modules=self._counts_of(snap), files=listed,
                                            config_digest=digest, summary_digest=sdigest)
        rp_id = m.restore_point_id
        with self.lock:
            existing = self.conn.execute("SELECT config_digest FROM restore_point WHERE id = ?", (rp_id,)).fetchone()
        if existing and existing[0] == digest:
            ctx.log(f"Stored restore point {rp_id} (imported; already present)")
            return {"restore_point_id": rp_id, "already_present": True}
        if existing:
            n = 2
            while self._exists(f"{m.restore_point_id}-i{n}"):
                n += 1
            rp_id = f"{m.restore_point_id}-i{n}"
            ctx.log(f"Restore point {m.restore_point_id} exists with other content; storing as {rp_id}", "WARN")
        files = [(path, folder / path) for path in paths]
        size = sum(f["size_bytes"] for f in listed)
        self._store_rp(rp_id, m.label, m.created, self.utc_precise(), "imported", 2 if converted or m.format == 2 else 1,
                       source, m.config_schema, size,
                       digest, sdigest, raw_manifest, files, listed)
        apply = apply_verdict(rp_id, m.config_schema, rel, version=m.software_version)
        compatible = "yes" if apply.verdict != REFUSE else f"no: {apply.code}"
        ctx.next(f"Stored restore point {rp_id} (imported; compatible: {compatible})")
        return {"restore_point_id": rp_id, "already_present": False}

    def _exists(self, rp_id: str) -> bool:
        with self.lock:
            return self.conn.execute("SELECT 1 FROM restore_point WHERE id = ?", (rp_id,)).fetchone() is not None

    def _counts_of(self, snap: Path) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{snap}?mode=ro&immutable=1", uri=True)
        try:
            return self._module_counts(conn)
        finally:
            conn.close()

    def _check_snapshot(self, folder: Path, snap: Path, schema: int) -> tuple[str, str]:
        """Server-side header checks with the spec's codes, quick_check, digests."""
        sidecars = [s for s in WAL_SIDECARS if (folder / s).exists()]
        with open(snap, "rb") as f:
            head = f.read(HEADER_SIZE)
        try:
            h = parse_sqlite_header(head, name="config.sqlite")
        except BadInput as exc:
            raise ServerError(422, "snapshot_corrupt", f"{exc}. Nothing was imported.") from None
        if sidecars or h.write_version == 2 or h.read_version == 2:
            raise ServerError(422, "snapshot_not_self_contained", "config.sqlite is a copy of a live WAL-mode "
                              "database, not a self-contained snapshot. Nothing was imported.")
        if h.application_id != APP_ID_SNAPSHOT:
            raise ServerError(422, "not_a_snapshot", f"config.sqlite is not a NeuroomNet restore-point snapshot "
                              f"(application id 0x{h.application_id:08X}"
                              + (" is the live server database)." if h.application_id == APP_ID_LIVE else ")."))
        if h.user_version != schema:
            raise ServerError(422, "schema_mismatch", f"config.sqlite is schema {h.user_version}, restorepoint.json "
                              f"says {schema}. Nothing was imported.")
        try:
            conn = sqlite3.connect(f"file:{snap}?mode=ro&immutable=1", uri=True)
            try:
                if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise ServerError(422, "snapshot_corrupt", "config.sqlite fails quick_check. Nothing was "
                                      "imported.")
                return cfg.config_digest(conn), cfg.summary_digest(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise ServerError(422, "snapshot_corrupt", f"config.sqlite cannot be read ({exc}). Nothing was "
                              "imported.") from None

    # -- apply ------------------------------------------------------------------------------------------

    def apply(self, rp_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("confirm") is not True:
            raise ServerError(428, "confirmation_required", "Applying a restore point deletes the current "
                              "configuration and restarts NeuroomNet. Send confirm: true to proceed.")
        row = self._rp_row(rp_id)
        source = json.loads(row["source_json"])
        verdict = apply_verdict(rp_id, row["config_schema"], self.release, version=source.get("software_version"))
        warnings = []
        safety = body.get("safety_restore_point_id")
        if safety is not None:
            srow = self._rp_row(str(safety))
            changed = self.meta("config_changed_at") or ""
            if self.state != "maintenance" and srow["created_precise"] < changed:
                raise ServerError(409, "safety_restore_point_stale", f"Restore point {safety} was created before "
                                  f"the last configuration change ({changed[11:19]}). Create a new restore point of "
                                  "the current state first.")
        else:
            warnings.append("no_current_restore_point")
        if verdict.verdict == REFUSE:
            raise ServerError(422, verdict.code or "refused", verdict.message or "", dict(verdict.details))
        op = self._start("apply_restore_point", f'Apply restore point {rp_id} "{row["label"]}"',
                         {"restore_point_id": rp_id, "safety_restore_point_id": safety}, 12,
                         lambda ctx: self._apply(ctx, row, verdict.verdict, list(verdict.path), safety is None))
        down = STOPPING_S + DOWN_S + STARTING_S
        return {"operation": {"id": op["id"], "kind": op["kind"], "state": op["state"]},
                "verdict": verdict.verdict, "migration_path": list(verdict.path), "warnings": warnings,
                "expected_downtime_s": max(1, round(self.clock.real(down))) if self.clock.realtime else 1}

    def _apply(self, ctx: OpContext, row: dict[str, Any], verdict: str, path: list[int], warn: bool
               ) -> dict[str, Any]:
        rel = self.release
        rp_id = row["id"]
        source = json.loads(row["source_json"])
        ctx.next(f'Applying restore point {rp_id} "{row["label"]}" (created {row["created"]}, NeuroomNet '
                 f'{source.get("software_version")}, schema {row["config_schema"]})')
        ctx.log("Verdict: " + ("as is" if verdict == "as_is" else "migrate schema " + " -> ".join(map(str, path))))
        if warn:
            ctx.log(f"No restore point of the current state exists (last configuration change "
                    f"{self.meta('config_changed_at')})", "WARN")
        files = self._rp_files(rp_id)
        ctx.next(f"Verifying restore point files ({len(files)} files)")
        work = self.state_dir / f".apply-{ctx.op_id}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            bad = [p for p, _, sha in files if self._write_rp_file(rp_id, p, work / p) != sha]
            if bad:
                raise ServerError(422, "integrity_failed", f"Restore point {rp_id} is damaged: {', '.join(bad)}. "
                                  "Nothing was changed.")
            ctx.next("Stopping modules: Setup, Schedules, Shows")
            ctx.next("Deleting current configuration")  # the point of no return
            crash = self.fault("crash_after_point_of_no_return")
            with self._tx() as c:
                for table in cfg.present_tables(c):
                    c.execute(f'DROP TABLE "{table}"')
                c.execute("DROP INDEX IF EXISTS component_by_module")
                if crash is not None:
                    c.execute("INSERT OR REPLACE INTO server_meta VALUES ('state', 'maintenance')")
            if crash is not None:
                ctx.log("The server stopped unexpectedly while writing the configuration", "ERROR")
                self._restart(ctx)
                raise ServerError(500, "apply_incomplete", APPLY_INCOMPLETE)
            ctx.next("Writing configuration from restore point")
            with self.lock:
                # ATTACH cannot run inside a transaction; the lock keeps every other writer out meanwhile.
                self.conn.execute("ATTACH DATABASE ? AS rp", (str(work / CONFIG_NAME),))
                try:
                    with self._tx() as c:
                        ddl = c.execute("SELECT name, sql FROM rp.sqlite_master WHERE type = 'table'").fetchall()
                        for table, sql in ddl:
                            if table in cfg.CONFIG_TABLES_ALL:
                                c.execute(sql)  # CREATE TABLE "x" (...) lands in main: the restore point's layout
                                c.execute(f'INSERT INTO main."{table}" SELECT * FROM rp."{table}"')
                        c.execute(f"PRAGMA main.user_version = {row['config_schema']}")
                finally:
                    self.conn.execute("DETACH DATABASE rp")
            with self._tx() as c:
                if verdict == "migrate":
                    migrate(c, row["config_schema"], rel.config_schema, time_zone=self.meta("time_zone") or "UTC",
                            log=ctx.log)
                if rel.config_schema >= 22:
                    c.execute("CREATE INDEX IF NOT EXISTS component_by_module ON component(module, name)")
                c.execute("INSERT OR REPLACE INTO server_meta VALUES ('state', 'running')")
                self._touch_config(c)
            assets = [p for p, _, _ in files if p != CONFIG_NAME]
            ctx.next(f"Restoring assets ({len(assets)} files)")
            shutil.rmtree(self.assets_dir, ignore_errors=True)
            self.assets_dir.mkdir()
            for p in assets:
                dest = self.state_dir / p
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(work / p), dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._ensure_admin_after_apply(ctx)
        self._restart(ctx)
        ctx.next(f"NeuroomNet server started (software {rel.version}, schema {self.schema()})")
        ctx.next("Verifying configuration summary digest")
        now = self.current_summary()
        match = now["summary_digest"] == row["summary_digest"]
        if verdict == "as_is":
            match = match and now["config_digest"] == row["config_digest"]
        if not match:
            raise ServerError(500, "apply_incomplete", "The configuration after the apply does not match the "
                              "restore point's digest.")
        ctx.next("Restore point applied")
        return {"restore_point_id": rp_id, "verdict": verdict, "migration_path": path,
                "config_digest": now["config_digest"], "summary_digest": now["summary_digest"],
                "summary_match": True}

    def _ensure_admin_after_apply(self, ctx: OpContext) -> None:
        # The restored users are the restore point's (N-F2): the harness account may be missing (NN-F14).
        with self.lock:
            row = self.conn.execute("SELECT 1 FROM app_user WHERE name = ?", (self.admin,)).fetchone()
        if row is None:
            ctx.log(f"User {self.admin} does not exist in the restored configuration", "WARN")

    def _restart(self, ctx: OpContext) -> None:
        ctx.next("Restarting NeuroomNet server")
        self.restart_hook()


STOPPING_S, DOWN_S, STARTING_S = 3.0, 15.0, 10.0  # §2.7 realistic phases (device seconds)
APPLY_INCOMPLETE = ("Applying the restore point stopped after the current configuration was deleted. NeuroomNet is "
                    "in maintenance mode. Apply a restore point (for example the one created before this action) "
                    "to continue.")


__all__ = ["NeuroomNetServer", "ServerError", "slug"]
