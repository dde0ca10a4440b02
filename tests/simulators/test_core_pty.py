"""simulators.core: clock, fault registry and the pty adapter, with real ptys opened by pyserial/pyvisa."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from serialtools import open_port, wait_gone

from simulators.core.clock import Clock
from simulators.core.faults import Drop, FaultError, Faults, Hold, Pause, Send
from simulators.core.pty import PtyPort

BANNER = b"Test Ready\n"


class LineConsole:
    """A small but real byte console: commands end with ``+``.

    ``hello`` -> ``hi\\n``; ``big<N>`` -> N bytes then ``\\n``; ``reset`` asks for a reset. A name
    left without ``+`` for 0.2 s is answered ``timeout:<name>\\n`` (exercises next_deadline/poll).
    """

    GAP = 0.2

    def __init__(self) -> None:
        self.reset_requested = False
        self.boots = 0
        self.received = bytearray()
        self._buf = bytearray()
        self._last = 0.0

    def boot(self) -> bytes:
        self.boots += 1
        self._buf.clear()
        self.reset_requested = False
        return BANNER

    def feed(self, data: bytes, now: float) -> bytes:
        self.received += data
        self._buf += data
        self._last = now
        out = bytearray()
        while b"+" in self._buf:
            name, _, rest = bytes(self._buf).partition(b"+")
            self._buf[:] = rest
            if name == b"hello":
                out += b"hi\n"
            elif name.startswith(b"big"):
                out += bytes(48 + i % 10 for i in range(int(name[3:]))) + b"\n"
            elif name == b"reset":
                self.reset_requested = True
                break
            else:
                out += b"?" + name + b"\n"
        return bytes(out)

    def poll(self, now: float) -> bytes:
        if self._buf and now >= self._last + self.GAP:
            name = bytes(self._buf)
            self._buf.clear()
            return b"timeout:" + name + b"\n"
        return b""

    def next_deadline(self) -> float | None:
        return self._last + self.GAP if self._buf else None




def read_until(port: serial.Serial, end: bytes, timeout: float = 3.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(end) and time.monotonic() < deadline:
        buf += port.read(max(1, port.in_waiting))
    return buf




@pytest.fixture
def console() -> LineConsole:
    return LineConsole()


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def port(tmp_path: Path, console: LineConsole, faults: Faults) -> Iterator[PtyPort]:
    p = PtyPort(console, tmp_path / "tty", faults=faults, reset_delay=0.15, banner_settle=0.05,
                hold_banner=True)
    p.start()
    yield p
    p.stop()


# -- clock ---------------------------------------------------------------------------------------


def test_clock_fast_mode_has_no_delays() -> None:
    clock = Clock()
    assert not clock.realtime
    assert clock.real(3600) == 0
    assert clock.byte_rate(115200) is None
    start = time.monotonic()
    clock.sleep(3600)
    assert time.monotonic() - start < 0.1


def test_clock_scale_stretches_delays_and_baud() -> None:
    assert Clock(1.0).byte_rate(115200) == pytest.approx(11520)
    assert Clock(0.1).byte_rate(115200) == pytest.approx(115200)
    assert Clock(0.5).real(2.0) == pytest.approx(1.0)
    start = time.monotonic()
    Clock(0.01).sleep(5)
    assert 0.04 <= time.monotonic() - start < 1.0
    with pytest.raises(ValueError):
        Clock(0)


# -- fault registry (pure) ------------------------------------------------------------------------


def test_faults_validate_and_describe() -> None:
    f = Faults()
    assert f.describe() == {}
    assert f.set("throttle", baud=9600) == {"baud": 9600}
    assert f.throttle_rate() == 960
    f.set("corrupt", offset=3)
    assert f.describe() == {"corrupt": {"count": 1, "offset": 3, "xor": 1}, "throttle": {"baud": 9600}}
    for kind, params in [("nope", {}), ("throttle", {}), ("throttle", {"baud": "fast"}),
                         ("corrupt", {"offset": True}), ("corrupt", {"xor": 0}), ("stall", {"after": -1}),
                         ("drop", {"later": 3})]:
        with pytest.raises(FaultError):
            f.set(kind, **params)
    f.clear("throttle")
    assert list(f.describe()) == ["corrupt"]
    f.clear()
    assert f.describe() == {}


def test_corrupt_flips_one_byte_per_reply_for_count_replies() -> None:
    f = Faults()
    f.set("corrupt", offset=2, xor=0x20, count=2)
    assert f.shape(b"ab") == [Send(b"ab")]  # too short: passes, does not count
    assert f.shape(b"hello") == [Send(b"heLlo")]
    assert f.shape(b"hello") == [Send(b"heLlo")]
    assert f.shape(b"hello") == [Send(b"hello")]
    assert f.describe() == {}
    f.set("corrupt", offset=0, count=0)  # every reply until cleared
    assert all(f.shape(b"x") == [Send(b"y")] for _ in range(5))


def test_drop_and_stall_count_bytes_across_replies() -> None:
    f = Faults()
    f.set("drop", after=5, down=None)
    assert f.shape(b"abc") == [Send(b"abc")]
    assert f.shape(b"defgh") == [Send(b"de"), Drop(down=None, reboot=True)]
    assert f.get("drop") is None  # one shot
    f.set("stall", after=1, seconds=0.5)
    assert f.shape(b"xyz") == [Send(b"x"), Pause(0.5), Send(b"yz")]
    f.set("stall", after=2)
    assert f.shape(b"uvw") == [Send(b"uv"), Hold()]
    assert f.shape(b"more") == [Hold()]  # forever: until cleared
    f.clear("stall")
    assert f.shape(b"ok") == [Send(b"ok")]


def test_drop_after_zero_is_due_at_once_and_busy_expires() -> None:
    f = Faults()
    f.set("drop", after=0, down=0.1, reboot=False)
    assert f.due_drop() == Drop(down=0.1, reboot=False)
    assert f.due_drop() is None
    f.set("drop", after=3)
    assert f.due_drop() is None
    f.set("busy", seconds=0.05)
    assert f.busy()
    time.sleep(0.08)
    assert not f.busy()
    assert "busy" not in f.describe()


# -- the pty adapter ------------------------------------------------------------------------------


def test_pyserial_on_the_symlink_gets_banner_and_replies(port: PtyPort, tmp_path: Path) -> None:
    link = tmp_path / "tty"
    assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
    with open_port(link) as ser:
        assert read_until(ser, b"\n") == BANNER  # held until a client opened the port
        ser.write(b"hello+")
        assert read_until(ser, b"\n") == b"hi\n"
        ser.write(b"big5000+")
        reply = read_until(ser, b"\n")
        assert len(reply) == 5001
        ser.write(b"hel")  # no '+': the console's own timeout answers through poll()
        assert read_until(ser, b"\n") == b"timeout:hel\n"


def test_client_can_close_and_reopen_without_a_reset(port: PtyPort, console: LineConsole,
                                                     tmp_path: Path) -> None:
    for _ in range(3):
        with open_port(tmp_path / "tty") as ser:
            ser.write(b"hello+")
            assert read_until(ser, b"hi\n").endswith(b"hi\n")
        time.sleep(0.05)  # the serving thread sees nobody on the port (EIO/HUP) and carries on
    assert console.boots == 1
    assert port.describe()["generation"] == 1


def test_console_reset_drops_the_port_and_the_same_path_comes_back(port: PtyPort, console: LineConsole,
                                                                   tmp_path: Path) -> None:
    link = tmp_path / "tty"
    first = os.readlink(link)
    with open_port(link) as ser:
        read_until(ser, BANNER)
        ser.write(b"reset+")
        wait_gone(ser)
    with open_port(link) as ser:
        assert read_until(ser, b"\n") == BANNER
        ser.write(b"hello+")
        assert read_until(ser, b"\n") == b"hi\n"
    assert console.boots == 2
    assert port.describe()["generation"] == 2
    assert os.readlink(link) != first or port.describe()["device"] == first  # the pts number may recycle


def test_port_gone_from_outside_and_power_cycle(port: PtyPort, console: LineConsole, tmp_path: Path) -> None:
    link = tmp_path / "tty"
    with open_port(link) as ser:
        read_until(ser, BANNER)
        port.port_gone(0.1, reboot=False, wait=False)
        wait_gone(ser)
    port.wait_up(5)
    with open_port(link) as ser:
        ser.write(b"hello+")
        assert read_until(ser, b"\n") == b"hi\n"  # no reboot: no banner, the unit kept running
    port.power(False)
    assert not link.exists() and not port.up
    time.sleep(0.3)
    assert not link.exists()  # off stays off
    with pytest.raises(serial.SerialException):
        serial.serial_for_url(str(link), timeout=0.1)
    port.power(True)
    with open_port(link) as ser:
        assert read_until(ser, b"\n") == BANNER
    assert console.boots == 2


def test_pyvisa_opens_the_symlink_as_asrl(port: PtyPort) -> None:
    pyvisa = pytest.importorskip("pyvisa")
    rm = pyvisa.ResourceManager("@py")  # never list_resources(): it probes the LAN
    try:
        inst = rm.open_resource(port.visa_address, baud_rate=115200, read_termination="\n",
                                write_termination="", timeout=3000)
        try:
            time.sleep(0.15)
            assert inst.read() == BANNER.decode().rstrip("\n")
            assert inst.query("hello+") == "hi"
        finally:
            inst.close()
    finally:
        rm.close()


def test_fault_corrupt_flips_a_byte_of_the_next_reply(port: PtyPort, faults: Faults, tmp_path: Path) -> None:
    with open_port(tmp_path / "tty") as ser:
        read_until(ser, BANNER)
        faults.set("corrupt", offset=1, xor=0x01)
        ser.write(b"hello+")
        assert read_until(ser, b"\n") == b"hh\n"  # 'i' ^ 1
        ser.write(b"hello+")
        assert read_until(ser, b"\n") == b"hi\n"


def test_fault_drop_after_n_bytes(port: PtyPort, faults: Faults, console: LineConsole, tmp_path: Path) -> None:
    link = tmp_path / "tty"
    with open_port(link) as ser:
        read_until(ser, BANNER)
        faults.set("drop", after=100, down=0.1)
        ser.write(b"big1000+")
        got = b""
        with pytest.raises((serial.SerialException, OSError)):  # in_waiting: EIO as a bare OSError
            for _ in range(1000):
                got += ser.read(max(1, ser.in_waiting))  # small reads: a read that breaks loses its bytes
        assert got == bytes(48 + i % 10 for i in range(100))
    port.wait_up(5)
    with open_port(link) as ser:
        assert read_until(ser, b"\n") == BANNER  # unplugged and plugged back: it rebooted
    assert console.boots == 2


def test_fault_throttle_measurably_slows_a_reply(port: PtyPort, faults: Faults, tmp_path: Path) -> None:
    with open_port(tmp_path / "tty") as ser:
        read_until(ser, BANNER)
        start = time.monotonic()
        ser.write(b"big3999+")
        assert len(read_until(ser, b"\n")) == 4000
        fast = time.monotonic() - start
        faults.set("throttle", baud=40000)  # 4000 bytes/s
        start = time.monotonic()
        ser.write(b"big3999+")
        assert len(read_until(ser, b"\n")) == 4000
        slow = time.monotonic() - start
    assert slow >= 0.9 and slow > fast + 0.5, (fast, slow)


def test_realtime_clock_paces_at_the_baud_rate(tmp_path: Path, console: LineConsole) -> None:
    # 115200 baud at time scale 0.5: 23040 bytes/s, so 11520 bytes take about 0.5 s.
    p = PtyPort(console, tmp_path / "tty", clock=Clock(0.5), baud=115200, banner_settle=0.05,
                hold_banner=True)
    p.start()
    try:
        with open_port(tmp_path / "tty") as ser:
            read_until(ser, BANNER)
            start = time.monotonic()
            ser.write(b"big11519+")
            assert len(read_until(ser, b"\n")) == 11520
            elapsed = time.monotonic() - start
        assert 0.45 <= elapsed < 2.0, elapsed
    finally:
        p.stop()


def test_fault_stall_pauses_then_holds(port: PtyPort, faults: Faults, tmp_path: Path) -> None:
    with open_port(tmp_path / "tty") as ser:
        read_until(ser, BANNER)
        faults.set("stall", after=10, seconds=0.5)
        ser.write(b"big30+")
        first = read_until(ser, b"\n", timeout=0.3)
        assert len(first) == 10
        rest = read_until(ser, b"\n", timeout=2)
        assert len(first + rest) == 31
        faults.set("stall", after=5)  # forever
        ser.write(b"big30+")
        assert len(read_until(ser, b"\n", timeout=0.5)) == 5
        ser.write(b"hello+")
        assert read_until(ser, b"\n", timeout=0.3) == b""
        faults.clear()
        ser.write(b"hello+")
        assert read_until(ser, b"\n") == b"hi\n"


def test_fault_busy_ignores_input(port: PtyPort, faults: Faults, console: LineConsole,
                                  tmp_path: Path) -> None:
    with open_port(tmp_path / "tty") as ser:
        read_until(ser, BANNER)
        faults.set("busy")
        ser.write(b"hello+")
        assert read_until(ser, b"\n", timeout=0.3) == b""
        faults.clear("busy")
        ser.write(b"hello+")
        assert read_until(ser, b"\n") == b"hi\n"
    assert console.received.count(b"hello+") == 1


def test_stop_removes_the_link(tmp_path: Path, console: LineConsole) -> None:
    p = PtyPort(console, tmp_path / "tty")
    p.start()
    assert (tmp_path / "tty").is_symlink()
    p.stop()
    assert not (tmp_path / "tty").exists() and not (tmp_path / "tty").is_symlink()
