"""pyserial helpers shared by the simulator tests: a host opening the unit's port, reading, seeing it go."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import serial


def open_port(path: str | os.PathLike, timeout: float = 5.0) -> serial.Serial:
    """Open the port, retrying while it is being re-created (reset, power cycle)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return serial.serial_for_url(str(path), baudrate=115200, timeout=0.2)
        except (serial.SerialException, OSError):
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


def read_until(port: serial.Serial, done: Callable[[bytes], bool], timeout: float = 3.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while not done(buf) and time.monotonic() < deadline:
        buf += port.read(max(1, port.in_waiting))
    return buf


def wait_gone(port: serial.Serial, timeout: float = 3.0) -> None:
    """The open handle breaks, as when USB disappears."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            port.read(1)
        except (serial.SerialException, OSError):
            return
    raise AssertionError("the port did not go away")
