"""MobiusFlow backup content: the manifest ``backup.json``, the persisted-values file ``values/<SID>.mpv``
(construct layouts, versions 1 and 2), the configuration documents, and the two digests. Pure: no I/O.

Spec: the target spec shared/targets/mobiusflow.md §3 (artifact) and §4.1 (MPV). The ZIP container is in archive.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from construct import (
    Array,
    Bytes,
    Const,
    ConstructError,
    GreedyRange,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PaddedString,
    Padding,
    Struct,
    Switch,
    Terminated,
    this,
)

PRODUCT = "MobiusFlow"
FORMATS = ("1.0", "1.1", "3.0", "3.1")
KINDS = ("full", "config")
MANIFEST_NAME = "backup.json"
EXCLUDED = ["licence", "hubId", "psks", "users", "network", "tls", "historian", "logs", "software"]

_HUB = re.compile(r"^[0-9A-Fa-f]{6}$")
_SID = re.compile(r"^[0-9A-F]{3}$")
_PID = re.compile(r"^[0-9A-F]{4}$")
_RID = re.compile(r"^[0-9A-F]{2}$")


class SchemaError(ValueError):
    """Content that does not follow the layout. ``code`` is the node's error code (§6)."""

    def __init__(self, message: str, code: str = "manifest_invalid") -> None:
        super().__init__(message)
        self.code = code


def normalise_hub_id(value: Any) -> str:
    """Six hex digits, uppercase (M-F10). ValueError otherwise."""
    if not isinstance(value, str) or not _HUB.match(value):
        raise ValueError(f"hub ID must be six hexadecimal characters, for example 000001 (got {value!r})")
    return value.upper()


def is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_HUB.match(value))


# -- canonical JSON and digests (§3.4) ---------------------------------------------------------------------


def canonical(obj: Any) -> str:
    """Sorted keys, compact separators, UTF-8 (not ASCII-escaped)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(obj: Any, hub_id: str) -> str:
    text = canonical(obj)
    if hub_id:
        text = text.replace(hub_id.upper(), "{HID}")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rewrite_hub(obj: Any, old: str, new: str) -> Any:
    """Every occurrence of hub ID ``old`` replaced by ``new`` (services, objects, flow topics)."""
    if old.upper() == new.upper():
        return obj
    return json.loads(canonical(obj).replace(old.upper(), new.upper()))


# -- MPV: persisted values (§4.1) ---------------------------------------------------------------------------

MPV_MAGIC = b"MFPV"
MPV_HEADER_SIZE = 32
FLAG_FLUSHED = 0x01
FLAG_PERSISTENCE = 0x02
VT_NULL, VT_BOOL, VT_INT, VT_FLOAT, VT_STR, VT_JSON = range(6)
MPV_LAYOUT_OF_FORMAT = {"3.0": 1, "3.1": 2}

MpvHeader = Struct(
    "magic" / Const(MPV_MAGIC),
    "layout_version" / Int16ul,
    "header_size" / Const(MPV_HEADER_SIZE, Int16ul),
    "hub_id" / PaddedString(6, "ascii"),
    "sid" / PaddedString(3, "ascii"),
    "flags" / Int8ul,
    Padding(2),
    "record_count" / Int32ul,
    "persisted_at_unix_ms" / Int64ul,
)

MpvSlot = Struct(
    "slot_type" / Int8ul,
    "slot_len" / Int16ul,
    "value" / Bytes(this.slot_len),
)

MpvRecordV1 = Struct(
    "pid" / Int16ul,
    "ins" / Int16ul,
    "rid" / Int8ul,
    "value_type" / Int8ul,
    "value_len" / Int16ul,
    "value" / Bytes(this.value_len),
)

MpvRecordV2 = Struct(
    "pid" / Int16ul,
    "ins" / Int16ul,
    "rid" / Int8ul,
    "value_type" / Int8ul,
    "value_len" / Int16ul,
    "updated_unix_ms" / Int64ul,
    "priority_mask" / Int16ul,
    "value" / Bytes(this.value_len),
    "slots" / Array(lambda ctx: bin(ctx.priority_mask).count("1"), MpvSlot),
)

# Everything before the CRC trailer. The records are read greedily and counted against the header.
MpvBody = Struct(
    "header" / MpvHeader,
    "records" / Switch(this.header.layout_version, {1: GreedyRange(MpvRecordV1), 2: GreedyRange(MpvRecordV2)}),
    Terminated,
)


@dataclass
class MpvRecord:
    pid: int
    ins: int
    rid: int
    value: Any
    updated_unix_ms: int | None = None  # layout 2 only
    slots: dict[int, Any] = field(default_factory=dict)  # priority (1..16) -> value; layout 2 only

    @property
    def key(self) -> tuple[int, int, int]:
        return self.pid, self.ins, self.rid

    @property
    def uri(self) -> str:
        """``PID/INS/RID`` in uppercase hex, as in resource URIs (M-F10)."""
        return f"{self.pid:04X}/{self.ins:04X}/{self.rid:02X}"


@dataclass
class MpvFile:
    layout_version: int
    hub_id: str
    sid: str
    flags: int
    persisted_at_unix_ms: int
    records: list[MpvRecord]


def encode_value(value: Any) -> tuple[int, bytes]:
    if value is None:
        return VT_NULL, b""
    if isinstance(value, bool):
        return VT_BOOL, bytes([1 if value else 0])
    if isinstance(value, int):
        return VT_INT, struct.pack("<q", value)
    if isinstance(value, float):
        return VT_FLOAT, struct.pack("<d", value)
    if isinstance(value, str):
        return VT_STR, value.encode("utf-8")
    return VT_JSON, canonical(value).encode("utf-8")


def decode_value(value_type: int, raw: bytes) -> Any:
    try:
        if value_type == VT_NULL:
            if raw:
                raise SchemaError("a null value has bytes", "values_corrupt")
            return None
        if value_type == VT_BOOL:
            if len(raw) != 1 or raw[0] > 1:
                raise SchemaError("a bool value is not one byte 0/1", "values_corrupt")
            return raw[0] == 1
        if value_type == VT_INT:
            return struct.unpack("<q", raw)[0]
        if value_type == VT_FLOAT:
            return struct.unpack("<d", raw)[0]
        if value_type == VT_STR:
            return raw.decode("utf-8")
        if value_type == VT_JSON:
            return json.loads(raw.decode("utf-8"))
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(f"a value of type {value_type} does not decode ({exc})", "values_corrupt") from None
    raise SchemaError(f"unknown value type {value_type}", "values_corrupt")


def build_mpv(mpv: MpvFile) -> bytes:
    records = sorted(mpv.records, key=lambda r: r.key)
    if len({r.key for r in records}) != len(records):
        raise ValueError("duplicate (pid, ins, rid) in persisted values")
    built = []
    for r in records:
        vt, raw = encode_value(r.value)
        base = {"pid": r.pid, "ins": r.ins, "rid": r.rid, "value_type": vt, "value_len": len(raw), "value": raw}
        if mpv.layout_version == 1:
            built.append(base)
            continue
        mask = 0
        slots = []
        for priority in sorted(r.slots):
            if not 1 <= priority <= 16:
                raise ValueError(f"priority {priority} is outside 1..16")
            mask |= 1 << (priority - 1)
            st, sraw = encode_value(r.slots[priority])
            slots.append({"slot_type": st, "slot_len": len(sraw), "value": sraw})
        built.append({**base, "updated_unix_ms": mpv.persisted_at_unix_ms if r.updated_unix_ms is None
                      else r.updated_unix_ms,
                      "priority_mask": mask, "slots": slots})
    body = MpvBody.build({
        "header": {"layout_version": mpv.layout_version, "hub_id": mpv.hub_id, "sid": mpv.sid,
                   "flags": mpv.flags, "record_count": len(built),
                   "persisted_at_unix_ms": mpv.persisted_at_unix_ms},
        "records": built,
    })
    return body + struct.pack("<I", zlib.crc32(body))


def parse_mpv(data: bytes, where: str = "values") -> MpvFile:
    """Parse and check a whole MPV file: CRC, layout, record count, order. SchemaError(values_corrupt)."""
    if len(data) < MPV_HEADER_SIZE + 4:
        raise SchemaError(f"{where} is damaged (too short)", "values_corrupt")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    if zlib.crc32(body) != crc:
        raise SchemaError(f"{where} is damaged (CRC mismatch)", "values_corrupt")
    try:
        parsed = MpvBody.parse(body)
    except ConstructError as exc:
        raise SchemaError(f"{where} is damaged ({_short(exc)})", "values_corrupt") from None
    header = parsed.header
    if header.layout_version not in (1, 2):
        raise SchemaError(f"{where}: unknown layout version {header.layout_version}", "values_corrupt")
    if header.record_count != len(parsed.records):
        raise SchemaError(f"{where}: header says {header.record_count} records, found {len(parsed.records)}",
                          "values_corrupt")
    records = []
    for raw in parsed.records:
        slots: dict[int, Any] = {}
        if header.layout_version == 2:
            bits = [b + 1 for b in range(16) if raw.priority_mask >> b & 1]
            for priority, slot in zip(bits, raw.slots, strict=True):
                slots[priority] = decode_value(slot.slot_type, slot.value)
        records.append(MpvRecord(raw.pid, raw.ins, raw.rid, decode_value(raw.value_type, raw.value),
                                 raw.updated_unix_ms if header.layout_version == 2 else None, slots))
    keys = [r.key for r in records]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise SchemaError(f"{where}: records are not sorted and unique", "values_corrupt")
    return MpvFile(header.layout_version, header.hub_id, header.sid, header.flags,
                   header.persisted_at_unix_ms, records)


def mpv_v1_to_v2(mpv: MpvFile) -> MpvFile:
    """The 3.0 -> 3.1 migration: ``updated`` = the header's persisted time, no priority slots."""
    records = [MpvRecord(r.pid, r.ins, r.rid, r.value, mpv.persisted_at_unix_ms, {}) for r in mpv.records]
    return MpvFile(2, mpv.hub_id, mpv.sid, mpv.flags, mpv.persisted_at_unix_ms, records)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


# -- the manifest (§3.4) -----------------------------------------------------------------------------------


@dataclass
class FileEntry:
    path: str
    size_bytes: int
    sha256: str


@dataclass
class Manifest:
    format: str
    name: str
    created: str  # RFC 3339 UTC, "2026-01-09T14:03:27Z"
    hub_id: str  # the source node's hub ID
    version: str  # the source node's MobiusFlow version
    kind: str = "config"
    generation: int = 1
    node_name: str = ""
    file_name: str = ""
    contents: dict[str, Any] = field(default_factory=dict)
    files: list[FileEntry] | None = None  # None in format 1.0: no hashes
    config_digest: str | None = None
    summary_digest: str | None = None
    product: str = PRODUCT

    @property
    def created_at(self) -> dt.datetime:
        return dt.datetime.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)

    def to_json(self) -> dict[str, Any]:
        if self.format == "1.0":
            return {"product": self.product, "format": self.format, "name": self.name, "created": self.created,
                    "hubId": self.hub_id, "version": self.version}
        doc: dict[str, Any] = {
            "product": self.product, "format": self.format, "kind": self.kind, "name": self.name,
            "fileName": self.file_name, "created": self.created,
            "source": {"hubId": self.hub_id, "version": self.version, "generation": self.generation,
                       "nodeName": self.node_name},
            "contents": self.contents,
            "files": [{"path": f.path, "sizeBytes": f.size_bytes, "sha256": f.sha256} for f in self.files or []],
            "configDigest": self.config_digest,
        }
        if self.summary_digest is not None:
            doc["summaryDigest"] = self.summary_digest
        doc["excluded"] = list(EXCLUDED)
        return doc


def _need(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], pointer: str = "") -> Any:
    if key not in doc:
        raise SchemaError(f"backup.json is invalid: {pointer}/{key} is missing.")
    value = doc[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)) \
            or not isinstance(value, kind):
        raise SchemaError(f"backup.json is invalid: {pointer}/{key} has the wrong type.")
    return value


def parse_manifest(raw: bytes) -> Manifest:
    """``backup.json`` bytes -> Manifest. SchemaError with the node's codes: manifest_invalid,
    not_a_mobiusflow_backup."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SchemaError("backup.json is invalid: / is not JSON.") from None
    if not isinstance(doc, dict):
        raise SchemaError("backup.json is invalid: / is not an object.")
    product = doc.get("product")
    if product != PRODUCT:
        raise SchemaError(f"this is not a MobiusFlow backup (product {product!r})", "not_a_mobiusflow_backup")
    fmt = _need(doc, "format", str)
    if fmt not in FORMATS:
        raise SchemaError(f"backup.json is invalid: /format {fmt!r} is not a known backup format "
                          f"({', '.join(FORMATS)}).")
    name = _need(doc, "name", str)
    created = _need(doc, "created", str)
    try:
        dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise SchemaError("backup.json is invalid: /created is not an RFC 3339 UTC time.") from None
    if fmt == "1.0":
        hub = _need(doc, "hubId", str)
        if not is_hub_id(hub):
            raise SchemaError("backup.json is invalid: /hubId is not a hub ID.")
        return Manifest(fmt, name, created, hub.upper(), _need(doc, "version", str))
    kind = _need(doc, "kind", str)
    if kind not in KINDS or (fmt == "1.1" and kind != "config"):
        raise SchemaError(f"backup.json is invalid: /kind {kind!r} is not allowed in format {fmt}.")
    source = _need(doc, "source", dict)
    hub = _need(source, "hubId", str, "/source")
    if not is_hub_id(hub):
        raise SchemaError("backup.json is invalid: /source/hubId is not a hub ID.")
    version = _need(source, "version", str, "/source")
    generation = source.get("generation", 1 if fmt.startswith("1.") else 3)
    if generation != (1 if fmt.startswith("1.") else 3):
        raise SchemaError(f"backup.json is invalid: /source/generation {generation!r} does not match "
                          f"format {fmt}.")
    files_raw = _need(doc, "files", list)
    files = []
    for i, entry in enumerate(files_raw):
        if not isinstance(entry, dict):
            raise SchemaError(f"backup.json is invalid: /files/{i} is not an object.")
        path = _need(entry, "path", str, f"/files/{i}")
        size = _need(entry, "sizeBytes", int, f"/files/{i}")
        sha = _need(entry, "sha256", str, f"/files/{i}")
        if not re.fullmatch(r"[0-9a-f]{64}", sha) or size < 0:
            raise SchemaError(f"backup.json is invalid: /files/{i} has a bad size or sha256.")
        files.append(FileEntry(path, size, sha))
    digest = _need(doc, "configDigest", str)
    summary = doc.get("summaryDigest")
    contents = doc.get("contents", {})
    if not isinstance(contents, dict):
        raise SchemaError("backup.json is invalid: /contents is not an object.")
    return Manifest(fmt, name, created, hub.upper(), version, kind=kind, generation=generation,
                    node_name=str(source.get("nodeName", "")), file_name=str(doc.get("fileName", "")),
                    contents=contents, files=files, config_digest=digest,
                    summary_digest=summary if isinstance(summary, str) else None)


# -- the configuration (§3.2) ------------------------------------------------------------------------------


@dataclass
class Content:
    """A node's configuration (and persisted values), as in a backup or on the node's /data."""

    node: dict[str, Any]
    services: list[dict[str, Any]]
    objects: dict[str, list[dict[str, Any]]]  # SID -> objects
    flows: list[dict[str, Any]] | None = None  # None before format 1.1
    profiles: dict[str, dict[str, Any]] | None = None  # PID -> profile (3.x)
    profile_files: dict[str, bytes] = field(default_factory=dict)  # "profiles/object/<PID>/codec.js" -> bytes
    tags: list[dict[str, Any]] | None = None  # 3.x
    values: dict[str, MpvFile] = field(default_factory=dict)  # SID -> persisted values (3.x full)

    def config_view(self) -> dict[str, Any]:
        """What ``configDigest`` covers: node, services, objects, profiles (with code hashes), tags, flows."""
        return {
            "node": self.node,
            "services": sorted(self.services, key=lambda s: s["sid"]),
            "objects": {sid: sorted(objs, key=lambda o: (o["pid"], o["ins"])) for sid, objs in self.objects.items()},
            "profiles": self.profiles or {},
            "profileFiles": {p: hashlib.sha256(b).hexdigest() for p, b in sorted(self.profile_files.items())},
            "tags": self.tags or [],
            "flows": self.flows or [],
        }

    def summary_view(self) -> dict[str, Any]:
        """What ``summaryDigest`` covers: a version-independent summary."""
        services = [{"sid": s["sid"], "enabled": bool(s.get("enabled", True)),
                     "runAtStart": bool(s.get("runAtStart", True))} for s in self.services]
        objects = [{"sid": sid, "pid": o["pid"], "ins": o["ins"], "name": o.get("name", "")}
                   for sid, objs in self.objects.items() for o in objs]
        names = sorted(str(f.get("name", "")) for f in self.flows or [])
        return {"services": sorted(services, key=lambda s: s["sid"]),
                "objects": sorted(objects, key=lambda o: (o["sid"], o["pid"], o["ins"])),
                "flows": {"count": len(names), "names": names}}

    def config_digest(self, hub_id: str) -> str:
        return _digest(self.config_view(), hub_id)

    def summary_digest(self, hub_id: str) -> str:
        return _digest(self.summary_view(), hub_id)

    def object_count(self) -> int:
        return sum(len(v) for v in self.objects.values())

    def pids(self) -> set[str]:
        return {o["pid"] for objs in self.objects.values() for o in objs}


def check_content(content: Content, fmt: str) -> None:
    """Structural checks of the configuration documents for a backup format. SchemaError(manifest_invalid)."""
    sids = set()
    for i, s in enumerate(content.services):
        if not isinstance(s, dict) or not isinstance(s.get("sid"), str) or not _SID.match(s["sid"]):
            raise SchemaError(f"backup.json is invalid: node/services.json/{i} has no valid sid.")
        if s["sid"] in sids:
            raise SchemaError(f"backup.json is invalid: service {s['sid']} appears twice.")
        sids.add(s["sid"])
    for sid, objs in content.objects.items():
        if sid not in sids:
            raise SchemaError(f"backup.json is invalid: services/{sid}/objects.json has no service {sid}.")
        for i, o in enumerate(objs):
            if not isinstance(o, dict) or not _PID.match(str(o.get("pid", ""))) \
                    or not re.fullmatch(r"[0-9A-F]{4}", str(o.get("ins", ""))):
                raise SchemaError(f"backup.json is invalid: services/{sid}/objects.json/{i} has a bad pid/ins.")
            for r in o.get("resources", []):
                if not isinstance(r, dict) or not _RID.match(str(r.get("rid", ""))):
                    raise SchemaError(f"backup.json is invalid: services/{sid}/objects.json/{i} has a bad rid.")
    if fmt.startswith("3.") and content.values:
        for sid, mpv in content.values.items():
            if mpv.sid != sid:
                raise SchemaError(f"values/{sid}.mpv names service {mpv.sid}", "values_corrupt")
            want = MPV_LAYOUT_OF_FORMAT[fmt]
            if mpv.layout_version != want:
                raise SchemaError(f"values/{sid}.mpv has layout {mpv.layout_version}; format {fmt} uses {want}",
                                  "values_corrupt")


# -- file names (§3.1) -------------------------------------------------------------------------------------


def sanitise_name(name: str | None) -> str:
    text = (name or "").strip().replace(" ", "-")
    text = re.sub(r"[^A-Za-z0-9._-]", "", text)[:64]
    return text or "backup"


def backup_file_name(name: str | None, created: dt.datetime) -> str:
    """``<name>_<YYYY-MM-DD>_<HH-mm-ss>.zip``, node clock in UTC."""
    return f"{sanitise_name(name)}_{created.astimezone(dt.UTC).strftime('%Y-%m-%d_%H-%M-%S')}.zip"


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
