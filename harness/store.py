"""The artifact store: backups on disk, each with a manifest beside it (DESIGN rule 6: artifacts are sacred).

Layout::

    <store>/<target>/<device id without colons, lowercase>/<file name from the target>
    <store>/<target>/<device key>/<file name>.manifest.json

e.g. ``store/multispeq/5200131f/2020-07-07T19.07.58.json``. A save

1. writes the bytes (or links/copies the driver's temp file, never reading a multi-GB image into memory)
   to a private work folder inside the device folder (same filesystem, same file name), hashing as it goes,
   and fsyncs the file;
2. verifies the copy on disk through ``Target.load_artifact`` (structure, checksums) and checks that it
   belongs to the unit that was backed up;
3. claims the final name with ``os.link``, which fails rather than replace an existing file: nothing is ever
   overwritten, and two writers in the same second get ``name.json`` and ``name_2.json``;
4. makes the artifact read-only and writes the manifest the same way, then fsyncs the folder.

A failure at any step removes what this save created; no partial file ever appears under a final name.
"Latest" is decided by the manifests (``created``, then a per-device ``sequence``), never by mtime, so
opening and saving an old backup in an editor does not make it the latest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import harness
from harness.errors import BadInput, HarnessError
from harness.targets.base import Backup, Target

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1
CHUNK = 1 << 20  # 1 MiB: hashing and copying stream in chunks of this size
MAX_SUFFIX = 10_000
_SECRET_KEY = re.compile(r"pass|token|secret|key|auth|jwt|session|cred", re.IGNORECASE)


@dataclass(frozen=True)
class Manifest:
    """What is known about one artifact. Never carries a password or token."""

    target: str
    device_id: str
    firmware: str
    created: str  # ISO-8601 UTC, "2020-07-07T19:07:58Z": the same instant as the file name
    sequence: int  # order of saves within one device folder; breaks ties between equal `created`
    sha256: str
    size: int
    file: str
    harness_version: str
    source_address: str = ""
    reason: str = ""
    model: str = ""
    manifest_version: int = MANIFEST_VERSION

    @property
    def created_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.created)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"{where}: manifest is not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise BadInput(f"{where}: manifest is not a JSON object")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - raw.keys())
        if missing:
            raise BadInput(f"{where}: manifest lacks {', '.join(missing)}")
        try:
            manifest = cls(**{k: v for k, v in raw.items() if k in known})
            manifest.created_at  # noqa: B018 - validates the timestamp
        except (TypeError, ValueError) as exc:
            raise BadInput(f"{where}: manifest is malformed ({exc})") from exc
        return manifest


@dataclass(frozen=True)
class Entry:
    """One stored artifact and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def order(self) -> tuple[dt.datetime, int, str]:
        return self.manifest.created_at, self.manifest.sequence, self.path.name


# --- naming ------------------------------------------------------------------------------------------------


def device_key(device_id: str) -> str:
    """The device folder name: the ID without colons, lowercase (``52:00:13:1f`` -> ``5200131f``)."""
    key = device_id.strip().replace(":", "").lower()
    if not key or key.startswith(".") or any(c in key for c in "/\\\0") or key != key.strip():
        raise BadInput(f"device ID {device_id!r} cannot name a store folder")
    return key


def _check_plain_name(name: str, what: str) -> None:
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or name.endswith(MANIFEST_SUFFIX):
        raise BadInput(f"{what} {name!r} is not a plain file name")


def candidate_names(name: str, ext: str = "") -> Iterator[str]:
    """``name``, then ``stem_2.ext``, ``stem_3.ext``, ...: the names a save tries, in order.

    ``ext`` is the target's artifact extension, with or without its leading dot (it may contain dots,
    ``.tar.gz``); if ``name`` does not end with it, the last suffix of ``name`` is used, so the counter always
    goes before the extension.
    """
    if ext and not ext.startswith("."):
        ext = "." + ext  # targets may declare "json" or ".json"
    if not ext or not name.endswith(ext) or name == ext:
        ext = Path(name).suffix
    stem = name[: len(name) - len(ext)] if ext else name
    yield name
    for n in range(2, MAX_SUFFIX + 1):
        yield f"{stem}_{n}{ext}"


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def utc_instant(created: dt.datetime) -> dt.datetime:
    """Backups carry UTC; a naive datetime is taken as UTC (the drivers create them with ``timezone.utc``)."""
    if created.tzinfo is None:
        return created.replace(tzinfo=dt.UTC)
    return created.astimezone(dt.UTC)


def iso_utc(created: dt.datetime) -> str:
    return utc_instant(created).isoformat(timespec="seconds").replace("+00:00", "Z")


def redact_address(address: str) -> str:
    """The source address without a password in the userinfo or secret-looking query parameters."""
    parts = urllib.parse.urlsplit(address)
    if not parts.scheme or not parts.netloc:
        return address
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = urllib.parse.urlencode([(k, "REDACTED" if _SECRET_KEY.search(k) else v) for k, v in pairs])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# --- file helpers ------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, size), streamed in CHUNK-sized reads into one reused buffer."""
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


def _write_new(path: Path, data: bytes) -> tuple[str, int]:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest(), len(data)


def _copy_new(src: Path, dst: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while n := fin.readinto(buf):
            digest.update(view[:n])
            fout.write(view[:n])
            size += n
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest(), size


def _hash_and_fsync(path: Path) -> tuple[str, int]:
    result = sha256_file(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the driver may not have synced its temp file
    finally:
        os.close(fd)
    return result


def _fsync_size(path: Path, expected: int | None) -> int:
    """fsync a linked temp file whose sha256 the driver vouches for; its size must be the one announced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the driver may not have synced its temp file
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if expected is not None and size != expected:
        raise BadInput(f"{path.name}: the backup file has {size} bytes, the driver wrote {expected}")
    return size


def _fsync_dir(path: Path) -> None:
    # A rename or link is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialises sequence numbers and name claims between threads and processes on this host.

    ``os.link`` alone already guarantees no overwrite; the lock makes ``sequence`` follow claim order.
    """
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --- manifests ---------------------------------------------------------------------------------------------


def read_manifest(path: Path) -> Manifest:
    """The manifest of an artifact (pass the artifact or the manifest itself); BadInput if missing/bad."""
    path = Path(path)
    mpath = path if path.name.endswith(MANIFEST_SUFFIX) else manifest_path(path)
    try:
        text = mpath.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BadInput(f"{path}: no manifest beside it ({mpath.name} is missing)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{mpath}: manifest cannot be read ({exc})") from exc
    return Manifest.from_json(text, str(mpath))


def verify_manifest(artifact_path: Path) -> Manifest:
    """Check an artifact against its manifest: name, size, sha256 (streamed). Returns the manifest.

    Raises BadInput with a one-line reason on a missing artifact or manifest, or any mismatch.
    """
    artifact_path = Path(artifact_path)
    if artifact_path.name.endswith(MANIFEST_SUFFIX):
        artifact_path = artifact_path.with_name(artifact_path.name[: -len(MANIFEST_SUFFIX)])
    if not artifact_path.is_file():
        raise BadInput(f"{artifact_path}: no such artifact")
    manifest = read_manifest(artifact_path)
    if manifest.file != artifact_path.name:
        raise BadInput(f"{artifact_path}: manifest describes {manifest.file!r}, not this file")
    size = artifact_path.stat().st_size
    if size != manifest.size:
        raise BadInput(f"{artifact_path}: {size} bytes but the manifest says {manifest.size} "
                       f"(truncated or changed since the backup)")
    sha, _ = sha256_file(artifact_path)
    if sha != manifest.sha256:
        raise BadInput(f"{artifact_path}: sha256 {sha[:16]}… does not match the manifest's "
                       f"{manifest.sha256[:16]}… (changed or corrupted since the backup)")
    return manifest


# --- the store ---------------------------------------------------------------------------------------------


class Store:
    """Artifacts under ``root``; see the module docstring for the layout and the save protocol."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def device_dir(self, target_name: str, device_id: str) -> Path:
        _check_plain_name(target_name, "target name")
        return self.root / target_name / device_key(device_id)

    # -- save --

    def save(self, target: Target, backup: Backup) -> Path:
        """Store a backup safely and return its final path (see the module docstring).

        ``backup.content`` is written; or ``backup.path`` (the driver's temp file) is hard-linked (copied
        across filesystems) and, once stored, removed: the store takes it over. On failure it is left alone.
        """
        if (backup.content is None) == (backup.path is None):
            raise BadInput("a backup must carry either content or a file path")
        info = backup.device
        created = utc_instant(backup.created)
        name = target.artifact_name(info.device_id, created)
        _check_plain_name(name, f"{target.name} artifact name")
        folder = self.device_dir(target.name, info.device_id)
        folder.mkdir(parents=True, exist_ok=True)

        # A private folder on the same filesystem keeps the artifact's own file name while it is checked.
        work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        temp = work / name
        created_paths: list[Path] = []
        source_mode: int | None = None
        try:
            if backup.content is not None:
                sha, size = _write_new(temp, backup.content)
            else:
                assert backup.path is not None
                try:
                    source_mode = stat.S_IMODE(os.stat(backup.path).st_mode)
                    os.link(backup.path, temp)  # no copy of a multi-GB image on the same filesystem
                    linked = True
                except FileNotFoundError as exc:
                    raise BadInput(f"{backup.path}: backup file is missing") from exc
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    linked = False  # another filesystem, or no hard links there: copy in chunks
                    source_mode = None
                if not linked:
                    sha, size = _copy_new(backup.path, temp)
                    if backup.sha256 is not None and sha != backup.sha256:
                        raise BadInput(f"{backup.path}: the copy's sha256 differs from the driver's")
                elif backup.sha256 is not None:
                    sha, size = backup.sha256, _fsync_size(temp, backup.size)
                else:
                    sha, size = _hash_and_fsync(temp)
            self._verify_before_claim(target, backup, temp)
            # Read-only before it gets its final name: there is no moment when the final file is writable.
            os.chmod(temp, 0o444)

            with _folder_lock(folder):
                sequence = self._next_sequence(folder)
                final = self._claim(temp, folder, name, target.artifact_ext)
                created_paths.append(final)
                manifest = Manifest(
                    target=target.name,
                    device_id=info.device_id,
                    firmware=info.firmware,
                    model=info.model,
                    created=iso_utc(created),
                    sequence=sequence,
                    sha256=sha,
                    size=size,
                    file=final.name,
                    harness_version=harness.__version__,
                    source_address=redact_address(backup.source_address),
                    reason=backup.reason,
                )
                mtemp = work / (final.name + MANIFEST_SUFFIX)
                _write_new(mtemp, manifest.to_json().encode("utf-8"))
                os.chmod(mtemp, 0o444)
                mfinal = manifest_path(final)
                try:
                    os.link(mtemp, mfinal)
                except FileExistsError as exc:
                    # Only a writer that ignores the lock could get here; never replace its manifest.
                    raise HarnessError(f"{mfinal}: appeared during the save; not overwritten") from exc
                created_paths.append(mfinal)
                _fsync_dir(folder)
        except BaseException:
            for path in reversed(created_paths):
                with contextlib.suppress(OSError):
                    path.unlink()
            if source_mode is not None and backup.path is not None:
                with contextlib.suppress(OSError):
                    os.chmod(backup.path, source_mode)  # the link shared its inode with our temp
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

        if backup.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(backup.path)
        log.info("stored %s (%d bytes, sha256 %s)", final, size, sha[:12])
        return final

    def _verify_before_claim(self, target: Target, backup: Backup, temp: Path) -> None:
        artifact = target.load_artifact(temp)  # raises BadInput on structure or checksum errors
        if artifact.target != target.name:
            raise BadInput(f"{temp.name}: is a {artifact.target} artifact, not {target.name}; not stored")
        want = backup.device.device_id.strip().lower()
        got = (artifact.device_id or "").strip().lower()
        if got != want:
            raise BadInput(f"{temp.name}: artifact carries device ID {artifact.device_id!r} but the unit "
                           f"is {backup.device.device_id!r}; not stored")

    @staticmethod
    def _claim(temp: Path, folder: Path, name: str, ext: str) -> Path:
        for candidate in candidate_names(name, ext):
            final = folder / candidate
            if manifest_path(final).exists():
                continue  # an orphan manifest (its artifact was deleted by hand) keeps its name
            try:
                os.link(temp, final)  # atomic and never replaces: EEXIST if the name is taken
            except FileExistsError:
                continue
            return final
        raise HarnessError(f"{folder}: more than {MAX_SUFFIX} backups named {name!r}; not stored")

    @staticmethod
    def _next_sequence(folder: Path) -> int:
        highest = 0
        for mpath in folder.glob("*" + MANIFEST_SUFFIX):
            try:
                highest = max(highest, int(json.loads(mpath.read_text(encoding="utf-8"))["sequence"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return highest + 1

    # -- queries --

    def entries(self, target_name: str, device_id: str) -> list[Entry]:
        """Every artifact with a readable manifest, oldest first by the manifests' order."""
        folder = self.device_dir(target_name, device_id)
        if not folder.is_dir():
            return []
        found: list[Entry] = []
        for mpath in folder.glob("*" + MANIFEST_SUFFIX):
            if mpath.name.startswith("."):
                continue
            artifact = mpath.with_name(mpath.name[: -len(MANIFEST_SUFFIX)])
            try:
                manifest = read_manifest(mpath)
            except BadInput as exc:
                log.warning("skipping %s: %s", mpath, exc)
                continue
            if manifest.file != artifact.name or not artifact.is_file():
                log.warning("skipping %s: its artifact %s is missing", mpath, artifact.name)
                continue
            found.append(Entry(artifact, manifest))
        return sorted(found, key=lambda e: e.order)

    def list(self, target_name: str, device_id: str) -> list[Path]:
        """Artifact paths, oldest first (by manifest ``created`` then ``sequence``, never mtime)."""
        return [e.path for e in self.entries(target_name, device_id)]

    def latest(self, target_name: str, device_id: str) -> Path:
        entries = self.entries(target_name, device_id)
        if not entries:
            raise BadInput(f"no {target_name} backups of device {device_id} in {self.root}")
        return entries[-1].path

    @staticmethod
    def read_manifest(path: Path) -> Manifest:
        return read_manifest(path)

    @staticmethod
    def verify_manifest(artifact_path: Path) -> Manifest:
        return verify_manifest(artifact_path)
