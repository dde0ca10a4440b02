"""NeuroomNet layouts: the SQLite file header (§4.1), the WAL headers (§4.2) and ``restorepoint.json`` (§3.2).

Pure: bytes and text in, parsed values or BadInput out. The header check runs on the ``config.sqlite`` of a
ZIP *before* anything is sent to a server, so a wrong magic, a truncated file, a live database passed off as
a snapshot or a WAL-mode copy is refused with one line that names the problem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from construct import Bytes, Const, ConstructError, Int8ub, Int16ub, Int32ub, Struct

from harness import ziparchive
from harness.errors import BadInput

# --- SQLite database header (sqlite.org "Database File Format" §1.3) ---------------------------------------

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
APP_ID_SNAPSHOT = 0x4E524E43  # "NRNC": a restore-point snapshot (config.sqlite)
APP_ID_LIVE = 0x4E524E53  # "NRNS": the live server database (neuroomnet.db)

SQLITE_HEADER = Struct(
    "magic" / Const(SQLITE_MAGIC),
    "page_size_raw" / Int16ub,  # 1 means 65536
    "write_version" / Int8ub,  # 1 legacy (rollback journal), 2 WAL
    "read_version" / Int8ub,
    "reserved_space" / Int8ub,
    "max_payload_fraction" / Int8ub,  # must be 64
    "min_payload_fraction" / Int8ub,  # must be 32
    "leaf_payload_fraction" / Int8ub,  # must be 32
    "change_counter" / Int32ub,
    "size_in_pages" / Int32ub,
    "freelist_trunk" / Int32ub,
    "freelist_count" / Int32ub,
    "schema_cookie" / Int32ub,
    "schema_format" / Int32ub,
    "default_cache_size" / Int32ub,
    "largest_root_page" / Int32ub,
    "text_encoding" / Int32ub,  # 1 UTF-8, 2 UTF-16le, 3 UTF-16be
    "user_version" / Int32ub,  # NeuroomNet: the configuration schema
    "incremental_vacuum" / Int32ub,
    "application_id" / Int32ub,
    "reserved" / Bytes(20),  # "reserved for expansion", zero
    "version_valid_for" / Int32ub,
    "sqlite_version_number" / Int32ub,
)
assert SQLITE_HEADER.sizeof() == HEADER_SIZE

# --- WAL (sqlite.org §4): to detect, and to build fixtures for, a copy of a live WAL-mode database ----------

WAL_MAGICS = (0x377F0682, 0x377F0683)
WAL_HEADER = Struct(
    "magic" / Int32ub,
    "format_version" / Int32ub,  # 3007000
    "page_size" / Int32ub,
    "checkpoint_sequence" / Int32ub,
    "salt1" / Int32ub,
    "salt2" / Int32ub,
    "checksum1" / Int32ub,
    "checksum2" / Int32ub,
)
WAL_FRAME_HEADER = Struct(
    "page_number" / Int32ub,
    "db_size_after_commit" / Int32ub,  # non-zero only in a commit frame
    "salt1" / Int32ub,
    "salt2" / Int32ub,
    "checksum1" / Int32ub,
    "checksum2" / Int32ub,
)
WAL_SIDECARS = ("config.sqlite-wal", "config.sqlite-shm", "config.sqlite-journal")

@dataclass(frozen=True)
class SqliteHeader:
    page_size: int
    write_version: int
    read_version: int
    reserved_space: int
    change_counter: int
    size_in_pages: int
    freelist_count: int
    schema_format: int
    text_encoding: int
    user_version: int
    application_id: int
    version_valid_for: int
    sqlite_version_number: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sqlite_version(self) -> str:
        n = self.sqlite_version_number
        return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


def parse_sqlite_header(data: bytes, *, name: str = "database") -> SqliteHeader:
    """Parse the first 100 bytes; BadInput for a short file or a wrong magic."""
    if len(data) < HEADER_SIZE:
        raise BadInput(f"{name} is truncated: {len(data)} bytes, shorter than the 100-byte SQLite header")
    if data[:16] != SQLITE_MAGIC:
        raise BadInput(f"{name} is not an SQLite database (magic {data[:16]!r})")
    try:
        c = SQLITE_HEADER.parse(data[:HEADER_SIZE])
    except ConstructError as exc:  # pragma: no cover - the magic check above already covers Const
        raise BadInput(f"{name}: unreadable SQLite header ({exc})") from exc
    page = 65536 if c.page_size_raw == 1 else c.page_size_raw
    return SqliteHeader(
        page_size=page, write_version=c.write_version, read_version=c.read_version,
        reserved_space=c.reserved_space, change_counter=c.change_counter, size_in_pages=c.size_in_pages,
        freelist_count=c.freelist_count, schema_format=c.schema_format, text_encoding=c.text_encoding,
        user_version=c.user_version, application_id=c.application_id,
        version_valid_for=c.version_valid_for, sqlite_version_number=c.sqlite_version_number,
        raw={k: v for k, v in c.items() if not k.startswith("_")})


def build_sqlite_header(**values: Any) -> bytes:
    """A 100-byte header from field values (defaults: a fresh, VACUUMed NeuroomNet snapshot of 1 page)."""
    base: dict[str, Any] = dict(
        page_size_raw=4096, write_version=1, read_version=1, reserved_space=0, max_payload_fraction=64,
        min_payload_fraction=32, leaf_payload_fraction=32, change_counter=1, size_in_pages=1,
        freelist_trunk=0, freelist_count=0, schema_cookie=1, schema_format=4, default_cache_size=0,
        largest_root_page=0, text_encoding=1, user_version=20, incremental_vacuum=0,
        application_id=APP_ID_SNAPSHOT, reserved=bytes(20), version_valid_for=1,
        sqlite_version_number=3040001)
    base.update(values)
    return SQLITE_HEADER.build(base)


def _app_id_text(app_id: int) -> str:
    text = app_id.to_bytes(4, "big")
    readable = text.decode("ascii") if all(0x20 <= b < 0x7F for b in text) else "?"
    return f"0x{app_id:08X} ({readable})"


def check_snapshot_header(data: bytes, file_size: int, *, expected_schema: int | None = None,
                          name: str = "config.sqlite") -> SqliteHeader:
    """Every §4.1 importer check on a snapshot's header; BadInput naming the first problem found.

    ``data`` is at least the first 100 bytes, ``file_size`` the whole file's length.
    """
    if file_size < HEADER_SIZE:
        raise BadInput(f"{name} is truncated: {file_size} bytes, shorter than the 100-byte SQLite header")
    h = parse_sqlite_header(data, name=name)
    if h.page_size < 512 or h.page_size > 65536 or h.page_size & (h.page_size - 1):
        raise BadInput(f"{name}: page size {h.page_size} is not a power of two from 512 to 65536 "
                       f"(corrupted header)")
    if h.write_version == 2 or h.read_version == 2:
        raise BadInput(f"{name} is a WAL-mode database (snapshot_not_self_contained): a restore-point "
                       f"snapshot must use a rollback journal and carry no -wal file")
    if h.write_version != 1 or h.read_version != 1:
        raise BadInput(f"{name}: file format versions {h.write_version}/{h.read_version} are unknown "
                       f"(corrupted header)")
    fractions = (h.raw["max_payload_fraction"], h.raw["min_payload_fraction"], h.raw["leaf_payload_fraction"])
    if fractions != (64, 32, 32):
        raise BadInput(f"{name}: payload fractions {fractions} must be (64, 32, 32) (corrupted header)")
    if h.reserved_space != 0:
        raise BadInput(f"{name}: {h.reserved_space} reserved bytes per page; a snapshot has none")
    if any(h.raw["reserved"]):
        raise BadInput(f"{name}: the header's reserved bytes 72..91 are not zero (corrupted header)")
    if not 1 <= h.schema_format <= 4:
        raise BadInput(f"{name}: schema format {h.schema_format} is not 1..4 (corrupted header)")
    if h.text_encoding != 1:
        raise BadInput(f"{name}: text encoding {h.text_encoding} is not UTF-8")
    if file_size % h.page_size:
        raise BadInput(f"{name}: {file_size} bytes is not a whole number of {h.page_size}-byte pages "
                       f"(truncated?)")
    if h.version_valid_for == h.change_counter and h.size_in_pages * h.page_size != file_size:
        raise BadInput(f"{name}: the header says {h.size_in_pages} pages of {h.page_size} bytes "
                       f"({h.size_in_pages * h.page_size} bytes) but the file has {file_size} (truncated?)")
    if h.application_id == APP_ID_LIVE:
        raise BadInput(f"{name} is not a NeuroomNet restore-point snapshot (application id "
                       f"{_app_id_text(h.application_id)} is the live server database)")
    if h.application_id != APP_ID_SNAPSHOT:
        raise BadInput(f"{name} is not a NeuroomNet restore-point snapshot (application id "
                       f"{_app_id_text(h.application_id)}, expected {_app_id_text(APP_ID_SNAPSHOT)})")
    if expected_schema is not None and h.user_version != expected_schema:
        raise BadInput(f"{name}: configuration schema {h.user_version} in the header but "
                       f"{expected_schema} in restorepoint.json (schema_mismatch)")
    return h


def parse_wal_header(data: bytes) -> dict[str, Any]:
    if len(data) < WAL_HEADER.sizeof():
        raise BadInput("WAL file is shorter than its 32-byte header")
    c = WAL_HEADER.parse(data[:32])
    if c.magic not in WAL_MAGICS:
        raise BadInput(f"not a SQLite WAL file (magic 0x{c.magic:08X})")
    return {k: v for k, v in c.items() if not k.startswith("_")}


# --- restorepoint.json (§3.2) ------------------------------------------------------------------------------

PRODUCT = "NeuroomNet"
MANIFEST_NAME = "restorepoint.json"
CONFIG_NAME = "config.sqlite"
MAX_MANIFEST_BYTES = 1 << 20
EXCLUDED = ("software", "restore_points", "operations", "local_copies", "licence", "tls", "network_bindings",
            "server_identity", "sessions", "media_library")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_RP_ID = re.compile(r"^rp-\d{8}-\d{6}-[0-9a-f]{4}(-i\d+)?$")


@dataclass(frozen=True)
class FileEntry:
    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """``restorepoint.json`` of either format, in the format-2 vocabulary.

    Format 1 (3.9.4) has no files list, no digests and no source server; it is read into the same shape
    (``files`` with the config.sqlite entry and its md5, ``server_id`` from the model's extra key).
    """

    format: int
    restore_point_id: str
    label: str
    created: str
    server_id: str
    server_name: str
    software_version: str
    config_schema: int
    files: tuple[FileEntry, ...]
    config_digest: str | None
    summary_digest: str | None
    modules: tuple[dict[str, Any], ...] = ()
    md5: str | None = None  # format 1: the md5 of config.sqlite
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)


def _req(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise BadInput(f"{where} lacks {key!r} (manifest_invalid: /{key})")
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise BadInput(f"{where}: /{key} has the wrong type ({type(value).__name__}; manifest_invalid)")
    return value


def check_member_path(path: str) -> str | None:
    """Why ``path`` (a manifest entry or ZIP member name) is unsafe, or None if it is a plain relative path."""
    return ziparchive.unsafe_name(path)


def parse_manifest(data: bytes, *, where: str = MANIFEST_NAME) -> Manifest:
    """Parse and validate ``restorepoint.json`` (validation steps 1 and 2 of §3.2)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BadInput(f"{where} is {len(data)} bytes; a restore-point manifest is far smaller")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{where} is not valid JSON (manifest_invalid: {exc})") from exc
    if not isinstance(doc, dict):
        raise BadInput(f"{where} is not a JSON object (manifest_invalid)")
    fmt = _req(doc, "format", int, where)
    if fmt == 1:
        return _parse_format1(doc, where)
    if fmt != 2:
        raise BadInput(f"{where}: restore point format {fmt} is unknown (formats 1 and 2 exist)")
    product = _req(doc, "product", str, where)
    if product != PRODUCT:
        raise BadInput(f"{where}: product {product!r} is not {PRODUCT}; this is not a NeuroomNet restore point")
    rp_id = _req(doc, "restore_point_id", str, where)
    if not _RP_ID.match(rp_id):
        raise BadInput(f"{where}: restore point id {rp_id!r} is malformed (manifest_invalid: /restore_point_id)")
    source = _req(doc, "source", dict, where)
    src_where = f"{where} /source"
    files_raw = _req(doc, "files", list, where)
    if not files_raw:
        raise BadInput(f"{where}: the files list is empty (manifest_invalid: /files)")
    files = []
    seen: set[str] = set()
    for i, item in enumerate(files_raw):
        if not isinstance(item, dict):
            raise BadInput(f"{where}: /files/{i} is not an object (manifest_invalid)")
        fwhere = f"{where} /files/{i}"
        path = _req(item, "path", str, fwhere)
        problem = check_member_path(path)
        if problem:
            raise BadInput(f"{where}: file {path!r} has {problem} (unsafe_path)")
        if path in seen:
            raise BadInput(f"{where}: file {path!r} is listed twice (manifest_invalid)")
        seen.add(path)
        size = _req(item, "size_bytes", int, fwhere)
        sha = _req(item, "sha256", str, fwhere)
        if size < 0 or not _SHA256.match(sha):
            raise BadInput(f"{where}: /files/{i} has a bad size or sha256 (manifest_invalid)")
        if path != CONFIG_NAME and not path.startswith("assets/"):
            raise BadInput(f"{where}: file {path!r} is neither config.sqlite nor under assets/ (layout_invalid)")
        files.append(FileEntry(path, size, sha))
    if CONFIG_NAME not in seen:
        raise BadInput(f"{where}: the files list has no config.sqlite (manifest_invalid: /files)")
    digests = {}
    for key in ("config_digest", "summary_digest"):
        value = _req(doc, key, str, where)
        if not _SHA256.match(value):
            raise BadInput(f"{where}: /{key} is not a sha256 (manifest_invalid)")
        digests[key] = value
    modules = doc.get("modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise BadInput(f"{where}: /modules is not a list of objects (manifest_invalid)")
    return Manifest(
        format=2, restore_point_id=rp_id, label=str(doc.get("label") or ""),
        created=_req(doc, "created", str, where),
        server_id=_req(source, "server_id", str, src_where),
        server_name=str(source.get("server_name") or ""),
        software_version=_req(source, "software_version", str, src_where),
        config_schema=_req(source, "config_schema", int, src_where),
        files=tuple(files), config_digest=digests["config_digest"], summary_digest=digests["summary_digest"],
        modules=tuple(modules), raw=doc)


def _parse_format1(doc: dict[str, Any], where: str) -> Manifest:
    rp_id = _req(doc, "id", str, where)
    if not _RP_ID.match(rp_id):
        raise BadInput(f"{where}: restore point id {rp_id!r} is malformed (manifest_invalid: /id)")
    md5 = _req(doc, "md5", str, where)
    if not _MD5.match(md5):
        raise BadInput(f"{where}: /md5 is not an md5 (manifest_invalid)")
    return Manifest(
        format=1, restore_point_id=rp_id, label=str(doc.get("label") or ""),
        created=_req(doc, "created", str, where),
        # [modelled deviation] 3.9.4 also writes server_id so a backup can be filed under its server;
        # a 4.x import ignores it and records "unknown", as §3.2 says.
        server_id=str(doc.get("server_id") or "unknown"), server_name="",
        software_version=_req(doc, "version", str, where), config_schema=_req(doc, "schema", int, where),
        files=(), config_digest=None, summary_digest=None, md5=md5, raw=doc)


def manifest_format2(*, restore_point_id: str, label: str, created: str, source: dict[str, Any],
                     modules: list[dict[str, Any]], files: list[dict[str, Any]], config_digest: str,
                     summary_digest: str) -> bytes:
    """The bytes of a format-2 ``restorepoint.json`` as 4.x/5.x write them (2-space indent, key order)."""
    doc = {"format": 2, "product": PRODUCT, "restore_point_id": restore_point_id, "label": label,
           "created": created, "source": source, "modules": modules, "files": files,
           "config_digest": config_digest, "summary_digest": summary_digest, "excluded": list(EXCLUDED)}
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def manifest_format1(*, rp_id: str, label: str, created: str, version: str, schema: int, md5: str,
                     server_id: str) -> bytes:
    doc = {"format": 1, "id": rp_id, "label": label, "created": created, "version": version, "schema": schema,
           "md5": md5, "server_id": server_id}
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
