"""The NeuroomNet backup file: the server's own ZIP download of a local copy, kept byte for byte.

``load_zip(path)`` validates all of it before anything trusts it, in the order a careful importer would:

1. ZIP structure (``ziparchive.scan``): escaping names, symlinks, encryption, entry count, overlapping data,
   absurd ratios; every local header agrees with the central directory.
2. Layout: ``restorepoint.json`` and ``config.sqlite`` at the root (a single wrapping folder is unwrapped, as
   the server does), assets under ``assets/<module>/<file>``, no ``-wal``/``-shm`` sidecars, nothing else.
3. ``restorepoint.json`` parses (product NeuroomNet, a known format) and lists exactly the files present.
4. Every file inflates within its declared size, passes its CRC-32, and matches the manifest's size and
   sha256 (format 1: the md5 of config.sqlite).
5. ``config.sqlite``: the 100-byte header checks of §4.1 (construct), then ``PRAGMA quick_check``, then its
   ``user_version`` against the manifest's schema, then (format 2) both digests recomputed from its rows.

Anything wrong is a BadInput with one line; nothing here talks to a server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ziparchive
from harness.errors import BadInput
from harness.targets.base import Artifact
from harness.targets.neuroomnet import config as cfg
from harness.targets.neuroomnet.schema import (
    CONFIG_NAME,
    HEADER_SIZE,
    MANIFEST_NAME,
    WAL_SIDECARS,
    Manifest,
    SqliteHeader,
    check_snapshot_header,
    parse_manifest,
)

TARGET = "neuroomnet"
MAX_ZIP_BYTES = 4 << 30  # the modelled upload limit (§2.8): a larger file could not be imported anyway


@dataclass
class RestorePointZip:
    """What a validated ZIP holds: its manifest, header, the configuration as fields, and the entries."""

    manifest: Manifest
    header: SqliteHeader
    config_fields: dict[str, Any]
    config_digest: str
    summary_digest: str
    prefix: str = ""  # the unwrapped top-level folder, if the ZIP had one
    files: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (size, sha256)


def _layout(entries: list[ziparchive.Entry]) -> tuple[str, dict[str, ziparchive.Entry]]:
    """(prefix, {path without prefix: entry}) for the file entries; BadInput for a foreign or bad layout."""
    files = [e for e in entries if not e.is_dir]
    if not files:
        raise BadInput("the ZIP is empty: not a NeuroomNet restore point")
    names = [e.name for e in files]
    prefix = ""
    if MANIFEST_NAME not in names:
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) == 1 and all("/" in n for n in names):
            top = next(iter(tops))
            if f"{top}/{MANIFEST_NAME}" in names:
                prefix = top + "/"  # Windows "Send to > Compressed folder" wraps the folder (§2.5)
        if not prefix:
            nested = [n for n in names if n.endswith("/" + MANIFEST_NAME)]
            if nested:
                raise BadInput(f"restorepoint.json is nested too deep ({nested[0]}); the restore point must be "
                               f"at the ZIP root or in one folder (layout_invalid)")
            raise BadInput("not a NeuroomNet restore point: the ZIP has no restorepoint.json (manifest_missing)")
    out: dict[str, ziparchive.Entry] = {}
    for e in files:
        path = e.name[len(prefix):]
        if path in WAL_SIDECARS:
            raise BadInput(f"the ZIP carries {path}: a copy of a live WAL-mode database is not a self-contained "
                           f"snapshot (snapshot_not_self_contained)")
        parts = path.split("/")
        if path not in (MANIFEST_NAME, CONFIG_NAME) and not (len(parts) == 3 and parts[0] == "assets"):
            raise BadInput(f"ZIP entry {e.name!r} does not belong in a restore point (layout_invalid)")
        out[path] = e
    return prefix, out


def _extract(f: Any, entry: ziparchive.Entry, dest: Any, digests: list[Any]) -> int:
    size = 0
    for chunk in ziparchive.read_entry(f, entry):
        size += len(chunk)
        for d in digests:
            d.update(chunk)
        if dest is not None:
            dest.write(chunk)
    return size


def _read_small(f: Any, entry: ziparchive.Entry, limit: int) -> bytes:
    if entry.uncompressed_size > limit:
        raise BadInput(f"{entry.name} is {entry.uncompressed_size} bytes, too large for a manifest")
    return b"".join(ziparchive.read_entry(f, entry))


def _check_database(path: Path, manifest: Manifest) -> tuple[dict[str, Any], str, str]:
    uri = f"file:{path}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise BadInput(f"config.sqlite cannot be opened ({exc}; snapshot_corrupt)") from None
    try:
        result = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if result != ["ok"]:
            raise BadInput(f"config.sqlite fails PRAGMA quick_check ({result[0]}; snapshot_corrupt)")
        schema = conn.execute("PRAGMA user_version").fetchone()[0]
        if schema != manifest.config_schema:
            raise BadInput(f"config.sqlite is schema {schema}, restorepoint.json says {manifest.config_schema} "
                           f"(schema_mismatch)")
        missing = [t for t in cfg.table_columns(schema) if t not in cfg.present_tables(conn)]
        if missing:
            raise BadInput(f"config.sqlite lacks the configuration table(s) {', '.join(missing)} of schema "
                           f"{schema} (snapshot_corrupt)")
        return cfg.field_view(conn), cfg.config_digest(conn), cfg.summary_digest(conn)
    except sqlite3.Error as exc:
        raise BadInput(f"config.sqlite cannot be read ({exc}; snapshot_corrupt)") from None
    except ValueError as exc:  # an unmodelled schema number
        raise BadInput(f"config.sqlite: {exc}") from None
    finally:
        conn.close()


def load_zip(path: Path) -> RestorePointZip:
    """Validate a whole restore-point ZIP (see the module docstring); BadInput with one line otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        f = open(path, "rb")  # noqa: SIM115 - closed below, and the temp file needs it open
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        if size > MAX_ZIP_BYTES:
            raise BadInput(f"{path.name} is {size} bytes, larger than the server's 4 GiB upload limit")
        entries = ziparchive.scan(f, size)
        prefix, files = _layout(entries)
        manifest = parse_manifest(_read_small(f, files[MANIFEST_NAME], 1 << 20))
        present = {p for p in files if p != MANIFEST_NAME}
        if manifest.format == 1:
            listed = {CONFIG_NAME}
        else:
            listed = {fe.path for fe in manifest.files}
        if listed - present:
            missing = sorted(listed - present)
            raise BadInput(f"{len(missing)} file(s) listed in restorepoint.json are missing from the ZIP: "
                           f"{', '.join(missing[:3])} (integrity_failed)")
        if present - listed:
            extra = sorted(present - listed)
            raise BadInput(f"the ZIP holds file(s) not listed in restorepoint.json: {', '.join(extra[:3])} "
                           f"(layout_invalid)")
        sums: dict[str, tuple[int, str]] = {}
        mismatched: list[str] = []
        db_entry = files[CONFIG_NAME]
        fd, tmp_name = tempfile.mkstemp(prefix="neuroomnet-", suffix=".sqlite")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
                n = _extract(f, db_entry, out, [sha, md5])
            sums[CONFIG_NAME] = (n, sha.hexdigest())
            for p in sorted(present - {CONFIG_NAME}):
                sha = hashlib.sha256()
                sums[p] = (_extract(f, files[p], None, [sha]), sha.hexdigest())
            if manifest.format == 1:
                if md5.hexdigest() != manifest.md5:
                    mismatched.append(CONFIG_NAME)
            else:
                for fe in manifest.files:
                    if sums[fe.path] != (fe.size_bytes, fe.sha256):
                        mismatched.append(fe.path)
            if mismatched:
                raise BadInput(f"{len(mismatched)} file(s) do not match restorepoint.json: "
                               f"{', '.join(mismatched[:3])} (integrity_failed)")
            with open(tmp, "rb") as db:
                head = db.read(HEADER_SIZE)
            header = check_snapshot_header(head, n, expected_schema=manifest.config_schema)
            fields, config_digest, summary_digest = _check_database(tmp, manifest)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    if manifest.format == 2:
        if config_digest != manifest.config_digest:
            raise BadInput("config.sqlite does not hash to the manifest's config_digest (integrity_failed)")
        if summary_digest != manifest.summary_digest:
            raise BadInput("config.sqlite does not hash to the manifest's summary_digest (integrity_failed)")
    return RestorePointZip(manifest=manifest, header=header, config_fields=fields, config_digest=config_digest,
                           summary_digest=summary_digest, prefix=prefix, files=sums)


def load_artifact(path: Path) -> Artifact:
    try:
        data = load_zip(path)
    except BadInput as exc:
        raise BadInput(f"{Path(path).name}: {exc}") from None
    m = data.manifest
    warnings = []
    if data.prefix:
        warnings.append(f"restore point wrapped in folder {data.prefix.rstrip('/')}")
    if m.format == 1:
        warnings.append("format 1 (NeuroomNet 3.9): no assets and no digests; 5.0 and later refuse it")
    return Artifact(path=path, target=TARGET, device_id=m.server_id, firmware=m.software_version,
                    created=m.created, data=data, warnings=warnings)


def artifact_fields(data: RestorePointZip) -> dict[str, Any]:
    """The field view: restore-point metadata, file checksums, then every configuration cell."""
    m = data.manifest
    out: dict[str, Any] = {
        "restore_point.id": m.restore_point_id,
        "restore_point.label": m.label,
        "restore_point.created": m.created,
        "restore_point.format": m.format,
        # The server's identity (not configuration: §3.3), under the name every target uses for it.
        "device_id": m.server_id,
        "source.software_version": m.software_version,
        "source.config_schema": m.config_schema,
        "config_digest": data.config_digest,
        "summary_digest": data.summary_digest,
    }
    for p, (size, sha) in sorted(data.files.items()):
        out[f"files.{p}.size_bytes"] = size
        out[f"files.{p}.sha256"] = sha
    for key, value in data.config_fields.items():
        out[f"config.{key}"] = value
    return out
