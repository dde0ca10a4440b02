"""MultispeQ v1 EEPROM image layouts, one construct Struct per layout family (targets/multispeq.md §2).

Pure: no I/O. The firmware lays one C++ object over the 2048-byte emulated EEPROM with no header, magic or
version, so the same bytes mean different things under different firmware. Each family schema covers
exactly 2048 bytes: padding and the unused tail are raw ``Bytes`` (not ``Padding``, which would build
zeros), so parse -> build gives back every byte of a blank (0xFF) or used part unchanged.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from construct import Adapter, Array, Bytes, Container, FormatFieldError, Int8ul, Int32sl, Int32ul, Struct

from harness.errors import BadInput

EEPROM_SIZE = 2048
NUM_LED_ENTRIES = 11  # NUM_LEDS = 10, indexed 1..10; entry 0 is stored, printed and writable.
ELEMENT_SIZE = 4

# LED-indexed arrays after the PAR slopes, in struct order (§2.3). The console prints them in another order.
_LED_ARRAYS_AFTER_SLOPES = (
    "par_to_dac_yint",
    "ir_baseline_slope",
    "ir_baseline_yint",
    "colorcal_blank1",
    "colorcal_blank2",
    "colorcal_blank3",
    "colorcal_intensity1_slope",
    "colorcal_intensity1_yint",
    "colorcal_intensity2_slope",
    "colorcal_intensity2_yint",
    "colorcal_intensity3_slope",
    "colorcal_intensity3_yint",
)
AUTO_ARRAYS = (
    "auto_blank_pulse_size",
    "auto_blank_gain_set",
    "auto_blank_light",
    "auto_blank_detector",
    "auto_blank_amplitude",
    "auto_zero_amplitude",
)


class NaN32(float):
    """A NaN read from the image that remembers its exact 32 bits (sign, quiet bit, payload)."""

    __slots__ = ("bits",)

    def __new__(cls, bits: int) -> NaN32:
        self = super().__new__(cls, struct.unpack("<f", struct.pack("<I", bits))[0])
        self.bits = bits
        return self


class _Float32Exact(Adapter):
    """``Float32l`` that builds back the exact bits it parsed, NaNs included.

    A plain ``Float32l`` widens to a C double and back, which quiets signalling NaNs (0x7F800001 comes back
    as 0x7FC00001), so parse -> build would change bytes of a used or random part. Parsed NaNs are NaN32
    floats that carry their bits; every other value is a plain float and packs as before.
    """

    def _decode(self, obj: int, context: object, path: str) -> float:
        value = struct.unpack("<f", struct.pack("<I", obj))[0]
        return NaN32(obj) if math.isnan(value) else value

    def _encode(self, obj: float, context: object, path: str) -> int:
        if isinstance(obj, NaN32) and math.isnan(obj):
            return obj.bits
        try:
            return struct.unpack("<I", struct.pack("<f", obj))[0]
        except (OverflowError, struct.error) as exc:
            raise FormatFieldError(f"{obj!r} does not fit a float32: {exc}", path=path) from exc


Float32l = _Float32Exact(Int32ul)


def _prefix() -> list:
    """Bytes 0-155, identical in every family (§2.2). light_yint is stored before the slopes."""
    return [
        "device_id" / Int32sl,
        "device_manufacture" / Int32sl,
        "mag_bias" / Array(3, Float32l),
        "mag_cal" / Array(3, Array(3, Float32l)),  # row-major: [r][c] at base + 4*(3r + c)
        "accel_bias" / Array(3, Float32l),
        "accel_cal" / Array(3, Array(3, Float32l)),
        "light_yint" / Float32l,
        "light_slope_all" / Float32l,
        "light_slope_r" / Float32l,
        "light_slope_g" / Float32l,
        "light_slope_b" / Float32l,
        "detector_offset_slope" / Array(4, Float32l),
        "detector_offset_yint" / Array(4, Float32l),
    ]


@dataclass(frozen=True)
class Family:
    """One EEPROM layout family. ``userdefs`` counts the stored entries (NUM_USERDEFS + 1)."""

    name: str
    description: str
    thickness: tuple[str, ...]
    par_slopes: int
    userdefs: int
    has_sleep: bool
    auto_arrays: bool = False

    @property
    def printed_userdefs(self) -> int:
        """The console prints only the first NUM_USERDEFS entries; the last one is hidden."""
        return self.userdefs - 1

    @property
    def led_arrays(self) -> tuple[str, ...]:
        slopes = tuple(f"par_to_dac_slope{i}" for i in range(1, self.par_slopes + 1))
        return slopes + _LED_ARRAYS_AFTER_SLOPES

    @cached_property
    def _fields(self) -> list:
        fields = _prefix()
        fields += [name / Float32l for name in self.thickness]
        fields += [name / Array(NUM_LED_ENTRIES, Float32l) for name in self.led_arrays]
        fields.append("userdef" / Array(self.userdefs, Float32l))
        if self.has_sleep:
            fields.append("sleep" / Int8ul)
            fields.append("_pad_sleep" / Bytes(3))  # never written by the firmware: keeps old contents
        if self.auto_arrays:
            fields += [name / Array(NUM_LED_ENTRIES, Float32l) for name in AUTO_ARRAYS]
        return fields

    @cached_property
    def sizeof(self) -> int:
        return Struct(*self._fields).sizeof()

    @cached_property
    def layout(self) -> Struct:
        """The whole 2048-byte image: the struct, then the unused tail (never touched by the firmware)."""
        return Struct(*self._fields, "_tail" / Bytes(EEPROM_SIZE - self.sizeof))

    @cached_property
    def offsets(self) -> dict[str, int]:
        """Byte offset of every named field, padding and tail included."""
        out: dict[str, int] = {}
        pos = 0
        for sub in self.layout.subcons:
            out[sub.name] = pos
            pos += sub.sizeof()
        return out

    @cached_property
    def sizes(self) -> dict[str, int]:
        return {sub.name: sub.sizeof() for sub in self.layout.subcons}

    @property
    def value_fields(self) -> list[str]:
        """Fields that carry data (no padding, no tail), in struct order."""
        return [name for name in self.offsets if not name.startswith("_")]

    def element_offset(self, field: str, index: int = 0) -> int:
        """Offset of element ``index`` of ``field`` (flat index for matrices), as the firmware computes it.

        No bounds check: the firmware's own range check is always true (§3.7), so an out-of-range index
        lands in a neighbouring field. Callers that model the firmware rely on exactly that.
        """
        return self.offsets[field] + ELEMENT_SIZE * index

    def parse(self, image: bytes) -> Container:
        if len(image) != EEPROM_SIZE:
            raise BadInput(f"an EEPROM image is {EEPROM_SIZE} bytes, this one is {len(image)}")
        return self.layout.parse(image)

    def build(self, values: Container | dict) -> bytes:
        return self.layout.build(values)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("A", "late 0.5x and the tagged v1.05 release", ("thickness_a", "thickness_b", "thickness_d"),
               par_slopes=2, userdefs=51, has_sleep=False),
        Family("B", "1.05 dev builds", ("thickness_a", "thickness_b", "thickness_c", "thickness_min",
                                        "thickness_max"), par_slopes=2, userdefs=51, has_sleep=False),
        Family("C50", "1.06", ("thickness_a", "thickness_b", "thickness_c", "thickness_min", "thickness_max"),
               par_slopes=2, userdefs=51, has_sleep=True),
        Family("C75", "1.10", ("thickness_a", "thickness_b", "thickness_c", "thickness_min", "thickness_max"),
               par_slopes=2, userdefs=76, has_sleep=True),
        Family("D", "1.11-1.12", ("thickness_a", "thickness_b", "thickness_c", "thickness_min",
                                  "thickness_max"), par_slopes=4, userdefs=116, has_sleep=True),
        Family("E", "1.13-1.18", ("thickness_a", "thickness_b", "thickness_c", "thickness_min",
                                  "thickness_max"), par_slopes=4, userdefs=136, has_sleep=True),
        Family("F", "1.19-1.20 (dev branches only)", ("thickness_a", "thickness_b", "thickness_c",
                                                      "thickness_min", "thickness_max"),
               par_slopes=4, userdefs=101, has_sleep=True, auto_arrays=True),
    )
}

# Firmware string -> family where the string alone decides it (§2.9 step 1). 1.05 (A or B) and 1.06 (B or
# C50) are ambiguous: the defaults below are the released builds; a profile overrides them.
_FIRMWARE_FAMILY = {
    "0.54": "A", "0.55": "A", "0.56": "A",
    "1.05": "A", "1.06": "C50", "1.10": "C75", "1.11": "D",
    "1.13": "E", "1.132": "E", "1.14": "E", "1.15": "E", "1.16": "E", "1.17": "E", "1.18": "E",
    "1.19": "F", "1.20": "F",
}
AMBIGUOUS_FIRMWARE = {"1.05": ("A", "B"), "1.06": ("B", "C50")}
KNOWN_FIRMWARE = tuple(_FIRMWARE_FAMILY)


def firmware_key(version: str) -> float:
    """Order v1 version strings as decimal numbers (1.132 sorts between 1.13 and 1.14, §6)."""
    try:
        return float(version)
    except ValueError as exc:
        raise BadInput(f"not a MultispeQ firmware version: {version!r}") from exc


def family_for_firmware(version: str, profile: str | None = None) -> Family:
    """The layout family of a firmware string; ``profile`` settles the ambiguous 1.05 and 1.06."""
    if version not in _FIRMWARE_FAMILY:
        known = ", ".join(KNOWN_FIRMWARE)
        raise BadInput(f"unsupported MultispeQ firmware {version!r} (known: {known})")
    if profile is not None:
        allowed = AMBIGUOUS_FIRMWARE.get(version, (_FIRMWARE_FAMILY[version],))
        if profile not in allowed:
            raise BadInput(f"firmware {version} has layout {'/'.join(allowed)}, not profile {profile!r}")
        return FAMILIES[profile]
    return FAMILIES[_FIRMWARE_FAMILY[version]]


def family_from_keys(keys: Iterable[str], firmware: str | None = None) -> Family:
    """Decide the family from the key set of a ``print_memory`` reply (§2.9 step 2).

    B and C50 cannot be told apart from the console (only the unprinted ``sleep`` differs); the firmware
    string decides where it can, else C50 is assumed, which does not matter for backup and restore.
    """
    keys = set(keys)
    userdefs = sum(1 for k in keys if k.startswith("userdef"))
    if "thickness_d" in keys:
        return FAMILIES["A"]
    if "device_manufacture" in keys and "thickness_c" in keys:
        return FAMILIES["B"]
    if "par_to_dac_slope3" in keys:
        for name in ("D", "E", "F"):
            if FAMILIES[name].printed_userdefs == userdefs:
                return FAMILIES[name]
        raise BadInput(f"print_memory has par slopes 3/4 but {userdefs} userdefs: no known layout matches")
    if "thickness_c" in keys:
        if userdefs == FAMILIES["C75"].printed_userdefs:
            return FAMILIES["C75"]
        if userdefs == FAMILIES["C50"].printed_userdefs:
            if firmware is not None and firmware in _FIRMWARE_FAMILY and _FIRMWARE_FAMILY[firmware] == "B":
                return FAMILIES["B"]
            return FAMILIES["C50"]
    raise BadInput("print_memory key set matches no known MultispeQ layout family")


def f32(value: float) -> float:
    """Round a double to float32 as the firmware stores it; overflow gives +/-inf (IEEE rounding)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def device_id_text(device_id: int) -> str:
    """Canonical ID: the unsigned 32-bit value as four zero-padded lowercase hex bytes, MSB first (§6)."""
    u = device_id & 0xFFFFFFFF
    return ":".join(f"{(u >> shift) & 0xFF:02x}" for shift in (24, 16, 8, 0))


def canonical_device_id(text: str) -> str:
    """Normalise any printed ID form (``52:00:13:1f``, ``d4:f5:52:0:13:1f``) to ``hh:hh:hh:hh``."""
    parts = text.strip().split(":")
    if len(parts) < 4:
        raise BadInput(f"not a MultispeQ device ID: {text!r}")
    try:
        return ":".join(f"{int(p, 16):02x}" for p in parts[-4:])
    except ValueError as exc:
        raise BadInput(f"not a MultispeQ device ID: {text!r}") from exc


def device_id_u32(text: str) -> int:
    return int(canonical_device_id(text).replace(":", ""), 16)


def device_id_signed(text: str) -> int:
    """The signed decimal that ``set_device_info`` takes (§6): u >= 2**31 is sent as u - 2**32."""
    u = device_id_u32(text)
    return u - (1 << 32) if u >= (1 << 31) else u
