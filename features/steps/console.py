"""Steps of the MultispeQ console feature: a plain pyserial client, as a user at a terminal would be."""

from __future__ import annotations

import time
import zlib

import serial
from pytest_bdd import parsers, then, when

from harness.pytest_plugin import Unit


def _read_reply(port: serial.Serial, done, timeout: float = 5.0) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not done(buf):
        buf += port.read(port.in_waiting or 1)
    return buf


@when(parsers.parse('a plain serial client sends "{command}"'), target_fixture="reply")
def plain_client_sends(unit: Unit, command: str) -> bytes:
    with serial.serial_for_url(unit.address, baudrate=115200, timeout=0.2) as port:
        port.write(command.encode("ascii"))
        if command.startswith("print_memory"):
            return _read_reply(port, lambda b: b.endswith(b"\n") and b"\n}" in b and len(b) > 20)
        return _read_reply(port, lambda b: b.endswith(b"\n"))


@then(parsers.parse('it receives "{text}"'))
def receives(reply: bytes, text: str) -> None:
    assert reply == (text + "\n").encode("ascii"), reply


@then("the reply ends with the CRC-32 of the bytes before it")
def ends_with_crc(reply: bytes) -> None:
    body, digits = reply[:-9], reply[-9:-1]
    assert reply.endswith(b"\n") and body.endswith(b"}"), reply[-40:]
    assert digits.decode("ascii") == f"{zlib.crc32(body):08X}"


@when("the unit is reset through its console")
def reset_unit(unit: Unit) -> None:
    with serial.serial_for_url(unit.address, baudrate=115200, timeout=0.2) as port:
        port.write(b"reset+")
        # A real unit's USB port disappears: the open handle breaks or goes silent.
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                port.read(1)
                port.write(b"hello+")
            except (serial.SerialException, OSError):
                return
            time.sleep(0.05)
    raise AssertionError("the port did not go away after reset+")


@then("the unit answers at the same address after the reset")
def answers_after_reset(unit: Unit) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            with serial.serial_for_url(unit.address, baudrate=115200, timeout=0.2) as port:
                port.reset_input_buffer()
                port.write(b"hello+")
                reply = _read_reply(port, lambda b: b.endswith(b"Ready\n"), timeout=2)
                if reply.endswith(b"MultispeQ Ready\n"):
                    return
        except (serial.SerialException, OSError):
            time.sleep(0.1)
    raise AssertionError(f"no answer at {unit.address} after the reset")
