"""Serial transport on pyserial's ``serial_for_url``.

One class covers every way a serial console reaches us: a device path (``/dev/ttyUSB0``, a simulator's pty
or its stable symlink), ``socket://host:port`` (a raw TCP bridge), ``rfc2217://host:port`` (a bench host
exporting its ports with ser2net or pyserial's server) and ``loop://``. The line is always 115200 8N1 with
no flow control, like the units' USB consoles.
"""

from __future__ import annotations

import logging

import serial
from serial.urlhandler import protocol_socket

from harness.errors import BadInput, LinkError
from harness.transports.base import Transport

log = logging.getLogger(__name__)

BAUDRATE = 115200
_SLURP_MAX = 65536


class SerialTransport(Transport):
    """A serial console, by path or pyserial URL."""

    def __init__(self, address: str, *, baudrate: int = BAUDRATE, write_timeout: float = 10.0) -> None:
        super().__init__(address)
        self.baudrate = baudrate
        self.write_timeout = write_timeout
        self._port: serial.SerialBase | None = None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        if self._port is not None:
            return  # idempotent, so `with open_transport(a) as t:` does not open twice
        kwargs = {}
        if "://" not in self.address:
            # A real port shared by two processes interleaves their bytes; refuse a second opener instead.
            kwargs["exclusive"] = True
        try:
            self._port = serial.serial_for_url(
                self.address,
                baudrate=self.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                xonxoff=False,
                rtscts=False,
                dsrdtr=False,
                timeout=0,
                write_timeout=self.write_timeout,
                **kwargs,
            )
        except ValueError as exc:  # pyserial: unknown URL scheme or bad option in the URL
            raise BadInput(f"{self.address}: not a serial port or pyserial URL ({exc})") from exc
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"{self.address}: cannot open serial port ({_reason(exc)})") from exc
        log.debug("opened %s", self.address)

    def close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        try:
            port.close()
        except (serial.SerialException, OSError) as exc:
            # Closing a port that already vanished must not mask the error that made us close it.
            log.debug("closing %s: %s", self.address, exc)

    def _require(self) -> serial.SerialBase:
        if self._port is None:
            raise LinkError(f"{self.address}: port is not open")
        return self._port

    def _set_timeout(self, port: serial.SerialBase, timeout: float) -> None:
        # On a posix port a timeout change is a tcsetattr and on rfc2217 a negotiation, so only on change.
        timeout = max(0.0, timeout)
        if port.timeout != timeout:
            port.timeout = timeout

    def write(self, data: bytes) -> None:
        port = self._require()
        try:
            written = port.write(data)
            port.flush()  # posix: tcdrain, so a reply is never awaited before the request left
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise LinkError(f"{self.address}: write failed, port gone? ({_reason(exc)})") from exc
        if written is not None and written != len(data):
            raise LinkError(f"{self.address}: wrote only {written} of {len(data)} bytes")

    def read_some(self, timeout: float) -> bytes:
        port = self._require()
        try:
            first = self._slurp(port)
            if first:
                return first
            self._set_timeout(port, timeout)
            first = port.read(1)
            if not first:
                return b""
            return first + self._slurp(port)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise LinkError(f"{self.address}: read failed, port gone? ({_reason(exc)})") from exc

    def _slurp(self, port: serial.SerialBase) -> bytes:
        """Whatever is waiting now, without blocking."""
        if isinstance(port, protocol_socket.Serial):
            # socket://'s in_waiting is only 0/1 (a select), but a timeout change there is free:
            # a non-blocking read takes the whole waiting chunk in one recv.
            self._set_timeout(port, 0)
            return port.read(_SLURP_MAX)
        waiting = port.in_waiting
        return port.read(waiting) if waiting else b""


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
