"""VISA transport on pyvisa with the pure-Python ``@py`` backend (pyvisa-py).

Labs that drive their benches through VISA name a unit ``ASRL/dev/ttyUSB0::INSTR`` (a serial port, including
a simulator's pty symlink) or ``TCPIP::host::port::SOCKET`` (a raw socket). The harness reads raw bytes,
never VISA messages: termination characters are switched off in both directions and the driver frames
replies itself.

Resources are always opened by name. ``ResourceManager.list_resources()`` is never called: with ``@py`` it
broadcasts VXI-11/mDNS discovery over the LAN.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import pyvisa
import serial
from pyvisa import constants
from pyvisa.errors import VisaIOError

from harness.errors import BadInput, LinkError
from harness.transports.base import Transport

log = logging.getLogger(__name__)

BAUDRATE = 115200
_SLURP_MAX = 65536
# What pyserial/sockets raise underneath pyvisa-py when the port or peer vanishes: pyvisa-py lets them through.
_GONE = (serial.SerialException, OSError)


class VisaTransport(Transport):
    """A unit reached through pyvisa-py: ``ASRL<port>::INSTR`` or ``TCPIP::host::port::SOCKET``."""

    def __init__(self, address: str, *, baudrate: int = BAUDRATE, write_timeout: float = 10.0,
                 open_timeout: float = 5.0) -> None:
        super().__init__(address)
        self.baudrate = baudrate
        self.write_timeout = write_timeout
        self.open_timeout = open_timeout
        self._rm: Any = None
        self._inst: Any = None
        self._timeout_ms: int | None = None
        self._is_serial = False

    @property
    def is_open(self) -> bool:
        return self._inst is not None

    def open(self) -> None:
        if self._inst is not None:
            return
        upper = self.address.upper()
        self._is_serial = upper.startswith("ASRL")
        if not (self._is_serial and upper.endswith("::INSTR")) and not (
                upper.startswith("TCPIP") and upper.endswith("::SOCKET")):
            raise BadInput(f"{self.address}: unsupported VISA resource; use ASRL<port>::INSTR "
                           f"or TCPIP::<host>::<port>::SOCKET")
        try:
            self._rm = pyvisa.ResourceManager("@py")
            inst = self._rm.open_resource(self.address, open_timeout=int(self.open_timeout * 1000))
            self._inst = inst
            self._configure(inst)
        except ValueError as exc:  # pyvisa: the resource name does not parse
            self.close()
            raise BadInput(f"{self.address}: not a valid VISA resource name ({_reason(exc)})") from exc
        except Exception as exc:  # pyvisa-py raises a bare Exception when a connect fails
            self.close()
            raise LinkError(f"{self.address}: cannot open VISA resource ({_reason(exc)})") from exc
        if not self._is_serial:
            # pyvisa-py connects without blocking and reports success even when the port refused.
            problem = self._socket_problem()
            if problem:
                self.close()
                raise LinkError(f"{self.address}: cannot open VISA resource ({problem})")
        log.debug("opened %s", self.address)

    def _configure(self, inst: Any) -> None:
        # Raw bytes both ways: no termination character appended on write or honoured on read.
        inst.read_termination = None
        inst.write_termination = None
        inst.set_visa_attribute(constants.ResourceAttribute.termchar_enabled, constants.VI_FALSE)
        # pyvisa-py's socket session otherwise keeps reading until the timeout and then DROPS what it got.
        inst.set_visa_attribute(constants.ResourceAttribute.suppress_end_enabled, constants.VI_FALSE)
        if self._is_serial:
            inst.baud_rate = self.baudrate
            inst.data_bits = 8
            inst.parity = constants.Parity.none
            inst.stop_bits = constants.StopBits.one
            inst.flow_control = constants.ControlFlow.none
            inst.end_input = constants.SerialTermination.none
            inst.end_output = constants.SerialTermination.none
        self._timeout_ms = None

    def close(self) -> None:
        inst, rm = self._inst, self._rm
        self._inst = self._rm = None
        for thing in (inst, rm):
            if thing is None:
                continue
            try:
                thing.close()
            except (pyvisa.Error, *_GONE) as exc:
                log.debug("closing %s: %s", self.address, exc)

    def _require(self) -> Any:
        if self._inst is None:
            raise LinkError(f"{self.address}: resource is not open")
        return self._inst

    def _set_timeout(self, inst: Any, seconds: float) -> None:
        # VISA timeouts are whole milliseconds; 0 would mean "immediate", 1 ms is the shortest wait.
        ms = max(1, int(round(seconds * 1000)))
        if ms != self._timeout_ms:
            inst.timeout = ms
            self._timeout_ms = ms

    def write(self, data: bytes) -> None:
        inst = self._require()
        try:
            self._set_timeout(inst, self.write_timeout)  # pyvisa-py uses the one timeout for writes too
            inst.write_raw(data)
        except (VisaIOError, *_GONE) as exc:
            self.close()
            raise LinkError(f"{self.address}: write failed, port gone? ({_reason(exc)})") from exc

    def read_some(self, timeout: float) -> bytes:
        inst = self._require()
        try:
            first = self._slurp(inst)
            if first:
                return first
            first = self._read(inst, 1, timeout)
            if not first:
                problem = None if self._is_serial else self._socket_problem()
                if problem:
                    self.close()
                    raise LinkError(f"{self.address}: {problem}")
                return b""
            return first + self._slurp(inst)
        except _GONE as exc:
            self.close()
            raise LinkError(f"{self.address}: read failed, port gone? ({_reason(exc)})") from exc

    def _read(self, inst: Any, count: int, timeout: float | None) -> bytes:
        """One viRead of up to ``count`` bytes; b"" when nothing arrived within ``timeout``.

        ``timeout=None`` keeps the current one: on a serial port each change is a tcsetattr underneath.
        """
        if timeout is not None:
            self._set_timeout(inst, timeout)
        try:
            # "max count read" only says more may be waiting; _slurp and the caller's loop handle that.
            with inst.ignore_warning(constants.StatusCode.success_max_count_read):
                data, _status = inst.visalib.read(inst.session, count)
        except VisaIOError as exc:
            if exc.error_code == constants.StatusCode.error_timeout:
                return b""
            raise LinkError(f"{self.address}: read failed ({_reason(exc)})") from exc
        return bytes(data)

    def _slurp(self, inst: Any) -> bytes:
        """Whatever is waiting now, without blocking (beyond a 1 ms poll on sockets)."""
        if self._is_serial:
            waiting = inst.bytes_in_buffer
            # The bytes are already buffered, so the read returns at once whatever the timeout is.
            return self._read(inst, waiting, None) if waiting else b""
        # A socket has no byte count; a 1 ms read returns what is buffered (suppress_end is off).
        return self._read(inst, _SLURP_MAX, 0.001)

    def _socket_problem(self) -> str | None:
        """Why the socket is unusable (refused, reset, closed by the peer), or None if it is fine.

        pyvisa-py reports a socket closed by the peer as endless silence, and a refused connect as a
        successful open. This peeks at pyvisa-py's session object (``interface`` is its socket); if that
        ever changes we fall back to silence, which the driver's own timeouts still catch.
        """
        inst = self._inst
        try:
            sock = inst.visalib.sessions[inst.session].interface
        except (AttributeError, KeyError, TypeError):
            return None
        if not isinstance(sock, socket.socket):
            return None
        try:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                return os.strerror(error)
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                return "connection closed by the unit"
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            return _reason(exc)
        return None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
