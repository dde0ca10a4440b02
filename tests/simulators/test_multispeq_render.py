"""Byte-exact rendering of MultispeQ v1 replies: the golden vectors of targets/multispeq.md §4.5 and §5.1.

The golden vectors are the spec's independent check (rendered by compiling each firmware's own print
routine on a host): never loosen them to make the renderer pass.
"""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from harness.targets.multispeq import schema
from simulators.multispeq import render
from simulators.multispeq.profiles import PROFILES, IdStyle

GOLDEN_ID = 0x5200131F
GOLDEN_MANUFACTURE = 52016


def golden_image() -> bytes:
    """2048 x 0x00 except device_id = 0x5200131f and device_manufacture = 52016 (§4.5)."""
    image = bytearray(schema.EEPROM_SIZE)
    struct.pack_into("<iI", image, 0, GOLDEN_ID, GOLDEN_MANUFACTURE)
    return bytes(image)


def values(profile_name: str, image: bytes):
    return PROFILES[profile_name].family.parse(image)


def split_reply(reply: bytes) -> tuple[bytes, str]:
    """(everything the CRC covers, the 8 digits); checks the framing on the way."""
    assert reply.endswith(b"\n")
    digits = reply[-9:-1]
    assert len(digits) == 8 and digits == digits.upper()
    return reply[:-9], digits.decode()


@pytest.mark.parametrize(("profile", "length", "crc"), [
    ("0.54", 4117, "272E434B"),  # A, v1.04, duplicate light_slope_all
    ("1.05-A", 4086, "542E202B"),  # A, v1.05 release
    ("1.05-B-early", 4144, "C7EF4030"),  # B early, with device_manufacture line
    ("1.05-B-late", 4113, "D022BF01"),
    ("1.06-B", 4113, "D022BF01"),
    ("1.06-C50", 4113, "D022BF01"),
    ("1.10", 4738, "9EC90169"),  # C75
    ("1.11", 6043, "E13F19B0"),  # D
    ("1.13", 6563, "9AE4F73C"),  # E 1.13-1.15
    ("1.15", 6563, "9AE4F73C"),
    ("1.16", 6558, "029C4326"),  # E 1.16-1.18
    ("1.17", 6558, "029C4326"),
    ("1.18", 6558, "029C4326"),
])
def test_print_memory_golden_vectors(profile: str, length: int, crc: str) -> None:
    reply = render.print_memory(values(profile, golden_image()), PROFILES[profile])
    body, digits = split_reply(reply)
    assert (len(reply), digits) == (length, crc)
    assert zlib.crc32(body) == int(crc, 16)
    assert body.endswith(b"\n}")


@pytest.mark.parametrize(("nan_text", "length", "crc"), [("nan", 4793, "EFADB2DB"), ("-nan", 5146, "52E76466")])
def test_print_memory_blank_image_golden_vectors(nan_text: str, length: int, crc: str) -> None:
    reply = render.print_memory(values("1.17", b"\xff" * 2048), PROFILES["1.17"], nan_text)
    assert (len(reply), split_reply(reply)[1]) == (length, crc)
    assert b'"device_id":"ff:ff:ff:ff",' in reply
    assert (b'"-nan"' in reply) == (nan_text == "-nan")


def test_print_memory_rendered_example_of_spec() -> None:
    """§4.5: zero image, ID 0x5200131f, mag_bias (-12.5, 3.25, 0.1), identity mag_cal: 6560 bytes, 0C489BB8."""
    family = PROFILES["1.17"].family
    v = family.parse(golden_image())
    v.mag_bias = [-12.5, 3.25, 0.1]
    v.mag_cal = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    reply = render.print_memory(family.parse(family.build(v)), PROFILES["1.17"])
    lines = reply.decode().split("\n")
    assert lines[:4] == ["{", '"device_id":"52:00:13:1f",', '"mag_bias": ["-12.500000","3.250000","0.100000"],',
                         '"mag_cal": [["1.000000","0.000000","0.000000"],["0.000000","1.000000","0.000000"],'
                         '["0.000000","0.000000","1.000000"]],']
    assert lines[-4:] == ['"userdef133": "0.000000",', '"userdef134": "0.000000"', "}0C489BB8", ""]
    assert len(reply) == 6560
    assert len(lines) - 1 == 170  # E output is 170 lines


def test_print_memory_is_json_with_string_numbers_in_print_order() -> None:
    profile = PROFILES["1.17"]
    body, _ = split_reply(render.print_memory(values("1.17", golden_image()), profile))
    doc = json.loads(body)
    keys = list(doc)
    assert keys[:6] == ["device_id", "mag_bias", "mag_cal", "accel_bias", "accel_cal", "light_slope_all"]
    assert keys.index("light_yint") == keys.index("light_slope_b") + 1  # slopes first, unlike the struct
    assert keys[-1] == "userdef134" and "userdef135" not in doc and "sleep" not in doc
    assert doc["par_to_dac_slope1"] == ["0.000000"] * 11
    assert keys.index("colorcal_intensity3_yint") < keys.index("colorcal_blank1")


def test_old_id_styles() -> None:
    """Pre-1.16: print_memory unpadded d4:f5:, device_info padded; A prints device_manufacture."""
    memory = render.print_memory(values("1.13", golden_image()), PROFILES["1.13"])
    assert memory.startswith(b'{\n"device_id":"d4:f5:52:0:13:1f",\n"mag_bias"')
    a_memory = render.print_memory(values("1.05-A", golden_image()), PROFILES["1.05-A"])
    assert a_memory.startswith(b'{\n"device_id":"d4:f5:52:0:13:1f",\n"device_manufacture": "52016",\n')
    assert b'"thickness_d"' in a_memory and b'"par_to_dac_slope3"' not in a_memory
    assert render.id_text(GOLDEN_ID, IdStyle.D4F5_PADDED) == "d4:f5:52:00:13:1f"
    assert render.id_text(-1, IdStyle.COLON4) == "ff:ff:ff:ff"


def test_v104_duplicate_light_slope_all() -> None:
    text = render.print_memory(values("0.54", golden_image()), PROFILES["0.54"]).decode()
    assert text.count('"light_slope_all": ') == 2
    assert '"light_yint": "0.000000",\n"light_slope_all": "0.000000",\n' in text


@pytest.mark.parametrize(("profile", "length", "crc"), [
    ("1.17", 1379, "5DC8AFF7"), ("1.13", 134, "F0549A46"), ("1.05-A", 161, "5B5DF3F1")])
def test_device_info_golden_vectors(profile: str, length: int, crc: str) -> None:
    reply = render.device_info(values(profile, golden_image()), PROFILES[profile], battery=87)
    assert (len(reply), split_reply(reply)[1]) == (length, crc)


def test_device_info_shapes() -> None:
    v = values("1.13", golden_image())
    assert render.device_info_body(v, PROFILES["1.13"], 87) == (
        b'{"device_name":"MultispeQ","device_version":"1","device_id":"d4:f5:52:00:13:1f",'
        b'"device_battery":87,"device_firmware":"1.13"}')
    a = render.device_info_body(values("1.05-A", golden_image()), PROFILES["1.05-A"], 87)
    assert a.endswith(b'"device_firmware":"1.05","device_manufacture":52016}')
    v104 = render.device_info_body(values("0.54", golden_image()), PROFILES["0.54"], 87)
    assert b"device_battery" not in v104
    assert v104.endswith(b'"device_id":"d4:f5:52:0:13:1f","device_firmware":"0.54","device_manufacture":"52016"}')
    e = render.device_info_body(values("1.17", golden_image()), PROFILES["1.17"], 87).decode()
    assert e.startswith('{"device_name":"MultispeQ","device_version":"1","device_id":"52:00:13:1f",'
                        '"device_battery":87,"device_firmware":"1.17","configuration":     {"light 1":')
    assert e.endswith('light_intensity"    }}')
    assert json.loads(e)["configuration"]["Detector 3"].startswith("400nm")


@pytest.mark.parametrize(("x", "text"), [
    (0.0, "0.000000"), (-0.0, "-0.000000"), (0.0078125, "0.007812"), (-1e-9, "-0.000000"),
    (float("inf"), "inf"), (float("-inf"), "-inf"),
    (struct.unpack("<f", b"\xff\xff\x7f\x7f")[0], "340282346638528859811704183484516925440.000000"),
])
def test_number_formatting(x: float, text: str) -> None:
    assert render.number(x) == text


def test_nan_spelling() -> None:
    negative_nan = struct.unpack("<f", b"\xff\xff\xff\xff")[0]
    positive_nan = struct.unpack("<f", b"\x00\x00\xc0\x7f")[0]
    assert render.number(negative_nan) == "nan"
    assert render.number(negative_nan, "-nan") == "-nan"
    assert render.number(positive_nan, "-nan") == "nan"  # only the sign bit makes "-nan"
    assert len(render.number(-3.4028234663852886e38)) == 47


def _image_with(profile: str, **fields: object) -> bytes:
    family = PROFILES[profile].family
    v = family.parse(golden_image())
    for name, value in fields.items():
        v[name] = value
    return family.build(v)


def test_199_character_cap_cuts_mag_cal_but_crc_stays_valid() -> None:
    """§4.3: numbers >= 1e9 in all nine cells exceed 152 characters; the rest of the piece is dropped."""
    image = _image_with("1.17", mag_cal=[[1e12] * 3] * 3)
    reply = render.print_memory(values("1.17", image), PROFILES["1.17"])
    body, digits = split_reply(reply)
    assert zlib.crc32(body) == int(digits, 16)
    line = [ln for ln in body.decode().split("\n") if ln.startswith('"mag_cal"')][0]
    cut, rest = line.split('"accel_bias"')
    assert len(cut) == 199 and cut.endswith(',"99999')  # cut mid-number
    assert rest.startswith(": [")  # the next line continues on the same line
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


def test_199_character_cap_at_exactly_1e9_drops_only_the_newline() -> None:
    """Nine times 1e9 is 153 characters: only the newline goes, so the JSON still happens to parse."""
    image = _image_with("1.17", mag_cal=[[1e9] * 3] * 3)
    body, digits = split_reply(render.print_memory(values("1.17", image), PROFILES["1.17"]))
    assert zlib.crc32(body) == int(digits, 16)
    assert '"1000000000.000000"]],"accel_bias": [' in body.decode()
    assert json.loads(body)["mag_cal"][2][2] == "1000000000.000000"


def test_199_character_cap_boundary() -> None:
    """152 characters of numbers still fit (8 x 17 + 16); 153 do not."""
    fits = _image_with("1.17", mag_cal=[[1e9, 1e9, 1e9], [1e9, 1e9, 1e9], [1e9, 1e9, 1e8]])
    body, _ = split_reply(render.print_memory(values("1.17", fits), PROFILES["1.17"]))
    json.loads(body)
    line = body.decode().split("\n")[3]
    assert len(line) + 1 == 199


def test_other_lines_never_reach_the_cap() -> None:
    flt_max = struct.unpack("<f", b"\xff\xff\x7f\xff")[0]  # -FLT_MAX, the longest number
    image = _image_with("1.17", userdef=[flt_max] * 136, par_to_dac_slope1=[flt_max] * 11)
    body, _ = split_reply(render.print_memory(values("1.17", image), PROFILES["1.17"]))
    doc = json.loads(body)
    assert doc["userdef7"] == "-340282346638528859811704183484516925440.000000"
    assert len(body.decode().split("\n")[18]) > 199  # 11-element lines are capped per element only


def test_family_f_is_malformed() -> None:
    """§4.6 (optional profile): 3 decimals, broken quotes, no closing brace before the CRC."""
    reply = render.print_memory(values("1.17", golden_image()), PROFILES["1.19"])
    body, digits = split_reply(reply)
    assert zlib.crc32(body) == int(digits, 16)
    text = body.decode()
    assert '"mag_bias": ["0.000,0.000,0.000],\n' in text
    assert text.count('"mag_cal"') == 2
    assert text.endswith('"userdef99":"0.000"\n')
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


def test_small_replies() -> None:
    v = values("1.17", _image_with("1.17", mag_bias=[1.5, -2.0, 0.25]))
    assert render.print_magnetometer_bias(v) == b"Magnetometer Bias: 1.500000, -2.000000, 0.250000"
    assert render.print_magnetometer(values("1.17", golden_image())).startswith(
        b"Magnetometer Rotation: \n0.0000000\n")
    assert render.print_all(12.5) == b"light_intensity:12.5\n"
    assert render.battery_reply(87) == b'{"battery":87}\n'
    assert render.print_date(1489147200.7) == (
        b'{"device_time":"2017-03-10T12:00:00.000Z","device_time":1489147200}\n')
    assert render.compiled_reply(PROFILES["1.11"]) == b"Compiled on: Nov  2 2016 12:00:00\n"
    assert render.crc_line(b"") == b"00000000\n"
