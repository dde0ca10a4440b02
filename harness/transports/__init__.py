"""Byte-stream transports to a unit: serial (pyserial URLs) and VISA (pyvisa-py). HTTP targets use httpx.

``open_transport(address)`` picks the transport from the address alone, so a bench file or a ``--address``
option is all a driver needs: anything with ``::`` is a VISA resource name (``ASRL/dev/ttyUSB0::INSTR``,
``TCPIP::127.0.0.1::5025::SOCKET``), everything else is a pyserial port or URL (``/dev/ttyUSB0``,
``socket://host:port``, ``rfc2217://host:port``, ``loop://``).
"""

from __future__ import annotations

from harness.errors import BadInput
from harness.transports.base import Transport
from harness.transports.serial import SerialTransport

__all__ = ["SerialTransport", "Transport", "VisaTransport", "is_visa_address", "make_transport",
           "open_transport"]


def __getattr__(name: str):  # noqa: ANN202 - ``from harness.transports import VisaTransport`` still works
    if name == "VisaTransport":
        from harness.transports.visa import VisaTransport

        return VisaTransport
    raise AttributeError(name)


def is_visa_address(address: str) -> bool:
    return "::" in address


def make_transport(address: str) -> Transport:
    """The transport for ``address``, not yet opened (``with make_transport(a) as t:`` opens it)."""
    if not address:
        raise BadInput("empty device address")
    if address.lower().startswith(("http://", "https://")):
        raise BadInput(f"{address}: an HTTP address has no byte-stream transport; this target speaks HTTP")
    if is_visa_address(address):
        from harness.transports.visa import VisaTransport  # pyvisa costs ~70 ms to import: only when used

        return VisaTransport(address)
    return SerialTransport(address)


def open_transport(address: str) -> Transport:
    """The transport for ``address``, opened; raises LinkError if the port cannot be opened.

    ``open()`` is idempotent, so ``with open_transport(a) as t:`` works too (and closes it after).
    """
    transport = make_transport(address)
    transport.open()
    return transport
