"""A GMI file as the harness sees it: validated whole (structure, every part's sha256), and its field view.

``load_gmi`` is ``Target.load_artifact``. Hashing a multi-GiB GMI takes seconds, and within one harness run
the same file is checked more than once (the driver right after the download, then the store before it
files it; the CLI before a restore, then the restore itself). So a file this process has verified is
remembered by (device, inode, size, modification time in ns): changing its content changes the key, and
any other process verifies afresh. ``forget`` drops an entry (tests use it to force a full check).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from pathlib import Path
from typing import Any

from construct import ConstructError

from harness.errors import BadInput
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.gmi import GmiInfo, InflatedImage, inspect_gmi, read_sparse_range, verify_gmi
from harness.targets.base import Artifact, ProgressFn, no_progress

log = logging.getLogger(__name__)

_verified: dict[tuple[int, int, int, int], GmiInfo] = {}
_lock = threading.Lock()


def _key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def remember(info: GmiInfo) -> None:
    """Record a file this process has just verified (see the module docstring)."""
    key = _key(info.path)
    if key is not None:
        with _lock:
            _verified[key] = info


def forget(path: Path | None = None) -> None:
    with _lock:
        if path is None:
            _verified.clear()
            return
        key = _key(Path(path))
        if key is not None:
            _verified.pop(key, None)


def verified_gmi(path: Path, *, progress: ProgressFn = no_progress) -> GmiInfo:
    """``verify_gmi``, or the remembered result for an unchanged file verified by this process."""
    path = Path(path)
    key = _key(path)
    with _lock:
        known = _verified.get(key) if key is not None else None
    if known is not None:
        # Same inode, size and mtime: the structure is re-read (cheap), the part hashes are not.
        info = inspect_gmi(path)
        if info.manifest_sha256 == known.manifest_sha256:
            log.debug("%s: verified earlier in this process; part hashes not recomputed", path.name)
            return info
    info = verify_gmi(path, progress=progress)
    remember(info)
    return info


def load_gmi(path: Path) -> Artifact:
    """Target.load_artifact: the whole GMI checked; BadInput with a one-line reason otherwise."""
    info = verified_gmi(Path(path))
    m = info.manifest
    warnings = []
    if not m.clock_valid:
        warnings.append("the unit's clock was not set when this backup was made (created 1970-01-01)")
    return Artifact(path=Path(path), target="bactobox", device_id=m.device_id, firmware=m.software_version,
                    created=m.created, data=info, warnings=warnings)


def created_at(manifest: S.Manifest) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(manifest.created.replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError:
        raise BadInput(f"manifest.json is invalid: /created {manifest.created!r} is not an RFC 3339 time") from None


def gmi_fields(info: GmiInfo) -> dict[str, Any]:
    """The field view of a GMI: manifest facts, every part's sha256, the parsed boot environment (the boot
    partition's raw hash changes at every boot), the rest of the boot partition, and the settings block."""
    m = info.manifest
    out: dict[str, Any] = {
        "device_id": m.device_id, "software_version": m.software_version, "format": m.format,
        "created": m.created, "clock_valid": m.clock_valid,
        "disk": {k: m.disk.get(k) for k in ("size_bytes", "sector_size", "layout", "mbr_signature")},
        "boot": dict(m.boot), "data": dict(m.data),
        "parts": {p.name: {"start_lba": p.start_lba, "size_bytes": p.size_bytes,
                           **({"sha256": p.sha256} if p.name != "boot" else {})} for p in m.parts},
    }
    entries = {part.name: entry for part, entry in info.parts}
    with open(info.path, "rb") as f:
        boot = entries.get("boot")
        if boot is not None and m.format != 1:
            area = os.pread(f.fileno(), 2 * S.ENV_SIZE, boot.data_offset)
            env = S.parse_env_pair(area)
            out["boot_env"] = dict(env.current.values) if env else {"valid": False}
            out["parts"]["boot"]["outside_env_sha256"] = _sha_range(f, boot.data_offset + 2 * S.ENV_SIZE,
                                                                   boot.compressed_size - 2 * S.ENV_SIZE)
        data = entries.get("data")
        if data is not None and m.format != 1:
            part = m.part("data")
            if part.encoding == "sparse":  # format 3: the settings are in the image's first raw chunk
                raw = read_sparse_range(info.path, data, part.size_bytes, S.SETTINGS_OFFSET, S.SETTINGS_SIZE)
            else:
                raw = os.pread(f.fileno(), S.SETTINGS_SIZE, data.data_offset + S.SETTINGS_OFFSET)
            block = S.parse_env(raw)
            out["settings"] = dict(block.values) if block else {"valid": False}
    if m.format == 1:
        for key, value in _disk_image_fields(info).items():
            out[key] = {**out[key], **value} if isinstance(out.get(key), dict) else value
    return out


def _disk_image_fields(info: GmiInfo) -> dict[str, Any]:
    """Format 1: what the one deflated ``disk.img`` holds, read by inflating its first few MiB (§4.1-§4.5):
    the L1 partition table with its EBR chain, the boot environment, the settings in p5 config, and the
    store-v1 superblock in p6 data. A GMI whose image does not parse says so in the field, not by failing."""
    part, entry = info.parts[0]
    image = InflatedImage(info.path, entry, part.size_bytes)
    out: dict[str, Any] = {}
    try:
        signature, table = S.parse_partitions(lambda lba: image.read(lba * S.SECTOR, S.SECTOR),
                                              part.size_bytes // S.SECTOR)
    except BadInput as exc:
        return {"partitions": {"valid": False, "problem": str(exc)}}
    names = S.PART_NAMES_L1 if 5 in {p.index for p in table} else S.PART_NAMES_L2
    regions = {names.get(p.index, f"p{p.index}"): p for p in table}
    out["disk"] = {"mbr_signature": f"0x{signature:08x}", "layout": "L1" if names is S.PART_NAMES_L1 else "L2"}
    out["partitions"] = {name: {"index": p.index, "type": f"0x{p.type:02x}", "start_lba": p.lba_first,
                                "size_bytes": p.size} for name, p in regions.items()}
    blocks = sorted(  # read in disk order: the inflater only goes forward cheaply
        [(regions["boot"].offset, 2 * S.ENV_SIZE, "boot_env")] * ("boot" in regions)
        + [(regions["config"].offset, S.SETTINGS_SIZE, "settings")] * ("config" in regions)
        + [(regions["data"].offset, S.SECTOR, "store")] * ("data" in regions))
    for offset, size, what in blocks:
        raw = image.read(offset, size)
        if what == "boot_env":
            env = S.parse_env_pair(raw)
            out["boot_env"] = dict(env.current.values) if env else {"valid": False}
        elif what == "settings":
            block = S.parse_env(raw)
            out["settings"] = dict(block.values) if block else {"valid": False}
        else:
            try:
                sb = S.SUPERBLOCK_V1.parse(raw).body.value
                out["data"] = {"store_version": 1, "record_count": sb.record_count,
                               "last_record_id": sb.next_record_id - 1}
            except ConstructError:
                out["data"] = {"store_version": None, "valid": False}
    return out


def _sha_range(f: Any, offset: int, size: int) -> str:
    import hashlib

    digest = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while size > 0:
        n = os.preadv(f.fileno(), [view[:min(size, len(buf))]], offset)
        if n <= 0:
            break
        digest.update(view[:n])
        offset += n
        size -= n
    return digest.hexdigest()
