"""A byte-stream link to a unit. Serial (pyserial URLs) and VISA (pyvisa @py) implement the same API, so a
driver never knows which one it has."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Transport(ABC):
    """Byte stream to one unit. Timeouts are in seconds; reads return what arrived (b"" on silence)."""

    def __init__(self, address: str) -> None:
        self.address = address

    @abstractmethod
    def open(self) -> None:
        """Open the link; raise LinkError with the address and the OS reason if it cannot be opened."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Write all bytes (no line ending is ever added); raise LinkError if the port is gone."""

    @abstractmethod
    def read_some(self, timeout: float) -> bytes:
        """Return the bytes available now, or wait up to ``timeout`` for at least one; b"" on silence."""

    def read_until(self, done, *, timeout: float, idle_timeout: float | None = None) -> bytes:
        """Read until ``done(buffer)`` is true; raise LinkError on overall or idle timeout.

        ``done`` is a predicate over everything read so far, so callers can wait for a framed reply
        (``}`` + 8 hex digits + newline) rather than a fixed terminator.
        """
        import time

        from harness.errors import LinkError

        buf = bytearray()
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while not done(bytes(buf)):
            now = time.monotonic()
            if now >= deadline:
                raise LinkError(f"{self.address}: no complete reply within {timeout:g} s "
                                f"({len(buf)} bytes received)")
            if idle_timeout is not None and buf and now - last >= idle_timeout:
                raise LinkError(f"{self.address}: reply stalled after {len(buf)} bytes "
                                f"(silent for {idle_timeout:g} s)")
            wait = deadline - now
            if idle_timeout is not None:
                wait = min(wait, idle_timeout)
            chunk = self.read_some(min(wait, 0.1))
            if chunk:
                buf += chunk
                last = time.monotonic()
        return bytes(buf)

    def drain(self, quiet: float, max_time: float = 5.0) -> bytes:
        """Read and return input until the line has been silent for ``quiet`` seconds."""
        import time

        got = bytearray()
        end = time.monotonic() + max_time
        while time.monotonic() < end:
            chunk = self.read_some(quiet)
            if not chunk:
                break
            got += chunk
        return bytes(got)

    def reopen(self, deadline_s: float) -> None:
        """After the port went away (reset, unplug): retry opening until ``deadline_s`` seconds pass."""
        import time

        from harness.errors import LinkError

        self.close()
        end = time.monotonic() + deadline_s
        last_error: Exception | None = None
        while time.monotonic() < end:
            try:
                self.open()
                return
            except LinkError as exc:
                last_error = exc
                time.sleep(0.05)
        raise LinkError(f"{self.address}: port did not come back within {deadline_s:g} s ({last_error})")

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
