"""The MultispeQ simulator glue: EEPROM device + console on a pty, with its control routes.

Served in a thread through ``serve()`` (fast), reached like a real unit: pyserial/pyvisa on the
symlink, and SimControl over HTTP on loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import serial
from serialtools import open_port, read_until, wait_gone

from harness.errors import LinkError
from harness.simctl import SimControl
from simulators.core.options import SimOptions
from simulators.core.runner import serve

READY = b"MultispeQ Ready\n"
CRC_END = re.compile(rb"[0-9A-F]{8}\n$")


@dataclass
class Running:
    info: dict[str, Any]
    stdout: str
    state: Path

    @property
    def address(self) -> str:
        return self.info["address"]

    @property
    def ctl(self) -> SimControl:
        return SimControl(self.info["control"])


def run_in_thread(options: SimOptions) -> Iterator[Running]:
    out = io.StringIO()
    stop = threading.Event()
    ready = threading.Event()
    infos: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            serve(options, stdout=out, stop_event=stop, on_ready=lambda info: (infos.append(info), ready.set()))
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10), "simulator did not start"
    if errors:
        raise errors[0]
    try:
        yield Running(infos[0], out.getvalue(), Path(options.state))
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Running]:
    yield from run_in_thread(SimOptions(target="multispeq", state=tmp_path / "unit", firmware="1.17",
                                        device_id="52:00:13:1f"))






def line(buf: bytes) -> bool:
    return buf.endswith(b"\n")


def crc_reply(buf: bytes) -> bool:
    return CRC_END.search(buf) is not None


def session(address: str) -> serial.Serial:
    """Open the port. The boot banner went out before the host opened it, so nothing is waiting."""
    port = open_port(address)
    assert read_until(port, line, timeout=0.3) == b"", "a late host must not see the boot banner"
    return port




def test_json_line_and_console_through_the_pty(unit: Running) -> None:
    info = unit.info
    assert json.loads(unit.stdout) == info  # exactly one line, and nothing else on stdout
    assert unit.stdout.count("\n") == 1
    assert info["target"] == "multispeq" and info["firmware"] == "1.17" and info["device_id"] == "52:00:13:1f"
    assert info["address"] == str(unit.state / "tty") and info["visa"] == f"ASRL{unit.state / 'tty'}::INSTR"
    with session(unit.address) as port:
        port.write(b"hello+")
        assert read_until(port, line) == READY
        port.write(b"device_info+")
        reply = read_until(port, crc_reply)
        body, crc = reply[:-9], reply[-9:-1]
        assert f"{zlib.crc32(body):08X}".encode() == crc
        assert b'"device_id":"52:00:13:1f"' in body and b'"device_firmware":"1.17"' in body


def test_console_reset_comes_back_on_the_same_path(unit: Running) -> None:
    with session(unit.address) as port:
        port.write(b"reset+")
        wait_gone(port)
    with open_port(unit.address) as port:  # the same symlink, a new pty behind it
        port.write(b"hello+")
        assert read_until(port, line) == READY
    assert unit.ctl.state()["port"]["generation"] == 2


def test_state_has_firmware_and_eeprom_digest(unit: Running) -> None:
    state = unit.ctl.state()
    image = bytes.fromhex(unit.ctl.request("GET", "/eeprom")["hex"])
    assert len(image) == 2048
    digest = hashlib.sha256(image).hexdigest()
    assert state["eeprom_sha256"] == state["storage_sha256"] == state["image_sha256"] == digest
    assert (state["firmware"], state["family"], state["device_id"]) == ("1.17", "E", "52:00:13:1f")
    assert state["port"]["up"] and state["faults"] == {} and state["time_scale"] is None


def test_firmware_change_keeps_the_bytes_and_resets_the_port(unit: Running) -> None:
    before = unit.ctl.state()
    with session(unit.address) as port:
        after = unit.ctl.set_firmware("1.11")
        wait_gone(port)
    assert (after["firmware"], after["family"]) == ("1.11", "D")
    assert after["eeprom_sha256"] == before["eeprom_sha256"]
    assert after["port"]["generation"] == before["port"]["generation"] + 1
    with open_port(unit.address) as port:
        port.write(b"hello+")
        assert read_until(port, line) == READY
        port.write(b"device_info+")
        assert b'"device_firmware":"1.11"' in read_until(port, crc_reply)
    assert json.loads((unit.state / "device.json").read_text())["firmware"] == "1.11"
    with pytest.raises(LinkError, match="HTTP 400"):
        unit.ctl.set_firmware("7.77")
    with pytest.raises(LinkError, match="HTTP 400"):
        unit.ctl.set_firmware("1.05", "Z")


def test_eeprom_routes_load_and_read_an_image(unit: Running) -> None:
    image = bytes(range(256)) * 8
    answer = unit.ctl.request("POST", "/eeprom", {"hex": image.hex()})
    assert answer["sha256"] == hashlib.sha256(image).hexdigest() and answer["size"] == 2048
    assert bytes.fromhex(unit.ctl.request("GET", "/eeprom")["hex"]) == image
    assert (unit.state / "eeprom.bin").read_bytes() == image
    with pytest.raises(LinkError, match="not hexadecimal"):
        unit.ctl.request("POST", "/eeprom", {"hex": "zz"})
    with pytest.raises(LinkError, match="2048"):
        unit.ctl.request("POST", "/eeprom", {"hex": "00" * 10})
    with session(unit.address) as port:
        port.write(b"device_info+")
        assert b'"device_id":"03:02:01:00"' in read_until(port, crc_reply)  # int32 LE at offset 0


def test_power_off_and_on(unit: Running) -> None:
    link = Path(unit.address)
    with session(unit.address) as port:
        assert unit.ctl.power(False)["port"]["powered"] is False
        wait_gone(port)
    assert not link.exists()
    with pytest.raises(serial.SerialException):
        serial.serial_for_url(unit.address, timeout=0.1)
    with pytest.raises(LinkError, match="HTTP 409: the unit is powered off"):
        unit.ctl.reset()
    assert unit.ctl.power(True)["port"]["up"] is True
    with open_port(unit.address) as port:
        port.write(b"hello+")
        assert read_until(port, line) == READY


def test_deep_sleep_until_an_external_reset(unit: Running) -> None:
    image = bytearray.fromhex(unit.ctl.request("GET", "/eeprom")["hex"])
    image[1424] = 1  # family E sleep byte: the next boot clears it and sleeps (§10 item 5)
    unit.ctl.request("POST", "/eeprom", {"hex": image.hex()})
    unit.ctl.power(False)
    assert unit.ctl.power(True)["deep_sleep"] is True
    with open_port(unit.address) as port:
        port.write(b"hello+")
        assert read_until(port, line, timeout=0.5) == b""  # no banner, no reply
    state = unit.ctl.reset()
    assert state["deep_sleep"] is False and state["sleep"] == 0
    with session(unit.address) as port:
        port.write(b"hello+")
        assert read_until(port, line) == READY


def test_faults_reach_the_console_replies(unit: Running) -> None:
    with session(unit.address) as port:
        unit.ctl.set_fault("corrupt", offset=40, count=1)
        port.write(b"print_memory+")
        bad = read_until(port, crc_reply)
        assert f"{zlib.crc32(bad[:-9]):08X}".encode() != bad[-9:-1]  # the CRC no longer matches
        port.write(b"print_memory+")
        good = read_until(port, crc_reply)
        assert f"{zlib.crc32(good[:-9]):08X}".encode() == good[-9:-1]
        assert len(good) == len(bad) and sum(a != b for a, b in zip(good, bad, strict=True)) == 1
        unit.ctl.set_fault("drop", after=0, down=0.1)  # fires at once, without a reply
        wait_gone(port)
    with open_port(unit.address) as port:
        port.write(b"hello+")
        assert read_until(port, line) == READY


def test_pyvisa_talks_to_the_simulated_unit(unit: Running) -> None:
    pyvisa = pytest.importorskip("pyvisa")
    rm = pyvisa.ResourceManager("@py")  # opened by name only: never list_resources()
    try:
        inst = rm.open_resource(unit.info["visa"], baud_rate=115200, read_termination="\n",
                                write_termination="", timeout=3000)
        try:
            assert inst.query("hello+") == "MultispeQ Ready"
        finally:
            inst.close()
    finally:
        rm.close()


def test_realtime_paces_print_memory_at_115200_baud(tmp_path: Path) -> None:
    # A blank image prints ~4.8 KB: ~0.42 s at 11520 B/s on a real unit, ~0.21 s at time scale 0.5.
    for running in run_in_thread(SimOptions(target="multispeq", state=tmp_path / "rt", time_scale=0.5)):
        with session(running.address) as port:
            start = time.monotonic()
            port.write(b"print_memory+")
            reply = read_until(port, crc_reply, timeout=5)
            elapsed = time.monotonic() - start
        expected = len(reply) / 11520 * 0.5
        assert crc_reply(reply) and len(reply) > 4000
        assert expected * 0.9 <= elapsed < expected + 1.0, (elapsed, expected)
        assert running.ctl.state()["time_scale"] == 0.5
