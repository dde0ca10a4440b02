"""The MultispeQ v1 console state machine (targets/multispeq.md §3), driven with explicit timestamps."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest

from harness.targets.multispeq import schema
from simulators.multispeq import render
from simulators.multispeq.console import Console, command_code, name_hash, parse_float, parse_index
from simulators.multispeq.device import EepromDevice

READY = b"MultispeQ Ready\n"
ERROR = b'{"error":"bad command"}\n'
ERROR_SPACE = b'{"error":" bad command"}\n'


def make(tmp_path: Path, firmware: str = "1.17", profile: str | None = None, **kw: object) -> Console:
    device = EepromDevice(tmp_path / "state", firmware, profile, device_id="52:00:13:1f")
    return Console(device, **kw)  # type: ignore[arg-type]


def crc_ok(reply: bytes) -> bool:
    return reply.endswith(b"\n") and b"%08X" % zlib.crc32(reply[:-9]) == reply[-9:-1]


def memory(console: Console, t: float = 100.0) -> dict:
    reply = console.feed(console.device.profile.read_command.encode() + b"+", t)
    assert crc_ok(reply)
    return json.loads(reply[:-9])


# --- names, framing, timeouts ----------------------------------------------------------------------------

def test_hash_check_values() -> None:
    assert name_hash(b"hello") == 86795856
    assert name_hash(b"print_memory") == 3078821744
    assert name_hash(b"") == 17325
    assert command_code(b"1007abc") == 1007


def test_hello_and_numeric_aliases(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.boot() == READY
    assert c.feed(b"hello+", 0.0) == READY
    assert c.feed(b"1000+", 0.0) == READY
    assert c.feed(b"1000xyz+", 0.0) == READY  # atoi of the leading digits
    info = c.feed(b"1007abc+", 0.0)
    assert crc_ok(info) and b'"device_id":"52:00:13:1f"' in info
    assert c.feed(b"86795856+", 0.0) == READY  # the switch value of "hello" typed as a number
    assert c.next_deadline() is None


def test_name_without_plus_is_answered_after_500_ms(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"hello\r\n", 10.0) == b""
    assert c.next_deadline() == pytest.approx(10.5)
    assert c.poll(10.49) == b""
    assert c.poll(10.5) == READY
    assert c.next_deadline() is None


def test_name_timer_restarts_on_every_byte(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"hel", 0.0) == b""
    assert c.feed(b"lo", 0.4) == b""
    assert c.poll(0.8) == b""
    assert c.next_deadline() == pytest.approx(0.9)
    assert c.poll(0.9) == READY


def test_late_bytes_after_an_unpolled_deadline_start_a_new_command(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"hello", 0.0) == b""
    assert c.feed(b"hello+", 2.0) == READY + READY  # the first name timed out at 0.5 s


def test_trailing_crlf_swallows_the_next_command(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"hello+\r\n", 0.0) == READY
    assert c.next_deadline() == pytest.approx(0.5)  # "\r\n" is being read as a command name
    assert c.feed(b"print_memory+", 0.1) == b""  # joined: "\r\nprint_memory" -> cut to "" -> ignored
    assert c.next_deadline() is None
    assert crc_ok(c.feed(b"print_memory+", 1.0))


def test_trailing_crlf_then_silence_is_harmless(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"hello+\r\n", 0.0) == READY
    assert c.poll(0.5) == b""
    assert crc_ok(c.feed(b"print_memory+", 0.6))


@pytest.mark.parametrize(("sent", "reply"), [
    (b"-1+", b""), (b"ab+", b""), (b"+", b""), (b"\x01hello+", b""),
    (b"-10+", ERROR_SPACE), (b"#hello+", ERROR_SPACE), (b" hello+", ERROR_SPACE),
    (b"xyz+", ERROR), (b"print_calibrations+", ERROR), (b"1006+", ERROR), (b"hel\x01lo+", ERROR),
    (b"s+", b""), (b"v+", b""),
])
def test_short_names_and_both_error_texts(tmp_path: Path, sent: bytes, reply: bytes) -> None:
    c = make(tmp_path)
    assert c.feed(sent, 0.0) == reply
    assert c.feed(b"hello+", 1.0) == READY  # and the console is idle again


def test_49_byte_name_cap_splits_the_name(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"x" * 49 + b"hello+", 0.0) == ERROR + READY
    assert c.feed(b"a" * 60 + b"+", 1.0) == ERROR + ERROR
    assert c.feed(b"y" * 49 + b"+", 2.0) == ERROR  # the "+" left over is an empty, ignored name
    assert c.next_deadline() is None


def test_crc_accumulator_is_per_command(tmp_path: Path) -> None:
    c = make(tmp_path)
    out = c.feed(b"hello+device_info+", 0.0)
    assert out.startswith(READY) and crc_ok(out[len(READY):])
    assert out[len(READY):] == render.device_info(c.device.values(), c.device.profile, 87)


# --- arguments ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "value"), [
    (b"1.5", 1.5), (b"  \r\n12abc", 12.0), (b"abc", 0.0), (b"hello", 0.0), (b"-inf", -math.inf),
    (b"INFINITY", math.inf), (b"1e-5", 1e-5), (b".5", 0.5), (b"1e", 1.0), (b"-0", -0.0), (b"3.", 3.0),
    (b"1e38", 1e38), (b"1e999", math.inf),
])
def test_strtod_prefix_parsing(raw: bytes, value: float) -> None:
    got = parse_float(raw)
    assert got == value and math.copysign(1, got) == math.copysign(1, value)


def test_empty_argument_is_nan_and_index_truncation() -> None:
    assert math.isnan(parse_float(b""))
    assert math.isnan(parse_float(b"nan"))
    assert [parse_index(x) for x in (2.9, -1.5, -0.5, math.nan, 1e30)] == [2, -1, 0, 0, 2**31 - 1]


def test_arguments_have_no_timeout(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"set_magnetometer_bias+1+", 0.0) == b""
    assert c.next_deadline() is None
    assert c.poll(3600.0) == b""
    assert c.state()["waiting_for"] == "argument"
    assert c.feed(b"2+3+", 3601.0) == b""
    assert list(c.device.values().mag_bias) == [1.0, 2.0, 3.0]
    assert c.state()["busy"] is False


def test_empty_argument_stores_nan(tmp_path: Path) -> None:
    c = make(tmp_path)
    c.feed(b"set_magnetometer_bias+0+0+0+set_magnetometer_bias+++5+", 0.0)
    bias = c.device.values().mag_bias
    assert math.isnan(bias[0]) and math.isnan(bias[1]) and bias[2] == 5.0
    assert memory(c)["mag_bias"] == ["nan", "nan", "5.000000"]


def test_plus_in_an_exponent_splits_the_argument(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"set_magnetometer_bias+1e+38+7+hello+", 0.0) == READY
    assert list(c.device.values().mag_bias) == [1.0, 38.0, 7.0]


def test_24_byte_argument_cap(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"set_magnetometer_bias+" + b"1" * 30 + b"+2+3+hello+", 0.0) == READY
    bias = c.device.values().mag_bias
    assert bias[0] == schema.f32(float("1" * 24)) and bias[1] == 111111.0 and bias[2] == 2.0
    # "3" was then read as a command name: too short, ignored silently.


def test_missing_argument_consumes_the_next_command(tmp_path: Path) -> None:
    c = make(tmp_path)
    c.device.write_field("mag_bias", 9.0, index=2)
    assert c.feed(b"set_magnetometer_bias+1+2+hello+", 0.0) == b""
    assert c.device.values().mag_bias[2] == 0.0


# --- setters ------------------------------------------------------------------------------------------------

def test_non_symmetric_matrix_round_trip_column_major(tmp_path: Path) -> None:
    c = make(tmp_path)
    m = [["1.000000", "2.000000", "3.000000"], ["4.000000", "5.000000", "6.000000"],
         ["7.000000", "8.000000", "9.500000"]]
    column_major = [m[r][col] for col in range(3) for r in range(3)]
    c.feed(b"set_magnetometer+" + b"".join(v.encode() + b"+" for v in column_major), 0.0)
    c.feed(b"set_accelerometer+" + b"".join(v.encode() + b"+" for v in column_major), 0.0)
    doc = memory(c)
    assert doc["mag_cal"] == m and doc["accel_cal"] == m
    assert c.feed(b"print_magnetometer+", 1.0).split(b"\n")[1:4] == [b"1.0000000", b"2.0000000", b"3.0000000"]


def test_fixed_setters(tmp_path: Path) -> None:
    c = make(tmp_path)
    c.feed(b"set_par+1+2+3+4+5+set_thickness+6+7+8+9+10+set_thickness_quick+11+12+"
           b"set_detector3_offset+13+14+set_accelerometer_bias+15+16+17+", 0.0)
    doc = memory(c)
    assert [doc[k] for k in ("light_slope_all", "light_slope_r", "light_slope_g", "light_slope_b",
                             "light_yint")] == ["1.000000", "2.000000", "3.000000", "4.000000", "5.000000"]
    assert [doc[k] for k in ("thickness_a", "thickness_b", "thickness_c", "thickness_min", "thickness_max")] \
        == ["6.000000", "7.000000", "8.000000", "11.000000", "12.000000"]
    assert doc["detector_offset_slope"][2] == "13.000000" and doc["detector_offset_yint"][2] == "14.000000"
    assert doc["accel_bias"] == ["15.000000", "16.000000", "17.000000"]


def test_loop_setters_and_index_truncation(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b"set_user_defined+0+1.5+2.9+5+-1.5+hello+", 0.0) == READY
    c.feed(b"set_led_par+1+1+2+3+4+5+-1+ir_baseline+2+6+7+-1+set_colorcal2+3+8+9+-1+"
           b"set_colorcal_blanks+10+10+11+12+-1+", 0.0)
    doc = memory(c)
    assert doc["userdef0"] == "1.500000" and doc["userdef2"] == "5.000000"
    assert [doc[f"par_to_dac_slope{i}"][1] for i in range(1, 5)] + [doc["par_to_dac_yint"][1]] == \
        ["1.000000", "2.000000", "3.000000", "4.000000", "5.000000"]
    assert (doc["ir_baseline_slope"][2], doc["ir_baseline_yint"][2]) == ("6.000000", "7.000000")
    assert (doc["colorcal_intensity2_slope"][3], doc["colorcal_intensity2_yint"][3]) == ("8.000000", "9.000000")
    assert [doc[f"colorcal_blank{i}"][10] for i in (1, 2, 3)] == ["10.000000", "11.000000", "12.000000"]


def test_out_of_range_led_index_lands_in_the_next_array(tmp_path: Path) -> None:
    c = make(tmp_path)
    c.feed(b"set_led_par+11+1+2+3+4+5+-1+", 0.0)
    v = c.device.values()
    assert (v.par_to_dac_slope2[0], v.par_to_dac_slope3[0], v.par_to_dac_slope4[0], v.par_to_dac_yint[0],
            v.ir_baseline_slope[0]) == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert c.device.write_counts["par_to_dac_slope2"] == 1


def test_userdef_136_sets_sleep_and_deep_sleep_follows(tmp_path: Path) -> None:
    resets: list[str] = []
    c = make(tmp_path, on_reset=resets.append)
    c.feed(b"set_user_defined+135+4+-1+", 0.0)  # the hidden last userdef: written, never printed
    assert c.device.values().userdef[135] == 4.0 and "userdef135" not in memory(c)
    assert c.feed(b"set_user_defined+136+1.4e-45+-1+", 0.0) == b""
    assert c.device.sleep == 1
    assert c.feed(b"reset+hello+", 1.0) == b""
    assert resets == ["reset"] and c.reset_requested
    assert c.boot() == b""  # sleep byte was 1: cleared, deep sleep
    assert c.device.sleep == 0 and c.state()["deep_sleep"] is True
    assert c.feed(b"hello+", 2.0) == b"" and c.next_deadline() is None
    assert c.boot() == READY  # external reset
    assert c.feed(b"hello+", 3.0) == READY


def test_reset_and_reboot(tmp_path: Path) -> None:
    resets: list[str] = []
    c = make(tmp_path, on_reset=resets.append)
    assert c.feed(b"hello+1027+hello+", 0.0) == READY
    assert c.reset_requested and c.reset_kind == "reset"
    assert c.feed(b"hello+", 0.1) == b""  # port gone until boot
    assert c.boot() == READY
    assert c.feed(b"reboot+", 1.0) == b"" and resets == ["reset", "reboot"]
    c.boot()
    assert c.feed(b"hello+", 2.0) == READY


def test_set_device_info(tmp_path: Path) -> None:
    c = make(tmp_path)
    reply = c.feed(b"set_device_info+-2147483648+", 0.0)
    assert crc_ok(reply) and b'"device_id":"80:00:00:00"' in reply
    assert b'"device_id":"00:00:00:34"' in c.feed(b"1008+52:00:13:1f+", 0.0)  # atol stops at ':'
    assert b'"device_id":"7f:ff:ff:ff"' in c.feed(b"set_device_info+99999999999+", 0.0)  # saturates
    assert b'"device_id":"ff:ff:ff:ff"' in c.feed(b"set_device_info+-1+", 0.0)
    assert b'"device_id":"00:00:00:00"' in c.feed(b"set_device_info+abc+", 0.0)


def test_early_two_prompt_set_device_info_crc_covers_the_prompts(tmp_path: Path) -> None:
    c = make(tmp_path, "1.05", "A")
    first = c.feed(b"1008+", 0.0)
    assert first.startswith(b'{"message": ') and first.endswith(b"}\n\n")
    second = c.feed(b"1375736608+", 0.1)
    assert second.startswith(b'{"message": ') and second.endswith(b"}\n\n")
    third = c.feed(b"201606+", 0.2)
    reply = first + second + third
    assert crc_ok(reply)
    assert third.startswith(b'{"device_name":"MultispeQ"') and b'"device_id":"d4:f5:52:00:13:20"' in third
    assert b'"device_manufacture":201606}' in third
    assert memory(c)["device_manufacture"] == "201606"


def test_v104_sets_the_id_with_1001_and_has_single_par_setters(tmp_path: Path) -> None:
    c = make(tmp_path, "0.54")
    assert c.feed(b"1008+", 0.0) == ERROR
    reply = c.feed(b"1001+7+8+", 0.0)
    assert crc_ok(reply) and reply.endswith(b'"device_id":"d4:f5:0:0:0:7","device_firmware":"0.54",'
                                            b'"device_manufacture":"8"}' + reply[-9:])
    c.feed(b"1034+1+1035+2+1036+3+1037+4+1038+5+", 0.0)
    doc = memory(c)
    assert [doc[k] for k in ("light_slope_all", "light_yint", "light_slope_r", "light_slope_g",
                             "light_slope_b")] == ["1.000000", "2.000000", "3.000000", "4.000000", "5.000000"]


def test_numeric_setters_of_the_a_b_c50_families(tmp_path: Path) -> None:
    c = make(tmp_path, "1.05", "A")
    assert c.feed(b"print_memory+", 0.0) == ERROR and c.feed(b"set_par+", 0.0) == ERROR
    c.feed(b"1034+1+2+3+4+5+1039+6+7+8+1044+10+11+12+13+-1+1050+49+14+-1+1031+1+2+3+4+5+6+7+8+9+", 0.0)
    doc = memory(c)
    assert doc["light_yint"] == "5.000000"
    assert (doc["thickness_a"], doc["thickness_d"]) == ("6.000000", "8.000000")
    assert (doc["par_to_dac_slope1"][10], doc["par_to_dac_slope2"][10], doc["par_to_dac_yint"][10]) == \
        ("11.000000", "12.000000", "13.000000")
    assert doc["userdef49"] == "14.000000" and doc["mag_cal"][0] == ["1.000000", "4.000000", "7.000000"]


def test_c75_led_par_takes_three_values(tmp_path: Path) -> None:
    c = make(tmp_path, "1.10")
    assert c.feed(b"1006+", 0.0) == ERROR and c.feed(b"1044+", 0.0) == ERROR
    c.feed(b"set_led_par+2+1+2+3+-1+hello+", 0.0)
    doc = memory(c)
    assert (doc["par_to_dac_slope1"][2], doc["par_to_dac_slope2"][2], doc["par_to_dac_yint"][2]) == \
        ("1.000000", "2.000000", "3.000000")
    assert "par_to_dac_slope3" not in doc


def test_firmware_change_switches_the_command_set(tmp_path: Path) -> None:
    c = make(tmp_path, "1.17")
    c.device.change_firmware("1.06")
    assert c.feed(b"print_memory+", 0.0) == ERROR
    assert crc_ok(c.feed(b"1006+", 0.0))


def test_write_only_if_changed_through_the_console(tmp_path: Path) -> None:
    c = make(tmp_path)
    c.feed(b"set_magnetometer_bias+1+2+3+" * 3, 0.0)
    assert c.device.write_counts["mag_bias"] == 3  # three elements, written once each
    c.feed(b"set_magnetometer_bias+++++" * 2, 0.0)  # NaN is always written
    assert c.device.write_counts["mag_bias"] == 9


def test_199_cap_through_the_console(tmp_path: Path) -> None:
    c = make(tmp_path)
    c.feed(b"set_magnetometer+" + b"1e12+" * 9, 0.0)
    reply = c.feed(b"print_memory+", 1.0)
    assert crc_ok(reply)
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply[:-9])


# --- other replies -------------------------------------------------------------------------------------------

def test_read_only_commands(tmp_path: Path) -> None:
    c = make(tmp_path, wall_clock=lambda: 1489147200.0)
    c.device.battery_percent = 42
    c.device.light_intensity = 3.5
    assert c.feed(b"battery+", 0.0) == b'{"battery":42}\n'
    assert c.feed(b"print_all+", 0.0) == b"light_intensity:3.5\n"
    assert c.feed(b"1029+", 0.0) == b"light_intensity:3.5\n"
    assert c.feed(b"compiled+", 0.0) == b"Compiled on: Mar 10 2017 12:00:00\n"
    assert c.feed(b"print_date+", 0.0) == b'{"device_time":"2017-03-10T12:00:00.000Z","device_time":1489147200}\n'
    assert c.feed(b"print_magnetometer_bias+", 0.0).startswith(b"Magnetometer Bias: nan, nan, nan")
    assert b'"device_battery":42' in c.feed(b"device_info+", 0.0)


def test_nan_spelling_switch(tmp_path: Path) -> None:
    c = make(tmp_path)
    c.device.nan_text = "-nan"
    assert b'"-nan"' in c.feed(b"print_memory+", 0.0)


def test_protocol_input(tmp_path: Path) -> None:
    c = make(tmp_path)
    assert c.feed(b'[{"pulses":[20]}]\n', 0.0) == b""
    good = b'[{"a":1}]'
    assert c.feed(good + b"%08X" % zlib.crc32(good) + b"\r", 0.0) == b""
    assert crc_ok(c.feed(good + b"%08x" % zlib.crc32(good) + b"\r", 0.0))  # the CRC must be uppercase
    assert crc_ok(c.feed(good + b"00000000\n", 0.0))
    bad = c.feed(b'[{"a":1}\n', 0.0)
    assert bad.startswith(b'{"error":"bad json protocol (braces or CRC)"' + b" " * 14 + b'[{"a":1}' + b" " * 6)
    assert crc_ok(bad)
    assert c.feed(b"[{]", 1.0) == b""  # no line end: the 500 ms gap ends the line
    assert crc_ok(c.poll(1.5))
    assert c.feed(b"hello+", 2.0) == READY


def test_state_reports_console_and_device(tmp_path: Path) -> None:
    c = make(tmp_path)
    c.feed(b"set_user_defined+1+", 0.0)
    state = c.state()
    assert state["busy"] and state["waiting_for"] == "argument" and state["family"] == "E"
    assert state["device_id"] == "52:00:13:1f" and "image_sha256" in state


# --- a restore as §8.1 describes it reproduces the printed memory -----------------------------------------

def _arg(text: str) -> bytes:
    """§8.2: the shortest text that round-trips to the same float32, without '+'."""
    x = schema.f32(float(text))
    if math.isnan(x):
        return b"nan"
    if math.isinf(x):
        return b"inf" if x > 0 else b"-inf"
    for digits in range(1, 10):
        candidate = f"{x:.{digits}g}"
        if schema.f32(float(candidate)) == x:
            return candidate.replace("e+", "e").encode()
    raise AssertionError(x)


def _restore_commands(doc: dict, userdefs: int) -> bytes:
    def vals(*texts: str) -> bytes:
        return b"".join(_arg(t) + b"+" for t in texts)

    def col(m: list[list[str]]) -> bytes:
        return vals(*(m[r][c] for c in range(3) for r in range(3)))

    out = [b"set_magnetometer_bias+" + vals(*doc["mag_bias"]), b"set_magnetometer+" + col(doc["mag_cal"]),
           b"set_accelerometer_bias+" + vals(*doc["accel_bias"]), b"set_accelerometer+" + col(doc["accel_cal"]),
           b"set_par+" + vals(*(doc[k] for k in ("light_slope_all", "light_slope_r", "light_slope_g",
                                                 "light_slope_b", "light_yint"))),
           b"set_thickness+" + vals(*(doc[f"thickness_{k}"] for k in ("a", "b", "c", "min", "max")))]
    for n in range(4):
        out.append(b"set_detector%d_offset+" % (n + 1)
                   + vals(doc["detector_offset_slope"][n], doc["detector_offset_yint"][n]))
    loops = [(b"set_led_par", ["par_to_dac_slope1", "par_to_dac_slope2", "par_to_dac_slope3", "par_to_dac_slope4",
                               "par_to_dac_yint"]),
             (b"ir_baseline", ["ir_baseline_slope", "ir_baseline_yint"])]
    loops += [(b"set_colorcal%d" % i, [f"colorcal_intensity{i}_slope", f"colorcal_intensity{i}_yint"])
              for i in (1, 2, 3)]
    loops.append((b"set_colorcal_blanks", ["colorcal_blank1", "colorcal_blank2", "colorcal_blank3"]))
    for command, fields in loops:
        out.append(command + b"+" + b"".join(b"%d+" % led + vals(*(doc[f][led] for f in fields))
                                             for led in range(11)) + b"-1+")
    out.append(b"set_user_defined+" + b"".join(b"%d+" % i + vals(doc[f"userdef{i}"]) for i in range(userdefs))
               + b"-1+")
    return b"hello+".join(out) + b"hello+"


def test_restore_sequence_reproduces_print_memory(tmp_path: Path) -> None:
    import random
    import struct

    rng = random.Random(1234)
    source = make(tmp_path / "source")
    image = bytearray(source.device.image)
    for offset in range(8, 1424, 4):  # every float of E; |x| < 1e8 keeps the matrix lines under the cap
        struct.pack_into("<f", image, offset, schema.f32(rng.uniform(-1, 1) * 10.0 ** rng.randint(-9, 7)))
    specials = [math.nan, math.inf, -math.inf, -3.4028234663852886e38, 1e-45, -0.0, 0.0078125, 5e-7]
    for i, x in enumerate(specials):
        struct.pack_into("<f", image, 880 + 4 * i, x)  # userdef lines are never cut
    source.device.load_image(bytes(image))
    doc = memory(source)
    target = make(tmp_path / "target")
    replies = target.feed(_restore_commands(doc, 135), 0.0)
    assert replies == READY * 17  # every group synchronised, no stray output
    assert memory(target) == doc
    assert memory(target) == memory(target)  # printing does not change anything
