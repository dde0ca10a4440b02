"""The MultispeQ v1 serial console as a pure, event-driven state machine (targets/multispeq.md §3).

No sockets, ptys, threads or sleeps: the adapter feeds the bytes it received with their arrival time and
writes back what :meth:`Console.feed` returns; when time passes without input it calls :meth:`Console.poll`
at :meth:`Console.next_deadline` (the 500 ms name timeout). Tests drive time with explicit timestamps.

The firmware's commands read their own arguments from the byte stream, blocking until each arrives. That is
modelled with generators: a command is a generator that ``yield``s whenever it needs a byte that has not
arrived yet (yielding the deadline of its timeout, or None for "wait forever"), so a setter waiting for its
third argument simply stays suspended across calls to :meth:`feed`.
"""

from __future__ import annotations

import logging
import math
import re
import time
import zlib
from collections.abc import Callable, Generator, Sequence
from typing import Any

from simulators.multispeq import render
from simulators.multispeq.device import INT32_MAX, INT32_MIN, EepromDevice
from simulators.multispeq.profiles import Profile

log = logging.getLogger(__name__)

NAME_CAP = 49  # bytes of a command name; the rest stays in the input (§3.2)
ARG_CAP = 24  # bytes of one argument (§3.3)
NAME_TIMEOUT = 0.5  # seconds of silence that end a command name; arguments have no timeout
PLUS = ord("+")
_HASH_SEED = 17325

# A command task yields the time at which it wants to be woken with no new input (None: only new input).
Task = Generator[float | None, None, None]

_STRTOD = re.compile(
    rb"[ \t\n\v\f\r]*([+-]?(?:inf(?:inity)?|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?))",
    re.IGNORECASE)
_ATOL = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)")


# --- parsing helpers (pure; the firmware's C library calls) -----------------------------------------------

def name_hash(name: bytes) -> int:
    """The firmware's name hash (§3.2 step 6): H("") = 17325, H(c + rest) = c + c*H(rest) mod 2**32."""
    h = _HASH_SEED
    for c in reversed(name):
        h = (c + c * h) & 0xFFFFFFFF
    return h


def sanitise(raw: bytes) -> bytes:
    """Cut a command name at its first byte outside printable ASCII (0x20-0x7E)."""
    for i, b in enumerate(raw):
        if not 0x20 <= b <= 0x7E:
            return raw[:i]
    return raw


def _saturate32(value: int) -> int:
    return max(INT32_MIN, min(INT32_MAX, value))


def atoi(text: bytes) -> int:
    """C ``atoi``/``atol``: optional whitespace and sign, decimal digits; none gives 0; saturates at int32."""
    m = _ATOL.match(text)
    return _saturate32(int(m.group(1))) if m else 0


def command_code(name: bytes) -> int:
    """The switch value of a sanitised name: leading digits (atoi) if it starts with one, else its hash."""
    return atoi(name) if name[:1].isdigit() else name_hash(name)


def parse_float(raw: bytes) -> float:
    """A float argument: empty gives NaN; otherwise C ``strtod`` (longest numeric prefix, else 0.0)."""
    if raw == b"":
        return math.nan
    m = _STRTOD.match(raw)
    return float(m.group(1).decode("ascii")) if m else 0.0


def parse_index(value: float) -> int:
    """A loop index: the float truncated toward zero; NaN gives 0, out-of-range values saturate [I]."""
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return INT32_MAX if value > 0 else INT32_MIN
    return _saturate32(int(value))


def matrix_flat_index(k: int) -> int:
    """The k-th matrix argument goes to element [k % 3][k // 3] (column-major input, §3.6)."""
    return (k % 3) * 3 + k // 3


# --- the console ------------------------------------------------------------------------------------------

class Console:
    """One serial port of a simulated MultispeQ v1; byte stream in, byte stream out.

    ``on_reset(kind)`` is called when the firmware reboots (``reset``/``1027``: "reset", ``reboot``:
    "reboot"); ``reset_requested`` stays True until :meth:`boot` runs. Meanwhile the port is gone: input is
    dropped and nothing is printed. ``wall_clock`` gives the RTC's Unix time for ``print_date``.
    """

    def __init__(self, device: EepromDevice, *, wall_clock: Callable[[], float] = time.time,
                 on_reset: Callable[[str], None] | None = None) -> None:
        self.device = device
        self.wall_clock = wall_clock
        self.on_reset = on_reset
        self.reset_requested = False
        self.reset_kind: str | None = None
        self._buf = bytearray()  # received, not yet consumed by the firmware
        self._out = bytearray()  # printed, not yet handed to the adapter
        self._crc = 0  # CRC-32 accumulator over everything the current command printed (§3.8)
        self._task: Task | None = None
        self._deadline: float | None = None
        self._waiting: str | None = None  # "name", "argument" or "protocol" while a task is suspended
        self._now = 0.0
        self._codes: dict[int, str] = {}
        self._codes_for: Profile | None = None

    # --- public API ---------------------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> bytes:
        """Bytes that arrived at ``now``; returns every byte the device printed in response."""
        if self.reset_requested or self.device.deep_sleep:
            if data:
                log.debug("%d bytes dropped: %s", len(data), "rebooting" if self.reset_requested else "asleep")
            return b""
        self._now = now
        self._advance()  # a name timeout that expired before these bytes arrived fires first
        self._buf += data
        self._advance()
        return self._take_output()

    def poll(self, now: float) -> bytes:
        """Let time pass to ``now`` with no input (fires the 500 ms name timeout when due)."""
        return self.feed(b"", now)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must be called next, or None if only new input can change anything."""
        if self.reset_requested or self.device.deep_sleep or self._task is None:
            return None
        return self._deadline

    def boot(self) -> bytes:
        """Power-on or reset: clear the input state, run the sleep check, return the boot banner.

        If the EEPROM sleep byte is 1 the firmware clears it and goes into deep sleep (§10 item 5): no
        banner, no replies, until the next :meth:`boot` (an external reset).
        """
        self.reset_requested = False
        self.reset_kind = None
        self._buf.clear()
        self._out.clear()
        self._task = None
        self._deadline = None
        self._waiting = None
        self._crc = 0
        if self.device.boot():
            return b""
        return render.READY

    def state(self) -> dict[str, Any]:
        """Device state plus the console's own (for a control plane)."""
        return {**self.device.state(), "busy": self._task is not None, "waiting_for": self._waiting,
                "buffered": len(self._buf), "reset_requested": self.reset_requested}

    # --- engine -------------------------------------------------------------------------------------------

    def _advance(self) -> None:
        while not self.reset_requested:
            if self._task is None:
                if not self._buf:
                    self._deadline = None
                    return
                self._crc = 0  # the idle loop saw the first byte of a command
                self._task = self._command()
            try:
                self._deadline = next(self._task)
            except StopIteration:
                self._task = None
                self._waiting = None
                continue
            return  # suspended: it needs bytes that have not arrived
        self._buf.clear()  # the unit rebooted: whatever was in flight is lost
        self._task = None
        self._deadline = None
        self._waiting = None

    def _take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _emit(self, data: bytes) -> None:
        self._out += data
        self._crc = zlib.crc32(data, self._crc)

    def _emit_crc(self) -> None:
        self._out += b"%08X\n" % self._crc
        self._crc = 0

    def _read_token(self, cap: int, timeout: float | None, what: str) -> Generator[float | None, None, bytes]:
        """Bytes up to a ``+`` (consumed, not returned), ``cap`` bytes, or ``timeout`` s of silence."""
        out = bytearray()
        last = self._now
        while len(out) < cap:
            if not self._buf:
                if timeout is not None and self._now >= last + timeout:
                    break
                self._waiting = what
                yield None if timeout is None else last + timeout
                continue
            b = self._buf[0]
            del self._buf[0]
            last = self._now
            if b == PLUS:
                break
            out.append(b)
        self._waiting = None
        return bytes(out)

    def _read_arg(self) -> Generator[float | None, None, bytes]:
        return (yield from self._read_token(ARG_CAP, None, "argument"))

    def _read_float(self) -> Generator[float | None, None, float]:
        return parse_float((yield from self._read_arg()))

    def _read_index(self) -> Generator[float | None, None, int]:
        return parse_index((yield from self._read_float()))

    def _read_long(self) -> Generator[float | None, None, int]:
        return atoi((yield from self._read_arg()))

    # --- dispatch -----------------------------------------------------------------------------------------

    def _command(self) -> Task:
        if self._buf[0] == ord("["):
            yield from self._protocol_input()
            return
        name = sanitise((yield from self._read_token(NAME_CAP, NAME_TIMEOUT, "name")))
        if len(name) < 3:
            if name:
                log.debug("name %r shorter than 3 characters: ignored", name)
            return
        if not name[:1].isalnum():
            self._emit(render.BAD_COMMAND_SPACE)
            return
        action = self._code_map().get(command_code(name))
        log.debug("command %r -> %s", name, action)
        if action is None:
            self._emit(render.BAD_COMMAND)
            return
        handler: Callable[[], Task | None] = getattr(self, f"_do_{action}")
        steps = handler()
        if steps is not None:
            yield from steps

    def _code_map(self) -> dict[int, str]:
        """Switch values of the current firmware's commands (rebuilt when the firmware changes)."""
        profile = self.device.profile
        if self._codes_for is not profile:
            codes: dict[int, str] = {}
            for token, action in profile.commands.items():
                code = command_code(token.encode("ascii"))
                if code in codes and codes[code] != action:
                    log.warning("command %r collides with another command in %s", token, profile.name)
                codes[code] = action
            self._codes, self._codes_for = codes, profile
        return self._codes

    def _protocol_input(self) -> Task:
        """``[`` at idle: a protocol line up to CR/LF or a 500 ms gap (§3.10). Running it is out of scope;
        only the brace/CRC check and its error reply are modelled."""
        line = bytearray()
        last = self._now
        while True:
            if not self._buf:
                if self._now >= last + NAME_TIMEOUT:
                    break
                self._waiting = "protocol"
                yield last + NAME_TIMEOUT
                continue
            b = self._buf[0]
            del self._buf[0]
            last = self._now
            if b in (0x0D, 0x0A):
                break
            line.append(b)
        self._waiting = None
        if _protocol_ok(bytes(line)):
            log.info("protocol of %d bytes received; running protocols is not simulated", len(line))
            return
        # Shape per §3.10; whether a newline precedes the CRC digits is not stated [U]: one is printed.
        self._emit(b'{"error":"bad json protocol (braces or CRC)"' + b" " * 14 + bytes(line) + b" " * 6 + b'"}\n')
        self._emit_crc()

    # --- read-only commands -------------------------------------------------------------------------------

    def _do_hello(self) -> None:
        self._emit(render.READY)

    def _do_device_info(self) -> None:
        self._emit(render.device_info_body(self.device.values(), self.device.profile, self.device.battery_percent))
        self._emit_crc()

    def _do_print_memory(self) -> None:
        self._emit(render.print_memory_body(self.device.values(), self.device.profile, self.device.nan_text))
        self._emit_crc()

    def _do_print_all(self) -> None:
        self._emit(render.print_all(self.device.light_intensity))

    def _do_battery(self) -> None:
        self._emit(render.battery_reply(self.device.battery_percent))

    def _do_compiled(self) -> None:
        self._emit(render.compiled_reply(self.device.profile))

    def _do_print_date(self) -> None:
        self._emit(render.print_date(self.wall_clock()))

    def _do_print_mag_bias(self) -> None:
        self._emit(render.print_magnetometer_bias(self.device.values(), self.device.nan_text))

    def _do_print_mag(self) -> None:
        self._emit(render.print_magnetometer(self.device.values(), self.device.nan_text))

    def _do_reset(self) -> None:
        self._request_reset("reset")

    def _do_reboot(self) -> None:
        self._request_reset("reboot")

    def _request_reset(self, kind: str) -> None:
        log.info("%s requested: port goes away until boot()", kind)
        self.reset_requested = True
        self.reset_kind = kind
        if self.on_reset is not None:
            self.on_reset(kind)

    # --- setters ------------------------------------------------------------------------------------------

    def _do_set_device_info(self) -> Task:
        """``set_device_info``/``1008`` (and ``1001`` in v1.04): reply is device_info with the new ID + CRC.

        Early builds print a prompt, read the ID, print a second prompt and read the manufacture date; the
        CRC then covers the prompts too, because it covers every byte the command printed.
        """
        prompts = self.device.profile.set_device_info_prompts
        if prompts:
            self._emit(render.PROMPT_DEVICE_ID)
        self.device.set_device_id((yield from self._read_long()))
        if prompts:
            self._emit(render.PROMPT_MANUFACTURE)
            self.device.write_field("device_manufacture", (yield from self._read_long()))
        self._do_device_info()

    def _store(self, targets: Sequence[tuple[str, int | None]]) -> Task:
        """Read one float per target and store it by name (fixed-index setters)."""
        for field, index in targets:
            self.device.write_field(field, (yield from self._read_float()), index)

    def _do_set_mag_bias(self) -> Task:
        return self._store([("mag_bias", i) for i in range(3)])

    def _do_set_mag(self) -> Task:
        return self._store([("mag_cal", matrix_flat_index(k)) for k in range(9)])

    def _do_set_accel_bias(self) -> Task:
        return self._store([("accel_bias", i) for i in range(3)])

    def _do_set_accel(self) -> Task:
        return self._store([("accel_cal", matrix_flat_index(k)) for k in range(9)])

    def _do_set_par(self) -> Task:
        names = ("light_slope_all", "light_slope_r", "light_slope_g", "light_slope_b", "light_yint")
        return self._store([(n, None) for n in names])

    def _do_set_par_all(self) -> Task:
        return self._store([("light_slope_all", None)])

    def _do_set_par_yint(self) -> Task:
        return self._store([("light_yint", None)])

    def _do_set_par_r(self) -> Task:
        return self._store([("light_slope_r", None)])

    def _do_set_par_g(self) -> Task:
        return self._store([("light_slope_g", None)])

    def _do_set_par_b(self) -> Task:
        return self._store([("light_slope_b", None)])

    def _do_set_thickness(self) -> Task:
        return self._store([(n, None) for n in self.device.family.thickness])

    def _do_set_thickness_quick(self) -> Task:
        return self._store([("thickness_min", None), ("thickness_max", None)])

    def _detector(self, n: int) -> Task:
        return self._store([("detector_offset_slope", n - 1), ("detector_offset_yint", n - 1)])

    def _do_set_detector1(self) -> Task:
        return self._detector(1)

    def _do_set_detector2(self) -> Task:
        return self._detector(2)

    def _do_set_detector3(self) -> Task:
        return self._detector(3)

    def _do_set_detector4(self) -> Task:
        return self._detector(4)

    def _loop(self, fields: Sequence[str]) -> Task:
        """Loop setter (§3.7): index, then one value per field, until an index truncating to -1.

        The firmware's range check is always true, so every other index is a raw write at
        ``offset + 4*index`` that may land in a neighbouring field.
        """
        while True:
            index = yield from self._read_index()
            if index == -1:
                return
            for field in fields:
                self.device.write_raw_element(field, index, (yield from self._read_float()))

    def _do_set_led_par(self) -> Task:
        slopes = [f"par_to_dac_slope{i}" for i in range(1, self.device.family.par_slopes + 1)]
        return self._loop([*slopes, "par_to_dac_yint"])

    def _do_ir_baseline(self) -> Task:
        return self._loop(["ir_baseline_slope", "ir_baseline_yint"])

    def _do_set_colorcal1(self) -> Task:
        return self._loop(["colorcal_intensity1_slope", "colorcal_intensity1_yint"])

    def _do_set_colorcal2(self) -> Task:
        return self._loop(["colorcal_intensity2_slope", "colorcal_intensity2_yint"])

    def _do_set_colorcal3(self) -> Task:
        return self._loop(["colorcal_intensity3_slope", "colorcal_intensity3_yint"])

    def _do_set_colorcal_blanks(self) -> Task:
        return self._loop(["colorcal_blank1", "colorcal_blank2", "colorcal_blank3"])

    def _do_set_user_defined(self) -> Task:
        return self._loop(["userdef"])


def _protocol_ok(line: bytes) -> bool:
    """Brackets and braces balance and a ``]`` exists; if a hex digit follows the last ``]``, the next 8
    characters must be the uppercase CRC-32 of everything up to that ``]`` (§3.10)."""
    if line.count(b"[") != line.count(b"]") or line.count(b"{") != line.count(b"}"):
        return False
    end = line.rfind(b"]")
    if end < 0:
        return False
    tail = line[end + 1:]
    if not tail[:1] or tail[:1] not in b"0123456789abcdefABCDEF":
        return True  # no CRC sent
    return tail[:8] == b"%08X" % zlib.crc32(line[:end + 1])
