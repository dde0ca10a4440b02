"""The simulated PlanktoScope: its disk (a folder in the state directory), its boot, and the dashboard's
write semantics (targets/planktoscope.md §6, §7). No network here; interface.py serves it.

The disk is ``<state>/disk``: ``<state>/disk/home/pi/PlanktoScope/hardware.json`` is the unit's
``/home/pi/PlanktoScope/hardware.json``. What survives a power cut is what is on that folder, like an SD card.
``<state>/device.json`` keeps the few facts a real unit keeps elsewhere (release flashed, boot counter, the
file browser's JWT key from its database, who created which file). Every disk mutation is recorded in the
audit log (``<state>/audit.jsonl``) with the writer that made it: ``filebrowser``, ``node-red``, ``python``,
``js``, ``init``, ``ssh``, ``express``.

Boot (R1-R6): the Node-RED in-memory copy of both files is loaded (W8) and the services are evaluated: the
imager is ``Dead`` after a boot with an out-of-range white balance (R3, #166); on v2026 the light service is
``stopped`` without ``hat_version`` and ``failed`` with an unknown one (R4).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import secrets
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from harness.errors import BadInput
from harness.targets.planktoscope import presets, schema, versionfile
from harness.targets.planktoscope.formats import JS, NODE_RED, PYTHON, parse_object
from harness.targets.planktoscope.releases import (
    CONFIG_PATH,
    DATA_ROOT,
    GIT_DIR,
    HARDWARE_PATH,
    HOSTNAME_PATH,
    INSTALLER_CONFIG_PATH,
    V2_3,
    V2026,
    VERSIONING_PATH,
    canonical_release,
    release_info,
)
from simulators.planktoscope import datasets

log = logging.getLogger(__name__)

META = "device.json"
AUDIT = "audit.jsonl"
DEFAULT_DEVICE_ID = "pkscope-sponge-bob-1234"
# v2.3 W1: hardware version -> (stepper_type, pump_steps_per_ml) (§7.1)
_V23_HARDWARE = {"2.1": ("adafruit", 1600), "2.2": ("waveshare", 2000), "2.3": ("pscope_hat", 3200)}
HAT_FOR = {"v2.6": 1.2, "v3.0": 3.3}
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


class DeviceFault(Exception):
    """A write the disk refuses (the simulated disk is full)."""


class PlanktoscopeDevice:
    def __init__(self, state_dir: Path, *, release: str | None, variant: str | None,
                 device_id: str | None) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "disk"
        self.lock = threading.RLock()
        self.disk_full = False
        self.clock_offset = 0.0
        self.meta = self._load_meta()
        wanted = canonical_release(release) if release else self.meta.get("release", "v2024.0.0")
        if not self.meta.get("seeded"):
            self._flash(wanted, variant, device_id or DEFAULT_DEVICE_ID, with_datasets=True)
        elif wanted != self.meta["release"] or (variant and variant != self.meta.get("variant")):
            # A different release on an existing state dir is a re-flash of the card.
            self._flash(wanted, variant, device_id or self.hostname, with_datasets=False)
        elif device_id and device_id != self.hostname:
            self.write(HOSTNAME_PATH, (device_id + "\n").encode(), writer="init")
        self.cache_hardware: dict[str, Any] | None = None  # Node-RED's in-memory copies (W8)
        self.cache_config: dict[str, Any] | None = None
        self.services: dict[str, str] = {}
        self.boot_warnings: list[str] = []

    # -- facts -----------------------------------------------------------------------------------------

    @property
    def release(self) -> str:
        return self.meta["release"]

    @property
    def variant(self) -> str:
        return self.meta["variant"]

    @property
    def boots(self) -> int:
        return int(self.meta.get("boots", 0))

    @property
    def hostname(self) -> str:
        try:
            return self.read(HOSTNAME_PATH).decode().strip() or DEFAULT_DEVICE_ID
        except FileNotFoundError:
            return DEFAULT_DEVICE_ID

    @property
    def jwt_secret(self) -> bytes:
        return bytes.fromhex(self.meta["jwt_secret"])

    def now(self) -> float:
        """The unit's wall clock (controllable: tokens expire and renew against it)."""
        return time.time() + self.clock_offset

    # -- meta ------------------------------------------------------------------------------------------

    def _load_meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.state_dir / META).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_meta(self) -> None:
        tmp = self.state_dir / f".{META}.tmp"
        tmp.write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_dir / META)

    # -- the disk --------------------------------------------------------------------------------------

    def host_path(self, device_path: str) -> Path:
        """The host path of a device path; BadInput if it would leave the disk."""
        if not device_path.startswith("/"):
            device_path = "/" + device_path
        norm = posixpath.normpath(device_path)
        if "\0" in norm or norm.startswith("//"):
            raise BadInput(f"bad device path {device_path!r}")
        host = self.root.joinpath(*[p for p in norm.split("/") if p])
        try:
            resolved = host.resolve()
        except OSError as exc:
            raise BadInput(f"bad device path {device_path!r}") from exc
        root = self.root.resolve()
        if resolved != root and root not in resolved.parents:
            raise BadInput(f"{device_path!r} leaves the disk")
        return host

    def device_path(self, host: Path) -> str:
        rel = Path(host).relative_to(self.root).as_posix()
        return "/" if rel == "." else "/" + rel

    def read(self, device_path: str) -> bytes:
        return self.host_path(device_path).read_bytes()

    def exists(self, device_path: str) -> bool:
        return self.host_path(device_path).exists()

    def write(self, device_path: str, data: bytes, *, writer: str, mode: int | None = None,
              owner: str | None = None) -> None:
        """Write a whole file in place (an existing inode keeps its mode, as on the unit)."""
        with self.lock:
            if self.disk_full:
                raise DeviceFault("no space left on device")
            host = self.host_path(device_path)
            host.parent.mkdir(parents=True, exist_ok=True)
            existed = host.exists()
            with open(host, "wb") as f:
                f.write(data)
            if not existed and mode is not None:
                os.chmod(host, mode)
            if not existed:
                self.set_owner(device_path, owner or ("pi" if writer in ("node-red", "init", "js", "python",
                                                                         "ssh") else "root"))
            self.audit(writer, "write", device_path, len(data))

    def delete(self, device_path: str, *, writer: str) -> bool:
        with self.lock:
            host = self.host_path(device_path)
            if not host.exists() and not host.is_symlink():
                return False
            if host.is_dir() and not host.is_symlink():
                shutil.rmtree(host)
            else:
                host.unlink()
            self.meta.setdefault("owners", {}).pop(device_path, None)
            self._save_meta()
            self.audit(writer, "delete", device_path, 0)
            return True

    def owner(self, device_path: str) -> str:
        return self.meta.get("owners", {}).get(device_path, "pi")

    def set_owner(self, device_path: str, owner: str) -> None:
        owners = self.meta.setdefault("owners", {})
        if owners.get(device_path) != owner and owner != "pi":
            owners[device_path] = owner
            self._save_meta()

    def audit(self, writer: str, op: str, path: str, size: int) -> None:
        record = {"t": round(self.now(), 6), "writer": writer, "op": op, "path": path, "size": size}
        with open(self.state_dir / AUDIT, "a") as f:
            f.write(json.dumps(record) + "\n")

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        try:
            lines = (self.state_dir / AUDIT).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines[-limit:]]

    # -- flashing and seeding (§6) ---------------------------------------------------------------------

    def _flash(self, release: str, variant: str | None, hostname: str, *, with_datasets: bool) -> None:
        info = release_info(release)
        variant = variant or info.default_variant
        hardware, config = presets.seed(info.name, variant)  # validates the variant before wiping
        with self.lock:
            if self.root.exists():
                shutil.rmtree(self.root)
            self.root.mkdir(parents=True)
            self.meta = {"release": info.name, "variant": variant, "boots": self.meta.get("boots", 0),
                         "jwt_secret": self.meta.get("jwt_secret") or secrets.token_hex(32), "seeded": True,
                         "owners": {}}
            self._save_meta()
            w = self._seed_write
            w(HOSTNAME_PATH, (hostname + "\n").encode())
            w(HARDWARE_PATH, hardware)
            w(CONFIG_PATH, config)
            if info.hardware_presets_dir:
                for name, data in presets.hardware_presets(info.name).items():
                    w(f"{info.hardware_presets_dir}/{name}.hardware.json", data)
            if info.config_presets_dir:
                for name, data in presets.config_presets(info.name).items():
                    w(f"{info.config_presets_dir}/{name}.config.json", data)
            if info.filebrowser is not None:  # the installer era (§10)
                w(VERSIONING_PATH, versionfile.InstallerVersioning(
                    "github.com/PlanktoScope/PlanktoScope", info.commit, info.tag, info.version).build())
                hat = "adafruithat" if variant == "adafruithat" else "planktoscopehat"
                w(INSTALLER_CONFIG_PATH, versionfile.build_installer_config(
                    repo="github.com/PlanktoScope/PlanktoScope", version_query=info.tag, query_type="tag",
                    hardware=hat))
            else:  # a git checkout: git describe names the tag (v2.3, v2026)
                w(f"{GIT_DIR}/HEAD", (info.commit + "\n").encode())
                w(f"{GIT_DIR}/packed-refs", versionfile.build_packed_refs(info.commit, info.tag))
            self.host_path(DATA_ROOT).mkdir(parents=True, exist_ok=True)
            if with_datasets:
                instrument = self._instrument()
                for acq in datasets.SEED_ACQUISITIONS:
                    for rel, data in datasets.generate(info.name, acq, instrument=instrument).items():
                        w(f"{DATA_ROOT}/{rel}", data)
        log.info("flashed %s (%s) for %s", info.name, variant, hostname)

    def _seed_write(self, device_path: str, data: bytes) -> None:
        host = self.host_path(device_path)
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(data)
        os.chmod(host, 0o644)
        self.audit("init", "write", device_path, len(data))

    def _instrument(self) -> str | None:
        try:
            value = parse_object(self.read(CONFIG_PATH), "config.json").get("acq_instrument")
        except (FileNotFoundError, BadInput):
            return None
        return value if isinstance(value, str) else None

    def reflash(self, release: str, variant: str | None) -> None:
        self._flash(canonical_release(release), variant, self.hostname, with_datasets=False)

    # -- boot (R1-R6, W8) ------------------------------------------------------------------------------

    def _load(self, device_path: str) -> dict[str, Any] | None:
        try:
            return parse_object(self.read(device_path), device_path)
        except (FileNotFoundError, BadInput):
            return None

    def boot(self) -> None:
        with self.lock:
            self.meta["boots"] = self.boots + 1
            self._save_meta()
            # Linux makes a new boot_id every boot; the driver reads it to tell a new boot from the old one.
            self._seed_write(BOOT_ID_PATH, (str(uuid.uuid4()) + "\n").encode())
            self.boot_warnings = []
            hardware = self._load(HARDWARE_PATH)
            if self.release != V2026:
                self.cache_hardware = dict(hardware) if hardware is not None else {}
                self.cache_config = self._load(CONFIG_PATH)
            else:
                self.cache_hardware = self.cache_config = None
            services = {"node-red": "Ready", "imager": "Ready"}
            doc = hardware or {}
            state, message = schema.white_balance(doc, self.release)
            if state == "out_of_range":
                services["imager"] = "Dead"
                self.boot_warnings.append(f"imager: {message}")
            elif state in ("partial", "not_numeric"):
                self.boot_warnings.append(f"imager: {message}")
            if self.release == V2026:
                hat = doc.get("hat_version") if hardware is not None else None
                if hat is None:
                    services["light"] = "stopped"
                    self.boot_warnings.append("light: hat_version missing, the light service exits at start")
                elif hat in (1.2, 3.3):
                    services["light"] = "ready"
                else:
                    services["light"] = "failed"
                    self.boot_warnings.append(f"light: Unknown hat_version {hat!r}")
                services["bubbler"] = services["display"] = "ready" if hat == 3.3 else "inactive"
            self.services = services
            self.audit("init", "boot", "/", 0)

    # -- the dashboard's writes (W1-W7) ----------------------------------------------------------------

    def _require_node_red_era(self, what: str) -> None:
        if self.release == V2026:
            raise BadInput(f"{what}: not a v2026 action")
        if self.cache_hardware is None:
            raise BadInput(f"{what}: the unit has not booted")

    def _save_hardware_cache(self) -> None:
        assert self.cache_hardware is not None
        self.write(HARDWARE_PATH, NODE_RED.dump(self.cache_hardware), writer="node-red")

    def set_hardware(self, key: str, value: Any) -> None:
        """W2: one key of the in-memory copy, then a full save (4-space, LF). 0 pixel size deletes the key."""
        with self.lock:
            self._require_node_red_era("set hardware setting")
            assert self.cache_hardware is not None
            if key == "process_pixel_fixed" and value == 0:
                self.cache_hardware.pop(key, None)
            else:
                self.cache_hardware[key] = value
            self._save_hardware_cache()

    def set_white_balance(self, red: Any, blue: Any) -> None:
        """W3: two separate W2 writes."""
        self.set_hardware("red_gain", red)
        self.set_hardware("blue_gain", blue)

    def save_config(self, updates: dict[str, Any]) -> None:
        """W4: only the keys loaded at boot are written, in loaded order; a new key is never added."""
        with self.lock:
            self._require_node_red_era("save config")
            if self.cache_config is None:
                raise BadInput("save config: config.json was not loaded at boot")
            for key, value in updates.items():
                if key in self.cache_config:
                    self.cache_config[key] = value
            self.write(CONFIG_PATH, NODE_RED.dump(self.cache_config), writer="node-red")

    def select_hardware_version(self, version: str) -> None:
        """W1 (and its v2.3 and v2026 forms)."""
        version = version.removeprefix("v")
        info = release_info(self.release)
        with self.lock:
            if self.release == V2_3:
                if version not in _V23_HARDWARE:
                    raise BadInput(f"v2.3 offers hardware 2.1, 2.2, 2.3, not {version}")
                stepper, pump = _V23_HARDWARE[version]
                self.set_hardware("stepper_type", stepper)
                self.set_hardware("pump_steps_per_ml", pump)
                return
            if self.release == V2026:
                name = f"v{version}"
                if name not in HAT_FOR:
                    raise BadInput(f"v2026 offers hardware v2.6 and v3.0, not {name}")
                base = info.hardware_presets_dir
                self.write(HARDWARE_PATH, self.read(f"{base}/{name}.hardware.json"), writer="js")
                self.write(CONFIG_PATH, self.read(f"{base}/{name}.config.json"), writer="js")
                return
            self._require_node_red_era("select hardware version")
            preset = f"{info.hardware_presets_dir}/v{version}.hardware.json"
            if not self.exists(preset):
                raise BadInput(f"{self.release} has no hardware preset v{version}")
            self.write(HARDWARE_PATH, self.read(preset), writer="node-red")  # the whole file is replaced
            if self.cache_config is not None:
                self.cache_config["acq_instrument"] = f"PlanktoScope v{version}"
                self.write(CONFIG_PATH, NODE_RED.dump(self.cache_config), writer="node-red")
            self.cache_hardware = self._load(HARDWARE_PATH) or {}

    def pump_calibration(self, steps_per_ml: float) -> None:
        """W5 (v2026): the Python writer rewrites hardware.json (2-space, no LF)."""
        with self.lock:
            if self.release != V2026:
                raise BadInput("pump calibration over MQTT is a v2026 action here")
            doc = self._load(HARDWARE_PATH) or {}
            doc["pump_steps_per_ml"] = steps_per_ml
            self.write(HARDWARE_PATH, PYTHON.dump(doc), writer="python")

    def finish_setup(self) -> None:
        """W6 (v2026): user_setup true through the JS writer; fails without config.json."""
        with self.lock:
            if self.release != V2026:
                raise BadInput("setup is a v2026 action")
            doc = self._load(CONFIG_PATH)
            if doc is None:
                raise BadInput("cannot update missing config")
            doc["user_setup"] = True
            self.write(CONFIG_PATH, JS.dump(doc), writer="js")

    def api_reset(self) -> None:
        """W7 (v2026): delete both settings files; a missing one is not an error."""
        with self.lock:
            self.delete(HARDWARE_PATH, writer="express")
            self.delete(CONFIG_PATH, writer="express")

    def user_setup_done(self) -> bool:
        doc = self._load(CONFIG_PATH)
        return doc is not None and doc.get("user_setup") is True

    # -- state -----------------------------------------------------------------------------------------

    def storage_digest(self) -> str:
        """sha256 over every file of the disk (path, bytes): changes if anything on the card changes."""
        import hashlib

        digest = hashlib.sha256()
        with self.lock:
            for host in sorted(p for p in self.root.rglob("*") if p.is_file()):
                if self.device_path(host).startswith("/proc/"):
                    continue  # not storage: the kernel makes it at every boot
                digest.update(self.device_path(host).encode() + b"\0")
                digest.update(host.read_bytes())
        return digest.hexdigest()

    def state(self) -> dict[str, Any]:
        return {"release": self.release, "variant": self.variant, "hostname": self.hostname,
                "boots": self.boots, "services": dict(self.services), "boot_warnings": list(self.boot_warnings),
                "clock": self.now(), "disk_full": self.disk_full, "storage_sha256": self.storage_digest()}
