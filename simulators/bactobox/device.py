"""The simulated BactoBox: non-volatile storage and the state machine behind its API (bactobox.md §2-§5).

No HTTP here (interface.py speaks it). What a real unit keeps across a power cut lives on disk in the state
directory: the sparse disk image (``disk.img``: partitions, boot environment, system slots, data store) and
the SPI flash outside the disk (``flash.json``: device identity, the recovery marker of an incomplete
restore, the maintenance record of the last restore, the RTC). Everything else (mode, program, operations,
logs, boot ID) is RAM and starts afresh at every boot.

Threads: HTTP handlers call in from the server's threads; programs, backup preparation and restore
verification run on threads of their own. One re-entrant lock guards the device state; the disk image's
positional I/O needs none.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from construct import ConstructError

from harness.errors import BadInput, Refused
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.gmi import (
    GmiStreamError,
    GmiStreamReader,
    ZipPlan,
    gmi_entries,
    stream_gmi,
)
from harness.targets.bactobox.versions import VERSIONS, get_version, restore_verdict
from simulators.bactobox import disk as D
from simulators.bactobox import profiles as P
from simulators.bactobox.operations import ApiRefusal, Operation, OperationFailed, Pacer, iso
from simulators.core.clock import Clock
from simulators.core.http_faults import InjectedDrop

log = logging.getLogger(__name__)

DEFAULT_DEVICE_ID = "bb2241039"
DEFAULT_VERSION = "2.6.3"
SIM_VERSIONS = ("2.2.0", "2.6.3")  # versions the simulator runs (layout L2, GMI format 2)
MODEL = "BactoBox"
FLASH_NAME = "flash.json"
DISK_NAME = "disk.img"
PROGRAM_TITLES = {"measure": "Measure", "clean": "Clean", "empty": "Empty"}


def human_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class Flash:
    """The SPI flash outside the disk: written atomically and fsynced, so a power cut keeps the last state."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, path: Path) -> Flash | None:
        try:
            return cls(path, json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def __getitem__(self, key: str) -> Any:
        return self.data.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value


class Program:
    """A running program (Measure, Clean, Empty) on its own thread."""

    def __init__(self, name: str, started: dt.datetime, params: dict[str, Any]) -> None:
        self.name = name
        self.started = started
        self.params = params
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None


class BactoBox:
    def __init__(self, state_dir: Path, *, version: str | None = None, profile: str | None = None,
                 device_id: str | None = None, seed: int = 1, clock: Clock | None = None,
                 faults: Any = None) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock or Clock(None)
        self.faults = faults  # HttpFaults of the interface (target kinds), or None
        self.lock = threading.RLock()
        self.timing: dict[str, float] = {}
        flash = Flash.load(self.state_dir / FLASH_NAME)
        disk_path = self.state_dir / DISK_NAME
        if flash is None or not disk_path.exists():
            flash = self._factory(disk_path, version=version or DEFAULT_VERSION, profile=profile,
                                  device_id=device_id or DEFAULT_DEVICE_ID, seed=seed)
        elif device_id and device_id != flash["device_id"]:
            raise BadInput(f"state directory {self.state_dir} holds unit {flash['device_id']}, not {device_id}")
        self.flash = flash
        self.disk = D.DiskImage(disk_path)
        if version and version != self._installed_version():
            # `sim run --firmware V` on an existing unit: a software update, as the maker's updater does.
            self.upgrade(version)
        # RAM state, reset at every boot
        self.mode = "off"
        self.software_version: str | None = None
        self.active_slot: str | None = None
        self.boot_id = ""
        self.booted_at: dt.datetime | None = None
        self.boot_attempts = 0
        self.regions: list[D.Region] = []
        self.program: Program | None = None
        self.operation: Operation | None = None
        self.history: collections.deque[Operation] = collections.deque(maxlen=10)
        self.frozen = False
        self.button_log: list[str] = []
        self._digest_cache: tuple[int, str] | None = None

    # -- factory and updates -----------------------------------------------------------------------------

    def _factory(self, disk_path: Path, *, version: str, profile: str | None, device_id: str,
                 seed: int) -> Flash:
        if not S.DEVICE_ID.match(device_id):
            raise BadInput(f"device ID {device_id!r} does not match {S.DEVICE_ID.pattern} (e.g. bb2241039)")
        if version not in SIM_VERSIONS:
            raise BadInput(f"the BactoBox simulator runs software {', '.join(SIM_VERSIONS)}; not {version!r}")
        prof = P.get_profile(profile)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        disk = D.build_fresh_disk(disk_path, prof, device_id=device_id, version=version, seed=seed)
        disk.close()
        flash = Flash(self.state_dir / FLASH_NAME, {
            "device_id": device_id, "model": MODEL, "profile": prof.name, "seed": seed,
            "last_software": version, "recovery": None, "last_restore": None,
            "rtc": {"valid": True, "offset_s": 0.0}})
        flash.save()
        log.info("new unit %s: profile %s, software %s", device_id, prof.name, version)
        return flash

    def factory_reset(self, *, profile: str | None, device_id: str | None, version: str | None,
                      seed: int | None) -> None:
        """A fresh unit in the same state directory (``POST /_sim/factory-reset``); the caller reboots."""
        with self.lock:
            self.disk.close()
            path = self.state_dir / DISK_NAME
            path.unlink(missing_ok=True)
            self.flash = self._factory(path, version=version or DEFAULT_VERSION,
                                       profile=profile or self.flash["profile"],
                                       device_id=device_id or self.flash["device_id"],
                                       seed=self.flash["seed"] if seed is None else seed)
            self.disk = D.DiskImage(path)

    def _installed_version(self) -> str | None:
        try:
            regions = D.read_regions(self.disk)
            env = D.read_env(self.disk, D.region(regions, "boot"))
        except (BadInput, OSError):
            return None
        return None if env is None else env.current.values.get("sw_version")

    def upgrade(self, version: str) -> dict[str, Any]:
        """A normal software update (§2.9 ``/_sim/upgrade``): the new version goes into the inactive slot,
        which becomes active; the old one stays in the other slot. Not a restore: data is kept."""
        if version not in SIM_VERSIONS:
            raise BadInput(f"the BactoBox simulator runs software {', '.join(SIM_VERSIONS)}; not {version!r}")
        with self.lock:
            if self.operation is not None and not self.operation.final:
                raise ApiRefusal(409, "operation_in_progress", "An operation is in progress.")
            regions = D.read_regions(self.disk)
            boot = D.region(regions, "boot")
            env = D.read_env(self.disk, boot)
            if env is None:
                raise BadInput("the boot environment is invalid: restore a GMI first")
            values = dict(env.current.values)
            target = "system1" if values.get("active_slot") == "system0" else "system0"
            D.write_slot(self.disk, D.region(regions, target), version)
            values.update({"active_slot": target, "sw_version": version, f"sw_version_{target}": version,
                           "boot_count": "0"})
            info = get_version(version)
            if info.env_format != int(values.get("env_format", "1")):
                # 2.2.0 <-> 2.6.3 changes the environment format: the updater rewrites the whole area.
                values["env_format"] = str(info.env_format)
                D.write_boot_partition(self.disk, boot, values, info.env_format, version)
            else:
                D.write_env(self.disk, boot, env, values)
                D.write_bootloader(self.disk, boot, version)
            self.disk.sync()
            self.flash["last_software"] = version
            self.flash.save()
            log.info("software updated to %s in %s", version, target)
            return {"software_version": version, "active_slot": target}

    # -- clock and timing --------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        rtc = self.flash["rtc"] or {}
        if not rtc.get("valid", True):
            since = time.monotonic() - getattr(self, "_boot_mono", time.monotonic())
            return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=since)
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=rtc.get("offset_s", 0.0))

    @property
    def clock_valid(self) -> bool:
        return bool((self.flash["rtc"] or {}).get("valid", True))

    def set_clock(self, now: str | None, valid: bool) -> None:
        offset = 0.0
        if now:
            target = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
            offset = (target - dt.datetime.now(dt.UTC)).total_seconds()
        self.flash["rtc"] = {"valid": valid, "offset_s": offset}
        self.flash.save()

    def rate(self, realistic_bytes_s: float, knob: str) -> float | None:
        """Wall-clock bytes/s for a transfer (None: unthrottled): a /_sim/timing override wins; otherwise the
        realistic rate, scaled to this profile's disk (every profile takes the real unit's time) and by the
        time scale; fast mode is unthrottled."""
        if knob in self.timing:
            return self.timing[knob] * 1e6
        if self.clock.time_scale is None:
            return None
        return realistic_bytes_s * (self.disk.size / P.NOMINAL_DISK_BYTES) / self.clock.time_scale

    def real(self, realistic_s: float, fast_s: float = 0.0) -> float:
        if self.clock.time_scale is None:
            return fast_s
        return self.clock.real(realistic_s)

    # -- boot --------------------------------------------------------------------------------------------

    def boot(self, unbootable: str | None = None) -> int:
        """Power-on (§2.7 boot model): returns the number of boot attempts it took."""
        with self.lock:
            self._boot_mono = time.monotonic()
            self.boot_id = secrets.token_hex(4)
            self.booted_at = self.now()
            self.program = None
            self.operation = None
            self.history.clear()
            self.frozen = False
            self.software_version = None
            self.active_slot = None
            self.mode = "recovery"
            self.boot_attempts = 1
            try:
                self.regions = D.read_regions(self.disk)
                boot = D.region(self.regions, "boot")
                env = D.read_env(self.disk, boot)
            except (BadInput, OSError) as exc:
                log.warning("no valid partition table (%s): recovery environment", exc)
                return self.boot_attempts
            if env is None:
                log.warning("no valid boot environment: recovery environment")
                return self.boot_attempts
            switched = False
            attempts = 0
            while True:
                values = dict(env.current.values)
                active = values.get("active_slot", "system0")
                count = int(values.get("boot_count", "0") or 0) + 1
                if count > int(values.get("boot_limit", "3") or 3):
                    if switched:
                        log.warning("both slots failed to boot: recovery environment")
                        self.boot_attempts = attempts
                        return attempts
                    active = "system1" if active == "system0" else "system0"
                    values["active_slot"] = active
                    values["sw_version"] = values.get(f"sw_version_{active}", "")
                    count, switched = 1, True
                values["boot_count"] = str(count)
                env = D.write_env(self.disk, boot, env, values)
                attempts += 1
                version = None if unbootable == active else D.slot_version(self.disk, D.region(self.regions, active))
                if version in VERSIONS:
                    break
                log.warning("slot %s does not boot (attempt %d)", active, attempts)
            self.boot_attempts = attempts
            self.active_slot = active
            if self.flash["recovery"]:
                log.warning("an incomplete restore is recorded: recovery environment")
                return attempts
            self.software_version = version
            self.mode = "normal"
            self.flash["last_software"] = version
            self.flash.save()
            return attempts

    def confirm_boot(self) -> None:
        """Services are up: the system confirms the boot (boot_count=0, a second environment write)."""
        with self.lock:
            if self.mode == "recovery" or not self.regions:
                return
            boot = D.region(self.regions, "boot")
            env = D.read_env(self.disk, boot)
            if env is not None and env.current.values.get("boot_count") != "0":
                D.write_env(self.disk, boot, env, {**env.current.values, "boot_count": "0"})

    def shutdown(self) -> None:
        """Power off: programs stop where they are; running operations die (their threads see stop)."""
        with self.lock:
            if self.program is not None:
                self.program.stop.set()
            op = self.operation
            if op is not None and not op.final:
                op.extra["powered_off"] = True
            self.mode = "off"
        self.disk.sync()

    # -- views -------------------------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.flash["device_id"]

    @property
    def version_info(self) -> Any:
        return VERSIONS.get(self.software_version or "")

    def reads_formats(self) -> list[int]:
        if self.mode == "recovery":
            recovery = self.flash["recovery"] or {}
            if recovery.get("reads_formats"):
                return list(recovery["reads_formats"])
            last = VERSIONS.get(self.flash["last_software"] or "")
            return list(last.reads_formats) if last else [2]
        info = self.version_info
        return list(info.reads_formats) if info else []

    def active_operation(self) -> Operation | None:
        op = self.operation
        return op if op is not None and not op.final else None

    def current_mode(self) -> str:
        if self.mode in ("recovery", "restart_required", "off"):
            return self.mode
        return "busy" if self.active_operation() is not None else self.mode

    def device_json(self) -> dict[str, Any]:
        with self.lock:
            info = self.version_info
            slots: dict[str, str] = {}
            boot_count = None
            layout = "L2"
            if self.regions:
                try:
                    env = D.read_env(self.disk, D.region(self.regions, "boot"))
                except OSError:
                    env = None
                if env is not None:
                    slots = {s: env.current.values.get(f"sw_version_{s}", "") for s in ("system0", "system1")}
                    boot_count = int(env.current.values.get("boot_count", "0") or 0)
            program = self.program
            settings = self._settings_safe()
            out: dict[str, Any] = {
                "device_id": self.device_id, "model": MODEL, "software_version": self.software_version,
                "gmi": {"writes_format": info.writes_format if info else None,
                        "reads_formats": self.reads_formats()},
                "mode": self.current_mode(),
                "program": {"name": program.name if program else "idle",
                            "started": iso(program.started) if program else None},
                "liquid_in_flow_paths": settings.get("liquid_in_flow_paths") == "1",
                "boot": {"boot_id": self.boot_id, "booted_at": iso(self.booted_at),
                         "active_slot": self.active_slot, "slots": slots, "boot_count": boot_count},
                "storage": {"disk_size_bytes": self.disk.size, "sector_size": S.SECTOR, "layout": layout},
                "clock": {"now": iso(self.now()), "valid": self.clock_valid},
                "operation": self.active_operation().id if self.active_operation() else None,
            }
            if self.mode == "recovery":
                out["recovery"] = {"reads_formats": self.reads_formats()}
            return out

    def _store(self) -> D.DataStore:
        return D.DataStore(self.disk, D.region(self.regions, "data"))

    def _settings_safe(self) -> dict[str, str]:
        if self.mode == "recovery" or not self.regions:
            return {}
        try:
            return self._store().settings()
        except (BadInput, OSError):
            return {}

    def storage_sha256(self) -> str:
        """sha256 of the whole disk (cached per write generation): white-box checks that nothing changed."""
        gen = self.disk.generation
        if self._digest_cache is not None and self._digest_cache[0] == gen:
            return self._digest_cache[1]
        sha, _ = self.disk.digest(0, self.disk.size)
        self._digest_cache = (gen, sha)
        return sha

    # -- refusals (§6 order) -----------------------------------------------------------------------------

    def _check_mutating(self, what: str) -> None:
        if self.mode == "restart_required":
            raise ApiRefusal(409, "restart_required",
                             "A restore has completed. Restart your BactoBox before further use.")
        if self.mode == "recovery" and what != "restore":
            raise ApiRefusal(409, "recovery_mode", "The BactoBox is in recovery mode after an incomplete "
                                                   "restore. Restore a GMI file to continue.")
        op = self.active_operation()
        if op is not None:
            raise ApiRefusal(409, "operation_in_progress",
                             f"A {op.kind} is in progress ({op.id}). Wait for it to complete.",
                             details={"operation": op.id}, retryable=True)

    def _check_program(self, what: str) -> None:
        program = self.program
        if program is not None:
            title = PROGRAM_TITLES.get(program.name, program.name)
            raise ApiRefusal(409, "program_running",
                             f"A program is running ({title}, started {program.started:%H:%M:%S}). Wait for it "
                             f"to complete before you start the {what}.",
                             details={"program": program.name, "started": iso(program.started)}, retryable=True)

    # -- programs ----------------------------------------------------------------------------------------

    def program_json(self) -> dict[str, Any]:
        program = self.program
        return {"name": program.name if program else "idle",
                "started": iso(program.started) if program else None,
                "params": program.params if program else None}

    def start_program(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._check_mutating("program")
            if name == "stop":
                program = self.program
                if program is not None:
                    program.params["stopped"] = True
                    program.stop.set()
                return self.program_json()
            if name not in PROGRAM_TITLES:
                raise ApiRefusal(404, "unknown_program", f"There is no program {name!r}.")
            self._check_program("program")
            settings = self._store().settings()
            if name == "measure":
                last_clean = int(settings.get("last_clean_unix", "0") or 0)
                interval = int(settings.get("clean_interval_h", "24") or 24) * 3600
                if self.now().timestamp() - last_clean > interval:
                    raise ApiRefusal(409, "clean_required", "Run the Clean program before the next measurement.")
                params = _measure_params(params)
                duration = P.MEASURE_OVERHEAD_S + params["sampling_time_s"]
            else:
                params = {}
                duration = P.CLEAN_S if name == "clean" else P.EMPTY_S
            program = Program(name, self.now(), params)
            self.program = program
            wall = self.clock.real(duration) if self.clock.time_scale is not None else duration * P.FAST_PROGRAM_FACTOR
            program.thread = threading.Thread(target=self._run_program, args=(program, wall, duration),
                                              name=f"program {name}", daemon=True)
            program.thread.start()
            return self.program_json()

    def _run_program(self, program: Program, wall_s: float, duration_s: float) -> None:
        t0 = time.monotonic()
        stopped = program.stop.wait(wall_s)
        with self.lock:
            if self.program is not program or self.mode == "off":
                return  # powered off meanwhile: a program cut by a power loss leaves no record
            elapsed = (time.monotonic() - t0) / wall_s * duration_s if wall_s > 0 else duration_s
            store = self._store()
            settings = store.settings()
            if program.name == "measure":
                rid = store.superblock()["next_record_id"]
                flags = S.REC_STOPPED if stopped else S.REC_COMPLETED
                store.append(program=S.PROGRAM_MEASURE, flags=flags,
                             started_ms=int(program.started.timestamp() * 1000), duration_ms=int(elapsed * 1000),
                             sampling_time_s=program.params["sampling_time_s"],
                             dilution=program.params["dilution"], label=program.params["label"],
                             payload=D.measurement_payload(self.flash["seed"], rid, 4096))
            elif program.name == "clean" and not stopped:
                settings["last_clean_unix"] = str(int(self.now().timestamp()))
                store.write_settings(settings)
            elif program.name == "empty" and not stopped:
                settings["liquid_in_flow_paths"] = "0"
                store.write_settings(settings)
            if stopped and settings.get("liquid_in_flow_paths") == "1":
                settings["liquid_in_flow_paths"] = "0"  # Stop empties the flow paths first (F16)
                store.write_settings(settings)
            self.program = None
            log.info("program %s %s", program.name, "stopped" if stopped else "completed")

    def press_button(self, name: str) -> dict[str, Any]:
        """A physical button: ignored (and logged) while an operation runs (§2.1)."""
        with self.lock:
            op = self.active_operation()
            if op is not None or self.mode == "restart_required":
                line = f"Button {name.capitalize()} ignored: {op.kind if op else 'restart'} " \
                       f"{'in progress' if op else 'required'}"
                if op is not None:
                    op.log(line, "WARN")
                self.button_log.append(line)
                return {"ignored": True, "message": line}
            try:
                return {"ignored": False, "program": self.start_program(name, {})}
            except ApiRefusal as exc:
                return {"ignored": True, "message": exc.message}

    # -- settings (modelled API) -------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        with self.lock:
            if self.mode == "recovery":
                raise ApiRefusal(409, "recovery_mode", "The BactoBox is in recovery mode after an incomplete "
                                                       "restore. Restore a GMI file to continue.")
            return self._store().settings()

    def change_settings(self, changes: dict[str, Any]) -> dict[str, str]:
        with self.lock:
            self._check_mutating("settings")
            self._check_program("settings change")
            store = self._store()
            values = store.settings()
            for key, value in changes.items():
                if key not in D.SETTINGS_DEFAULTS:
                    raise ApiRefusal(422, "unknown_setting", f"There is no setting {key!r} "
                                                             f"(settings: {', '.join(D.SETTINGS_DEFAULTS)}).")
                if not isinstance(value, str | int) or isinstance(value, bool) or "\0" in str(value):
                    raise ApiRefusal(422, "invalid_setting", f"Setting {key!r} must be a string or an integer.")
                values[key] = str(value)
            try:
                store.write_settings(values)
            except ConstructError as exc:  # the settings block is full
                raise ApiRefusal(422, "invalid_setting", f"The settings do not fit the settings block "
                                                         f"({exc}).") from None
            return values

    def measurements(self, after_id: int, limit: int) -> list[dict[str, Any]]:
        with self.lock:
            if self.mode == "recovery":
                raise ApiRefusal(409, "recovery_mode", "The BactoBox is in recovery mode after an incomplete "
                                                       "restore. Restore a GMI file to continue.")
            return list(self._store().records(after_id, limit))

    # -- operations --------------------------------------------------------------------------------------

    def get_operation(self, op_id: str) -> Operation:
        op = self.operation
        if op is not None and op.id == op_id:
            return op
        for old in self.history:
            if old.id == op_id:
                return old
        raise ApiRefusal(404, "not_found", f"There is no operation {op_id} in this boot.")

    def operations_json(self) -> dict[str, Any]:
        with self.lock:
            current = self.active_operation()
            finished = [op.to_json() for op in self.history if op is not current]
            return {"current": current.to_json() if current else None, "finished": finished[-10:]}

    def _retire(self, op: Operation) -> None:
        with self.lock:
            if op not in self.history:
                self.history.append(op)

    def delete_operation(self, op_id: str) -> None:
        with self.lock:
            op = self.get_operation(op_id)
            if op.kind == "restore" and op.state == "awaiting_upload":
                op.log("Restore withdrawn; nothing was changed")
                op.end("withdrawn")
                self._retire(op)
                return
            if op.final:
                raise ApiRefusal(409, "invalid_state", f"Operation {op.id} is {op.state}; this request needs "
                                                       f"awaiting_upload.")
            raise ApiRefusal(409, "not_cancellable", f"Once started, a {op.kind} cannot be cancelled. Wait for "
                                                     f"it to complete.")

    # -- backup ------------------------------------------------------------------------------------------

    def file_name(self) -> str:
        return f"backup-of-{self.device_id}-{self.now():%Y-%m-%d}.gmi"

    def estimate(self) -> dict[str, Any]:
        with self.lock:
            if not self.regions:
                raise ApiRefusal(409, "recovery_mode", "The BactoBox is in recovery mode after an incomplete "
                                                       "restore. Restore a GMI file to continue.")
            total = sum(r.size for r in self.regions)
            usb = P.USB_BYTES_S * self.disk.size / P.NOMINAL_DISK_BYTES
            read = P.DISK_READ_BYTES_S * self.disk.size / P.NOMINAL_DISK_BYTES
            return {"estimated_size_bytes": total + 64 * 1024, "estimated_duration_s": int(total / read + total / usb),
                    "format": self.version_info.writes_format if self.version_info else None}

    def start_backup(self) -> tuple[Operation, str]:
        with self.lock:
            self._check_mutating("backup")
            self._check_program("backup")
            op = Operation("backup", now=self.now)
            name = self.file_name()
            op.extra.update(file_name=name, consumed=False, download=threading.Event(),
                            created=self.now().replace(microsecond=0))
            self.operation = op
            op.log(f"Backup of {self.device_id} started (software {self.software_version})")
            thread = threading.Thread(target=self._run_backup, args=(op,), name=f"backup {op.id}", daemon=True)
            thread.start()
            return op, name

    def _run_backup(self, op: Operation) -> None:
        try:
            op.log("No program is running")
            op.log("Stopping measurement services")
            op.log("Freezing data partition")
            self.frozen = True
            regions = self.regions
            op.log(f"Partition table: {len(regions) - 1} partitions, layout L2, disk {human_size(self.disk.size)}")
            total = sum(r.size for r in regions)
            pacer = Pacer(self.rate(P.DISK_READ_BYTES_S, "disk_read_mb_s"))
            digests: dict[str, tuple[str, int]] = {}
            done = 0
            for i, r in enumerate(regions, start=1):
                op.log(f"Hashing {r.name} ({i} of {len(regions)}, {human_size(r.size)})")
                sha = hashlib.sha256()
                crc = 0
                for chunk in self.disk.chunks(r.offset, r.size):
                    sha.update(chunk)
                    crc = zlib.crc32(chunk, crc)
                    done += len(chunk)
                    pacer.advance(len(chunk))
                    op.set_progress(5.0 * done / total, done=0, step=1, steps=6)
                    if op.extra.get("powered_off"):
                        return
                digests[r.name] = (sha.hexdigest(), crc)
            manifest = self._manifest(op, regions, digests)
            manifest_bytes = manifest.to_json()
            force64 = bool(self.faults and self.faults.get("force_zip64"))
            plan = ZipPlan(gmi_entries(manifest_bytes, [(p, digests[p.name][1]) for p in manifest.parts]),
                           modified=op.extra["created"], force_zip64=force64)
            op.extra.update(plan=plan, manifest_bytes=manifest_bytes, digests=digests,
                            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(), regions=regions)
            name = op.extra["file_name"]
            op.log(f"GMI ready: {name} ({human_size(plan.total_size)})")
            op.set_state("ready")
            op.set_progress(5.0, total=plan.total_size, step=2)
            op.announce("artifact", {"url": f"/api/v1/operations/{op.id}/artifact", "file_name": name,
                                     "size_bytes": plan.total_size})
            op.log("Waiting for the download to begin")
            timeout = self.timing.get("download_start_timeout_s")
            if timeout is None:
                # A timeout, not a delay: fast mode keeps the real 300 s (nothing waits on it unless it fires).
                timeout = self.clock.real(P.DOWNLOAD_START_TIMEOUT_S) if self.clock.time_scale else \
                    P.DOWNLOAD_START_TIMEOUT_S
            if not op.extra["download"].wait(timeout):
                with op.lock:
                    if op.extra["consumed"]:
                        return
                    op.extra["consumed"] = True
                self._finalize_backup(op)
                op.fail("download_not_started", f"The download did not begin within "
                                                f"{int(P.DOWNLOAD_START_TIMEOUT_S)} s.", line_prefix="Backup failed")
                self._retire(op)
        except Exception as exc:  # noqa: BLE001 - the operation reports it; the thread has nobody to raise to
            log.exception("backup failed")
            self._finalize_backup(op)
            op.fail("write_error", f"The device could not read its storage ({exc}).", line_prefix="Backup failed")
            self._retire(op)

    def _manifest(self, op: Operation, regions: list[D.Region], digests: dict[str, tuple[str, int]]) -> S.Manifest:
        env = D.read_env(self.disk, D.region(regions, "boot"))
        values = env.current.values if env else {}
        store = self._store()
        sb = store.superblock()
        last = None
        if sb["record_count"]:
            for rec in store.records(after_id=sb["next_record_id"] - 2, limit=1):
                last = rec
        parts = []
        for r in regions:
            parts.append(S.ManifestPart(
                name=r.name, file=f"parts/{r.name}.img", start_lba=r.start_lba, size_bytes=r.size,
                sha256=digests[r.name][0], mbr_index=r.mbr_index,
                type=f"0x{r.type:02x}" if r.type is not None else None))
        signature = int.from_bytes(self.disk.read(440, 4), "little")
        info = self.version_info
        return S.Manifest(
            format=info.writes_format, device_id=self.device_id, software_version=self.software_version or "",
            created=iso(op.extra["created"]) or "", clock_valid=self.clock_valid,
            producer=f"bactobox-backup {self.software_version}",
            disk={"size_bytes": self.disk.size, "sector_size": S.SECTOR, "layout": "L2",
                  "mbr_signature": f"0x{signature:08x}"},
            boot={"env_format": int(values.get("env_format", "1") or 1), "active_slot": values.get("active_slot"),
                  "boot_count": int(values.get("boot_count", "0") or 0),
                  "slots": {s: values.get(f"sw_version_{s}") for s in ("system0", "system1")}},
            data={"store_version": 2, "record_count": sb["record_count"],
                  "last_record_id": sb["next_record_id"] - 1,
                  "last_record_started": iso(dt.datetime.fromtimestamp(last["started_unix_ms"] / 1000, dt.UTC))
                  if last else None},
            parts=parts, total_size_bytes=sum(r.size for r in regions))

    def open_artifact(self, op_id: str) -> tuple[Operation, dict[str, str], Iterator[bytes]]:
        """The one download of a backup's GMI: headers and the byte stream (§2.4 artifact)."""
        with self.lock:
            op = self.get_operation(op_id)
            if op.kind != "backup":
                raise ApiRefusal(404, "not_found", f"Operation {op_id} has no artifact.")
            with op.lock:
                if op.state == "failed":
                    raise ApiRefusal(410, "operation_failed", f"The backup failed: {op.error['message']}")
                if op.extra.get("consumed"):
                    raise ApiRefusal(410, "artifact_consumed", "This GMI was already downloaded. Start a new "
                                                               "backup to get another copy.")
                if op.state != "ready":
                    raise ApiRefusal(409, "artifact_not_ready", "The GMI is not ready yet.",
                                     headers={"Retry-After": "1"}, retryable=True)
                op.extra["consumed"] = True
            op.extra["download"].set()
            plan: ZipPlan = op.extra["plan"]
            headers = {
                "Content-Type": S.MEDIA_TYPE,
                "Content-Disposition": f'attachment; filename="{op.extra["file_name"]}"',
                "Content-Length": str(plan.total_size),
                "X-GMI-Format": str(self.version_info.writes_format),
                "X-GMI-Manifest-SHA256": op.extra["manifest_sha256"],
            }
            return op, headers, self._stream_backup(op)

    def _stream_backup(self, op: Operation) -> Iterator[bytes]:
        plan: ZipPlan = op.extra["plan"]
        regions: list[D.Region] = op.extra["regions"]
        digests = op.extra["digests"]
        total = plan.total_size
        pacer = Pacer(self.rate(P.USB_BYTES_S, "usb_mb_s"))
        faults = self.faults
        cut = faults.get("disconnect_at") if faults else None
        cut_at = int(cut["fraction"] * total) if cut else None
        flip = faults.get("flip_bit") if faults else None
        changed = faults.get("source_changed_at") if faults else None
        t0 = time.monotonic()
        sent = 0
        state = {"ok": False}

        def part_chunks(index: int) -> Iterator[bytes]:
            nonlocal sent
            r = regions[index - 2]
            op.log(f"Sending {r.name} ({index - 1} of {len(regions)}, {human_size(r.size)})")
            sha = hashlib.sha256()
            start = plan.data_offset(index)  # file offset of the next chunk
            for chunk in self.disk.chunks(r.offset, r.size):
                sha.update(chunk)  # re-hashed while sent, compared with the preparing pass (§3.4)
                if flip is not None and start <= flip["offset"] < start + len(chunk):
                    data = bytearray(chunk)
                    data[flip["offset"] - start] ^= 1 << (flip["bit"] % 8)
                    chunk = bytes(data)
                if cut_at is not None and start + len(chunk) >= cut_at:
                    raise InjectedDrop(f"disconnect_at {cut['fraction']}")
                pacer.advance(len(chunk))
                start += len(chunk)
                sent += len(chunk)
                op.set_progress(5.0 + 94.0 * start / total, done=start, step=3)
                yield chunk
                if op.extra.get("powered_off"):
                    raise InjectedDrop("power off")
            if sha.hexdigest() != digests[r.name][0] or (changed and changed.get("part") == r.name):
                op.extra["source_changed"] = r.name
                raise _SourceChanged(r.name)

        def run() -> Iterator[bytes]:
            op.set_state("streaming")
            op.log("Sending manifest")
            yield from stream_gmi(plan, op.extra["manifest_bytes"], part_chunks)
            state["ok"] = True

        try:
            yield from run()
        except _SourceChanged as exc:
            self._finalize_backup(op)
            op.fail("source_changed", f"{exc} changed while it was sent; the stream was cut before the central "
                                      f"directory. Start a new backup.", line_prefix="Backup failed")
            self._retire(op)
            return  # the body ends short of its Content-Length: the client sees an invalid ZIP
        except (GeneratorExit, InjectedDrop):
            self._finalize_backup(op)
            op.fail("transfer_interrupted", "The download was interrupted. Start a new backup.",
                    line_prefix="Backup failed")
            self._retire(op)
            raise
        op.set_state("finalizing")
        op.set_progress(99.0, done=total)
        took = time.monotonic() - t0
        op.log(f"Download complete ({human_size(total)} in {took:.1f} s)")
        self._finalize_backup(op)
        op.succeed({"file_name": op.extra["file_name"], "size_bytes": total,
                    "manifest_sha256": op.extra["manifest_sha256"], "format": self.version_info.writes_format},
                   "Backup successful")
        self._retire(op)

    def _finalize_backup(self, op: Operation) -> None:
        if self.frozen:
            op.log("Restarting measurement services")
        self.frozen = False

    # -- restore -----------------------------------------------------------------------------------------

    def preflight(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._check_mutating("restore")
            self._check_program("restore")
            settings = self._settings_safe()
            if settings.get("liquid_in_flow_paths") == "1":
                raise ApiRefusal(409, "liquid_in_flow_paths",
                                 "Liquid is in the flow paths. Run the Empty program before you restore: the "
                                 "restore rolls back the device's record of the liquid state.")
            if body.get("confirm") is not True:
                raise ApiRefusal(428, "confirmation_required", "A restore replaces all software and data on this "
                                                               "BactoBox. Send confirm: true to proceed.")
            try:
                manifest = S.Manifest.from_dict(body.get("manifest"))
            except BadInput as exc:
                raise ApiRefusal(422, "manifest_invalid", str(exc)) from None
            size = body.get("file_size_bytes")
            announced = body.get("manifest_sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise ApiRefusal(422, "manifest_invalid", "manifest.json is invalid: /file_size_bytes is not a "
                                                          "positive integer.")
            if not isinstance(announced, str) or len(announced) != 64:
                raise ApiRefusal(422, "manifest_invalid", "manifest.json is invalid: /manifest_sha256 is not a "
                                                          "sha256.")
            if manifest.device_id != self.device_id:
                raise ApiRefusal(422, "device_mismatch",
                                 f"This GMI file was made on {manifest.device_id}. A GMI file can only be restored "
                                 f"on the BactoBox it was made on (this is {self.device_id}).",
                                 details={"gmi_device_id": manifest.device_id, "device_id": self.device_id})
            reads = tuple(self.reads_formats())
            software = self.software_version or self.flash["last_software"] or "?"
            try:
                verdict = restore_verdict(manifest.format, manifest.software_version, reads, software)
            except Refused as exc:
                code, _, message = str(exc).partition(": ")
                raise ApiRefusal(422, code, message, details={"format": manifest.format,
                                                              "reads_formats": list(reads)}) from None
            if manifest.format != 2:
                # Only format 2 is modelled end to end (docs/targets/bactobox.md).
                raise ApiRefusal(422, "gmi_format_unsupported", f"This simulator restores GMI format 2 only; this "
                                                                f"file has format {manifest.format}.")
            disk_size = self.disk.size
            smaller = self.faults.get("disk_smaller") if self.faults else None
            if smaller:
                disk_size = smaller["bytes"]
            if manifest.disk_size_bytes > disk_size:
                raise ApiRefusal(422, "disk_too_small",
                                 f"The GMI file holds a {human_size(manifest.disk_size_bytes)} disk, but this "
                                 f"BactoBox has {human_size(disk_size)} of storage. Restore refused.")
            op = Operation("restore", now=self.now)
            deadline_s = self.timing.get("upload_deadline_s", P.UPLOAD_DEADLINE_S)
            deadline = self.now() + dt.timedelta(seconds=deadline_s)
            op.state = "awaiting_upload"
            op.progress["phase"] = "awaiting_upload"
            op.cancellable = True
            op.extra.update(manifest=manifest, manifest_sha256=announced, file_size=size,
                            file_name=str(body.get("file_name", "")), deadline=deadline, verdict=verdict,
                            deadline_mono=time.monotonic() + deadline_s, reads=list(reads), software=software)
            self.operation = op
            op.log(f"Restore for {self.device_id} prepared: GMI format {manifest.format}, software "
                   f"{manifest.software_version}, created {manifest.created}")
            op.log(f"Verdict: {'as is' if verdict == 'as_is' else verdict}")
            op.log(f"Waiting for upload (deadline {iso(deadline)})")
            timer = threading.Timer(deadline_s, self._expire, args=(op,))
            timer.daemon = True
            timer.start()
            changes = [f"Software {self.software_version} -> {manifest.software_version} "
                       f"(active slot {manifest.boot.get('active_slot')})"]
            try:
                now_count = self._store().superblock()["record_count"] if self.regions else None
            except BadInput:
                now_count = None
            changes.append(f"Measurements {now_count} -> {manifest.data.get('record_count')}")
            changes.append(f"Settings as of {manifest.created}")
            notes = [] if self.clock_valid else ["The BactoBox clock is not set."]
            return {"operation": {"id": op.id, "kind": "restore", "state": op.state, "cancellable": True},
                    "upload_url": f"/api/v1/restores/{op.id}/gmi", "upload_deadline": iso(deadline),
                    "verdict": verdict, "changes": changes, "notes": notes}

    def _expire(self, op: Operation) -> None:
        with self.lock:
            if op.state == "awaiting_upload":
                op.log(f"Upload deadline {iso(op.extra['deadline'])} passed; nothing was changed")
                op.end("expired")
                self._retire(op)

    def begin_upload(self, op_id: str, *, content_type: str, length: str | None, chunked: bool) -> RestoreSink:
        with self.lock:
            op = self.get_operation(op_id)
            if op.kind != "restore":
                raise ApiRefusal(404, "not_found", f"Operation {op_id} is not a restore.")
            if op.state == "expired" or (op.state == "awaiting_upload" and time.monotonic() > op.extra["deadline_mono"]):
                raise ApiRefusal(410, "operation_expired", f"The restore reservation expired at "
                                                           f"{iso(op.extra['deadline'])}. Start the restore again.")
            if op.state != "awaiting_upload":
                raise ApiRefusal(409, "invalid_state", f"Operation {op.id} is {op.state}; this request needs "
                                                       f"awaiting_upload.")
            if content_type.split(";")[0].strip().lower() != S.MEDIA_TYPE:
                raise ApiRefusal(415, "unsupported_media_type", "Upload the GMI as application/vnd.sbt.gmi+zip.")
            if chunked or length is None or not length.isdigit():
                raise ApiRefusal(411, "length_required", "Send the GMI with a Content-Length header.")
            if int(length) != op.extra["file_size"]:
                raise ApiRefusal(400, "size_mismatch", f"The upload is {length} bytes, but the preflight "
                                                       f"announced {op.extra['file_size']} bytes.")
            op.set_state("receiving")
            op.log(f"Receiving GMI ({human_size(int(length))})")
            return RestoreSink(self, op)

    def restart(self) -> dict[str, Any]:
        with self.lock:
            op = self.active_operation()
            if op is not None and op.state != "awaiting_upload":
                raise ApiRefusal(409, "operation_in_progress", f"A {op.kind} is in progress ({op.id}). Wait for "
                                                               f"it to complete.", retryable=True)
            expected = P.SHUTDOWN_S + P.BOOT_ATTEMPT_S + P.SERVICES_START_S
            return {"expected_downtime_s": int(expected), "boot_id": self.boot_id}

    def last_restore(self) -> dict[str, Any]:
        record = self.flash["last_restore"]
        if not record:
            raise ApiRefusal(404, "no_restore_recorded", "No restore has been recorded on this BactoBox.")
        return record

    # -- digest ------------------------------------------------------------------------------------------

    def start_digest(self) -> Operation:
        with self.lock:
            self._check_mutating("digest")
            self._check_program("digest")
            op = Operation("digest", now=self.now)
            op.state = "hashing"
            self.operation = op
            op.log("Digest of the live disk started")
            threading.Thread(target=self._run_digest, args=(op,), name=f"digest {op.id}", daemon=True).start()
            return op

    def _run_digest(self, op: Operation) -> None:
        regions = self.regions
        total = sum(r.size for r in regions)
        pacer = Pacer(self.rate(P.DISK_READ_BYTES_S, "disk_read_mb_s"))
        done = 0
        parts = []
        try:
            for r in regions:
                sha = hashlib.sha256()
                for chunk in self.disk.chunks(r.offset, r.size):
                    sha.update(chunk)
                    done += len(chunk)
                    pacer.advance(len(chunk))
                    op.set_progress(100.0 * done / total, done=done, total=total)
                parts.append({"name": r.name, "start_lba": r.start_lba, "size_bytes": r.size,
                              "sha256": sha.hexdigest()})
            op.succeed({"parts": parts}, "Digest complete")
        except Exception as exc:  # noqa: BLE001
            op.fail("write_error", f"The device could not read its storage ({exc}).", line_prefix="Digest failed")
        self._retire(op)


class _SourceChanged(Exception):
    pass


def _measure_params(params: dict[str, Any]) -> dict[str, Any]:
    dilution = params.get("dilution", 1.0)
    label = params.get("label", "")
    sampling = params.get("sampling_time_s", 30)
    if not isinstance(dilution, int | float) or isinstance(dilution, bool) or not dilution > 0:
        raise ApiRefusal(422, "invalid_parameter", "dilution must be a number > 0.")
    if not isinstance(label, str) or len(label.encode("utf-8")) > 20 or "\0" in label:
        raise ApiRefusal(422, "invalid_parameter", "label must be text of at most 20 bytes.")
    if not isinstance(sampling, int) or isinstance(sampling, bool) or not 1 <= sampling <= 65535:
        raise ApiRefusal(422, "invalid_parameter", "sampling_time_s must be an integer from 1 to 65535.")
    return {"dilution": float(dilution), "label": label, "sampling_time_s": sampling}


class RestoreSink:
    """The receiving side of ``PUT /restores/{id}/gmi``: fed the body in order, writes parts as they come.

    Nothing touches the disk before the manifest entry has arrived and matched the preflight; from the first
    image byte on, the SPI flash records an incomplete restore, so a power cut from there boots into recovery.
    """

    def __init__(self, device: BactoBox, op: Operation) -> None:
        self.device = device
        self.op = op
        self.manifest: S.Manifest = op.extra["manifest"]
        self.total = op.extra["file_size"]
        self.pacer = Pacer(device.rate(P.USB_BYTES_S, "usb_mb_s"))
        self.parts = {p.file: p for p in self.manifest.parts}
        self.index = {p.file: i for i, p in enumerate(self.manifest.parts, start=1)}
        self.current: tuple[str, int, Any] | None = None  # (file, written, sha)
        self.touched = False
        power = device.faults.get("power_loss_at") if device.faults else None
        self.power_cut_at = int(power["fraction"] * self.total) if power and power["phase"] == "receiving" else None
        self.reader = GmiStreamReader(on_manifest=self._manifest, on_part_data=self._data,
                                      on_part_end=self._part_end)

    def _manifest(self, raw: bytes) -> S.Manifest:
        if hashlib.sha256(raw).hexdigest() != self.op.extra["manifest_sha256"]:
            raise GmiStreamError("manifest_mismatch", "The uploaded GMI's manifest differs from the one checked in "
                                                      "the preflight. Nothing was changed.")
        self.op.log("mimetype ok")
        self.op.log("manifest ok (matches the announced manifest)")
        self.op.set_state("receiving", cancellable=False)
        self.op.log("Stopping measurement services")
        self.op.log("Unmounting data partition")
        return self.manifest

    def _data(self, file: str, view: memoryview) -> None:
        part = self.parts[file]
        if self.current is None or self.current[0] != file:
            self.op.log(f"Writing {part.name} ({self.index[file]} of {len(self.parts)}, {human_size(part.size_bytes)})")
            self.current = (file, 0, hashlib.sha256())
        if not self.touched:
            # The first destructive write: from here a cut leaves the disk half old, half new.
            self.device.flash["recovery"] = {"reads_formats": self.op.extra["reads"],
                                             "software": self.op.extra["software"], "operation": self.op.id}
            self.device.flash.save()
            self.touched = True
        name, written, sha = self.current
        self.device.disk.write(part.start_lba * S.SECTOR + written, view)
        sha.update(view)
        self.current = (name, written + len(view), sha)

    def _part_end(self, file: str) -> None:
        assert self.current is not None
        part = self.parts[file]
        got = self.current[2].hexdigest()
        self.current = None
        if got != part.sha256:
            raise GmiStreamError("part_hash_mismatch",
                                 f"{part.name}: sha256 {got} does not match the manifest ({part.sha256}). The device "
                                 f"is in recovery mode. Restore a valid GMI file to continue.")

    def feed(self, data: bytes | memoryview) -> None:
        """Take the next piece of the body (called from a worker thread, in order)."""
        self.reader.feed(data)
        received = self.reader.received
        if self.power_cut_at is not None and received >= self.power_cut_at:
            log.warning("fault power_loss_at: cutting power at %d of %d bytes", received, self.total)
            os.kill(os.getpid(), signal.SIGKILL)
        self.pacer.advance(len(data))
        self.op.set_progress(90.0 * received / self.total, done=received, total=self.total, step=1, steps=2)

    def fail(self, code: str, message: str) -> None:
        """The upload ended badly: a device that was written to stays in recovery mode."""
        device = self.device
        with device.lock:
            if self.touched:
                device.mode = "recovery"
                device.software_version = None
            self.op.fail(code, message, line_prefix="Restore failed")
            device._retire(self.op)

    def finish(self) -> dict[str, Any]:
        """The whole body arrived: check the tail, answer 202 ``verifying``, verify in the background."""
        self.reader.finish()
        self.op.set_state("verifying")
        self.op.set_progress(90.0, step=2)
        threading.Thread(target=self._verify, name=f"verify {self.op.id}", daemon=True).start()
        return self.op.to_json()

    def _verify(self) -> None:
        device, op = self.device, self.op
        parts = []
        pacer = Pacer(device.rate(P.DISK_READ_BYTES_S, "disk_read_mb_s"))
        total = sum(p.size_bytes for p in self.manifest.parts)
        done = 0
        try:
            device.disk.sync()
            for i, part in enumerate(self.manifest.parts, start=1):
                op.log(f"Verifying {part.name} ({i} of {len(self.manifest.parts)})")
                sha = hashlib.sha256()
                for chunk in device.disk.chunks(part.start_lba * S.SECTOR, part.size_bytes):
                    sha.update(chunk)
                    done += len(chunk)
                    pacer.advance(len(chunk))
                    op.set_progress(90.0 + 10.0 * done / total)
                    if op.extra.get("powered_off"):
                        return
                ok = sha.hexdigest() == part.sha256
                parts.append({"name": part.name, "sha256": sha.hexdigest(), "ok": ok})
                if not ok:
                    raise OperationFailed("verify_failed", f"{part.name}: read back sha256 does not match the "
                                                           f"manifest.")
                op.log(f"{part.name}: sha256 ok")
            tail = device.disk.size - self.manifest.disk_size_bytes
            result = {"verdict": op.extra["verdict"], "parts": parts, "restart_required": True,
                      "unallocated_tail_bytes": tail, "software_version": self.manifest.software_version}
            with device.lock:
                device.flash["recovery"] = None
                device.flash["last_restore"] = {
                    "operation": op.id, "finished": iso(device.now()), "state": "succeeded",
                    "gmi": {"file_name": op.extra["file_name"], "format": self.manifest.format,
                            "software_version": self.manifest.software_version, "created": self.manifest.created},
                    "result": result,
                    "log": [line.text_line() for line in op.log_after(0)]
                    + [f"{iso(device.now(), ms=True)} INFO Restore successful. Restart your BactoBox before "
                       f"further use."]}
                device.flash.save()
                device.mode = "restart_required"
                op.succeed(result, "Restore successful. Restart your BactoBox before further use.")
                device._retire(op)
        except OperationFailed as exc:
            self.fail(exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001
            log.exception("restore verification failed")
            self.fail("write_error", f"The device could not read back its storage ({exc}).")

