"""Non-volatile state of a simulated MultispeQ v1: the 2048-byte EEPROM and the flashed firmware.

The state directory holds ``eeprom.bin`` (the raw image; a blank part is all 0xFF) and ``device.json``
(firmware string and profile choice), so a process restarted on the same directory (a power cycle) comes
back on the same firmware with the same bytes. Every write is persisted at once through a temp file and
``os.replace``: a killed process leaves either the old or the new file, never a torn one.

The image has no version field (targets/multispeq.md §2.10): changing the firmware keeps the bytes and
reinterprets them through the new family's layout, exactly like reflashing a real unit.

Writes model the firmware's ``store`` helper (§1): compare the stored value with the new one *as the field's
C type* and write only if they differ. For floats that is a float compare, so NaN is always written and
-0.0 over +0.0 (equal as floats) is not. Writes are counted per field actually hit, which for an
out-of-range raw write is the neighbouring field (§3.7).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import logging
import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from construct import Container

from harness.errors import BadInput, DeviceError
from harness.targets.multispeq import schema
from harness.targets.multispeq.schema import EEPROM_SIZE, Family
from simulators.multispeq.profiles import DEFAULT_FIRMWARE, Profile, profile_for

log = logging.getLogger(__name__)

IMAGE_FILE = "eeprom.bin"
META_FILE = "device.json"
_INT32_FIELDS = ("device_id", "device_manufacture")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def parse_device_id(text: str | int) -> int:
    """A device ID from the CLI: ``52:00:13:1f`` (any printed form) or a decimal/0x integer -> signed int32."""
    if isinstance(text, int):
        value = text
    elif ":" in text:
        return schema.device_id_signed(text)
    else:
        try:
            value = int(text, 0)
        except ValueError as exc:
            raise BadInput(f"not a MultispeQ device ID: {text!r} (use 52:00:13:1f or a number)") from exc
    if not INT32_MIN <= value <= 0xFFFFFFFF:
        raise BadInput(f"device ID {text!r} does not fit in 32 bits")
    return value - (1 << 32) if value > INT32_MAX else value


@functools.cache
def _field_map(family: str) -> tuple[list[int], list[str]]:
    """Field start offsets in ascending order, and their names, for offset -> field lookups."""
    offsets = schema.FAMILIES[family].offsets
    names = sorted(offsets, key=offsets.__getitem__)
    return [offsets[n] for n in names], names


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class EepromDevice:
    """The EEPROM image plus the firmware profile, persisted in ``state_dir``.

    ``firmware=None`` keeps the firmware recorded in the state directory (default 1.17 for a new one); a
    different firmware than the recorded one is a reflash (bytes kept). ``device_id``, when given, is
    written on every start as a factory programming step (write-if-changed, so a restart with the same ID
    does not touch the image).
    """

    def __init__(self, state_dir: Path, firmware: str | None = None, profile: str | None = None,
                 device_id: str | int | None = None, *, strict: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.strict = strict  # raise instead of ignoring a raw write outside the 2048 bytes
        self.write_counts: Counter[str] = Counter()
        self.deep_sleep = False  # set at boot when the sleep byte was 1; cleared by the next boot
        self.battery_percent = 87
        self.light_intensity = 0.0
        meta = self._read_meta()
        if firmware is None:
            firmware = meta.get("firmware", DEFAULT_FIRMWARE)
            if profile is None:
                profile = meta.get("profile")
        self._profile_choice = profile
        self.profile: Profile = profile_for(firmware, profile)
        self.nan_text = self.profile.nan_text
        if meta and (meta.get("firmware"), meta.get("profile")) != (firmware, profile):
            log.info("state %s was on firmware %s, now %s: bytes kept, layout %s", self.state_dir,
                     meta.get("firmware"), firmware, self.profile.family.name)
        self._image = self._load_image()
        self._write_meta()
        if device_id is not None:
            self.set_device_id(parse_device_id(device_id))

    # --- persistence --------------------------------------------------------------------------------------

    @property
    def image_path(self) -> Path:
        return self.state_dir / IMAGE_FILE

    def _read_meta(self) -> dict[str, Any]:
        path = self.state_dir / META_FILE
        if not path.exists():
            return {}
        try:
            return dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise BadInput(f"{path} is not valid JSON; delete it to start afresh") from exc

    def _write_meta(self) -> None:
        meta = {"firmware": self.profile.firmware, "profile": self._profile_choice,
                "profile_name": self.profile.name, "family": self.family.name}
        _atomic_write(self.state_dir / META_FILE, (json.dumps(meta, indent=1) + "\n").encode())

    def _load_image(self) -> bytearray:
        path = self.image_path
        if not path.exists():
            image = bytearray(b"\xff" * EEPROM_SIZE)  # a blank part [U: assumed 0xFF, §1]
            _atomic_write(path, bytes(image))
            return image
        data = path.read_bytes()
        if len(data) != EEPROM_SIZE:
            raise BadInput(f"{path} has {len(data)} bytes; an EEPROM image has {EEPROM_SIZE}")
        return bytearray(data)

    def _persist(self) -> None:
        _atomic_write(self.image_path, bytes(self._image))

    # --- reading ------------------------------------------------------------------------------------------

    @property
    def family(self) -> Family:
        return self.profile.family

    @property
    def image(self) -> bytes:
        return bytes(self._image)

    def values(self) -> Container:
        """The image parsed through the current family's layout."""
        return self.family.parse(bytes(self._image))

    def field_at(self, offset: int) -> str:
        """The name of the field (or ``_pad_sleep``/``_tail``) that holds byte ``offset``."""
        starts, names = _field_map(self.family.name)
        return names[bisect.bisect_right(starts, offset) - 1]

    @property
    def sleep(self) -> int | None:
        return self._image[self.family.offsets["sleep"]] if self.family.has_sleep else None

    # --- writing ------------------------------------------------------------------------------------------

    def write_field(self, name: str, value: float, index: int | None = None) -> bool:
        """Store one element by name, as the firmware's setters do; returns whether bytes changed hands.

        ``index`` is the element index (flat row-major for the 3x3 matrices) and must be inside the field;
        use :meth:`write_raw_element` for the firmware's unchecked index arithmetic.
        """
        if name not in self.family.value_fields:
            raise BadInput(f"layout {self.family.name} has no field {name!r}")
        size = self.family.sizes[name]
        if name == "sleep":
            if index not in (None, 0):
                raise BadInput("sleep is a single byte")
            return self._write_uint8(self.family.offsets[name], int(value))
        count = size // schema.ELEMENT_SIZE
        if index is None:
            if count != 1:
                raise BadInput(f"{name} has {count} elements: give an index")
            index = 0
        if not 0 <= index < count:
            raise BadInput(f"{name} has {count} elements, index {index} is outside")
        offset = self.family.element_offset(name, index)
        if name in _INT32_FIELDS:
            return self._write_int32(offset, int(value))
        return self._write_float(offset, value)

    def write_raw_element(self, field: str, index: int, value: float) -> bool:
        """The firmware's loop-setter write: a float at ``offset(field) + 4*index`` for ANY index (§3.7).

        An out-of-range index lands in a neighbouring field. A write that would leave the 2048 bytes is
        undefined on the device (probably a bus fault): it is logged and ignored, or raised when strict.
        """
        offset = self.family.element_offset(field, index)
        if offset < 0 or offset + schema.ELEMENT_SIZE > EEPROM_SIZE:
            message = f"raw write {field}[{index}] at offset {offset} is outside the EEPROM; ignored"
            if self.strict:
                raise DeviceError(message)
            log.warning(message)
            return False
        return self._write_float(offset, value)

    def set_device_id(self, device_id: int) -> bool:
        return self._write_int32(self.family.offsets["device_id"], device_id)

    def load_image(self, data: bytes) -> None:
        """Replace the whole image (a programmer writing the part, or a fixture); not counted as writes."""
        if len(data) != EEPROM_SIZE:
            raise BadInput(f"an EEPROM image has {EEPROM_SIZE} bytes, not {len(data)}")
        self._image[:] = data
        self._persist()

    def _count(self, offset: int) -> None:
        self.write_counts[self.field_at(offset)] += 1

    def _write_float(self, offset: int, value: float) -> bool:
        new = schema.f32(value)
        (old,) = struct.unpack_from("<f", self._image, offset)
        if old == new:  # float compare: NaN never equal (always written), -0.0 == 0.0 (not written)
            return False
        struct.pack_into("<f", self._image, offset, new)
        return self._commit(offset)

    def _write_int32(self, offset: int, value: int) -> bool:
        value = max(INT32_MIN, min(INT32_MAX, value))
        (old,) = struct.unpack_from("<i", self._image, offset)
        if old == value:
            return False
        struct.pack_into("<i", self._image, offset, value)
        return self._commit(offset)

    def _write_uint8(self, offset: int, value: int) -> bool:
        value &= 0xFF
        if self._image[offset] == value:
            return False
        self._image[offset] = value
        return self._commit(offset)

    def _commit(self, offset: int) -> bool:
        self._count(offset)
        self._persist()
        return True

    # --- firmware and power -------------------------------------------------------------------------------

    def change_firmware(self, firmware: str, profile: str | None = None) -> None:
        """Reflash: the bytes stay, the layout that reads them changes (§2.10)."""
        new = profile_for(firmware, profile)
        log.info("firmware %s (%s) -> %s (%s): EEPROM bytes kept", self.profile.name, self.family.name,
                 new.name, new.family.name)
        self.profile = new
        self._profile_choice = profile
        self._write_meta()

    def boot(self) -> bool:
        """Run the boot-time sleep check (§10 item 5); returns True when the unit goes into deep sleep.

        With ``sleep == 1`` the firmware clears the byte and sleeps until an external reset; the next boot
        then finds 0 and starts normally.
        """
        self.deep_sleep = False
        if self.family.has_sleep and self.sleep == 1:
            self.write_field("sleep", 0)
            self.deep_sleep = True
            log.info("sleep byte was 1: cleared, unit in deep sleep until an external reset")
        return self.deep_sleep

    # --- control plane ------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        values = self.values()
        return {
            "firmware": self.profile.firmware,
            "profile": self.profile.name,
            "family": self.family.name,
            "device_id": schema.device_id_text(values.device_id),
            "write_counts": dict(self.write_counts),
            "sleep": self.sleep,
            "deep_sleep": self.deep_sleep,
            "battery_percent": self.battery_percent,
            "light_intensity": self.light_intensity,
            "nan_text": self.nan_text,
            "image_sha256": hashlib.sha256(self._image).hexdigest(),
        }
