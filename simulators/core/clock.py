"""Simulator time: real monotonic "now", and delays that follow the time scale (DESIGN.md rule 5).

``time_scale=None`` is fast mode: artificial delays (baud rate, reboots, long operations) are skipped.
A float is realtime scaled: 1.0 is the real unit's speed, 0.1 is ten times faster than the real unit.

``now()`` stays real monotonic time in every mode: the host's bytes arrive in real time, and the
consoles' inter-byte timeouts (500 ms) are about those real arrival times.
"""

from __future__ import annotations

import threading
import time

SERIAL_BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit


class Clock:
    def __init__(self, time_scale: float | None = None) -> None:
        if time_scale is not None and not time_scale > 0:
            raise ValueError(f"time scale must be > 0, got {time_scale!r}")
        self.time_scale = time_scale

    @property
    def realtime(self) -> bool:
        return self.time_scale is not None

    def now(self) -> float:
        return time.monotonic()

    def real(self, device_seconds: float) -> float:
        """Wall-clock seconds that ``device_seconds`` of the real unit take here (0 in fast mode)."""
        if self.time_scale is None:
            return 0.0
        return max(0.0, device_seconds) * self.time_scale

    def sleep(self, device_seconds: float, interrupt: threading.Event | None = None) -> bool:
        """Sleep for the scaled duration; return False if ``interrupt`` was set meanwhile."""
        seconds = self.real(device_seconds)
        if interrupt is not None:
            return not interrupt.wait(seconds) if seconds > 0 else not interrupt.is_set()
        if seconds > 0:
            time.sleep(seconds)
        return True

    def byte_rate(self, baud: int, bits_per_byte: int = SERIAL_BITS_PER_BYTE) -> float | None:
        """Real bytes per second of a ``baud`` line under this clock; None (unlimited) in fast mode.

        115200 8N1 is 11520 bytes/s on the real unit; at time scale 0.1 the same transfer takes a
        tenth of the time, so 115200 bytes/s here.
        """
        if self.time_scale is None:
            return None
        return baud / bits_per_byte / self.time_scale

    def __repr__(self) -> str:
        return f"Clock(time_scale={self.time_scale!r})"
