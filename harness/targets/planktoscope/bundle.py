"""The PlanktoScope backup bundle (targets/planktoscope.md §14.4): one ZIP file.

Layout::

    manifest.json                               what is inside, with sha256 of every entry
    files/<absolute device path, no leading />  settings and version files, byte-exact
    datasets/<path relative to /home/pi/data>   acquisition folders, byte-exact
    archives/<name>.tar                         optional directory archives

Name: ``planktoscope-backup_<hostname>_<UTC yyyymmddThhmmssZ>.zip``. The bundle never holds a token or a
password. ``load_bundle`` validates the whole file before anything touches a unit (DESIGN rule 6): a real
ZIP, safe entry names (no absolute paths, no ``..``, no links, only the four top-level names), no zip bomb
(size limits and compression ratio), exactly the entries the manifest lists, every sha256, and every
acquisition's ``integrity.check`` recomputed from the bundled bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import posixpath
import re
import stat
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BadInput
from harness.targets.planktoscope import integrity

FORMAT = "planktoscope-backup/1"
MANIFEST = "manifest.json"
PREFIXES = ("files/", "datasets/", "archives/")
MAX_MANIFEST = 16 * 1024 * 1024
MAX_ENTRY = 16 * 1024**3  # one acquisition image is a few MB; 16 GiB is no PlanktoScope file
MAX_TOTAL = 256 * 1024**3
MAX_RATIO = 200  # JPEG and JSON do not compress 200:1; a bomb does
MAX_ENTRIES = 1_000_000
CHUNK = 1 << 20
_NAME = re.compile(r"^planktoscope-backup_(?P<host>[^_/]+)_(?P<stamp>\d{8}T\d{6}Z)\.zip$")
_CREATED = "%Y-%m-%dT%H:%M:%SZ"


def bundle_name(device_id: str, created: dt.datetime) -> str:
    stamp = created.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"planktoscope-backup_{device_id}_{stamp}.zip"


def created_text(created: dt.datetime) -> str:
    return created.astimezone(dt.UTC).strftime(_CREATED)


def file_entry(device_path: str) -> str:
    return "files/" + device_path.lstrip("/")


def dataset_entry(rel_path: str) -> str:
    return "datasets/" + rel_path.lstrip("/")


# -- writing -----------------------------------------------------------------------------------------------


class BundleWriter:
    """Streams entries into a new ZIP and hashes them on the way; ``finish(manifest)`` adds the manifest.

    JPEGs are stored (they do not compress), everything else deflated.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._zip = zipfile.ZipFile(self.path, "x", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self._names: set[str] = set()

    def _check(self, name: str) -> None:
        check_entry_name(name)
        if name in self._names:
            raise ValueError(f"entry {name} added twice")
        self._names.add(name)

    def add_bytes(self, name: str, data: bytes) -> tuple[str, int]:
        return self.add_stream(name, [data])

    def add_stream(self, name: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Write ``chunks`` as ``name``; returns (sha256, size)."""
        self._check(name)
        compress = zipfile.ZIP_STORED if name.lower().endswith((".jpg", ".jpeg", ".png", ".zip", ".gz")) \
            else zipfile.ZIP_DEFLATED
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = compress
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        digest = hashlib.sha256()
        size = 0
        with self._zip.open(info, "w", force_zip64=True) as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        return digest.hexdigest(), size

    def finish(self, manifest: dict[str, Any]) -> None:
        self._check(MANIFEST)
        info = zipfile.ZipInfo(MANIFEST, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        self._zip.writestr(info, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        self._zip.close()
        with open(self.path, "rb") as f:
            os.fsync(f.fileno())

    def abort(self) -> None:
        try:
            self._zip.close()
        finally:
            self.path.unlink(missing_ok=True)


# -- reading -----------------------------------------------------------------------------------------------


def check_entry_name(name: str) -> None:
    """Refuse entry names that could escape a folder or hide: absolute, ``..``, backslashes, control chars."""
    if not name or len(name) > 4096 or "\\" in name or "\0" in name or any(ord(c) < 32 for c in name):
        raise BadInput(f"bundle entry {name[:60]!r} has an unsafe name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise BadInput(f"bundle entry {name[:60]!r} is an absolute path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(name) != name:
        raise BadInput(f"bundle entry {name[:60]!r} escapes its folder or is not normalised")
    if name != MANIFEST and not name.startswith(PREFIXES):
        raise BadInput(f"bundle entry {name[:60]!r} is outside files/, datasets/ and archives/")


@dataclass
class SettingsFile:
    device_path: str
    bundle_path: str
    size: int
    sha256: str
    recognised: dict[str, Any] | None = None


@dataclass
class Dataset:
    rel_path: str
    files: int
    bytes: int
    integrity: str  # "ok" | "mismatch" | "absent"
    mismatches: list[str]
    entries: list[dict[str, Any]]  # {path (relative to the data root), size, sha256}


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    settings: list[SettingsFile]
    datasets: list[Dataset]
    warnings: list[str] = field(default_factory=list)

    @property
    def source(self) -> dict[str, Any]:
        return self.manifest["source"]

    @property
    def device_id(self) -> str:
        return self.source["device_id"]

    @property
    def release(self) -> str:
        return self.source["release"]

    @property
    def settings_available(self) -> bool:
        return bool(self.manifest["settings"].get("available"))

    def settings_file(self, device_path: str) -> SettingsFile | None:
        return next((f for f in self.settings if f.device_path == device_path), None)

    def read(self, name: str) -> bytes:
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(name)

    def open_entries(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.path)


def _require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise BadInput(f"bundle manifest: {where}{key} is missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise BadInput(f"bundle manifest: {where}{key} has the wrong type")
    return value


def _hash_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, keep: bool
                ) -> tuple[str, int, str, bytes | None]:
    """sha256, size and the integrity.check hash of an entry, streamed; the bytes too if ``keep``."""
    digest = hashlib.sha256()
    project = integrity.StreamHash(info.filename.rsplit("/", 1)[-1])
    size = 0
    kept = bytearray() if keep else None
    try:
        with zf.open(info) as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                if size > info.file_size:
                    raise BadInput(f"bundle entry {info.filename} is larger than its header says")
                digest.update(chunk)
                project.update(chunk)
                if kept is not None:
                    kept += chunk
    except (zipfile.BadZipFile, OSError, EOFError, zlib_error()) as exc:
        raise BadInput(f"bundle entry {info.filename} is corrupted ({exc})") from exc
    return digest.hexdigest(), size, project.hexdigest(), bytes(kept) if kept is not None else None


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def load_bundle(path: Path) -> Bundle:
    """Open and validate a whole bundle; BadInput with a one-line reason for anything wrong."""
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            raise BadInput(f"{path.name} is not a PlanktoScope backup bundle (not a ZIP file)")
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path.name} is not a readable ZIP file ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise BadInput(f"{path.name}: {len(infos)} entries is more than any PlanktoScope backup holds")
        names: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            check_entry_name(info.filename)
            if info.filename in names:
                raise BadInput(f"{path.name}: entry {info.filename} appears twice")
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: the writer recorded no file type
            if kind and kind != stat.S_IFREG or info.is_dir():
                raise BadInput(f"{path.name}: entry {info.filename} is not a regular file (link or device)")
            if info.file_size > MAX_ENTRY:
                raise BadInput(f"{path.name}: entry {info.filename} claims {info.file_size} bytes")
            if info.file_size > 1024 * 1024 and info.file_size > MAX_RATIO * max(1, info.compress_size):
                raise BadInput(f"{path.name}: entry {info.filename} expands {info.file_size} bytes from "
                               f"{info.compress_size}: a zip bomb")
            total += info.file_size
            names[info.filename] = info
        if total > MAX_TOTAL:
            raise BadInput(f"{path.name}: {total} bytes uncompressed is more than any backup holds")
        if MANIFEST not in names:
            raise BadInput(f"{path.name} has no manifest.json: not a PlanktoScope backup bundle")
        if names[MANIFEST].file_size > MAX_MANIFEST:
            raise BadInput(f"{path.name}: manifest.json is too large")
        try:
            manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, zlib_error()) as exc:
            raise BadInput(f"{path.name}: manifest.json is not valid JSON ({exc})") from exc
        bundle = _parse_manifest(path, manifest)
        _verify_entries(path.name, zf, names, bundle)
    return bundle


def _parse_manifest(path: Path, manifest: Any) -> Bundle:
    if not isinstance(manifest, dict):
        raise BadInput(f"{path.name}: manifest.json is not an object")
    fmt = manifest.get("format")
    if fmt != FORMAT:
        raise BadInput(f"{path.name}: format {fmt!r} is not {FORMAT!r}: not a PlanktoScope backup bundle")
    created = _require(manifest, "created_utc", str, "")
    try:
        dt.datetime.strptime(created, _CREATED)
    except ValueError as exc:
        raise BadInput(f"{path.name}: created_utc {created!r} is not YYYY-MM-DDTHH:MM:SSZ") from exc
    source = _require(manifest, "source", dict, "")
    device_id = _require(source, "device_id", str, "source.")
    if not device_id or "/" in device_id or device_id.startswith("."):
        raise BadInput(f"{path.name}: source.device_id {device_id!r} is not a host name")
    _require(source, "release", str, "source.")
    settings = _require(manifest, "settings", dict, "")
    _require(settings, "available", bool, "settings.")
    files = []
    for item in _require(settings, "files", list, "settings."):
        device_path = _require(item, "device_path", str, "settings.files[].")
        bundle_path = _require(item, "bundle_path", str, "settings.files[].")
        if bundle_path != file_entry(device_path) or not device_path.startswith("/"):
            raise BadInput(f"{path.name}: settings file {device_path!r} is filed as {bundle_path!r}")
        files.append(SettingsFile(device_path, bundle_path, _require(item, "size", int, "settings.files[]."),
                                  _require(item, "sha256", str, "settings.files[]."), item.get("recognised")))
    datasets = []
    for item in _require(manifest, "datasets", list, ""):
        rel = _require(item, "rel_path", str, "datasets[].")
        entries = _require(item, "entries", list, "datasets[].")
        for entry in entries:
            _require(entry, "path", str, "datasets[].entries[].")
            _require(entry, "size", int, "datasets[].entries[].")
            _require(entry, "sha256", str, "datasets[].entries[].")
            if not (entry["path"] == rel or entry["path"].startswith(rel.rstrip("/") + "/")):
                raise BadInput(f"{path.name}: dataset file {entry['path']!r} is not inside {rel!r}")
        integrity_state = _require(item, "integrity", str, "datasets[].")
        if integrity_state not in ("ok", "mismatch", "absent"):
            raise BadInput(f"{path.name}: dataset {rel}: integrity {integrity_state!r} is unknown")
        datasets.append(Dataset(rel, _require(item, "files", int, "datasets[]."),
                                _require(item, "bytes", int, "datasets[]."), integrity_state,
                                [str(m) for m in item.get("mismatches", [])], entries))
    warnings = [str(w) for w in manifest.get("warnings", []) if isinstance(w, str)]
    return Bundle(path, manifest, files, datasets, warnings)


def _verify_entries(name: str, zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], bundle: Bundle) -> None:
    expected: dict[str, tuple[int, str]] = {}
    for f in bundle.settings:
        expected[f.bundle_path] = (f.size, f.sha256)
    for d in bundle.datasets:
        for entry in d.entries:
            expected[dataset_entry(entry["path"])] = (entry["size"], entry["sha256"])
    for archive in bundle.manifest.get("archives", []) or []:
        expected[_require(archive, "bundle_path", str, "archives[].")] = (
            _require(archive, "size", int, "archives[]."), _require(archive, "sha256", str, "archives[]."))
    extra = sorted(set(infos) - set(expected) - {MANIFEST})
    if extra:
        raise BadInput(f"{name}: entry {extra[0]} is not listed in the manifest")
    small: dict[str, bytes] = {}
    project_hashes: dict[str, tuple[int, str]] = {}
    for entry_name, (size, sha) in expected.items():
        info = infos.get(entry_name)
        if info is None:
            raise BadInput(f"{name}: {entry_name} is listed in the manifest but missing (truncated bundle?)")
        keep = entry_name.endswith("/" + integrity.NAME) and info.file_size <= MAX_MANIFEST
        got_sha, got_size, project, data = _hash_entry(zf, info, keep=keep)
        if got_size != size or got_sha != sha:
            raise BadInput(f"{name}: {entry_name} does not match its manifest sha256 (changed or corrupted)")
        project_hashes[entry_name] = (got_size, project)
        if data is not None:
            small[entry_name] = data
    for d in bundle.datasets:
        check = dataset_entry(f"{d.rel_path}/{integrity.NAME}")
        if d.integrity == "absent":
            continue
        if check not in small:
            raise BadInput(f"{name}: dataset {d.rel_path} has integrity {d.integrity!r} but no integrity.check")
        hashes = {e["path"].rsplit("/", 1)[-1]: project_hashes[dataset_entry(e["path"])] for e in d.entries
                  if e["path"].rsplit("/", 1)[-1] != integrity.NAME and "/" not in e["path"][len(d.rel_path) + 1:]}
        try:
            problems = integrity.verify_hashes(small[check], hashes)
        except BadInput as exc:
            problems = [str(exc)]
        if d.integrity == "ok" and problems:
            raise BadInput(f"{name}: dataset {d.rel_path} fails its integrity.check ({problems[0]})")
        if d.integrity == "mismatch" and not problems:
            raise BadInput(f"{name}: dataset {d.rel_path} is recorded as a mismatch but its files check out")


def iter_dataset_files(bundle: Bundle, dataset: Dataset) -> Iterator[tuple[dict[str, Any], bytes]]:
    with bundle.open_entries() as zf:
        for entry in dataset.entries:
            yield entry, zf.read(dataset_entry(entry["path"]))


def host_from_name(name: str) -> str | None:
    match = _NAME.match(name)
    return match["host"] if match else None
