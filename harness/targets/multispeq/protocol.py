"""MultispeQ v1 console protocol, host side: reply framing, CRC, parsing, argument text, restore groups.

Pure: no I/O (targets/multispeq.md §3-§8). The driver feeds bytes in and writes the bytes this module
builds. Every value of a ``print_memory`` reply is kept as the exact string the device printed, because
print -> parse -> float32 -> print is idempotent (§8.3): equal strings are the only sound comparison.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import BadInput, Refused
from harness.targets.multispeq.schema import (
    NUM_LED_ENTRIES,
    Family,
    canonical_device_id,
    device_id_signed,
    device_id_u32,
    f32,
    family_from_keys,
    firmware_key,
)

PRINTF_CAP = 199  # each printed piece passes a 200-byte buffer: the rest, newline included, is dropped
ARG_CAP = 24  # the firmware reads at most 24 bytes per argument (§3.3)

# --- framing ----------------------------------------------------------------------------------------------

_CRC_TAIL = re.compile(rb"([0-9A-Fa-f]{8})\n")
_MEMORY_END = re.compile(rb"(?:^|\n)\}([0-9A-Fa-f]{8})\n")
_INFO_END = re.compile(rb"\}([0-9A-Fa-f]{8})\n")
# Family F prints no closing brace: its last userdef line is followed straight by the CRC line (§4.6).
_F_END = re.compile(rb'"userdef\d+":"[^"\n]*"\n?([0-9A-Fa-f]{8})\n')
_READY = re.compile(rb"(?:^|\n)[A-Za-z0-9_.-]+ Ready\n")
_BAD_COMMAND = re.compile(rb'\{"error":" ?bad command"\}\n')


def print_memory_end(buf: bytes) -> int | None:
    """End offset of a complete ``print_memory`` reply (a line ``}XXXXXXXX``), or None."""
    m = _MEMORY_END.search(buf)
    return m.end() if m else None


def print_memory_done(buf: bytes) -> bool:
    return print_memory_end(buf) is not None


def family_f_end(buf: bytes) -> int | None:
    """End offset of a family F reply (CRC line straight after the last userdef line), or None."""
    m = _F_END.search(buf)
    return m.end() if m else None


def device_info_end(buf: bytes) -> int | None:
    """End offset of a ``device_info`` reply (``}`` + 8 hex digits + newline), or None."""
    m = _INFO_END.search(buf)
    return m.end() if m else None


def device_info_done(buf: bytes) -> bool:
    return device_info_end(buf) is not None


def hello_end(buf: bytes) -> int | None:
    """End offset of a ``<word> Ready`` line (``MultispeQ Ready``, ``Instrument Ready``), or None."""
    m = _READY.search(buf)
    return m.end() if m else None


def hello_done(buf: bytes) -> bool:
    return hello_end(buf) is not None


def bad_command_end(buf: bytes) -> int | None:
    """End offset of either bad-command error line (no CRC), or None."""
    m = _BAD_COMMAND.search(buf)
    return m.end() if m else None


def strip_banners(raw: bytes) -> bytes:
    """Drop leading ``<word> Ready`` lines: an unsolicited boot banner is not part of the CRC'd reply."""
    while True:
        m = _READY.match(raw)
        if not m or m.start() != 0:
            return raw
        raw = raw[m.end():]


def crc_digits(raw: bytes) -> str:
    """The 8 CRC digits at the end of a reply, as printed; BadInput if the reply does not end in them."""
    m = _CRC_TAIL.search(raw[-9:]) if len(raw) >= 9 else None
    if m is None or m.end() != 9:
        raise BadInput("reply does not end in 8 hex CRC digits and a newline")
    return m.group(1).decode("ascii")


def crc_ok(raw: bytes) -> bool:
    """True if the 8 trailing digits equal zlib.crc32 of every byte before them (all 8, any case)."""
    try:
        digits = crc_digits(raw)
    except BadInput:
        return False
    return f"{zlib.crc32(raw[:-9]):08X}" == digits.upper()


def with_crc(body: bytes) -> bytes:
    """``body`` + its CRC line, as the firmware prints it (8 uppercase zero-padded digits, newline)."""
    return body + b"%08X\n" % zlib.crc32(body)


# --- device_info ------------------------------------------------------------------------------------------

def parse_device_info(raw: bytes) -> dict[str, Any]:
    """Parse a ``device_info``/``set_device_info`` reply (CRC line included, already verified or not).

    Accepts v1 (firmware a string) and v2 (a number), and the prompt lines of the early two-value ID
    setter that precede the JSON (§3.5). Returns the fields plus ``device_id`` canonical, ``device_id_printed``,
    ``device_id_u32``, ``firmware`` (text) and ``firmware_v2``.
    """
    text = strip_banners(raw).decode("latin-1")
    end = text.rfind("}")
    start = text.rfind('{"device_name"', 0, end)
    if start < 0:
        start = text.find("{")
    if start < 0 or end < start:
        raise BadInput(f"device_info reply is not JSON: {_preview(text)}")
    try:
        info = json.loads(text[start:end + 1])
    except ValueError as exc:
        raise BadInput(f"device_info reply is not valid JSON ({exc}): {_preview(text)}") from exc
    if not isinstance(info, dict) or "device_id" not in info or "device_firmware" not in info:
        raise BadInput(f"device_info reply lacks device_id or device_firmware: {_preview(text)}")
    firmware = info["device_firmware"]
    if isinstance(firmware, bool) or not isinstance(firmware, str | int | float):
        raise BadInput(f"device_info firmware is neither a string nor a number: {firmware!r}")
    out = dict(info)
    out["device_id_printed"] = str(info["device_id"])
    out["device_id"] = canonical_device_id(str(info["device_id"]))
    out["device_id_u32"] = device_id_u32(out["device_id"])
    out["firmware"] = firmware if isinstance(firmware, str) else repr(firmware)
    # v2 reports a number (§6); branch on the value, not the type, as 2.x also runs on v1 hardware.
    try:
        out["firmware_v2"] = float(firmware) >= 2.0
    except ValueError:
        out["firmware_v2"] = False
    return out


def _preview(text: str, size: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= size else text[:size] + "...")


# --- print_memory -----------------------------------------------------------------------------------------

VECTOR3 = ("mag_bias", "accel_bias")
MATRICES = ("mag_cal", "accel_cal")
LIGHT = ("light_slope_all", "light_slope_r", "light_slope_g", "light_slope_b", "light_yint")
DETECTORS = ("detector_offset_slope", "detector_offset_yint")
PRINTED_LED_TAIL = (
    "par_to_dac_yint", "ir_baseline_slope", "ir_baseline_yint",
    "colorcal_intensity1_slope", "colorcal_intensity1_yint",
    "colorcal_intensity2_slope", "colorcal_intensity2_yint",
    "colorcal_intensity3_slope", "colorcal_intensity3_yint",
    "colorcal_blank1", "colorcal_blank2", "colorcal_blank3",
)


def printed_led_arrays(family: Family) -> tuple[str, ...]:
    """The 11-element lines in print order (§4.2 lines 19-34), which is not the struct order."""
    return tuple(f"par_to_dac_slope{i}" for i in range(1, family.par_slopes + 1)) + PRINTED_LED_TAIL


def printed_keys(family: Family, *, manufacture: bool | None = None) -> list[str]:
    """The keys ``print_memory`` prints for ``family``, in order (duplicates not repeated).

    ``manufacture``: whether the ``device_manufacture`` line is printed (A and early B); None = A only.
    """
    if manufacture is None:
        manufacture = family.name == "A"
    keys = ["device_id"] + (["device_manufacture"] if manufacture else [])
    keys += ["mag_bias", "mag_cal", "accel_bias", "accel_cal", *LIGHT, *DETECTORS, *family.thickness]
    keys += printed_led_arrays(family)
    keys += [f"userdef{i}" for i in range(family.printed_userdefs)]
    return keys


def shape_of(key: str) -> tuple[int, ...]:
    """Shape of a printed value: () scalar, (n,) list, (3, 3) matrix."""
    if key in MATRICES:
        return (3, 3)
    if key in VECTOR3:
        return (3,)
    if key in DETECTORS:
        return (4,)
    if key.startswith(("par_to_dac_", "ir_baseline_", "colorcal_")):
        return (NUM_LED_ENTRIES,)
    return ()


# What a unit prints (%f, nan, -nan, inf), plus exponents, so values typed by hand or taken from Python's
# repr are accepted as input too; argument text is always rebuilt by format_arg, never passed through.
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|-?nan|-?inf", re.IGNORECASE)
_INTEGER = re.compile(r"-?\d+")


def is_printed_number(text: Any) -> bool:
    return isinstance(text, str) and _NUMBER.fullmatch(text) is not None


def _check_value(key: str, value: Any, shape: tuple[int, ...]) -> None:
    if not shape:
        if not is_printed_number(value):
            raise BadInput(f"print_memory value of {key!r} is not a printed number: {value!r}")
        return
    if not isinstance(value, list) or len(value) != shape[0]:
        raise BadInput(f"print_memory value of {key!r} is not a list of {shape[0]}: {_preview(str(value))}")
    for item in value:
        _check_value(key, item, shape[1:])


def check_memory(memory: Mapping[str, Any], family: Family) -> None:
    """Every key of ``family`` present (device_manufacture optional), no foreign key, every value shaped."""
    expected = printed_keys(family, manufacture=True)
    missing = [k for k in expected if k not in memory and k != "device_manufacture"]
    extra = [k for k in memory if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        raise BadInput(f"print_memory keys do not match layout {family.name}: {'; '.join(parts)}")
    if not isinstance(memory["device_id"], str):
        raise BadInput(f"print_memory device_id is not a string: {memory['device_id']!r}")
    canonical_device_id(memory["device_id"])
    if "device_manufacture" in memory and not (
            isinstance(memory["device_manufacture"], str) and _INTEGER.fullmatch(memory["device_manufacture"])):
        raise BadInput(f"print_memory device_manufacture is not a decimal integer: "
                       f"{memory['device_manufacture']!r}")
    for key, value in memory.items():
        if key not in ("device_id", "device_manufacture"):
            _check_value(key, value, shape_of(key))


F_REFUSAL = ("this unit prints its memory in the malformed layout-F form of firmware 1.19/1.20 (dev "
             "branches): a console backup of it is not supported")


def looks_like_family_f(raw: bytes) -> bool:
    """Family F (1.19/1.20) output: no closing brace, or its userdef lines with no space after the colon."""
    return family_f_end(raw) is not None or re.search(rb'\n"userdef\d+":"', raw) is not None


def parse_print_memory(raw: bytes, firmware: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Parse a whole ``print_memory``/``1006`` reply (CRC line included) into exact printed strings.

    Returns (memory, warnings). Matrices are nested lists of rows, as printed. Raises Refused for family F
    output (malformed, unsupported, §4.6) and BadInput for anything else that is not a complete reply,
    naming the line (a line cut by the 199-character cap, §4.3, cannot be backed up from the console).
    ``firmware`` only improves the layout check; the key set decides the family (§2.9).
    """
    raw = strip_banners(raw)
    if looks_like_family_f(raw):
        raise Refused(F_REFUSAL)
    end = print_memory_end(raw)
    if end is None or end != len(raw):
        raise BadInput("print_memory reply does not end in a line '}' + 8 hex CRC digits")
    text = raw[:-10].decode("latin-1")  # drop "}XXXXXXXX\n"; the body ends in the newline before "}"
    lines = text.split("\n")
    if not lines or lines[0] != "{" or lines[-1] != "":
        raise BadInput("print_memory reply does not start with a line '{'")
    memory: dict[str, Any] = {}
    warnings: list[str] = []
    body = lines[1:-1]
    for number, line in enumerate(body, start=2):
        last = number == len(body) + 1
        content = line if last else line.removesuffix(",")
        if not last and content == line:
            raise BadInput(f"print_memory line {number} does not end in a comma: {_preview(line)}")
        pairs = _parse_line(number, content)
        if len(pairs) > 1:
            # A piece of exactly 199 characters loses only its newline: the values are whole (§4.3).
            warnings.append(f"print_memory line {number} holds {len(pairs)} keys: a newline was lost to "
                            f"the 199-character print limit")
        for key, value in pairs:
            if key in memory:
                warnings.append(f"print_memory prints {key!r} twice (line {number}); kept the last value"
                                + ("" if memory[key] == value else f" ({memory[key]!r} before)"))
            memory[key] = value
    if "device_id" not in memory:
        raise BadInput("print_memory reply has no device_id line")
    family = family_from_keys(memory, firmware)
    if family.name == "F":
        raise Refused(F_REFUSAL)
    check_memory(memory, family)
    return memory, warnings


def _parse_line(number: int, content: str) -> list[tuple[str, Any]]:
    try:
        pairs = json.loads("{" + content + "}", object_pairs_hook=list)
    except ValueError as exc:
        key = re.match(r'\s*"([^"]*)"', content)
        name = f" ({key.group(1)!r})" if key else ""
        if len(content) > PRINTF_CAP:
            raise BadInput(f"print_memory line {number}{name} was cut by the device's 199-character print "
                           f"limit (values too long to print); it cannot be backed up from the console") from exc
        raise BadInput(f"print_memory line {number}{name} is not valid JSON: {_preview(content)}") from exc
    if not pairs:
        raise BadInput(f"print_memory line {number} is empty")
    return pairs


def render_print_memory(memory: Mapping[str, Any]) -> bytes:
    """The reply a v1 unit prints for ``memory`` (exact strings, in key order), CRC line included.

    The inverse of ``parse_print_memory`` for replies that no print cap touched; used to check backups and
    by tests. The spacing is the firmware's: no space after ``"device_id":``, one after other keys.
    """
    lines = []
    for key, value in memory.items():
        if key == "device_id":
            lines.append(f'"device_id":"{value}"')
        else:
            lines.append(f'"{key}": {_json_value(value)}')
    return with_crc(("{\n" + ",\n".join(lines) + "\n}").encode("latin-1"))


def _json_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_json_value(v) for v in value) + "]"
    return f'"{value}"'


# --- argument text ----------------------------------------------------------------------------------------

def parse_printed(printed: str) -> float:
    """A printed value (``%f``, ``nan``, ``-nan``, ``inf``) as the float32 the device holds."""
    text = printed.strip()
    if not is_printed_number(text):
        raise BadInput(f"not a printed number: {printed!r}")
    return f32(float(text))


def _f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def device_strtod_f32(text: str) -> float:
    """What the firmware stores for a float argument (§3.3): empty -> NaN, strtod prefix, float32 rounding."""
    if text == "":
        return math.nan
    m = re.match(r"\s*([-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|inf(?:inity)?|nan))", text,
                 re.IGNORECASE)
    if m is None:
        return 0.0
    return f32(float(m.group(1)))


def format_arg(printed: str) -> str:
    """The argument text that makes the device store the same float32 as ``printed`` denotes (§8.2).

    Shortest text that round-trips under strtod + float32 rounding; at most 24 characters, no ``+``
    (exponents ``e38``/``e-5``); ``nan``, ``inf``, ``-inf``, ``-0`` for the special values. The printed
    ``%f`` text itself must not be sent: large values print up to 47 characters and would be split at 24.
    """
    value = parse_printed(printed)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    target = _f32_bits(magnitude)
    for digits in range(1, 18):
        texts = []
        for mantissa, exponent in _candidates(magnitude, digits):
            for text in _spellings(mantissa, exponent):
                if _f32_bits(f32(float(text))) == target:
                    texts.append(sign + text)
        if texts:
            best = min(texts, key=lambda t: (len(t), "e" in t))  # shortest; fixed point on a tie
            assert len(best) <= ARG_CAP and "+" not in best
            return best
    raise AssertionError(f"no round-trip text for {printed!r}")  # pragma: no cover - 9 digits always do


def _candidates(magnitude: float, digits: int) -> list[tuple[int, int]]:
    """(integer mantissa of ``digits`` digits, power of ten): the nearest decimal and its two neighbours.

    The neighbours matter at powers of two, where the round-trip interval is lopsided and the nearest
    decimal can fall just outside it while the next one up lies inside.
    """
    text = f"{magnitude:.{digits - 1}e}"
    mant, exp = text.split("e")
    mantissa = int(mant.replace(".", ""))
    power = int(exp) - (digits - 1)
    out = []
    for m in (mantissa, mantissa - 1, mantissa + 1):
        if m > 0:
            out.append((m, power))
    return out


def _spellings(mantissa: int, power: int) -> list[str]:
    """Fixed-point and exponent spellings of mantissa * 10**power, without ``+`` and trailing zeros."""
    digits = str(mantissa)
    while len(digits) > 1 and digits.endswith("0"):
        digits = digits[:-1]
        power += 1
    exp10 = power + len(digits) - 1
    sci = digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + (f"e{exp10}" if exp10 else "")
    if power >= 0:
        fixed = digits + "0" * power
    elif len(digits) > -power:
        fixed = digits[:power] + "." + digits[power:]
    else:
        fixed = "0." + "0" * (-power - len(digits)) + digits
    return [fixed, sci]


# --- restore groups ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Group:
    """One restore step: a setter command with all its arguments, sent as ONE write (§8.1).

    ``fields``: backup keys it restores; ``filled``: keys the setter also writes, with the unit's current
    printed value (cross-family, §8.5: they stay as they were). ``reply`` is "device_info" when the setter
    answers (set_device_info); every other setter is silent.
    """

    name: str
    fields: tuple[str, ...]
    data: bytes
    filled: tuple[str, ...] = ()
    reply: str | None = None

    def __post_init__(self) -> None:
        if b"\r" in self.data or b"\n" in self.data or not self.data.endswith(b"+"):
            raise ValueError(f"group {self.name}: must be '+'-terminated tokens without CR/LF")


@dataclass(frozen=True)
class FieldMapping:
    """Cross-family mapping by field NAME (§8.5)."""

    restored: list[str] = field(default_factory=list)  # in the backup and on the unit: sent
    skipped: list[str] = field(default_factory=list)  # in the backup, not on the unit (or not settable)
    untouched: list[str] = field(default_factory=list)  # on the unit, not in the backup


def map_fields(backup_keys: Iterable[str], target_keys: Iterable[str], *,
               include_device_id: bool) -> FieldMapping:
    """Which printed fields a restore sends, skips and leaves alone. Names only; never offsets.

    ``thickness_d`` (A) and ``thickness_c`` (B+) are different quantities with different names, so name
    matching never maps one onto the other. ``device_manufacture`` is settable only together with the ID
    (A and early B, §8.1).
    """
    backup = list(backup_keys)
    target = list(target_keys)
    target_set, backup_set = set(target), set(backup)
    out = FieldMapping()
    for key in backup:
        if key == "device_id":
            # An identity, not a setting: sent only on request (§8.6), and never reported as skipped.
            if include_device_id:
                out.restored.append(key)
        elif key == "device_manufacture":
            ok = include_device_id and key in target_set
            (out.restored if ok else out.skipped).append(key)
        elif key in target_set:
            out.restored.append(key)
        else:
            out.skipped.append(key)
    out.untouched.extend(k for k in target if k not in backup_set)
    return out


def uses_numeric_setters(family: Family) -> bool:
    """A, B and C50 firmware has only the numeric setter codes 1030-1050 (§3.5)."""
    return family.name in ("A", "B", "C50")


def single_value_par(family: Family, firmware: str | None) -> bool:
    """Tagged v1.04 (0.54) sets the five PAR values with 1034-1038, one value each (§3.5).

    Decision [U]: 0.55/0.56 are treated like the v1.05 release (one ``1034`` with five values).
    """
    if family.name != "A" or not firmware:
        return False
    try:
        return firmware_key(firmware) < 0.55
    except BadInput:
        return False


def restore_groups(memory: Mapping[str, Any], family: Family, *, include_device_id: bool,
                   current: Mapping[str, Any] | None = None, firmware: str | None = None) -> list[Group]:
    """The setter groups that write ``memory`` (a backup) onto a unit of layout ``family`` (§8.1).

    Matching is by field name (§8.5). A setter that also writes fields the backup lacks (a 5-value
    ``set_thickness`` fed from an A backup, ``set_led_par`` slopes 3/4 from a C backup) takes them from
    ``current``, the unit's own printed memory, so they keep their printed values; without ``current``
    such a group raises BadInput. Userdef loops send only indices both sides print, so the hidden last
    entry and anything beyond the target's count are never addressed (§3.7). ``firmware`` picks the
    v1.04 command variants (family A).
    """
    if family.name == "F":
        raise Refused("cannot restore onto layout F (firmware 1.19/1.20): its memory print is malformed, "
                      "so the restore cannot be verified by read-back")
    target_keys = set(current) if current is not None else set(printed_keys(family))
    available = set(memory)
    numeric = uses_numeric_setters(family)

    def value(key: str) -> tuple[Any, bool]:
        """(printed value, came from the backup?)"""
        if key in available and key in target_keys:
            return memory[key], True
        if current is not None and key in current:
            return current[key], False
        raise BadInput(f"restoring onto layout {family.name} needs {key!r}, which the backup lacks; "
                       f"pass the unit's current memory so it can be kept")

    groups: list[Group] = []

    def add(name: str, keys: Sequence[str], build) -> None:
        from_backup = [k for k in keys if k in available and k in target_keys]
        if not from_backup:
            return
        filled = tuple(k for k in keys if k not in from_backup)
        values = {k: value(k)[0] for k in keys}
        groups.append(Group(name, tuple(from_backup), build(values).encode("ascii"), filled))

    def args(*printed: Any) -> str:
        return "".join(format_arg(p) + "+" for p in printed)

    def flat(matrix: Sequence[Sequence[str]]) -> list[str]:
        # Setters store v[k] into [k mod 3][k div 3]: send column-major, the transpose of the print (§3.6).
        return [matrix[r][c] for c in range(3) for r in range(3)]

    if include_device_id:
        groups.extend(_device_id_groups(memory, family, firmware, current))

    codes = {"mag_bias": "1030", "mag_cal": "1031", "accel_bias": "1032", "accel_cal": "1033"}
    names = {"mag_bias": "set_magnetometer_bias", "mag_cal": "set_magnetometer",
             "accel_bias": "set_accelerometer_bias", "accel_cal": "set_accelerometer"}
    for key in ("mag_bias", "mag_cal", "accel_bias", "accel_cal"):
        cmd = codes[key] if numeric else names[key]
        if key in MATRICES:
            add(names[key], [key], lambda v, k=key, c=cmd: f"{c}+" + args(*flat(v[k])))
        else:
            add(names[key], [key], lambda v, k=key, c=cmd: f"{c}+" + args(*v[k]))

    if single_value_par(family, firmware):
        order = (("1034", "light_slope_all"), ("1035", "light_yint"), ("1036", "light_slope_r"),
                 ("1037", "light_slope_g"), ("1038", "light_slope_b"))
        add("set_par", LIGHT, lambda v: "".join(f"{c}+" + args(v[k]) for c, k in order))
    else:
        add("set_par", LIGHT, lambda v: ("1034+" if numeric else "set_par+") + args(*(v[k] for k in LIGHT)))

    thickness = family.thickness
    add("set_thickness", thickness,
        lambda v: ("1039+" if numeric else "set_thickness+") + args(*(v[k] for k in thickness)))

    def detectors(v: Mapping[str, Any]) -> str:
        out = ""
        for i in range(4):
            cmd = str(1040 + i) if numeric else f"set_detector{i + 1}_offset"
            out += f"{cmd}+" + args(v["detector_offset_slope"][i], v["detector_offset_yint"][i])
        return out

    add("set_detector_offsets", DETECTORS, detectors)

    def loop(cmd: str, keys: Sequence[str]):
        def build(v: Mapping[str, Any]) -> str:
            out = f"{cmd}+"
            for led in range(NUM_LED_ENTRIES):  # index 0 is printed and restorable too
                out += f"{led}+" + args(*(v[k][led] for k in keys))
            return out + "-1+"
        return build

    slopes = [f"par_to_dac_slope{i}" for i in range(1, family.par_slopes + 1)]
    par_keys = [*slopes, "par_to_dac_yint"]
    add("set_led_par", par_keys, loop("1044" if numeric else "set_led_par", par_keys))
    ir = ["ir_baseline_slope", "ir_baseline_yint"]
    add("ir_baseline", ir, loop("1045" if numeric else "ir_baseline", ir))
    for n in (1, 2, 3):
        keys = [f"colorcal_intensity{n}_slope", f"colorcal_intensity{n}_yint"]
        add(f"set_colorcal{n}", keys, loop(str(1045 + n) if numeric else f"set_colorcal{n}", keys))
    blanks = ["colorcal_blank1", "colorcal_blank2", "colorcal_blank3"]
    add("set_colorcal_blanks", blanks, loop("1049" if numeric else "set_colorcal_blanks", blanks))

    userdefs = [f"userdef{i}" for i in range(family.printed_userdefs)
                if f"userdef{i}" in available and f"userdef{i}" in target_keys]
    if userdefs:
        text = ("1050+" if numeric else "set_user_defined+")
        text += "".join(f"{k.removeprefix('userdef')}+" + args(memory[k]) for k in userdefs) + "-1+"
        groups.append(Group("set_user_defined", tuple(userdefs), text.encode("ascii")))
    return groups


def _device_id_groups(memory: Mapping[str, Any], family: Family, firmware: str | None,
                      current: Mapping[str, Any] | None) -> list[Group]:
    """``set_device_info`` (``1008`` on numeric-code firmware) with the signed decimal ID (§6, §8.6).

    Firmware that prints ``device_manufacture`` (A, early B) reads two values with prompts: ID, then the
    manufacture date, which is thus restored together with the ID (§8.1).
    """
    if single_value_par(family, firmware):
        raise Refused("firmware 0.54 sets the device ID only through 1001, which also re-addresses the "
                      "DACs; set the ID by hand instead of restoring it")
    if "device_id" not in memory:
        return []
    ident = str(device_id_signed(memory["device_id"]))
    cmd = "1008" if uses_numeric_setters(family) else "set_device_info"
    # The unit's own print says whether its setter reads two values; without it, only A is known to.
    two_values = "device_manufacture" in current if current is not None else family.name == "A"
    if two_values:
        manufacture = memory.get("device_manufacture", (current or {}).get("device_manufacture"))
        if manufacture is None or not _INTEGER.fullmatch(str(manufacture)):
            raise BadInput("restoring the ID on this unit also needs a manufacture date, which the backup lacks")
        fields = ("device_id", "device_manufacture") if "device_manufacture" in memory else ("device_id",)
        filled = () if "device_manufacture" in memory else ("device_manufacture",)
        return [Group("set_device_info", fields, f"{cmd}+{ident}+{manufacture}+".encode("ascii"), filled,
                      reply="device_info")]
    return [Group("set_device_info", ("device_id",), f"{cmd}+{ident}+".encode("ascii"), reply="device_info")]


def group_for_keys(groups: Iterable[Group], keys: Iterable[str]) -> list[Group]:
    """The groups that write any of ``keys`` (for re-sending after a failed read-back)."""
    wanted = {k.split(".")[0].split("[")[0] for k in keys}
    return [g for g in groups if wanted & set(g.fields)]

