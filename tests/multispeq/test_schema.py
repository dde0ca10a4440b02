"""EEPROM layouts A-F (multispeq.md §2): every table, field by field, and byte-exact parse -> build."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import BadInput
from harness.targets.multispeq.protocol import printed_keys
from harness.targets.multispeq.schema import (
    EEPROM_SIZE,
    FAMILIES,
    canonical_device_id,
    device_id_signed,
    device_id_text,
    device_id_u32,
    f32,
    family_for_firmware,
    family_from_keys,
    firmware_key,
)

# The spec's tables transcribed as (field, offset, size); written out, not computed, so a slip in the
# schema's arithmetic cannot hide behind the same arithmetic here.
PREFIX = [
    ("device_id", 0, 4), ("device_manufacture", 4, 4), ("mag_bias", 8, 12), ("mag_cal", 20, 36),
    ("accel_bias", 56, 12), ("accel_cal", 68, 36), ("light_yint", 104, 4), ("light_slope_all", 108, 4),
    ("light_slope_r", 112, 4), ("light_slope_g", 116, 4), ("light_slope_b", 120, 4),
    ("detector_offset_slope", 124, 16), ("detector_offset_yint", 140, 16),
]
A = [
    ("thickness_a", 156, 4), ("thickness_b", 160, 4), ("thickness_d", 164, 4),
    ("par_to_dac_slope1", 168, 44), ("par_to_dac_slope2", 212, 44), ("par_to_dac_yint", 256, 44),
    ("ir_baseline_slope", 300, 44), ("ir_baseline_yint", 344, 44), ("colorcal_blank1", 388, 44),
    ("colorcal_blank2", 432, 44), ("colorcal_blank3", 476, 44), ("colorcal_intensity1_slope", 520, 44),
    ("colorcal_intensity1_yint", 564, 44), ("colorcal_intensity2_slope", 608, 44),
    ("colorcal_intensity2_yint", 652, 44), ("colorcal_intensity3_slope", 696, 44),
    ("colorcal_intensity3_yint", 740, 44), ("userdef", 784, 204),
]
B = [
    ("thickness_a", 156, 4), ("thickness_b", 160, 4), ("thickness_c", 164, 4), ("thickness_min", 168, 4),
    ("thickness_max", 172, 4), ("par_to_dac_slope1", 176, 44), ("par_to_dac_slope2", 220, 44),
    ("par_to_dac_yint", 264, 44), ("ir_baseline_slope", 308, 44), ("ir_baseline_yint", 352, 44),
    ("colorcal_blank1", 396, 44), ("colorcal_blank2", 440, 44), ("colorcal_blank3", 484, 44),
    ("colorcal_intensity1_slope", 528, 44), ("colorcal_intensity1_yint", 572, 44),
    ("colorcal_intensity2_slope", 616, 44), ("colorcal_intensity2_yint", 660, 44),
    ("colorcal_intensity3_slope", 704, 44), ("colorcal_intensity3_yint", 748, 44),
]
C50 = [("userdef", 792, 204), ("sleep", 996, 1), ("_pad_sleep", 997, 3)]
C75 = [("userdef", 792, 304), ("sleep", 1096, 1), ("_pad_sleep", 1097, 3)]
D_COMMON = [
    ("thickness_a", 156, 4), ("thickness_b", 160, 4), ("thickness_c", 164, 4), ("thickness_min", 168, 4),
    ("thickness_max", 172, 4), ("par_to_dac_slope1", 176, 44), ("par_to_dac_slope2", 220, 44),
    ("par_to_dac_slope3", 264, 44), ("par_to_dac_slope4", 308, 44), ("par_to_dac_yint", 352, 44),
    ("ir_baseline_slope", 396, 44), ("ir_baseline_yint", 440, 44), ("colorcal_blank1", 484, 44),
    ("colorcal_blank2", 528, 44), ("colorcal_blank3", 572, 44), ("colorcal_intensity1_slope", 616, 44),
    ("colorcal_intensity1_yint", 660, 44), ("colorcal_intensity2_slope", 704, 44),
    ("colorcal_intensity2_yint", 748, 44), ("colorcal_intensity3_slope", 792, 44),
    ("colorcal_intensity3_yint", 836, 44),
]
D = [("userdef", 880, 464), ("sleep", 1344, 1), ("_pad_sleep", 1345, 3)]
E = [("userdef", 880, 544), ("sleep", 1424, 1), ("_pad_sleep", 1425, 3)]
F = [
    ("userdef", 880, 404), ("sleep", 1284, 1), ("_pad_sleep", 1285, 3), ("auto_blank_pulse_size", 1288, 44),
    ("auto_blank_gain_set", 1332, 44), ("auto_blank_light", 1376, 44), ("auto_blank_detector", 1420, 44),
    ("auto_blank_amplitude", 1464, 44), ("auto_zero_amplitude", 1508, 44),
]
TABLES = {  # family: (fields after the prefix, sizeof, unused tail) — §2.1 and §2.3-2.8
    "A": (A, 988, 1060),
    "B": (B + [("userdef", 792, 204)], 996, 1052),
    "C50": (B + C50, 1000, 1048),
    "C75": (B + C75, 1100, 948),
    "D": (D_COMMON + D, 1348, 700),
    "E": (D_COMMON + E, 1428, 620),
    "F": (D_COMMON + F, 1552, 496),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_every_field_offset_and_size(name):
    family = FAMILIES[name]
    fields, sizeof, tail = TABLES[name]
    expected = PREFIX + fields + [("_tail", sizeof, tail)]
    assert [(k, family.offsets[k], family.sizes[k]) for k, _, _ in expected] == expected
    assert list(family.offsets) == [k for k, _, _ in expected]  # nothing else, nothing in between
    assert family.sizeof == sizeof and sizeof + tail == EEPROM_SIZE
    assert family.layout.sizeof() == EEPROM_SIZE


@pytest.mark.parametrize("name", list(TABLES))
def test_values_land_at_their_offsets(name):
    family = FAMILIES[name]
    image = bytearray(EEPROM_SIZE)
    struct.pack_into("<i", image, 0, 0x5200131F)
    struct.pack_into("<f", image, 20 + 4 * (3 * 1 + 2), 7.5)  # mag_cal[1][2], row-major
    struct.pack_into("<f", image, family.element_offset("userdef", family.userdefs - 1), -2.25)
    struct.pack_into("<f", image, family.element_offset("par_to_dac_yint", 10), 3.0)
    values = family.parse(bytes(image))
    assert values.device_id == 0x5200131F and values.mag_cal[1][2] == 7.5
    assert values.userdef[-1] == -2.25 and values.par_to_dac_yint[10] == 3.0
    # The firmware's unchecked index lands in the next field (§3.7): led 11 of slope1 is slope2[0].
    assert family.element_offset("par_to_dac_slope1", 11) == family.offsets["par_to_dac_slope2"]
    if family.has_sleep:
        assert family.element_offset("userdef", family.userdefs) == family.offsets["sleep"]


@pytest.mark.parametrize("name", list(TABLES))
@pytest.mark.parametrize("fill", [b"\xff", b"\x00"])
def test_blank_and_zero_images_round_trip(name, fill):
    family = FAMILIES[name]
    image = fill * EEPROM_SIZE
    values = family.parse(image)
    assert family.build(values) == image
    if fill == b"\xff":
        assert values.device_id == -1 and math.isnan(values.mag_bias[0])
        assert math.copysign(1.0, values.mag_bias[0]) < 0  # 0xFFFFFFFF has the sign bit set
        if family.has_sleep:
            assert values.sleep == 255


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(list(TABLES)), st.binary(min_size=EEPROM_SIZE, max_size=EEPROM_SIZE))
def test_random_images_round_trip_byte_exactly(name, image):
    family = FAMILIES[name]
    assert family.build(family.parse(image)) == image


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(list(TABLES)), st.lists(st.integers(0, 0x3FFFFF), min_size=1, max_size=8),
       st.booleans())
def test_nan_payloads_round_trip(name, payloads, negative):
    """Signalling NaNs and payloads survive parse -> build (a C double round trip would quiet them)."""
    family = FAMILIES[name]
    image = bytearray(b"\x00" * EEPROM_SIZE)
    for i, payload in enumerate(payloads):
        bits = (0xFF800000 if negative else 0x7F800000) | payload | (1 if payload == 0 else 0)
        struct.pack_into("<I", image, family.element_offset("userdef", i), bits)
    assert family.build(family.parse(bytes(image))) == bytes(image)


def test_edited_values_build():
    family = FAMILIES["E"]
    values = family.parse(b"\xff" * EEPROM_SIZE)
    values.mag_cal[0][1] = 0.5
    values.userdef[3] = -0.0
    out = family.parse(family.build(values))
    assert out.mag_cal[0][1] == 0.5 and math.copysign(1.0, out.userdef[3]) < 0
    assert math.isnan(out.mag_cal[0][0])


def test_wrong_image_size():
    with pytest.raises(BadInput):
        FAMILIES["E"].parse(bytes(100))


@pytest.mark.parametrize(("firmware", "family"), [
    ("0.54", "A"), ("0.55", "A"), ("0.56", "A"), ("1.05", "A"), ("1.06", "C50"), ("1.10", "C75"),
    ("1.11", "D"), ("1.13", "E"), ("1.132", "E"), ("1.14", "E"), ("1.15", "E"), ("1.16", "E"), ("1.17", "E"),
    ("1.18", "E"), ("1.19", "F"), ("1.20", "F"),
])
def test_family_for_firmware(firmware, family):
    assert family_for_firmware(firmware).name == family


def test_ambiguous_firmware_profiles():
    assert family_for_firmware("1.05", "B").name == "B"
    assert family_for_firmware("1.06", "B").name == "B"
    assert family_for_firmware("1.06", "C50").name == "C50"
    with pytest.raises(BadInput):
        family_for_firmware("1.17", "B")
    with pytest.raises(BadInput):
        family_for_firmware("0.50")


def test_firmware_order_is_decimal():
    assert firmware_key("1.13") < firmware_key("1.132") < firmware_key("1.14")
    with pytest.raises(BadInput):
        firmware_key("v1")


@pytest.mark.parametrize("name", ["A", "C75", "D", "E", "F"])
def test_family_from_keys(name):
    assert family_from_keys(printed_keys(FAMILIES[name])).name == name


def test_family_from_keys_b_and_c50():
    late = printed_keys(FAMILIES["C50"])
    assert family_from_keys(late).name == "C50"  # B and C50 print the same keys
    early_b = printed_keys(FAMILIES["B"], manufacture=True)
    assert family_from_keys(early_b).name == "B"
    with pytest.raises(BadInput):
        family_from_keys(["device_id", "mag_bias"])
    with pytest.raises(BadInput):
        family_from_keys(printed_keys(FAMILIES["E"])[:-10])  # slopes 3/4 but 125 userdefs


@pytest.mark.parametrize(("text", "canonical", "signed"), [
    ("52:00:13:1f", "52:00:13:1f", 1375736607),
    ("d4:f5:52:0:13:1f", "52:00:13:1f", 1375736607),
    ("d4:f5:52:00:13:1f", "52:00:13:1f", 1375736607),
    ("80:00:00:00", "80:00:00:00", -2147483648),
    ("ff:ff:ff:ff", "ff:ff:ff:ff", -1),
    ("7F:FF:FF:FF", "7f:ff:ff:ff", 2147483647),
])
def test_device_id_helpers(text, canonical, signed):
    assert canonical_device_id(text) == canonical
    assert device_id_signed(text) == signed
    assert device_id_u32(text) == signed & 0xFFFFFFFF
    assert device_id_text(signed) == canonical


@pytest.mark.parametrize("bad", ["52:00:13", "zz:00:13:1f", "", "1375736607"])
def test_bad_device_ids(bad):
    with pytest.raises(BadInput):
        canonical_device_id(bad)


def test_f32_rounds_like_the_firmware():
    assert f32(0.1) == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert f32(1e39) == math.inf and f32(-1e39) == -math.inf
    flt_max = 3.4028234663852886e38
    tie = 3.4028235677973366e38  # FLT_MAX + half an ulp: ties to even, which is 2**128, i.e. inf
    assert f32(math.nextafter(tie, 0)) == flt_max and f32(tie) == math.inf  # IEEE rounding, not a raise
    assert math.isnan(f32(math.nan))
