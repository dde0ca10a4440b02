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
import threading
import time
from pathlib import Path
from typing import Any

from construct import ConstructError

from harness.errors import BadInput
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.versions import VERSIONS, get_version
from simulators.bactobox import disk as D
from simulators.bactobox import profiles as P
from simulators.bactobox.backup import BackupMixin
from simulators.bactobox.operations import ApiRefusal, Operation, Pacer, iso
from simulators.bactobox.restore import RestoreMixin
from simulators.core.clock import Clock

log = logging.getLogger(__name__)

DEFAULT_DEVICE_ID = "bb2241039"
DEFAULT_VERSION = "2.6.3"
SIM_VERSIONS = ("1.8.4", "2.2.0", "2.6.3", "3.1.0")  # versions the simulator runs (all of §5)
MODEL = "BactoBox"
FLASH_NAME = "flash.json"
DISK_NAME = "disk.img"
PROGRAM_TITLES = {"measure": "Measure", "clean": "Clean", "empty": "Empty"}


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


class BactoBox(BackupMixin, RestoreMixin):
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
            old = get_version(values.get("sw_version", "") or self.flash["last_software"] or "")
            if get_version(version).layout != old.layout:
                # The 1.8.4 -> 2.x updater also converts the layout and the store (§5 notes): not modelled.
                raise BadInput(f"the simulator does not model the update from {old.name} (layout {old.layout}) "
                               f"to {version} (layout {get_version(version).layout}); start a new unit")
            target = "system1" if values.get("active_slot") == "system0" else "system0"
            D.write_slot(self.disk, D.region(regions, target), version)
            values.update({"active_slot": target, "sw_version": version, f"sw_version_{target}": version,
                           "boot_count": "0"})
            info = get_version(version)
            if info.env_format != int(values.get("env_format", "1")):
                # 2.2.0 <-> 2.6.3 or 3.1.0 changes the environment format: the updater rewrites the whole area.
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
            layout = D.layout_of(self.regions) if self.regions else None
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
        return D.DataStore.of(self.disk, self.regions)

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
