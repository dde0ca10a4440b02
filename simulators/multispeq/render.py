"""Byte-exact console replies rendered from the EEPROM image (targets/multispeq.md §4, §5, §3.8).

Pure functions of (parsed image, profile, a few volatile values). Functions named ``*_body`` return what the
firmware prints *before* the CRC digits, so the console can run its own CRC accumulator over every byte a
command prints (prompts included); the plain names append the CRC line for standalone use and tests.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections.abc import Iterable, Sequence

from construct import Container

from simulators.multispeq.profiles import IdStyle, ManufactureStyle, Profile

PRINTF_CAP = 199  # every piece goes through a 200-byte buffer (§4.3): at most 199 characters come out
DEVICE_NAME = "MultispeQ"
DEVICE_VERSION = "1"
READY = f"{DEVICE_NAME} Ready\n".encode()
BAD_COMMAND = b'{"error":"bad command"}\n'
BAD_COMMAND_SPACE = b'{"error":" bad command"}\n'

# device_info "configuration" object (§5.1), in print order.
CONFIGURATION: tuple[tuple[str, str], ...] = (
    ("light 1", "530nm LED (green), Lumileds LXZ1-PM01"),
    ("light 2", "655nm LED (red), Lumileds LXZ1-PA01"),
    ("light 3", "590nm LED (amber), Lumileds LXZ1-PL01"),
    ("light 4", "448nm LED (blue), Lumileds LXZ1-PR01"),
    ("light 5", "950nm LED (NIR), OSRAM SFH 4441"),
    ("light 6", "950nm LED (NIR), OSRAM SFH 4441"),
    ("light 7", "655nm LED (red), Lumileds LXZ1-PA01"),
    ("light 8", "850nm LED (NIR), OSRAM SFH 4451"),
    ("light 9", "730nm LED (far red), Everlight ELSH-Q61F1-0LPNM-JF3F8"),
    ("light 10", "880nm LED (NIR), Kingbright APTD3216SF4C"),
    ("Detector 1", "700nm - 1150nm, Hamamatsu S6775-01. Detector on main body"),
    ("Detector 3", "400nm - 700nm, Hamamatsu S6775. Detector on clamp"),
    ("Ambient Temperature, Humidity, Pressure", "BOSCH BME280, temperature_humidity_pressure"),
    ("Ambient Temperature, Humidity, Pressure 2", "BOSCH BME280, temperature_humidity_pressure2"),
    ("Contactless Temperature", "Melexis MLX90615SSG-DAG-000-TU, contactless_temp"),
    ("Accelerometer", "Freescale MMA8653FCR1, compass_and_angle"),
    ("Magnetometer", "Freescale MAG3110FCR1, compass_and_angle"),
    ("Hall Effect Sensor", "TT Electronics OHS3150U, thickness"),
    ("PAR light sensor", "AMS-TAOS USA TCS34715FN + 700nm low pass filter, light_intensity"),
)

# Prompts of the early two-value ID setter (§3.5). The wording is not in the spec [U]; the shape is:
# one {"message": ...} line whose text ends in a newline, printed with println, so two "\n" follow.
PROMPT_DEVICE_ID = b'{"message": "Please enter the device ID followed by +"}\n\n'
PROMPT_MANUFACTURE = b'{"message": "Please enter the date of manufacture (yyyymm) followed by +"}\n\n'


# --- small pieces -----------------------------------------------------------------------------------------

def crc_line(printed: bytes | bytearray) -> bytes:
    """8 uppercase, zero-padded hex digits of zlib.crc32 over ``printed``, then ``\\n`` (§3.8)."""
    return b"%08X\n" % zlib.crc32(printed)


def with_crc(body: bytes) -> bytes:
    return body + crc_line(body)


def cap(piece: str) -> str:
    """What a 200-byte printf buffer lets through: excess is dropped silently, ``\\n`` included (§4.3)."""
    return piece[:PRINTF_CAP]


def number(x: float, nan_text: str = "nan", decimals: int = 6) -> str:
    """C ``%f`` of a float32 widened to double: ``nan``/``-nan`` (sign bit, if so configured), ``inf``."""
    if math.isnan(x):
        return "-nan" if nan_text == "-nan" and math.copysign(1.0, x) < 0 else "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{decimals}f}"


def id_text(device_id: int, style: IdStyle) -> str:
    """The device ID as a build prints it (§6): unsigned 32-bit value, most significant byte first."""
    u = device_id & 0xFFFFFFFF
    parts = [(u >> shift) & 0xFF for shift in (24, 16, 8, 0)]
    if style is IdStyle.COLON4:
        return ":".join(f"{b:02x}" for b in parts)
    if style is IdStyle.D4F5_PADDED:
        return "d4:f5:" + ":".join(f"{b:02x}" for b in parts)
    return "d4:f5:" + ":".join(f"{b:x}" for b in parts)


def _q(x: float, nan_text: str) -> str:
    return f'"{number(x, nan_text)}"'


def _vec(xs: Iterable[float], nan_text: str) -> str:
    return ",".join(_q(x, nan_text) for x in xs)


def _matrix(m: Sequence[Sequence[float]], nan_text: str) -> str:
    return "[" + ",".join("[" + _vec(row, nan_text) + "]" for row in m) + "]"


def print_order_led_arrays(profile: Profile) -> list[str]:
    """The 11-element lines in print order (§4.2 lines 19-34), which differs from the struct order."""
    slopes = [f"par_to_dac_slope{i}" for i in range(1, profile.family.par_slopes + 1)]
    return slopes + [
        "par_to_dac_yint", "ir_baseline_slope", "ir_baseline_yint",
        "colorcal_intensity1_slope", "colorcal_intensity1_yint",
        "colorcal_intensity2_slope", "colorcal_intensity2_yint",
        "colorcal_intensity3_slope", "colorcal_intensity3_yint",
        "colorcal_blank1", "colorcal_blank2", "colorcal_blank3",
    ]


# --- print_memory -----------------------------------------------------------------------------------------

def print_memory_pieces(v: Container, profile: Profile, nan_text: str = "nan") -> list[str]:
    """The printf pieces of print_memory (families A-E), each already capped, without the CRC digits."""
    if profile.family.name == "F":
        return _print_memory_pieces_f(v, nan_text)
    pieces = ["{\n" + f'"device_id":"{id_text(v.device_id, profile.memory_id_style)}",\n']
    if profile.memory_manufacture:
        pieces.append(f'"device_manufacture": "{v.device_manufacture}",\n')
    pieces += [
        f'"mag_bias": [{_vec(v.mag_bias, nan_text)}],\n',
        f'"mag_cal": {_matrix(v.mag_cal, nan_text)},\n',
        f'"accel_bias": [{_vec(v.accel_bias, nan_text)}],\n',
        f'"accel_cal": {_matrix(v.accel_cal, nan_text)},\n',
    ]
    for name in ("light_slope_all", "light_slope_r", "light_slope_g", "light_slope_b", "light_yint"):
        pieces.append(f'"{name}": {_q(v[name], nan_text)},\n')
    if profile.memory_duplicate_slope_all:
        pieces.append(f'"light_slope_all": {_q(v.light_slope_all, nan_text)},\n')
    pieces.append(f'"detector_offset_slope": [{_vec(v.detector_offset_slope, nan_text)}],\n')
    pieces.append(f'"detector_offset_yint": [{_vec(v.detector_offset_yint, nan_text)}],\n')
    for name in profile.family.thickness:
        pieces.append(f'"{name}": {_q(v[name], nan_text)},\n')
    out = [cap(p) for p in pieces]
    for name in print_order_led_arrays(profile):
        out.append(f'"{name}": [')  # the name prefix is printed on its own, uncapped
        values = v[name]
        for i, x in enumerate(values):
            out.append(cap(_q(x, nan_text) + ("," if i < len(values) - 1 else "],\n")))
    count = profile.family.printed_userdefs
    for i in range(count):
        last = i == count - 1
        out.append(cap(f'"userdef{i}": {_q(v.userdef[i], nan_text)}' + ("\n" if last else ",\n")))
    out.append("}")
    return out


def _print_memory_pieces_f(v: Container, nan_text: str) -> list[str]:
    """Family F (1.19/1.20): the malformed dev-branch output of §4.6. Best effort; details are [U]."""
    def n(x: float, decimals: int = 3) -> str:
        return number(x, nan_text, decimals)

    def joined(xs: Iterable[float]) -> str:
        return ",".join(n(x) for x in xs)

    flat = [x for row in v.mag_cal for x in row]
    flat_accel = [x for row in v.accel_cal for x in row]
    out = ["{\n" + f'"device_id":"{id_text(v.device_id, IdStyle.COLON4)}",\n',
           f'"mag_bias": ["{joined(v.mag_bias)}],\n',
           f'"mag_cal": [["{joined(flat)}],\n',
           f'"accel_bias": ["{joined(v.accel_bias)}],\n',
           f'"mag_cal": [["{joined(flat_accel)}],\n']  # the accelerometer matrix under the wrong key
    for name in ("light_slope_all", "light_slope_r", "light_slope_g", "light_slope_b"):
        out.append(f'"{name}": ["{n(v[name])}],\n')
    out.append(f'"light_yint": ["{n(v.light_yint, 0)}],\n')
    out.append(f'"detector_offset_slope": [["{joined(v.detector_offset_slope)}],\n')
    out.append(f'"detector_offset_yint": [["{joined(v.detector_offset_yint)}],\n')
    for name in ("thickness_a", "thickness_b", "thickness_c", "thickness_min", "thickness_max"):
        out.append(f'"{name}": ["{n(v[name])}],\n')
    out = [cap(p) for p in out]
    for name in print_order_led_arrays_f():
        values = list(v[name])
        if name == "colorcal_blank3":
            values[-1] = v.colorcal_blank2[-1]
        out.append(f'"{name}": [')
        out += [f'"{n(x)}",' for x in values[:-1]]
        out.append(f'{n(values[-1])}"],\n')
    count = 100
    for i in range(count):
        out.append(cap(f'"userdef{i}":"{n(v.userdef[i])}"' + ("\n" if i == count - 1 else ",\n")))
    return out  # no closing brace: the CRC digits follow directly


def print_order_led_arrays_f() -> list[str]:
    return [f"par_to_dac_slope{i}" for i in range(1, 5)] + [
        "par_to_dac_yint", "ir_baseline_slope", "ir_baseline_yint",
        "colorcal_intensity1_slope", "colorcal_intensity1_yint",
        "colorcal_intensity2_slope", "colorcal_intensity2_yint",
        "colorcal_intensity3_slope", "colorcal_intensity3_yint",
        "colorcal_blank1", "colorcal_blank2", "colorcal_blank3",
    ]


def print_memory_body(v: Container, profile: Profile, nan_text: str = "nan") -> bytes:
    return "".join(print_memory_pieces(v, profile, nan_text)).encode("ascii")


def print_memory(v: Container, profile: Profile, nan_text: str = "nan") -> bytes:
    """The whole reply: body, 8 hex CRC digits and ``\\n``."""
    return with_crc(print_memory_body(v, profile, nan_text))


# --- device_info ------------------------------------------------------------------------------------------

def device_info_body(v: Container, profile: Profile, battery: int) -> bytes:
    """One-line JSON of §5.1, without the CRC digits (also the tail of ``set_device_info``'s reply)."""
    head = (f'{{"device_name":"{DEVICE_NAME}","device_version":"{DEVICE_VERSION}",'
            f'"device_id":"{id_text(v.device_id, profile.info_id_style)}",')
    if profile.info_battery:
        head += f'"device_battery":{int(battery)},'
    head += f'"device_firmware":"{profile.firmware}"'
    if profile.info_manufacture is ManufactureStyle.INT:
        head += f',"device_manufacture":{v.device_manufacture}'
    elif profile.info_manufacture is ManufactureStyle.STRING:
        head += f',"device_manufacture":"{v.device_manufacture}"'
    text = cap(head)
    if profile.info_configuration:
        text += ',"configuration": '
        for i, (key, value) in enumerate(CONFIGURATION):
            text += "    " + ("{" if i == 0 else ",") + f'"{key}":"{value}"'
        text += "    }"
    return (text + "}").encode("ascii")


def device_info(v: Container, profile: Profile, battery: int) -> bytes:
    return with_crc(device_info_body(v, profile, battery))


# --- small replies without CRC ----------------------------------------------------------------------------

def print_all(light_intensity: float) -> bytes:
    return b"light_intensity:%g\n" % light_intensity


def battery_reply(percent: int) -> bytes:
    return b'{"battery":%d}\n' % int(percent)


def compiled_reply(profile: Profile) -> bytes:
    return f"Compiled on: {profile.compiled}\n".encode("ascii")


def print_date(unix_seconds: float) -> bytes:
    secs = int(unix_seconds)
    stamp = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return f'{{"device_time":"{stamp}","device_time":{secs}}}\n'.encode("ascii")


def print_magnetometer_bias(v: Container, nan_text: str = "nan") -> bytes:
    """Six decimals each, and no line ending at all (§3.4)."""
    return ("Magnetometer Bias: " + ", ".join(number(x, nan_text) for x in v.mag_bias)).encode("ascii")


def print_magnetometer(v: Container, nan_text: str = "nan") -> bytes:
    """A header with a trailing space, then the 9 elements row-major, 7 decimals, one per line."""
    lines = "".join(number(x, nan_text, 7) + "\n" for row in v.mag_cal for x in row)
    return ("Magnetometer Rotation: \n" + lines).encode("ascii")
