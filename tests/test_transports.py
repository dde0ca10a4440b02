"""Serial and VISA transports against real ptys and real loopback sockets (no mocks)."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.errors import BadInput, LinkError
from harness.transports import SerialTransport, Transport, VisaTransport, make_transport, open_transport

BIG = bytes(range(256)) * 256  # 64 KiB, more than a pty buffer holds at once


def ends_with_newline(buf: bytes) -> bool:
    return buf.endswith(b"\n")


class PtyUnit:
    """The controller side of a pty pair, answering like a unit: it echoes each chunk in upper case.

    ``BIG\\n`` makes it send 64 KiB; ``HALF\\n`` sends a reply that never completes.
    """

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo or line discipline, like a USB CDC port
        self.path = os.ttyname(self.slave)
        self.received = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            self.received += data
            if data == b"BIG\n":
                view = memoryview(BIG)
                while view and not self._stop.is_set():
                    view = view[os.write(self.master, view[:4096]):]
            elif data == b"HALF\n":
                os.write(self.master, b"partial")
            else:
                os.write(self.master, data.upper())

    def unplug(self) -> None:
        """The unit goes away: the controller side of the pty closes."""
        self._stop.set()
        self._thread.join(2)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def close(self) -> None:
        self.unplug()
        os.close(self.slave)


@pytest.fixture
def pty_unit() -> Iterator[PtyUnit]:
    unit = PtyUnit()
    yield unit
    unit.close()


class TcpUnit:
    """A loopback TCP server answering like PtyUnit (one client at a time)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.server.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conn = conn
            conn.settimeout(0.05)
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                if data == b"BIG\n":
                    conn.sendall(BIG)
                elif data == b"BYE\n":
                    conn.shutdown(socket.SHUT_RDWR)  # the unit drops the link
                    break
                else:
                    conn.sendall(data.upper())
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.server.close()


@pytest.fixture
def tcp_unit() -> Iterator[TcpUnit]:
    unit = TcpUnit()
    yield unit
    unit.close()


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def roundtrip(t: Transport) -> None:
    t.write(b"hello\n")
    assert t.read_until(ends_with_newline, timeout=3) == b"HELLO\n"
    # no termination character handling: an embedded newline is just a byte
    t.write(b"a\nb;")
    assert t.read_until(lambda b: b.endswith(b";"), timeout=3) == b"A\nB;"


def big_transfer(t: Transport) -> None:
    t.write(b"BIG\n")
    got = t.read_until(lambda b: len(b) >= len(BIG), timeout=8, idle_timeout=2)
    assert got == BIG


PTY_KINDS: dict[str, Callable[[str], Transport]] = {
    "serial": SerialTransport,
    "visa": lambda path: VisaTransport(f"ASRL{path}::INSTR"),
}


@pytest.mark.parametrize("kind", sorted(PTY_KINDS))
def test_pty_roundtrip_and_big_reply(pty_unit: PtyUnit, kind: str) -> None:
    with PTY_KINDS[kind](pty_unit.path) as t:
        roundtrip(t)
        big_transfer(t)
    assert bytes(pty_unit.received).startswith(b"hello\n")


@pytest.mark.parametrize("kind", sorted(PTY_KINDS))
def test_pty_silence_overall_and_idle_timeouts(pty_unit: PtyUnit, kind: str) -> None:
    with PTY_KINDS[kind](pty_unit.path) as t:
        start = time.monotonic()
        assert t.read_some(0.2) == b""
        assert 0.15 <= time.monotonic() - start < 2

        with pytest.raises(LinkError, match="no complete reply within 0.3 s"):
            t.read_until(ends_with_newline, timeout=0.3)

        t.write(b"HALF\n")
        start = time.monotonic()
        with pytest.raises(LinkError, match=r"stalled after 7 bytes") as err:
            t.read_until(ends_with_newline, timeout=5, idle_timeout=0.3)
        assert time.monotonic() - start < 3  # the idle timeout fired, not the overall one
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", sorted(PTY_KINDS))
def test_pty_unplugged_is_link_error(pty_unit: PtyUnit, kind: str) -> None:
    t = PTY_KINDS[kind](pty_unit.path)
    t.open()
    roundtrip(t)
    pty_unit.unplug()
    with pytest.raises(LinkError) as err:
        for _ in range(3):  # the first read may still see buffered silence; the port is gone by the next
            t.read_some(0.1)
            t.write(b"x")
    assert pty_unit.path in str(err.value)
    assert "\n" not in str(err.value)
    t.close()
    t.close()  # closing twice after the port vanished is harmless


def test_serial_reopen_follows_a_symlink_like_udev(tmp_path: Path) -> None:
    """A reset re-creates the pty; the stable symlink (rule 1) lets reopen() find the new one."""
    first, second = PtyUnit(), PtyUnit()
    try:
        link = tmp_path / "ttyUSB-unit"
        link.symlink_to(first.path)
        t = SerialTransport(str(link))
        t.open()
        roundtrip(t)
        first.unplug()
        with pytest.raises(LinkError):
            t.read_some(0.1)
            t.read_some(0.1)
        tmp_link = tmp_path / "ttyUSB-unit.new"
        tmp_link.symlink_to(second.path)
        tmp_link.replace(link)
        t.reopen(2.0)
        roundtrip(t)
        t.close()
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("address", ["/nonexistent/ttyUSB9", "ASRL/nonexistent/ttyUSB9::INSTR"])
def test_missing_port_is_link_error(address: str) -> None:
    with pytest.raises(LinkError) as err:
        open_transport(address)
    message = str(err.value)
    assert "/nonexistent/ttyUSB9" in message and "\n" not in message
    assert err.value.exit_code == 3


def test_socket_url_roundtrip_and_big_reply(tcp_unit: TcpUnit) -> None:
    with open_transport(f"socket://127.0.0.1:{tcp_unit.port}") as t:
        assert isinstance(t, SerialTransport)
        roundtrip(t)
        big_transfer(t)
        assert t.read_some(0.1) == b""


def test_socket_url_peer_close_is_link_error(tcp_unit: TcpUnit) -> None:
    t = open_transport(f"socket://127.0.0.1:{tcp_unit.port}")
    t.write(b"BYE\n")
    with pytest.raises(LinkError, match="port gone"):
        for _ in range(10):
            t.read_some(0.2)
    t.close()


def test_visa_tcpip_socket_roundtrip_and_big_reply(tcp_unit: TcpUnit) -> None:
    with open_transport(f"TCPIP::127.0.0.1::{tcp_unit.port}::SOCKET") as t:
        assert isinstance(t, VisaTransport)
        roundtrip(t)
        big_transfer(t)
        start = time.monotonic()
        assert t.read_some(0.2) == b""
        assert time.monotonic() - start >= 0.15


def test_visa_tcpip_peer_close_is_link_error(tcp_unit: TcpUnit) -> None:
    t = open_transport(f"TCPIP::127.0.0.1::{tcp_unit.port}::SOCKET")
    t.write(b"BYE\n")
    with pytest.raises(LinkError, match="closed by the unit"):
        for _ in range(10):
            t.read_some(0.2)
    t.close()


@pytest.mark.parametrize("address", ["socket://127.0.0.1:{port}", "TCPIP::127.0.0.1::{port}::SOCKET"])
def test_refused_connection_is_link_error(address: str) -> None:
    address = address.format(port=closed_port())
    with pytest.raises(LinkError) as err:
        open_transport(address)
    assert address in str(err.value)


def test_loop_url_and_idempotent_open() -> None:
    t = open_transport("loop://")
    with t:  # already open: entering does not reopen
        t.write(b"ping\n")
        assert t.read_until(ends_with_newline, timeout=1) == b"ping\n"
    assert not t.is_open  # type: ignore[attr-defined]


def test_transport_choice_by_address() -> None:
    assert isinstance(make_transport("/dev/ttyUSB0"), SerialTransport)
    assert isinstance(make_transport("rfc2217://127.0.0.1:7000"), SerialTransport)
    assert isinstance(make_transport("ASRL/dev/ttyUSB0::INSTR"), VisaTransport)
    assert isinstance(make_transport("TCPIP::127.0.0.1::5025::SOCKET"), VisaTransport)
    with pytest.raises(BadInput, match="HTTP"):
        make_transport("https://unit.local")
    with pytest.raises(BadInput):
        open_transport("nosuchscheme://x")
    with pytest.raises(BadInput, match="unsupported VISA resource"):
        open_transport("GPIB0::12::INSTR")


def test_read_before_open_is_link_error() -> None:
    for t in (SerialTransport("loop://"), VisaTransport("ASRL/dev/null::INSTR")):
        with pytest.raises(LinkError, match="not open"):
            t.read_some(0.01)
