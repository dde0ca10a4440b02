"""Console protocol, host side: framing, CRC, parsing, argument text, restore groups (multispeq.md §3-§8)."""

from __future__ import annotations

import math
import re
import struct
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness.errors import BadInput, Refused
from harness.targets.multispeq.protocol import (
    crc_ok,
    device_info_done,
    format_arg,
    hello_done,
    map_fields,
    parse_device_info,
    parse_print_memory,
    print_memory_done,
    print_memory_end,
    printed_keys,
    render_print_memory,
    restore_groups,
    shape_of,
    with_crc,
)
from harness.targets.multispeq.schema import FAMILIES, family_from_keys

OLD_ID = "d4:f5:52:0:13:1f"  # print_memory before 1.16: d4:f5 prefix, bytes not zero-padded
NEW_ID = "52:00:13:1f"


def memory_of(family: str, device_id: str = NEW_ID, *, manufacture: bool = False, value: str = "0.000000",
              **overrides: object) -> dict:
    """A print_memory object for ``family`` with every number ``value`` (the §4.5 golden images)."""
    out: dict = {}
    for key in printed_keys(FAMILIES[family], manufacture=manufacture):
        shape = shape_of(key)
        if key == "device_id":
            out[key] = device_id
        elif key == "device_manufacture":
            out[key] = "52016"
        elif shape == ():
            out[key] = value
        elif shape == (3, 3):
            out[key] = [[value] * 3 for _ in range(3)]
        else:
            out[key] = [value] * shape[0]
    out.update(overrides)
    return out


def v104_reply() -> bytes:
    """Tagged v1.04 (0.54) prints light_slope_all a second time after light_yint (§4.4)."""
    body = render_print_memory(memory_of("A", OLD_ID, manufacture=True))[:-9].decode()
    line = '"light_yint": "0.000000",\n'
    return with_crc(body.replace(line, line + '"light_slope_all": "0.000000",\n').encode())


# --- framing and CRC --------------------------------------------------------------------------------------

GOLDEN = [  # family, print_memory ID, manufacture line, length, CRC (§4.5 golden vectors)
    ("A", OLD_ID, True, 4086, "542E202B"),
    ("B", OLD_ID, True, 4144, "C7EF4030"),
    ("C50", OLD_ID, False, 4113, "D022BF01"),
    ("C75", OLD_ID, False, 4738, "9EC90169"),
    ("D", OLD_ID, False, 6043, "E13F19B0"),
    ("E", OLD_ID, False, 6563, "9AE4F73C"),
    ("E", NEW_ID, False, 6558, "029C4326"),
]


@pytest.mark.parametrize(("family", "device_id", "manufacture", "length", "crc"), GOLDEN)
def test_golden_replies_parse_to_their_family(family, device_id, manufacture, length, crc):
    memory = memory_of(family, device_id, manufacture=manufacture)
    raw = render_print_memory(memory)
    assert (len(raw), raw[-9:-1].decode()) == (length, crc)
    assert crc_ok(raw) and print_memory_done(raw)
    parsed, warnings = parse_print_memory(raw)
    assert parsed == memory and list(parsed) == list(memory) and warnings == []
    assert family_from_keys(parsed).name == ("C50" if family == "C50" else family)


def test_v104_duplicate_light_slope_all_is_kept_once_with_a_warning():
    raw = v104_reply()
    assert (len(raw), raw[-9:-1]) == (4117, b"272E434B")
    memory, warnings = parse_print_memory(raw, "0.54")
    assert memory["light_slope_all"] == "0.000000"
    assert len(warnings) == 1 and "light_slope_all" in warnings[0]
    assert family_from_keys(memory).name == "A"


def test_spec_example_reply_with_leading_zero_crc():
    memory = memory_of("E", mag_bias=["-12.500000", "3.250000", "0.100000"],
                       mag_cal=[["1.000000", "0.000000", "0.000000"], ["0.000000", "1.000000", "0.000000"],
                                ["0.000000", "0.000000", "1.000000"]])
    raw = render_print_memory(memory)
    assert raw.startswith(b'{\n"device_id":"52:00:13:1f",\n"mag_bias": ["-12.500000","3.250000","0.100000"],\n')
    assert raw.endswith(b'"userdef133": "0.000000",\n"userdef134": "0.000000"\n}0C489BB8\n')
    assert len(raw) == 6560 and crc_ok(raw)
    assert parse_print_memory(raw)[0]["mag_bias"] == ["-12.500000", "3.250000", "0.100000"]


@pytest.mark.parametrize(("nan", "length", "crc"), [("nan", 4793, "EFADB2DB"), ("-nan", 5146, "52E76466")])
def test_blank_image_nan_spellings(nan, length, crc):
    raw = render_print_memory(memory_of("E", "ff:ff:ff:ff", value=nan))
    assert (len(raw), raw[-9:-1].decode()) == (length, crc)
    memory, _ = parse_print_memory(raw, "1.17")
    assert memory["userdef134"] == nan and memory["mag_cal"][2][2] == nan


def test_crc_compares_all_eight_digits_in_any_case():
    raw = render_print_memory(memory_of("E"))
    assert raw.endswith(b"}029C4326\n") and crc_ok(raw)
    assert crc_ok(raw[:-9] + b"029c4326\n")
    assert not crc_ok(raw[:-9] + b"29C4326\n")  # the JII library's unpadded digits are not a CRC
    assert not crc_ok(raw[:-9] + b"029C4327\n")
    flipped = bytearray(raw)
    flipped[100] ^= 0x01
    assert not crc_ok(bytes(flipped))
    assert not crc_ok(b"")


def test_framing_predicates():
    raw = render_print_memory(memory_of("E"))
    assert not print_memory_done(raw[:-1]) and not print_memory_done(raw[:-10])
    assert print_memory_end(raw + b"MultispeQ Ready\n") == len(raw)
    assert not print_memory_done(b'{\n"x": "}01234567\n')  # "}" must start its line
    info = b'{"device_name":"MultispeQ"}5DC8AFF7\n'
    assert device_info_done(info) and not device_info_done(info[:-1])
    assert hello_done(b"MultispeQ Ready\n") and hello_done(b"junk\nInstrument Ready\n")
    assert not hello_done(b"MultispeQ Ready") and not hello_done(b"MultispeQReady\n")


# --- device_info ------------------------------------------------------------------------------------------

CONFIG = '"light 1":"530nm LED (green), Lumileds LXZ1-PM01"'


def test_device_info_117_with_configuration():
    body = ('{"device_name":"MultispeQ","device_version":"1","device_id":"52:00:13:1f","device_battery":87,'
            f'"device_firmware":"1.17","configuration":     {{{CONFIG}    ,"x":"y"    }}}}').encode()
    info = parse_device_info(with_crc(body))
    assert info["device_id"] == NEW_ID and info["device_id_u32"] == 0x5200131F
    assert info["firmware"] == "1.17" and info["firmware_v2"] is False
    assert info["device_battery"] == 87 and info["configuration"]["x"] == "y"


def test_device_info_golden_pre_116_forms():
    body = (b'{"device_name":"MultispeQ","device_version":"1","device_id":"d4:f5:52:00:13:1f",'
            b'"device_battery":87,"device_firmware":"1.13"}')
    raw = with_crc(body)
    assert (len(raw), raw[-9:-1]) == (134, b"F0549A46")
    assert parse_device_info(raw)["device_id"] == NEW_ID
    a_form = with_crc(b'{"device_name":"MultispeQ","device_version":"1","device_id":"d4:f5:52:00:13:1f",'
                      b'"device_battery":87,"device_firmware":"1.05","device_manufacture":52016}')
    assert (len(a_form), a_form[-9:-1]) == (161, b"5B5DF3F1")
    assert parse_device_info(a_form)["device_manufacture"] == 52016


def test_device_info_v104_prompts_and_v2():
    v104 = with_crc(b'{"message": "enter the device ID"}\n\n{"message": "enter the date"}\n\n'
                    b'{"device_name":"MultispeQ","device_version":"1","device_id":"d4:f5:52:0:13:1f",'
                    b'"device_firmware":"0.54","device_manufacture":"52016"}')
    info = parse_device_info(v104)
    assert info["device_id"] == NEW_ID and info["firmware"] == "0.54" and "device_battery" not in info
    v2 = parse_device_info(with_crc(b'{"device_name":"MultispeQ","device_version":2,"device_id":"01:02:03:04",'
                                    b'"device_firmware": 2.31}'))
    assert v2["firmware"] == "2.31" and v2["firmware_v2"] is True and v2["device_id"] == "01:02:03:04"
    with pytest.raises(BadInput):
        parse_device_info(with_crc(b'{"error":"bad command"}'))


# --- print_memory edge cases ------------------------------------------------------------------------------

def capped_reply(memory: dict) -> bytes:
    """Render with the firmware's 199-character cap on each whole line piece (lines 3-18, §4.3)."""
    text = render_print_memory(memory)[:-9].decode()
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        piece = line + ("\n" if i < len(lines) - 1 else "")
        out.append(piece[:199] if 1 < i < 18 else piece)
    return with_crc("".join(out).encode())


def test_a_line_cut_by_the_199_character_cap_is_named():
    big = "10000000000.000000"  # 18 characters x 9 = 162 > 152: the comma and more are lost
    raw = capped_reply(memory_of("E", mag_cal=[[big] * 3 for _ in range(3)]))
    assert crc_ok(raw)  # the CRC covers what was printed, so it still matches
    with pytest.raises(BadInput, match=r"line 4 \('mag_cal'\).*199-character"):
        parse_print_memory(raw)


def test_a_line_that_only_lost_its_newline_still_parses_with_a_warning():
    big = "1000000000.000000"  # 17 x 9 = 153: only the newline is dropped, the values are whole
    memory = memory_of("E", mag_cal=[[big] * 3 for _ in range(3)])
    parsed, warnings = parse_print_memory(capped_reply(memory))
    assert parsed == memory
    assert any("199-character" in w for w in warnings)


def test_family_f_output_is_refused():
    body = (b'{\n"device_id":"52:00:13:1f",\n"mag_bias": ["1.500,0.000,-2.250],\n'
            + b"".join(b'"userdef%d":"0.000",\n' % i for i in range(99)) + b'"userdef99":"0.000"\n')
    with pytest.raises(Refused, match="1.19"):
        parse_print_memory(with_crc(body))


@pytest.mark.parametrize("damage", [
    lambda r: r.replace(b'"thickness_a": "0.000000",\n', b""),  # a key missing: no family matches
    lambda r: r.replace(b'"light_yint": "0.000000"', b'"light_yint": "zero"'),
    lambda r: r.replace(b'"mag_bias": ["0.000000",', b'"mag_bias": ['),
    lambda r: r[:-10] + b"]01234567\n",
])
def test_malformed_replies_are_bad_input(damage):
    raw = render_print_memory(memory_of("E"))
    with pytest.raises(BadInput):
        parse_print_memory(with_crc(damage(raw)[:-9]))


# --- argument text ----------------------------------------------------------------------------------------

_STRTOD = re.compile(r"\s*([-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|inf(?:inity)?|nan))", re.I)


def device_stores(text: str) -> int:
    """The float32 bits the firmware stores for an argument: strtod prefix -> double -> float32 (§3.3).

    Written independently of the code under test; asserts the whole text is the numeric prefix.
    """
    m = _STRTOD.match(text)
    assert m is not None and m.end() == len(text), f"device would not read all of {text!r}"
    x = float(m.group(1))
    try:
        return struct.unpack("<I", struct.pack("<f", x))[0]
    except OverflowError:
        return struct.unpack("<I", struct.pack("<f", math.copysign(math.inf, x)))[0]


def bits_of(printed: str) -> int:
    return device_stores(printed)


@settings(max_examples=3000, deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
@example(0x7F7FFFFF)  # FLT_MAX
@example(0x00000001)  # smallest denormal
@example(0x80000000)  # -0
@example(0x68D3C21C)  # ~8e24
@example(0x7F800000)  # inf
def test_format_arg_round_trips_every_float32(bits):
    value = struct.unpack("<f", struct.pack("<I", bits))[0]
    for printed in (repr(value), f"{value:f}"):
        text = format_arg(printed)
        assert len(text) <= 24 and "+" not in text and " " not in text
        if math.isnan(value):
            assert text == "nan"
            continue
        assert device_stores(text) == bits_of(printed)
    if not math.isnan(value):
        assert device_stores(format_arg(repr(value))) == bits  # exact input: exact bits back


@pytest.mark.parametrize(("printed", "expected"), [
    ("0.000000", "0"), ("-0.000000", "-0"), ("nan", "nan"), ("-nan", "nan"), ("inf", "inf"),
    ("-inf", "-inf"), ("1.000000", "1"), ("-12.500000", "-12.5"), ("0.100000", "0.1"),
    ("1000000000000000000000000.000000", "1e24"),
    ("340282346638528859811704183484516925440.000000", "3.4028235e38"),
    ("-340282346638528859811704183484516925440.000000", "-3.4028235e38"),
    ("0.000001", "1e-6"),
])
def test_format_arg_examples(printed, expected):
    assert format_arg(printed) == expected


def test_format_arg_large_printed_values_become_short():
    for printed in ("9999999848243207295109594873856.000000", "123456789012345678901234567.000000"):
        text = format_arg(printed)
        assert len(text) < 24 and "e" in text and device_stores(text) == bits_of(printed)


def test_format_arg_rejects_text_that_is_not_a_number():
    assert format_arg("1e+38") == "1e38"
    for bad in ("", "abc", "+1", "0x10", "1,5"):
        with pytest.raises(BadInput):
            format_arg(bad)


# --- restore groups ---------------------------------------------------------------------------------------

def nine(prefix: str = "") -> list[list[str]]:
    return [[f"{prefix}{3 * r + c + 1}.000000" for c in range(3)] for r in range(3)]


def tokens(group) -> list[str]:
    text = group.data.decode()
    assert text.endswith("+") and "\r" not in text and "\n" not in text
    return text[:-1].split("+")


def test_family_e_groups_order_and_transpose():
    memory = memory_of("E", mag_cal=nine(), accel_cal=nine("-"))
    groups = restore_groups(memory, FAMILIES["E"], include_device_id=False)
    assert [g.name for g in groups] == [
        "set_magnetometer_bias", "set_magnetometer", "set_accelerometer_bias", "set_accelerometer", "set_par",
        "set_thickness", "set_detector_offsets", "set_led_par", "ir_baseline", "set_colorcal1",
        "set_colorcal2", "set_colorcal3", "set_colorcal_blanks", "set_user_defined"]
    by_name = {g.name: g for g in groups}
    # printed row-major [[1,2,3],[4,5,6],[7,8,9]] -> sent column-major (§3.6)
    assert tokens(by_name["set_magnetometer"]) == ["set_magnetometer", "1", "4", "7", "2", "5", "8", "3", "6", "9"]
    assert tokens(by_name["set_accelerometer"])[1:4] == ["-1", "-4", "-7"]
    assert tokens(by_name["set_par"]) == ["set_par", "0", "0", "0", "0", "0"]
    assert tokens(by_name["set_detector_offsets"])[:3] == ["set_detector1_offset", "0", "0"]
    led = tokens(by_name["set_led_par"])
    assert led[0] == "set_led_par" and led[-1] == "-1" and len(led) == 1 + 11 * 6 + 1
    assert led[1::6][:11] == [str(i) for i in range(11)]
    user = tokens(by_name["set_user_defined"])
    assert len(user) == 1 + 135 * 2 + 1 and user[-3:] == ["134", "0", "-1"]  # never the hidden userdef135
    assert set(by_name["set_user_defined"].fields) == {f"userdef{i}" for i in range(135)}


def test_c75_set_led_par_takes_three_values():
    groups = {g.name: g for g in restore_groups(memory_of("C75"), FAMILIES["C75"], include_device_id=False)}
    led = tokens(groups["set_led_par"])
    assert len(led) == 1 + 11 * 4 + 1 and led[1:5] == ["0", "0", "0", "0"] and led[5] == "1"
    assert tokens(groups["set_user_defined"])[-3] == "74"


def test_family_a_uses_numeric_codes():
    memory = memory_of("A", OLD_ID, manufacture=True, mag_cal=nine(), thickness_d="7.000000")
    groups = restore_groups(memory, FAMILIES["A"], include_device_id=False, firmware="1.05")
    first = [tokens(g)[0] for g in groups]
    assert first == ["1030", "1031", "1032", "1033", "1034", "1039", "1040", "1044", "1045", "1046", "1047",
                     "1048", "1049", "1050"]
    by_name = {g.name: g for g in groups}
    assert tokens(by_name["set_magnetometer"])[1:4] == ["1", "4", "7"]
    assert len(tokens(by_name["set_par"])) == 6  # 1034 takes all five PAR values
    assert tokens(by_name["set_thickness"]) == ["1039", "0", "0", "7"]  # a, b, d
    assert [t for t in tokens(by_name["set_detector_offsets"]) if t.startswith("104")] == [
        "1040", "1041", "1042", "1043"]
    assert len(tokens(by_name["set_led_par"])) == 1 + 11 * 4 + 1
    assert tokens(by_name["set_user_defined"])[-3] == "49"
    v104 = {g.name: g for g in restore_groups(memory, FAMILIES["A"], include_device_id=False, firmware="0.54")}
    assert tokens(v104["set_par"])[::2] == ["1034", "1035", "1036", "1037", "1038"]


def test_b_and_c50_thickness_takes_five_values():
    groups = {g.name: g for g in restore_groups(memory_of("C50"), FAMILIES["C50"], include_device_id=False)}
    assert len(tokens(groups["set_thickness"])) == 6 and tokens(groups["set_thickness"])[0] == "1039"


@pytest.mark.parametrize(("device_id", "decimal"), [
    ("52:00:13:1f", "1375736607"), ("80:00:00:00", "-2147483648"), ("ff:ff:ff:ff", "-1")])
def test_device_id_group_is_first_and_signed(device_id, decimal):
    groups = restore_groups(memory_of("E", device_id), FAMILIES["E"], include_device_id=True)
    assert groups[0].data == f"set_device_info+{decimal}+".encode() and groups[0].reply == "device_info"
    assert "device_id" not in {k for g in restore_groups(memory_of("E"), FAMILIES["E"],
                                                          include_device_id=False) for k in g.fields}


def test_device_id_on_a_also_sends_the_manufacture_date():
    memory = memory_of("A", OLD_ID, manufacture=True)
    groups = restore_groups(memory, FAMILIES["A"], include_device_id=True, current=memory, firmware="1.05")
    assert groups[0].data == b"1008+1375736607+52016+"
    assert groups[0].fields == ("device_id", "device_manufacture")
    with pytest.raises(Refused, match="1001"):
        restore_groups(memory, FAMILIES["A"], include_device_id=True, current=memory, firmware="0.54")


def test_cross_family_a_onto_e_maps_by_name():
    backup = memory_of("A", OLD_ID, manufacture=True, thickness_a="1.000000", thickness_d="4.000000")
    current = memory_of("E", thickness_c="3.000000", thickness_min="8.000000")
    mapping = map_fields(backup, current, include_device_id=False)
    assert "thickness_d" in mapping.skipped and "device_manufacture" in mapping.skipped
    assert "thickness_c" in mapping.untouched and "par_to_dac_slope3" in mapping.untouched
    assert "userdef50" in mapping.untouched and "thickness_a" in mapping.restored
    groups = {g.name: g for g in restore_groups(backup, FAMILIES["E"], include_device_id=False, current=current)}
    assert tokens(groups["set_thickness"]) == ["set_thickness", "1", "0", "3", "8", "0"]  # thickness_d never -> c
    assert set(groups["set_thickness"].filled) == {"thickness_c", "thickness_min", "thickness_max"}
    assert set(groups["set_led_par"].filled) == {"par_to_dac_slope3", "par_to_dac_slope4"}
    assert tokens(groups["set_user_defined"])[-3] == "49"  # userdef50.. stay untouched
    with pytest.raises(BadInput, match="current"):
        restore_groups(backup, FAMILIES["E"], include_device_id=False)


def test_cross_family_e_onto_c75_skips_what_c75_lacks():
    backup, current = memory_of("E"), memory_of("C75")
    mapping = map_fields(backup, current, include_device_id=False)
    assert {"par_to_dac_slope3", "par_to_dac_slope4", "userdef75", "userdef134"} <= set(mapping.skipped)
    assert mapping.untouched == []
    groups = {g.name: g for g in restore_groups(backup, FAMILIES["C75"], include_device_id=False, current=current)}
    assert tokens(groups["set_user_defined"])[-3] == "74"
    assert len(tokens(groups["set_led_par"])) == 1 + 11 * 4 + 1


def test_restore_onto_f_is_refused():
    with pytest.raises(Refused):
        restore_groups(memory_of("E"), FAMILIES["F"], include_device_id=False)


def test_special_values_in_groups():
    memory = memory_of("E", mag_bias=["nan", "-0.000000", "1000000000000000000000000.000000"],
                       light_slope_all="-inf")
    groups = {g.name: g for g in restore_groups(memory, FAMILIES["E"], include_device_id=False)}
    assert tokens(groups["set_magnetometer_bias"])[1:] == ["nan", "-0", "1e24"]
    assert tokens(groups["set_par"])[1] == "-inf"
    assert all(len(t) <= 24 for g in groups.values() for t in tokens(g))


def test_crc_is_zlib_crc32():
    assert with_crc(b"abc")[-9:] == b"%08X\n" % zlib.crc32(b"abc")
