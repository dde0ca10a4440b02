"""The simulated PlanktoScope as a process: ``harness sim run planktoscope --firmware <release>
[--profile <hardware variant>]``.

It serves the release's HTTP surface (web.py: file browsers, nginx, Express) on 127.0.0.1 with the /_sim
control plane, and SSH/SFTP (ssh.py) for user ``pi`` on a second loopback port, both over one simulated
disk (device.py). The JSON line adds ``ssh`` (``ssh://pi@127.0.0.1:PORT``), ``release`` and ``variant``.
The default account is PlanktoScope OS's documented ``pi`` / ``copepode``; ``--username`` with
``--password-file`` replaces it. The file browsers run with noauth, as on the real unit.

Control routes beyond the standard ones:

- ``POST /_sim/reboot``  (also ``/_sim/reset``): the boot sequence (W8 cache, R1-R6 health);
- ``POST /_sim/ui/<action>``: the dashboard's writes (W1-W7): ``select-hardware-version {version}``,
  ``set-hardware {key, value}``, ``white-balance {red, blue}``, ``save-config {values}``,
  ``pump-calibration {value}``, ``finish-setup``, ``reset``;
- ``POST /_sim/disk/read {path}`` / ``/_sim/disk/write {path, base64, writer}`` / ``/_sim/disk/delete {path}``;
- ``GET /_sim/audit``: the last disk mutations and their writers;
- ``POST /_sim/clock {advance}``: move the unit's clock (token expiry and renewal).

Extra fault kinds: ``disk_full`` (uploads answer 500 and leave no file, until cleared) and
``expire_tokens`` (every token issued so far becomes invalid, once).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any, ClassVar

from starlette.routing import BaseRoute

from harness.errors import BadInput
from harness.targets.planktoscope.releases import release_info
from simulators.core.control import ControlError, ControlPlane, require
from simulators.core.faults import Param
from simulators.core.http import HttpSimulator
from simulators.core.options import SimOptions
from simulators.planktoscope.device import DeviceFault, PlanktoscopeDevice
from simulators.planktoscope.ssh import SshServer
from simulators.planktoscope.web import Web

log = logging.getLogger(__name__)

DEFAULT_RELEASE = "v2024.0.0"


class PlanktoscopeSimulator(HttpSimulator):
    target = "planktoscope"
    default_username = "pi"
    default_password = "copepode"  # PlanktoScope OS's documented default
    reboot_down_s = 40.0  # a Raspberry Pi 4 reboot
    extra_fault_kinds: ClassVar[dict[str, dict[str, Param]]] = {"disk_full": {}, "expire_tokens": {}}

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        self.device = PlanktoscopeDevice(self.state_dir, release=options.firmware or None,
                                         variant=options.profile, device_id=options.device_id)
        self.web = Web(self)
        self.ssh = SshServer(self.device, username=self.credentials.username,
                             password=self.credentials.password, key_path=self.state_dir / "ssh_host_key",
                             on_reboot=lambda: self.reboot_later(0.05))

    # -- HttpSimulator ---------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return self.web.routes()

    def identity(self) -> dict[str, Any]:
        return {"device_id": self.device.hostname, "firmware": self.device.release, "ssh": self.ssh.address,
                "release": release_info(self.device.release).version, "variant": self.device.variant}

    def on_boot(self) -> None:
        self.ssh.start()
        self.device.boot()

    def on_shutdown(self) -> None:
        self.ssh.stop()

    def state(self) -> dict[str, Any]:
        return {**self.device.state(), "ssh": self.ssh.address, "faults": self.faults.describe()}

    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        """Re-flash the SD card with another release: everything but the host name is replaced."""
        release_info(firmware)  # BadInput for an unknown release, before anything is wiped
        with self._power_lock:
            self.device.reflash(firmware, profile)
        self.reboot_later(0.05)
        return {"firmware": self.device.release, "variant": self.device.variant, "rebooting": True}

    def faults_changed(self) -> None:
        super().faults_changed()
        self.device.disk_full = self.faults.get("disk_full") is not None
        if self.faults.take("expire_tokens") is not None:
            for instance in self.web.instances():
                instance.expire_all()

    # -- control routes --------------------------------------------------------------------------------

    def register_routes(self, plane: ControlPlane) -> None:
        super().register_routes(plane)
        plane.add("POST", "/reboot", lambda body: self.reset())
        plane.add("GET", "/audit", lambda body: {"audit": self.device.audit_log()})
        plane.add("POST", "/clock", self._clock)
        plane.add("POST", "/disk/read", self._disk_read)
        plane.add("POST", "/disk/write", self._disk_write)
        plane.add("POST", "/disk/delete", self._disk_delete)
        for action in ("select-hardware-version", "set-hardware", "white-balance", "save-config",
                       "pump-calibration", "finish-setup", "reset"):
            plane.add("POST", f"/ui/{action}", lambda body, a=action: self._ui(a, body))

    def _clock(self, body: dict[str, Any]) -> dict[str, Any]:
        advance = require(body, "advance", (int, float))
        self.device.clock_offset += float(advance)
        return {"clock": self.device.now()}

    def _disk_read(self, body: dict[str, Any]) -> dict[str, Any]:
        path = require(body, "path", str)
        try:
            data = self.device.read(path)
        except (FileNotFoundError, IsADirectoryError):
            raise ControlError(f"no file {path}", 404) from None
        return {"path": path, "base64": base64.b64encode(data).decode(), "sha256": hashlib.sha256(data).hexdigest(),
                "owner": self.device.owner(path)}

    def _disk_write(self, body: dict[str, Any]) -> dict[str, Any]:
        path = require(body, "path", str)
        data = base64.b64decode(require(body, "base64", str))
        try:
            self.device.write(path, data, writer=str(body.get("writer", "sim")))
        except DeviceFault as exc:
            raise ControlError(str(exc), 507) from None
        return {"path": path, "size": len(data)}

    def _disk_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        path = require(body, "path", str)
        return {"deleted": self.device.delete(path, writer=str(body.get("writer", "sim")))}

    def _ui(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        d = self.device
        try:
            if action == "select-hardware-version":
                d.select_hardware_version(require(body, "version", str))
            elif action == "set-hardware":
                d.set_hardware(require(body, "key", str), body.get("value"))
            elif action == "white-balance":
                d.set_white_balance(body.get("red"), body.get("blue"))
            elif action == "save-config":
                d.save_config(require(body, "values", dict))
            elif action == "pump-calibration":
                d.pump_calibration(require(body, "value", (int, float)))
            elif action == "finish-setup":
                d.finish_setup()
            elif action == "reset":
                d.api_reset()
        except BadInput as exc:
            raise ControlError(str(exc), 409) from None
        except DeviceFault as exc:
            raise ControlError(str(exc), 507) from None
        return {"done": action}


def create(options: SimOptions) -> PlanktoscopeSimulator:
    if options.firmware is None:
        options.firmware = DEFAULT_RELEASE if not (options.state / "device.json").exists() else None
    return PlanktoscopeSimulator(options)
