"""The simulated MultispeQ v1 as a process: EEPROM device + console on a pty, plus its control routes.

``create(options)`` is what ``harness sim run multispeq`` calls. The unit is reached through
``<state>/tty`` (a symlink to the pty, like ``/dev/serial/by-id/…``), exactly as a real one through
``/dev/ttyUSB0``. Realtime mode paces replies at 115200 baud (11520 bytes/s of the real unit, scaled).

Control routes beyond the standard ones (simulators/core/runner.py):

- ``GET  /_sim/eeprom``  -> ``{"hex": …, "sha256": …, "size": 2048}``
- ``POST /_sim/eeprom`` ``{"hex": "…"}`` loads a whole image (a programmer writing the part).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from simulators.core.clock import Clock
from simulators.core.control import ControlError, ControlPlane, require
from simulators.core.options import SimOptions
from simulators.core.pty import PtyPort
from simulators.core.runner import Simulator
from simulators.multispeq.console import Console
from simulators.multispeq.device import EepromDevice
from simulators.multispeq.profiles import profile_for

log = logging.getLogger(__name__)

BAUD = 115200
LINK_NAME = "tty"
# Wall-clock floors: even in fast mode a reset must be visible to a connected client.
MIN_DOWN = 0.2
# Real-unit durations [U: not published]: USB re-enumeration after a reset, and a reflash.
REENUMERATE_S = 1.5
REFLASH_S = 8.0


class MultispeqSimulator(Simulator):
    target = "multispeq"

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        self.clock = Clock(options.time_scale)
        self.device = EepromDevice(options.state, firmware=options.firmware, profile=options.profile,
                                   device_id=options.device_id)
        self.console = Console(self.device)
        self.port = PtyPort(self.console, options.state / LINK_NAME, clock=self.clock, faults=self.faults,
                            baud=BAUD, reset_delay=self._down(REENUMERATE_S))

    def _down(self, device_seconds: float) -> float:
        return max(MIN_DOWN, self.clock.real(device_seconds))

    # -- Simulator --------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        self.port.start()
        state = self.device.state()
        return {
            "address": self.port.address,
            "device_id": state["device_id"],
            "firmware": state["firmware"],
            "profile": state["profile"],
            "visa": self.port.visa_address,
        }

    def stop(self) -> None:
        self.port.stop()  # the EEPROM is already on disk: every write is persisted at once

    def state(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            console = self.console.state()
            return {
                **console,
                # Generic names for the whole non-volatile state, the same key in every target.
                "eeprom_sha256": console["image_sha256"],
                "storage_sha256": console["image_sha256"],
                "port": self.port.describe(),
                "faults": self.faults.describe(),
                "time_scale": self.clock.time_scale,
            }

        return self.port.call(read)

    def power(self, on: bool) -> dict[str, Any]:
        # The EEPROM object stays: it is what the part holds, and every write is already on disk.
        # Power on runs console.boot(): RAM state gone, sleep-byte check, banner.
        self.port.power(on)
        return self.state()

    def reset(self) -> dict[str, Any]:
        if not self.port.describe()["powered"]:
            raise ControlError("the unit is powered off: power it on first", 409)
        self.port.port_gone(self._down(REENUMERATE_S), reboot=True)
        return self.state()

    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        profile_for(firmware, profile)  # refuse an unknown firmware before touching the unit (BadInput)
        if not self.port.describe()["powered"]:
            raise ControlError("the unit is powered off: power it on first", 409)
        self.port.call(lambda: self.device.change_firmware(firmware, profile), interrupt=True)
        # A reflash reboots the Teensy: the port goes away while the bootloader runs.
        self.port.port_gone(self._down(REFLASH_S), reboot=True)
        return self.state()

    def faults_changed(self) -> None:
        self.port.call(lambda: None)  # wake the serving thread: a "drop after=0" fires now

    def register_routes(self, plane: ControlPlane) -> None:
        super().register_routes(plane)
        plane.add("GET", "/eeprom", lambda body: self._eeprom())
        plane.add("POST", "/eeprom", self._load_eeprom)

    # -- EEPROM routes ----------------------------------------------------------------------------

    def _eeprom(self) -> dict[str, Any]:
        image = self.port.call(lambda: self.device.image)
        return {"hex": image.hex(), "sha256": hashlib.sha256(image).hexdigest(), "size": len(image)}

    def _load_eeprom(self, body: dict[str, Any]) -> dict[str, Any]:
        text = require(body, "hex", str)
        try:
            data = bytes.fromhex(text)
        except ValueError as exc:
            raise ValueError(f"field 'hex' is not hexadecimal: {exc}") from None
        self.port.call(lambda: self.device.load_image(data))
        return self._eeprom()


def create(options: SimOptions) -> MultispeqSimulator:
    return MultispeqSimulator(options)
