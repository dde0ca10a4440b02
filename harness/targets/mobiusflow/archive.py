"""The backup ZIP (§3.2, §4.2): writing one the way the node does, and reading one safely.

Reading checks everything before a single entry is trusted, in this order, and stops at the first problem
with the node's error code (§6), so the harness refuses a file with the same words the node would use:

1. the container: a ZIP at all, not truncated (``not_a_zip``);
2. the central directory: at most ``max_entries`` entries; no name escaping the folder (``..``, absolute,
   backslash, drive letter, NUL), no symlink, no duplicate (``unsafe_path``); no encrypted entry
   (``encrypted_zip``); no entry whose compression ratio exceeds ``max_ratio`` and a bounded total size
   (``zip_bomb_suspected``);
3. every entry read in full: CRC-32 checked by zipfile, and never more bytes than the directory declares;
4. ``backup.json`` present (``manifest_missing``) and a MobiusFlow manifest (``not_a_mobiusflow_backup``,
   ``manifest_invalid``);
5. every ``files`` hash and size (``integrity_failed``), no entry the manifest does not list;
6. the documents (``manifest_invalid``) and the value files (``values_corrupt``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.targets.mobiusflow.schema import (
    MANIFEST_NAME,
    Content,
    FileEntry,
    Manifest,
    MpvFile,
    SchemaError,
    build_mpv,
    check_content,
    parse_manifest,
    parse_mpv,
    rfc3339,
)

# The name and symlink checks are the shared ones; reading stays on zipfile (deflate, as the node writes).
from harness.ziparchive import is_symlink, unsafe_name

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_entries: int = 100_000
    max_ratio: float = 200.0
    max_total: int = 1024 * MiB  # sum of uncompressed sizes
    max_entry: int = 512 * MiB


class ArchiveError(SchemaError):
    """A backup ZIP refused; ``code`` is the node's code, ``str()`` a one-line reason."""


@dataclass
class BackupArchive:
    manifest: Manifest
    content: Content
    warnings: list[str] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)


# -- writing ---------------------------------------------------------------------------------------------


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def content_entries(content: Content, fmt: str, kind: str) -> list[tuple[str, bytes]]:
    """The entries of a backup of ``content`` in format ``fmt``, in the node's order (backup.json excluded)."""
    entries: list[tuple[str, bytes]] = [("node/node.json", _json_bytes(content.node)),
                                        ("node/services.json", _json_bytes(content.services))]
    for sid in sorted(content.objects):
        entries.append((f"services/{sid}/objects.json", _json_bytes(content.objects[sid])))
    if fmt != "1.0":
        entries.append(("flows/flows.json", _json_bytes(content.flows or [])))
    if fmt.startswith("3."):
        for pid in sorted(content.profiles or {}):
            entries.append((f"profiles/object/{pid}.json", _json_bytes((content.profiles or {})[pid])))
        entries.extend(sorted(content.profile_files.items()))
        entries.append(("tags.json", _json_bytes(content.tags or [])))
        if kind == "full":
            for sid in sorted(content.values):
                entries.append((f"values/{sid}.mpv", build_mpv(content.values[sid])))
    return entries


def build_backup(content: Content, *, fmt: str, kind: str, name: str, file_name: str, created: dt.datetime,
                 hub_id: str, version: str, node_name: str) -> tuple[bytes, Manifest]:
    """The whole ZIP as bytes, and its manifest. ``backup.json`` is the first entry."""
    entries = content_entries(content, fmt, kind)
    generation = 1 if fmt.startswith("1.") else 3
    files = [FileEntry(path, len(data), hashlib.sha256(data).hexdigest()) for path, data in entries]
    contents = {
        "services": len(content.services), "objects": content.object_count(),
        "profiles": len(content.profiles or {}), "tags": len(content.tags or []),
        "flows": len(content.flows or []), "persistedValues": bool(kind == "full" and content.values),
        "valueServices": sorted(content.values) if kind == "full" else [],
    }
    manifest = Manifest(
        format=fmt, name=name, created=rfc3339(created), hub_id=hub_id, version=version,
        kind=kind if fmt != "1.0" else "config", generation=generation, node_name=node_name, file_name=file_name,
        contents=contents, files=files if fmt != "1.0" else None,
        config_digest=content.config_digest(hub_id) if fmt != "1.0" else None,
        summary_digest=content.summary_digest(hub_id) if fmt.startswith("3.") else None)
    stamp = created.astimezone(dt.UTC).timetuple()[:6]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        all_entries = [(MANIFEST_NAME, _json_bytes(manifest.to_json())), *entries]
        for path, data in all_entries:
            info = zipfile.ZipInfo(path, date_time=stamp)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3
            # Value files are binary and already dense: stored. JSON and code: deflate.
            info.compress_type = zipfile.ZIP_STORED if path.endswith(".mpv") else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue(), manifest


# -- reading ---------------------------------------------------------------------------------------------

_KNOWN = re.compile(
    r"^(node/node\.json|node/services\.json|services/[0-9A-F]{3}/objects\.json|flows/flows\.json|tags\.json"
    r"|profiles/object/[0-9A-F]{4}\.json|profiles/object/[0-9A-F]{4}/(preprocessor|codec)\.(ts|js)"
    r"|profiles/object/[0-9A-F]{4}/ui-layout\.json|values/[0-9A-F]{3}\.mpv)$")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return is_symlink(info.create_system << 8, info.external_attr)


def _open(source: Path | bytes | IO[bytes]) -> zipfile.ZipFile:
    try:
        handle: Any = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
        return zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ArchiveError(f"not a zip archive, or a truncated one ({_reason(exc)})", "not_a_zip") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def check_directory(zf: zipfile.ZipFile, limits: Limits) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise ArchiveError(f"the archive has {len(infos)} entries; at most {limits.max_entries} are accepted",
                           "zip_bomb_suspected")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        why = unsafe_name(name)
        if why is not None:
            raise ArchiveError(f"entry {name!r} escapes the backup folder ({why})", "unsafe_path")
        if _is_symlink(info):
            raise ArchiveError(f"entry {name!r} is a symbolic link", "unsafe_path")
        if name in seen:
            raise ArchiveError(f"entry {name!r} appears twice", "unsafe_path")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise ArchiveError(f"entry {name!r} is encrypted", "encrypted_zip")
        if info.file_size > limits.max_entry:
            raise ArchiveError(f"entry {name!r} unpacks to {info.file_size} bytes (limit {limits.max_entry})",
                               "zip_bomb_suspected")
        if info.file_size and (info.compress_size == 0
                               or info.file_size / info.compress_size > limits.max_ratio):
            ratio = info.file_size / max(1, info.compress_size)
            raise ArchiveError(f"entry {name!r} has a compression ratio of {ratio:.0f}:1 "
                               f"(limit {limits.max_ratio:.0f}:1)", "zip_bomb_suspected")
        total += info.file_size
        if total > limits.max_total:
            raise ArchiveError(f"the archive unpacks to more than {limits.max_total} bytes", "zip_bomb_suspected")
    return infos


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The whole entry; zipfile checks the CRC at the end and never returns more than the declared size."""
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise ArchiveError(f"the archive is damaged: entry {info.filename!r}: {_reason(exc)}", "not_a_zip") \
            from None
    if len(data) != info.file_size:
        raise ArchiveError(f"the archive is damaged: entry {info.filename!r} is not {info.file_size} bytes",
                           "not_a_zip")
    return data


def _json(data: bytes, path: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ArchiveError(f"backup.json is invalid: {path} is not JSON.", "manifest_invalid") from None


def read_backup(source: Path | bytes | IO[bytes], limits: Limits = Limits()) -> BackupArchive:
    """Open, check and decode a whole backup ZIP. ArchiveError (a SchemaError) on the first problem."""
    with _open(source) as zf:
        infos = check_directory(zf, limits)
        data = {info.filename: _read_entry(zf, info) for info in infos if not info.is_dir()}
    if MANIFEST_NAME not in data:
        raise ArchiveError("backup.json was not found in the archive. Is this a MobiusFlow backup?",
                           "manifest_missing")
    try:
        manifest = parse_manifest(data[MANIFEST_NAME])
    except SchemaError as exc:
        raise ArchiveError(str(exc), exc.code) from None
    warnings: list[str] = []
    others = {p: d for p, d in data.items() if p != MANIFEST_NAME}
    if manifest.files is None:
        warnings.append("backup format 1.0 has no file hashes: integrity relies on the ZIP CRC-32 only")
    else:
        listed = {f.path: f for f in manifest.files}
        bad = sorted(p for p, f in listed.items()
                     if p not in others or len(others[p]) != f.size_bytes
                     or hashlib.sha256(others[p]).hexdigest() != f.sha256)
        bad += sorted(p for p in others if p not in listed)
        if bad:
            raise ArchiveError(f"{len(bad)} files do not match backup.json: {', '.join(bad[:5])}"
                               + (" …" if len(bad) > 5 else "") + ".", "integrity_failed")
    for path in others:
        if not _KNOWN.match(path):
            raise ArchiveError(f"backup.json is invalid: unexpected entry {path}.", "manifest_invalid")
    content = content_from_files(manifest.format, others)
    try:
        check_content(content, manifest.format)
    except SchemaError as exc:
        raise ArchiveError(str(exc), exc.code) from None
    return BackupArchive(manifest, content, warnings, list(data))


def content_from_files(fmt: str, files: dict[str, bytes]) -> Content:
    """Decode the documents of a backup (or of a node's data folder) in format ``fmt``."""
    for required in ("node/node.json", "node/services.json"):
        if required not in files:
            raise ArchiveError(f"backup.json is invalid: {required} is missing.", "manifest_invalid")
    node = _json(files["node/node.json"], "node/node.json")
    services = _json(files["node/services.json"], "node/services.json")
    if not isinstance(node, dict) or not isinstance(services, list):
        raise ArchiveError("backup.json is invalid: node/node.json or node/services.json has the wrong shape.",
                           "manifest_invalid")
    objects: dict[str, list[dict[str, Any]]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    profile_files: dict[str, bytes] = {}
    values: dict[str, MpvFile] = {}
    for path, raw in files.items():
        parts = path.split("/")
        if parts[0] == "services":
            objs = _json(raw, path)
            if not isinstance(objs, list):
                raise ArchiveError(f"backup.json is invalid: {path} is not a list.", "manifest_invalid")
            objects[parts[1]] = objs
        elif parts[0] == "profiles" and len(parts) == 3:
            profile = _json(raw, path)
            if not isinstance(profile, dict):
                raise ArchiveError(f"backup.json is invalid: {path} is not an object.", "manifest_invalid")
            profiles[parts[2][:-5]] = profile
        elif parts[0] == "profiles":
            profile_files[path] = raw
        elif parts[0] == "values":
            if not fmt.startswith("3."):
                raise ArchiveError(f"backup.json is invalid: {path} in a format {fmt} backup.", "manifest_invalid")
            try:
                values[parts[1][:-4]] = parse_mpv(raw, path)
            except SchemaError as exc:
                raise ArchiveError(str(exc), exc.code) from None
    flows = None
    if "flows/flows.json" in files:
        if fmt == "1.0":
            raise ArchiveError("backup.json is invalid: flows in a format 1.0 backup.", "manifest_invalid")
        flows = _json(files["flows/flows.json"], "flows/flows.json")
        if not isinstance(flows, list):
            raise ArchiveError("backup.json is invalid: flows/flows.json is not a list.", "manifest_invalid")
    tags = None
    if "tags.json" in files:
        tags = _json(files["tags.json"], "tags.json")
    if not fmt.startswith("3.") and (profiles or profile_files or tags is not None):
        raise ArchiveError(f"backup.json is invalid: profiles or tags in a format {fmt} backup.",
                           "manifest_invalid")
    return Content(node=node, services=services, objects=objects, flows=flows,
                   profiles=profiles if fmt.startswith("3.") else None, profile_files=profile_files,
                   tags=tags if fmt.startswith("3.") else None, values=values)
