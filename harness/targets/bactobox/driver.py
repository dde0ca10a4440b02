"""BactoBox driver: backup to a GMI file and restore from one, over the unit's HTTP API (bactobox.md §2, §6).

The same code talks to the simulator and to a real unit; only the base URL differs. Everything it does
that cannot be undone comes after local checks (§6 driver-side preconditions):

- backup: the unit is idle and there is room for the GMI before ``POST /backups`` (a started backup cannot
  be cancelled); the GMI is streamed to ``<name>.part`` with the HTTP transport (constant memory, fsynced)
  and every part is hashed inline from the transport's chunks as they arrive (one pass, no re-read); the file
  is handed over, with its whole-file sha256 for the store, only once its structure and every part's sha256
  match the manifest;
- restore: the whole GMI is verified (structure, every part's sha256, device ID, version rule) before the
  preflight; then the file is uploaded as it is, streamed; the unit's read-back of every part must give the
  manifest's sha256; then the unit is restarted and the driver waits for the new boot and checks that the
  unit now runs what the GMI holds (software, active slot, both slots; optionally a digest of every part).

The device's own log lines reach the caller as progress messages, so a terminal shows them under the bar.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.compare import flatten
from harness.errors import BadInput, CheckFailed, DeviceError, LinkError, Refused
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.artifact import created_at, forget, gmi_fields, remember, verified_gmi
from harness.targets.bactobox.gmi import GmiFollower, GmiInfo, inspect_gmi
from harness.targets.bactobox.versions import restore_verdict
from harness.targets.base import Artifact, Backup, DeviceInfo, Driver, RestoreReport
from harness.transports.http import ApiError, HttpTransport

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MIB = 1 << 20
SPACE_MARGIN = 64 * MIB  # §6: room for the estimate plus this
SPACE_WARN = 8 << 30  # F7: Access asks for 8 GiB free
POLL_S = 0.1
POLL_MIN_S = 0.02  # operation polling: quick while things change, backing off to POLL_MAX_S while not
POLL_MAX_S = 1.0
STALL_S = 300.0  # an operation whose state does not change for this long is stuck (stretched by time_scale)
RESTART_DEADLINE_S = 600.0  # §6: wait for the restart, 10 min by default
STARTING_S = 120.0  # how long a unit may answer 503 starting before a call gives up
WORKDIR_ENV = "HARNESS_TMPDIR"  # where GMIs are streamed before the store takes them over

# Device error codes that mean "the request is refused as it is" (exit 2) rather than a device fault (exit 3).
REFUSAL_CODES = frozenset({
    "program_running", "operation_in_progress", "restart_required", "recovery_mode", "liquid_in_flow_paths",
    "confirmation_required", "manifest_invalid", "device_mismatch", "gmi_format_too_new",
    "gmi_format_unsupported", "disk_too_small", "clean_required", "not_cancellable"})
BAD_INPUT_CODES = frozenset({"not_a_gmi", "manifest_mismatch", "size_mismatch", "unsupported_media_type"})


@dataclass
class RestorePlan:
    """What ``restore`` will do; made by ``check_restore`` without writing anything to the unit."""

    artifact: Artifact
    gmi: GmiInfo
    unit: dict[str, Any]
    verdict: str
    notes: list[str] = field(default_factory=list)
    backups: list[Backup] = field(default_factory=list)


class BactoboxDriver(Driver):
    """SBT BactoBox over HTTP (the Access backup/restore surface, modelled in bactobox.md §2)."""

    target = "bactobox"
    # The unit has already read every part back before it reported success; a digest after the restart
    # re-reads the whole disk once more (minutes on a real unit). Off by default; a test switches it on.
    digest_after_restart = False

    def __init__(self, address: str, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        base = address.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        self.base_url = base
        headers = {"Authorization": f"Bearer {self.password}"} if self.password else {}
        scale = max(1.0, self.time_scale)
        self.http = HttpTransport(base + API_PREFIX, timeout=30.0 * scale, headers=headers, retries=3)
        # The GMI can be fetched once: a retried GET would only meet 410 artifact_consumed.
        self.http_once = HttpTransport(base + API_PREFIX, timeout=60.0 * scale, headers=headers, retries=0)
        self.workdir = Path(os.environ.get(WORKDIR_ENV) or tempfile.gettempdir())
        self._done = 0  # the last progress figures, repeated with each relayed log line
        self._total: int | None = None

    def close(self) -> None:
        self.http.close()
        self.http_once.close()

    # --- API helpers ------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call. A 503 ``starting`` did nothing on the unit, so any method is sent again once the
        unit has finished starting (bounded); other errors become one-line harness errors."""
        end = time.monotonic() + self._timeout(STARTING_S)
        while True:
            try:
                return self.http.json(method, path, **kwargs)
            except ApiError as exc:
                code, _ = _error_of(exc)
                if exc.status == 503 and code == "starting" and time.monotonic() < end:
                    time.sleep(POLL_S)
                    continue
                raise self._translate(exc) from None

    @staticmethod
    def _translate(exc: ApiError) -> Exception:
        """The unit's error, one line: its own message, with the class of the exit code it deserves."""
        code, detail = _error_of(exc)
        message = f"{code}: {detail}" if code and detail else str(exc)
        if code in REFUSAL_CODES:
            return Refused(message)
        if code in BAD_INPUT_CODES:
            return BadInput(message)
        return DeviceError(f"HTTP {exc.status} {message}") if code else exc

    def device(self) -> dict[str, Any]:
        return self._call("GET", "/device")

    def _timeout(self, seconds: float) -> float:
        return seconds * max(1.0, self.time_scale)

    # --- identity ---------------------------------------------------------------------------------------

    def identify(self) -> DeviceInfo:
        return self._info(self.device())

    def _info(self, dev: dict[str, Any]) -> DeviceInfo:
        details = {k: dev.get(k) for k in ("mode", "boot", "storage", "gmi", "program")}
        return DeviceInfo(target=self.target, device_id=dev["device_id"],
                          firmware=dev.get("software_version") or "recovery", model=dev.get("model", "BactoBox"),
                          details=details)

    # --- programs and settings (the unit's own functions, used by target-specific steps) ----------------

    def start_program(self, name: str, **params: Any) -> dict[str, Any]:
        return self._call("POST", f"/programs/{name}", json=params)

    def wait_idle(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + self._timeout(timeout)
        while self._call("GET", "/programs")["name"] != "idle":
            if time.monotonic() > end:
                raise DeviceError(f"{self.address}: the program did not end within {timeout:g} s")
            time.sleep(POLL_S)

    def measurements(self, after_id: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        return self._call("GET", "/measurements", params={"after_id": after_id, "limit": limit})["measurements"]

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Write settings (``settings.<key>`` fields, or bare keys) through ``PUT /settings``."""
        changes = {k.removeprefix("settings."): v for k, v in values.items()}
        self._call("PUT", "/settings", json=changes, idempotent=True)

    # --- operations -------------------------------------------------------------------------------------

    def _follow(self, op_id: str, until: frozenset[str], *, lines: list[int], what: str) -> dict[str, Any]:
        """Poll an operation until its state is in ``until`` (or final), relaying new log lines."""
        last_change = time.monotonic()
        last_seen: Any = None
        interval = POLL_MIN_S
        while True:
            op = self._call("GET", f"/operations/{op_id}")
            self._relay_log(op_id, op, lines)
            snapshot = (op["state"], op["progress"].get("percent"), op["log_lines"])
            if snapshot != last_seen:
                last_seen, last_change = snapshot, time.monotonic()
                interval = POLL_MIN_S
            else:  # nothing new: ask less often (a real backup runs for half an hour)
                interval = min(POLL_MAX_S, interval * 1.5)
            progress = op["progress"]
            self._report(int(progress.get("done_bytes") or 0), progress.get("total_bytes"))
            if op["state"] in until or op["state"] in ("succeeded", "failed", "expired", "withdrawn"):
                return op
            if time.monotonic() - last_change > self._timeout(STALL_S):
                raise DeviceError(f"{self.address}: the {what} ({op_id}) has not moved for "
                                  f"{self._timeout(STALL_S):g} s (state {op['state']})")
            time.sleep(interval)

    def _relay_log(self, op_id: str, op: dict[str, Any], lines: list[int]) -> None:
        if op.get("log_lines", 0) <= lines[0]:
            return
        try:
            text = self.http.request("GET", f"/operations/{op_id}/log", params={"after": lines[0]}).text
        except (ApiError, LinkError) as exc:
            log.debug("log of %s not read: %s", op_id, exc)
            return
        for line in text.splitlines():
            lines[0] += 1
            message = line.split(" ", 2)[-1] if line.count(" ") >= 2 else line
            log.info("%s: %s", self.address, message)
            self.progress(self._done, self._total, message)

    def _report(self, done: int, total: int | None, message: str = "") -> None:
        self._done, self._total = done, total
        self.progress(done, total, message)

    # --- backup -----------------------------------------------------------------------------------------

    def backup(self, *, reason: str = "manual") -> Backup:
        dev = self.device()
        unit = self._info(dev)
        self._require_normal(dev, "back up")
        if dev["program"]["name"] != "idle":
            raise Refused(f"program_running: a program is running ({dev['program']['name']}); wait for it to "
                          f"complete before you start the backup")
        estimate = self._call("GET", "/backup/estimate")
        self.workdir.mkdir(parents=True, exist_ok=True)
        need = int(estimate["estimated_size_bytes"]) + SPACE_MARGIN
        free = shutil.disk_usage(self.workdir).free
        if free < need:
            raise Refused(f"local_space_insufficient: the backup needs {need // MIB} MiB in {self.workdir}, "
                          f"{free // MIB} MiB are free; nothing was started on the unit")
        if free < SPACE_WARN:
            log.warning("only %d MiB free in %s; Access asks for 8 GiB", free // MIB, self.workdir)
        started = self._call("POST", "/backups", json={}, idempotent=False)
        op_id = started["operation"]["id"]
        name = started["file_name"]
        if not _plain_name(name):
            raise DeviceError(f"{self.address}: the unit names its GMI {name!r}, not a plain file name")
        lines = [0]
        self._report(0, None, f"backup {op_id} of {unit.device_id} started: {name}")
        op = self._follow(op_id, frozenset({"ready"}), lines=lines, what="backup")
        if op["state"] != "ready":
            raise self._op_error(op, "backup")
        # A private name beside where the store will put it (same filesystem: the store links, not copies).
        path = self.workdir / f".{name}.{secrets.token_hex(4)}"
        # The parts are hashed from the transport's chunks as it writes them (on its worker thread; no second read).
        follower = GmiFollower(path.with_name(path.name + ".part"), path, inline=True)
        try:
            try:
                download = self.http_once.download(f"/operations/{op_id}/artifact", path, progress=self._report,
                                                   message=f"downloading {name}", on_chunk=follower.feed,
                                                   on_attempt=follower.restart)
            except (LinkError, ApiError) as exc:
                follower.abandon()
                # Ask the unit what happened: its operation says why (transfer_interrupted, source_changed).
                final = self._settle(op_id, lines)
                if final is not None and final.get("error"):
                    raise DeviceError(f"{self.address}: backup failed: device reported "
                                      f"{final['error']['code']}: {final['error']['message']} ({exc})") from None
                raise
            follower.finish(download.size)
            op = self._follow(op_id, frozenset(), lines=lines, what="backup")
            if op["state"] != "succeeded":
                raise self._op_error(op, "backup")
            info = self._check_download(path, download.headers, unit.device_id, follower)
            self._report(download.size, download.size, f"{name}: every part matches the manifest")
        except BaseException:
            follower.abandon()
            for leftover in (path, path.with_name(path.name + ".part")):
                leftover.unlink(missing_ok=True)
            raise
        return Backup(device=unit, created=created_at(info.manifest), path=path, reason=reason,
                      source_address=self.address, sha256=download.sha256, size=download.size)

    def _check_download(self, path: Path, headers: dict[str, str], device_id: str,
                        follower: GmiFollower) -> GmiInfo:
        """Check the GMI whole before anyone keeps it (BB-F05: a flipped bit is caught here): the structure
        read back from the file, and every part's sha256 as the follower computed it from the bytes as they were
        written (a full second pass from the file if the stream could not be followed)."""
        forget(path)
        try:
            info = inspect_gmi(path)
            try:
                followed = follower.result()
            except BadInput as exc:
                if "local_gmi_corrupt" in str(exc):
                    raise
                log.info("%s; hashing the GMI again", exc)
                info = verified_gmi(path, progress=self._report)
                followed = info.manifest_sha256
            if followed != info.manifest_sha256:
                raise BadInput(f"{path.name}: the streamed manifest differs from the one in the file")
        except BadInput as exc:
            raise DeviceError(f"{self.address}: the GMI received from the unit is damaged ({exc}); it was not "
                              f"kept: start a new backup") from None
        announced = headers.get("x-gmi-manifest-sha256")
        if announced and announced != info.manifest_sha256:
            raise DeviceError(f"{self.address}: the GMI's manifest does not match the X-GMI-Manifest-SHA256 the "
                              f"unit sent; it was not kept")
        if info.manifest.device_id != device_id:
            raise DeviceError(f"{self.address}: the unit is {device_id} but its GMI says "
                              f"{info.manifest.device_id}; it was not kept")
        remember(info)
        return info

    def _settle(self, op_id: str, lines: list[int]) -> dict[str, Any] | None:
        """After a broken transfer: the operation's final state, if the unit still answers."""
        with contextlib.suppress(DeviceError, Refused, BadInput):
            return self._follow(op_id, frozenset(), lines=lines, what="operation")
        return None

    def _op_error(self, op: dict[str, Any], what: str) -> DeviceError:
        error = op.get("error") or {}
        return DeviceError(f"{self.address}: {what} {op['id']} ended {op['state']}: "
                           f"{error.get('code', 'no error code')}: {error.get('message', '')}".rstrip(": "))

    @staticmethod
    def _require_normal(dev: dict[str, Any], doing: str) -> None:
        mode = dev.get("mode")
        if mode == "restart_required":
            raise Refused(f"restart_required: a restore has completed on {dev['device_id']}; restart the BactoBox "
                          f"before you {doing} it")
        if mode == "recovery":
            raise Refused(f"recovery_mode: {dev['device_id']} is in recovery mode after an incomplete restore; "
                          f"restore a GMI file to continue")
        if mode == "busy":
            raise Refused(f"operation_in_progress: {dev['device_id']} is busy with operation "
                          f"{dev.get('operation')}; wait for it to complete")
        if mode != "normal":
            raise DeviceError(f"{dev['device_id']} is in mode {mode!r}")

    # --- restore ----------------------------------------------------------------------------------------

    def check_restore(self, artifact: Artifact, *, force: bool = False) -> RestorePlan:
        """Check the GMI against the connected unit (nothing is written): ID, version rule, disk, state."""
        info = artifact.data
        if artifact.target != self.target or not isinstance(info, GmiInfo):
            raise BadInput(f"{artifact.path} is not a BactoBox GMI")
        m = info.manifest
        dev = self.device()
        if dev.get("mode") != "recovery":
            self._require_normal(dev, "restore")
        if dev["device_id"] != m.device_id:
            hint = " (--force cannot override this: the BactoBox refuses a GMI made on another unit)" if force \
                else ""
            raise Refused(f"device ID mismatch: {artifact.path.name} was made on {m.device_id}; a GMI file can "
                          f"only be restored on the BactoBox it was made on (this is {dev['device_id']}); "
                          f"nothing was sent{hint}")
        reads = tuple(dev.get("gmi", {}).get("reads_formats") or ())
        software = dev.get("software_version") or "recovery"
        verdict = restore_verdict(m.format, m.software_version, reads, software)
        disk = int(dev.get("storage", {}).get("disk_size_bytes") or 0)
        if m.disk_size_bytes > disk:
            raise Refused(f"disk_too_small: the GMI holds a {m.disk_size_bytes // MIB} MiB disk, but "
                          f"{dev['device_id']} has {disk // MIB} MiB of storage")
        program = (dev.get("program") or {}).get("name", "idle")
        if program != "idle":
            raise Refused(f"program_running: a program is running ({program}); wait for it to complete "
                          f"before you start the restore")
        if dev.get("liquid_in_flow_paths"):
            raise Refused("liquid_in_flow_paths: liquid is in the flow paths; run the Empty program before you "
                          "restore")
        notes = [f"software {software} -> {m.software_version} (time travel: software and data roll back to "
                 f"{m.created})"]
        if verdict != "as_is":
            notes.append(f"verdict {verdict}: the unit converts GMI format {m.format} while restoring")
        return RestorePlan(artifact=artifact, gmi=info, unit=dev, verdict=verdict, notes=notes)

    def restore(self, plan: RestorePlan) -> RestoreReport:
        info, m = plan.gmi, plan.gmi.manifest
        verified_gmi(info.path)  # unchanged since check_restore (cheap when it is; a full check if not)
        body = {"confirm": True, "file_name": info.path.name, "file_size_bytes": info.size,
                "manifest_sha256": info.manifest_sha256, "manifest": json.loads(info.manifest_bytes)}
        pre = self._call("POST", "/restores", json=body, idempotent=False)
        op_id = pre["operation"]["id"]
        if pre.get("verdict") and pre["verdict"] != plan.verdict:
            plan.notes.append(f"the unit's verdict is {pre['verdict']}")
        lines = [0]
        for change in pre.get("changes", []):
            self._report(0, info.size, change)
        try:
            response = self.http_once.upload(pre["upload_url"].removeprefix(API_PREFIX), info.path,
                                             content_type=S.MEDIA_TYPE, method="PUT", progress=self._report,
                                             message=f"uploading {info.path.name}")
        except ApiError as exc:
            raise self._translate(exc) from None
        except LinkError as exc:
            final = None
            with contextlib.suppress(DeviceError, Refused, BadInput):
                final = self._call("GET", f"/operations/{op_id}")
            reason = f"{final['error']['code']}: {final['error']['message']}" if final and final.get("error") \
                else str(exc)
            raise DeviceError(f"{self.address}: the restore upload broke ({reason}); if the unit is now in "
                              f"recovery mode, restore the same GMI again") from None
        if response.status_code != 202:
            raise DeviceError(f"{self.address}: the upload answered HTTP {response.status_code}, not 202")
        op = self._follow(op_id, frozenset(), lines=lines, what="restore")
        if op["state"] != "succeeded":
            raise self._op_error(op, "restore")
        self._check_read_back(m, op.get("result") or {})
        after = self._restart(plan.unit.get("boot", {}).get("boot_id"))
        self._verify_after_restart(m, after)
        # A GMI is the whole unit: every field of its field view is now on the unit (read back above).
        report = RestoreReport(
            restored=sorted(k for k, _ in flatten(gmi_fields(info)) if k != "created"),
            not_carried=["device identity and factory data (SPI flash)", "real-time clock",
                         "disk space after the last partition"],
            notes=plan.notes + [f"the unit now runs {after.get('software_version')} from "
                                f"{after['boot']['active_slot']}"])
        return report

    def _restart(self, old_boot: str | None) -> dict[str, Any]:
        """``POST /system/restart`` and wait for a new boot in mode normal (§6 after a restore)."""
        answer = self._call("POST", "/system/restart", json={}, idempotent=False)
        old = answer.get("boot_id") or old_boot
        self._report(0, None, f"restarting the BactoBox (expected downtime {answer.get('expected_downtime_s')} s)")

        def probe() -> dict[str, Any] | None:
            response = self.http.request("GET", "/device", idempotent=False)
            dev = response.json()
            if response.headers.get("x-boot-id") == old or dev.get("mode") not in ("normal", "recovery"):
                return None
            return dev

        try:
            dev = self.http.wait_for_reboot(probe, deadline_s=self._timeout(RESTART_DEADLINE_S),
                                            what="the BactoBox")
        except ApiError as exc:
            raise self._translate(exc) from None
        self._report(0, None, f"the BactoBox is back (boot {dev['boot']['boot_id']}, mode {dev['mode']})")
        return dev

    def _check_read_back(self, m: S.Manifest, result: dict[str, Any]) -> None:
        """The unit read every written part back (its ``verifying`` phase): each sha256 must be the GMI's."""
        got = {p.get("name"): p.get("sha256") for p in result.get("parts", [])}
        wrong = [p.name for p in m.parts if got.get(p.name) != p.sha256]
        if wrong:
            raise CheckFailed(f"{self.address}: restore verification failed: the unit read back "
                              f"{', '.join(wrong)} with a sha256 other than the GMI's")

    def _verify_after_restart(self, m: S.Manifest, dev: dict[str, Any]) -> None:
        """The unit runs what the GMI holds: software, active slot, both slots; with ``digest_after_restart``
        also every part but boot, hashed once more by the unit (``POST /storage/digest``)."""
        problems = []
        boot = dev.get("boot", {})
        want_slot = m.boot.get("active_slot")
        if dev.get("mode") != "normal":
            problems.append(f"the unit came up in mode {dev.get('mode')}")
        if want_slot is None:  # format 1 names no slot (§3.3): its boot environment is inside disk.img
            want_slot = boot.get("active_slot")
        want_layout = m.disk.get("layout")
        got_layout = dev.get("storage", {}).get("layout")
        if want_layout and got_layout and got_layout != want_layout:
            problems.append(f"the unit's disk has layout {got_layout}; the GMI's has {want_layout}")
        if boot.get("active_slot") != want_slot or dev.get("software_version") != m.software_version:
            slot = boot.get("active_slot")
            problems.append(f"Device booted {'fallback slot ' if slot != want_slot else ''}{slot} "
                            f"({dev.get('software_version')}); expected {want_slot} ({m.software_version})")
        if boot.get("slots") and m.boot.get("slots") and boot["slots"] != m.boot["slots"]:
            problems.append(f"slots are {boot['slots']}, the GMI has {m.boot['slots']}")
        if not problems and self.digest_after_restart:
            digest = self._digest()
            for part in m.parts:
                if part.name in ("boot", "disk"):
                    # Every boot rewrites its environment: compared by the slots above (format 1's one part,
                    # the whole disk, holds the boot partition too).
                    continue
                got = digest.get(part.name)
                if got != part.sha256:
                    problems.append(f"{part.name} sha256 {str(got)[:12]}… differs from the GMI's {part.sha256[:12]}…")
        if problems:
            raise CheckFailed(f"{self.address}: restore verification failed: {'; '.join(problems)}")

    def _digest(self) -> dict[str, str]:
        started = self._call("POST", "/storage/digest", json={}, idempotent=False)
        op = self._follow(started["operation"]["id"], frozenset(), lines=[10**9], what="digest")
        if op["state"] != "succeeded":
            raise self._op_error(op, "digest")
        return {p["name"]: p["sha256"] for p in op["result"]["parts"]}


def _error_of(exc: ApiError) -> tuple[str, str]:
    """(code, message) of an error answer: the BactoBox nests them, ``{"error": {"code", "message"}}``."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code", "")), str(body["error"].get("message", ""))
    return exc.code, exc.detail


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and "\0" not in name
