"""The MultispeQ backup file (targets/multispeq.md §7.2): JSON with the raw ``print_memory`` reply and its
CRC, so anyone can re-verify the file and rebuild ``memory`` with exactly the same values.

``load_document`` validates everything before anyone touches a unit (DESIGN rule 6): JSON, format and
version, the raw reply's CRC, that ``memory`` equals a re-parse of the raw reply, the layout family and the
device ID. A file edited after the backup fails with BadInput; only ``allow_edited=True`` (the explicit
force path of a restore, §8.4) loads it, with the edits listed so the restore can refuse unless forced.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BadInput, HarnessError
from harness.targets.base import Artifact
from harness.targets.multispeq.protocol import check_memory, crc_ok, parse_print_memory
from harness.targets.multispeq.schema import (
    FAMILIES,
    Family,
    canonical_device_id,
    device_id_u32,
    family_from_keys,
)

FORMAT = "multispeq-console-backup"
FORMAT_VERSION = 1
TARGET = "multispeq"
REASONS = ("manual", "before-firmware-update", "after-calibration", "before-restore", "after-restore")
MAX_SIZE = 4 * 1024 * 1024  # a backup is ~20 KB; anything this large is not one of ours
UNSET_ID = "ff:ff:ff:ff"
_CRC = re.compile(r"[0-9A-Fa-f]{8}")
_CREATED = "%Y-%m-%dT%H:%M:%SZ"
# B and C50 print the same keys; the console cannot tell them apart (§2.9).
_INDISTINGUISHABLE = {"B", "C50"}


@dataclass
class BackupDocument:
    """What ``Artifact.data`` holds for a MultispeQ backup."""

    doc: dict[str, Any]
    memory: dict[str, Any]
    family: Family
    raw: bytes
    warnings: list[str] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)  # non-empty only when loaded with allow_edited=True

    @property
    def device(self) -> dict[str, Any]:
        return self.doc["device"]


def created_text(created: dt.datetime) -> str:
    if created.tzinfo is None:
        raise ValueError("backup times must be timezone-aware (UTC)")
    return created.astimezone(dt.UTC).strftime(_CREATED)


def raw_text(raw: bytes) -> str:
    # latin-1 maps every byte to one character, so the text gives back the exact bytes the CRC covers.
    return raw.decode("latin-1")


def build_document(*, created: dt.datetime, reason: str, info: Mapping[str, Any], family: Family,
                   raw: bytes, memory: Mapping[str, Any], warnings: Sequence[str] = ()) -> bytes:
    """The backup file's bytes: UTF-8 JSON with a fixed key order and a trailing newline.

    ``info`` is a parsed ``device_info`` (protocol.parse_device_info); ``raw`` the whole verified
    ``print_memory`` reply including its CRC line; ``memory`` its parse.
    """
    device: dict[str, Any] = {
        "device_id": info["device_id"],
        "device_id_u32": info["device_id_u32"],
        "device_name": info.get("device_name", ""),
        "device_version": info.get("device_version", ""),
        "device_firmware": info["device_firmware"],
        "layout_family": family.name,
    }
    if "device_manufacture" in info:
        device["device_manufacture"] = info["device_manufacture"]
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": created_text(created),
        "reason": reason,
        "device": device,
        "print_memory_crc": raw[-9:-1].decode("ascii").upper(),
        "print_memory_raw": raw_text(raw),
        "memory": dict(memory),
        "warnings": list(warnings),
    }
    return _dump(doc).encode("utf-8")


def _dump(doc: Mapping[str, Any]) -> str:
    """Readable and diffable: one memory key per line, everything else compact, key order as given."""
    def one(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    lines = []
    for key, value in doc.items():
        if key == "memory":
            inner = ",\n".join(f"    {one(k)}: {one(v)}" for k, v in value.items())
            lines.append(f'  "memory": {{\n{inner}\n  }}')
        else:
            lines.append(f"  {one(key)}: {one(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def load_document(path: Path, *, allow_edited: bool = False) -> Artifact:
    """Read and validate a backup file; BadInput with a one-line reason if it is not a valid one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SIZE:
            raise BadInput(f"not a MultispeQ backup: {path.name} is {size} bytes, far too large")
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return parse_document(data, path=path, allow_edited=allow_edited)
    except BadInput:
        raise
    except HarnessError as exc:  # e.g. Refused from a layout-F raw reply: still "not a valid backup"
        raise BadInput(f"not a usable MultispeQ backup: {path.name}: {exc}") from exc


def parse_document(data: bytes, *, path: Path = Path("<memory>"), allow_edited: bool = False) -> Artifact:
    name = path.name
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInput(f"not a MultispeQ backup: {name} is not UTF-8 text") from exc
    except ValueError as exc:
        raise BadInput(f"not a MultispeQ backup: {name} is not complete JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise BadInput(f"not a MultispeQ backup: {name} is JSON but not an object")
    if doc.get("format") != FORMAT:
        found = f"format {doc['format']!r}" if "format" in doc else "no 'format' field"
        raise BadInput(f"not a MultispeQ backup: {name} has {found} (expected {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise BadInput(f"{name}: MultispeQ backup format_version {doc.get('format_version')!r} is not "
                       f"supported (this harness reads {FORMAT_VERSION})")

    created = _require(doc, "created_utc", str, name)
    try:
        dt.datetime.strptime(created, _CREATED)
    except ValueError as exc:
        raise BadInput(f"{name}: created_utc {created!r} is not YYYY-MM-DDTHH:MM:SSZ") from exc
    _require(doc, "reason", str, name)
    device = _require(doc, "device", dict, name)
    for key, kind in (("device_id", str), ("device_id_u32", int), ("layout_family", str)):
        _require(device, key, kind, name, where="device.")
    firmware = device.get("device_firmware")
    if isinstance(firmware, bool) or not isinstance(firmware, str | int | float):
        raise BadInput(f"{name}: device.device_firmware is missing or not a string/number")
    crc = _require(doc, "print_memory_crc", str, name)
    if not _CRC.fullmatch(crc):
        raise BadInput(f"{name}: print_memory_crc {crc!r} is not 8 hex digits")
    raw_str = _require(doc, "print_memory_raw", str, name)
    memory = _require(doc, "memory", dict, name)
    try:
        raw = raw_str.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise BadInput(f"{name}: print_memory_raw holds characters a MultispeQ never prints") from exc
    warnings = [str(w) for w in doc.get("warnings", []) if isinstance(w, str)]

    edits: list[str] = []
    if not raw.endswith(b"\n") or raw[-9:-1].decode("latin-1").upper() != crc.upper():
        edits.append(f"print_memory_raw does not end in its recorded CRC {crc}")
    elif not crc_ok(raw):
        edits.append("CRC mismatch: print_memory_raw was changed after the backup")
    firmware_text = firmware if isinstance(firmware, str) else repr(firmware)
    reparsed: dict[str, Any] | None = None
    try:
        reparsed, _ = parse_print_memory(raw, firmware_text)
    except HarnessError as exc:
        edits.append(f"print_memory_raw no longer parses ({exc})")
    if reparsed is not None and reparsed != memory:
        edits.append(f"memory differs from print_memory_raw at {_first_difference(reparsed, memory)}")
    if edits and not allow_edited:
        raise BadInput(f"{name}: {edits[0]}; the file was edited or damaged")

    # Structure of what a restore would send: the (possibly edited) memory itself.
    try:
        family = family_from_keys(memory, firmware_text)
    except BadInput as exc:
        raise BadInput(f"{name}: memory {exc}") from exc
    try:
        check_memory(memory, family)
    except BadInput as exc:
        raise BadInput(f"{name}: {exc}") from exc
    recorded = device["layout_family"]
    if recorded not in FAMILIES:
        raise BadInput(f"{name}: unknown layout_family {recorded!r}")
    if recorded != family.name and not {recorded, family.name} <= _INDISTINGUISHABLE:
        raise BadInput(f"{name}: layout_family {recorded} does not match the memory's keys (layout "
                       f"{family.name})")
    family = FAMILIES[recorded]

    try:
        canonical = canonical_device_id(device["device_id"])
        printed = canonical_device_id(memory["device_id"])
    except BadInput as exc:
        raise BadInput(f"{name}: {exc}") from exc
    if canonical != device["device_id"]:
        raise BadInput(f"{name}: device.device_id {device['device_id']!r} is not in canonical form")
    if printed != canonical:
        raise BadInput(f"{name}: device ID {canonical} does not match the memory's device_id {printed}")
    if device["device_id_u32"] != device_id_u32(canonical):
        raise BadInput(f"{name}: device_id_u32 {device['device_id_u32']} does not match {canonical}")
    if canonical == UNSET_ID and not any("unset" in w for w in warnings):
        warnings.append(f"device ID is unset ({UNSET_ID}): blank EEPROM?")

    data = BackupDocument(doc=doc, memory=memory, family=family, raw=raw, warnings=warnings, edits=edits)
    return Artifact(path=path, target=TARGET, device_id=canonical, firmware=firmware_text, created=created,
                    data=data, warnings=list(warnings) + edits)


def _require(obj: Mapping[str, Any], key: str, kind: type, name: str, *, where: str = "") -> Any:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "missing" if key not in obj else f"not a {kind.__name__}"
        raise BadInput(f"{name}: {where}{key} is {what}")
    return value


def _first_difference(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    for key in expected:
        if key not in found:
            return f"{key} (missing)"
        if expected[key] != found[key]:
            return f"{key} ({_short(found[key])} instead of {_short(expected[key])})"
    for key in found:
        if key not in expected:
            return f"{key} (not in the raw reply)"
    return "key order"  # pragma: no cover - dict equality ignores order


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
