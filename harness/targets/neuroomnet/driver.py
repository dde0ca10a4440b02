"""NeuroomNet driver: backup and the safe apply of §6 over the modelled HTTP API (targets/neuroomnet.md §2).

Backup: log in, check the server is running, create a restore point and follow its operation (progress from
its log), export it to a local copy, download the local copy's ZIP streamed to a temp file. The ZIP, byte for
byte as the server sends it, is the artifact.

Restore (the artifact was fully validated by ``load_artifact`` before this runs; ``check_restore`` only
reads the server):
upload the ZIP as a local copy -> import it (an operation) -> read its compatibility verdict -> create a
safety restore point of the current state, and by default download it as the "before-restore" backup ->
apply with ``confirm: true`` and the safety id -> follow the operation through the restart (connection
refused and 503 wait, 401 logs in again) -> compare ``current-summary`` with the restore point's digests
(``config_digest`` as is, ``summary_digest`` after a migration). If the apply fails past its point of no
return (maintenance), the safety restore point is applied the same way and both outcomes are reported.

The same code talks to a real server and to the simulator; nothing here uses the simulator's control plane.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BadInput, CheckFailed, DeviceError, LinkError, Refused
from harness.targets.base import Artifact, Backup, DeviceInfo, Driver, RestoreReport
from harness.targets.neuroomnet.artifact import RestorePointZip
from harness.targets.neuroomnet.schema import EXCLUDED
from harness.targets.neuroomnet.versions import MIGRATE, Release, Verdict, restore_verdict
from harness.transports.http import ApiError, BearerAuth, Grant, HttpTransport

log = logging.getLogger(__name__)

API = "/api"
SR = "/api/system-restore"
OP_TIMEOUT_S = 600.0  # one backup-type operation, restart included (realistic: 30-90 s restart, §2.7)
POLL_MIN_S, POLL_MAX_S = 0.03, 0.5
# Codes whose refusal is about the artifact (bad input) or about the pair artifact/server (refused).
BAD_INPUT_CODES = {"not_a_zip", "unsafe_path", "encrypted_zip", "too_many_entries", "layout_invalid",
                   "manifest_missing", "manifest_invalid", "integrity_failed", "not_a_snapshot",
                   "schema_mismatch", "snapshot_not_self_contained", "snapshot_corrupt", "upload_too_large",
                   "unsupported_media_type"}
REFUSED_CODES = {"restore_point_format_unsupported", "restore_point_too_new", "restore_point_too_old",
                 "confirmation_required", "safety_restore_point_stale", "operation_running", "forbidden"}


@dataclass
class ApplyPlan:
    """What ``restore`` will do; built by ``check_restore`` without writing anything to the server."""

    artifact: Artifact
    data: RestorePointZip
    system: dict[str, Any]
    verdict: Verdict
    force: bool = False
    notes: list[str] = field(default_factory=list)
    backups: list[Backup] = field(default_factory=list)


@dataclass
class NeuroomNetRestoreReport(RestoreReport):
    backups: list[Backup] = field(default_factory=list)  # the safety restore point, as a before-restore backup
    restore_point_id: str = ""
    safety_restore_point_id: str = ""
    verdict: str = ""
    migration_path: list[int] = field(default_factory=list)
    restarted: bool = False


def _release_of(system: dict[str, Any]) -> Release:
    """The server's rules from what it reports, so an unmodelled real release is judged by its own numbers."""
    return Release(version=str(system.get("software_version")), config_schema=int(system["config_schema"]),
                   writes_format=max(system.get("restore_point_formats") or [2]),
                   reads_formats=tuple(system.get("restore_point_formats") or (2,)),
                   min_config_schema=int(system.get("min_config_schema", system["config_schema"])))


def _utc(created: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).replace(microsecond=0)


class NeuroomNetDriver(Driver):
    """A NeuroomNet server through its HTTP API (``address``: ``https://server`` or ``http://127.0.0.1:PORT``)."""

    target = "neuroomnet"

    def __init__(self, address: str, *, verify: bool | str | Path = True, keep_safety_copy: bool = True,
                 auto_rollback: bool = True, op_timeout_s: float = OP_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        base = address.rstrip("/")
        if base.endswith(API):
            base = base[: -len(API)]
        self.base = base
        self.verify = os.environ.get("HARNESS_CA_FILE") or verify
        self.keep_safety_copy = keep_safety_copy
        self.auto_rollback = auto_rollback
        self.op_timeout_s = op_timeout_s * max(1.0, self.time_scale)
        self._auth = BearerAuth(login=self._login, margin_s=60.0)
        self._t: HttpTransport | None = None
        self._poll: HttpTransport | None = None
        self.instance_ids: list[str] = []  # every X-Instance-Id seen, in order: a restart shows as a new one

    # -- link -----------------------------------------------------------------------------------------

    def _transport(self) -> HttpTransport:
        if self._t is None:
            self._t = HttpTransport(self.base, verify=self.verify, timeout=30.0, auth=self._auth)
            # Polling during a restart handles refusals and 503s itself (short waits, Retry-After is 5 s).
            self._poll = HttpTransport(self.base, verify=self.verify, timeout=10.0, auth=self._auth, retries=0)
        return self._t

    def _poller(self) -> HttpTransport:
        self._transport()
        assert self._poll is not None
        return self._poll

    def close(self) -> None:
        for t in (self._t, self._poll):
            if t is not None:
                t.close()
        self._t = self._poll = None

    def _login(self, transport: HttpTransport) -> Grant:
        if not self.username or self.password is None:
            raise BadInput("NeuroomNet needs an administrator login: give --username and --password-file "
                           "(or credentials in the bench file)")
        try:
            answer = transport.json("POST", f"{API}/auth/login", auth=False,
                                    json={"username": self.username, "password": self.password})
        except ApiError as exc:
            if exc.status == 401:
                raise Refused(f"{self.base}: login as {self.username!r} refused ({exc.code or 'HTTP 401'}): check "
                              f"the user name and password file") from None
            raise
        role = (answer.get("user") or {}).get("role")
        if role != "administrator":
            raise Refused(f"{self.base}: user {self.username!r} has role {role!r}; the Backups tab requires the "
                          f"Administrator role")
        lifetime = float(answer.get("expires_in") or 8 * 3600)
        return Grant(token=answer["token"], expires_at=time.monotonic() + lifetime)

    def _call(self, method: str, path: str, *, poll: bool = False, **kwargs: Any) -> Any:
        t = self._poller() if poll else self._transport()
        response = t.request(method, path, **kwargs)
        self._saw(response.headers.get("x-instance-id"))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise DeviceError(f"{method} {self.base}{path}: the answer is not JSON") from None

    def _saw(self, instance: str | None) -> None:
        if instance and (not self.instance_ids or self.instance_ids[-1] != instance):
            self.instance_ids.append(instance)

    def _refusal(self, exc: ApiError, what: str) -> Exception:
        """A server refusal as the harness's error family: bad input, refused, or a device error."""
        text = f"{what}: {exc.detail or exc.code or f'HTTP {exc.status}'}"
        if exc.code in BAD_INPUT_CODES:
            return BadInput(f"{text} ({exc.code})")
        if exc.code in REFUSED_CODES:
            return Refused(f"{text} ({exc.code})")
        return exc

    # -- operations -----------------------------------------------------------------------------------

    def _start_op(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer = self._call(method, path, idempotent=False, **kwargs)
        except ApiError as exc:
            raise self._refusal(exc, what) from None
        return answer

    def _wait_op(self, op_id: str, what: str, *, restart: bool = False) -> dict[str, Any]:
        """Follow an operation to its end: progress from its log; refused/503 phases waited out.

        Returns the finished operation (succeeded or not); the caller decides what a failure means.
        """
        deadline = time.monotonic() + self.op_timeout_s
        lines = 0
        delay = POLL_MIN_S
        while True:
            try:
                op = self._call("GET", f"{API}/operations/{op_id}", poll=True)
                text = self._poller().request("GET", f"{API}/operations/{op_id}/log", params={"after": lines})
                new = [ln for ln in text.text.splitlines() if ln.strip()]
                for line in new:
                    lines += 1
                    message = line.split(" ", 2)[-1]
                    step = (op.get("progress") or {}).get("step") or lines
                    steps = (op.get("progress") or {}).get("steps")
                    self.progress(step, steps, f"{what}: {message}")
                    log.debug("%s %s", op_id, message)
            except (LinkError, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status not in (502, 503, 504):
                    if exc.status == 410:  # log_view_once: the log is gone, the state is not
                        lines = 10**9
                        continue
                    raise
                if not restart:
                    raise
                log.info("%s: server unavailable (%s); waiting for it to come back", what, exc)
                self.progress(0, None, f"{what}: server restarting ({exc.code if isinstance(exc, ApiError) else 'down'})")
                self._poller().wait_for_reboot(self._running, deadline_s=max(1.0, deadline - time.monotonic()),
                                               poll_s=0.1, what="the NeuroomNet server")
                continue
            if op["state"] not in ("queued", "running"):
                return op
            if time.monotonic() >= deadline:
                raise DeviceError(f"{what} ({op_id}) did not finish within {self.op_timeout_s:g} s "
                                  f"(last: {(op.get('progress') or {}).get('message')})")
            time.sleep(delay)
            delay = min(POLL_MAX_S, delay * 1.5)

    def _running(self) -> dict[str, Any] | None:
        system = self._call("GET", f"{API}/system", poll=True, auth=False)
        return system if system.get("state") in ("running", "maintenance") else None

    def _op_result(self, op: dict[str, Any], what: str) -> dict[str, Any]:
        if op["state"] == "succeeded":
            return op.get("result") or {}
        error = op.get("error") or {}
        code, message = error.get("code", op["state"]), error.get("message", "")
        text = f"{what} failed on the server: {message or code} ({code})"
        if code in BAD_INPUT_CODES:
            raise BadInput(text)
        if code in REFUSED_CODES:
            raise Refused(text)
        raise DeviceError(text)

    def _dismiss(self, op_id: str) -> None:
        try:
            self._call("DELETE", f"{API}/operations/{op_id}", idempotent=True)
        except (ApiError, LinkError) as exc:  # only the display: never worth failing a backup for
            log.info("could not dismiss %s: %s", op_id, exc)

    # -- the Driver interface -------------------------------------------------------------------------

    def _system(self) -> dict[str, Any]:
        system = self._call("GET", f"{API}/system")
        if system.get("product") != "NeuroomNet":
            raise DeviceError(f"{self.base} is not a NeuroomNet server (product {system.get('product')!r})")
        return system

    def _device(self, system: dict[str, Any]) -> DeviceInfo:
        details = {k: system.get(k) for k in ("server_name", "config_schema", "min_config_schema",
                                              "restore_point_formats", "state", "time_zone", "instance_id")}
        return DeviceInfo(target=self.target, device_id=str(system["server_id"]),
                          firmware=str(system["software_version"]),
                          model=f"NeuroomNet server {system.get('server_name', '')}".strip(), details=details)

    def identify(self) -> DeviceInfo:
        return self._device(self._system())

    def _require_state(self, system: dict[str, Any], *allowed: str) -> None:
        if system.get("state") not in allowed:
            raise DeviceError(f"{self.base}: the server is {system.get('state')!r}, not {' or '.join(allowed)}; "
                              f"try again when it is running")

    def _create_restore_point(self, label: str) -> str:
        answer = self._start_op("POST", f"{SR}/restore-points", "create restore point", json={"label": label})
        op = answer["operation"]
        result = self._op_result(self._wait_op(op["id"], "create restore point"), "create restore point")
        self._dismiss(op["id"])
        return result["restore_point_id"]

    def _download_restore_point(self, rp_id: str, device: DeviceInfo, reason: str) -> Backup:
        answer = self._start_op("POST", f"{SR}/restore-points/{rp_id}/export", "export restore point")
        op = answer["operation"]
        result = self._op_result(self._wait_op(op["id"], "export local copy"), "export local copy")
        self._dismiss(op["id"])
        name = result["local_copy"]
        item = self._call("GET", f"{SR}/restore-points/{rp_id}")
        fd, tmp = tempfile.mkstemp(prefix="neuroomnet-", suffix=".zip")
        os.close(fd)
        try:
            self._transport().download(f"{SR}/local-copies/{name}/download", Path(tmp), progress=self.progress,
                                       message=f"downloading {name}.zip")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("%s: restore point %s downloaded as %s.zip", self.base, rp_id, name)
        return Backup(device=device, created=_utc(item["created"]), path=Path(tmp), reason=reason,
                      source_address=self.base)

    def backup(self, *, reason: str = "manual") -> Backup:
        system = self._system()
        self._require_state(system, "running")
        device = self._device(system)
        rp_id = self._create_restore_point(f"harness {reason}"[:80])
        return self._download_restore_point(rp_id, device, reason)

    def check_restore(self, artifact: Artifact, *, force: bool = False) -> ApplyPlan:
        data = artifact.data
        if artifact.target != self.target or not isinstance(data, RestorePointZip):
            raise BadInput(f"{artifact.path} is not a NeuroomNet restore point")
        system = self._system()
        self._require_state(system, "running", "maintenance")
        notes: list[str] = []
        m = data.manifest
        if m.server_id != system["server_id"]:
            if not force:
                raise Refused(f"backup is of server {m.server_id} but the connected server is {system['server_id']} "
                              f"(server IDs differ); nothing was sent (force applies it anyway; the server keeps its own identity, "
                              f"licence, TLS and bindings)")
            notes.append(f"ID mismatch overridden: restore point of {m.server_id} applied on {system['server_id']}, "
                         f"which keeps its identity")
        verdict = restore_verdict(m.restore_point_id, m.format, m.config_schema, _release_of(system),
                                  version=m.software_version)
        if verdict.refused:
            raise Refused(f"{verdict.message} ({verdict.code})")
        if verdict.verdict == MIGRATE:
            notes.append("configuration migrated: schema " + " -> ".join(map(str, verdict.path)))
        return ApplyPlan(artifact=artifact, data=data, system=system, verdict=verdict, force=force, notes=notes)

    def _upload_and_import(self, plan: ApplyPlan) -> str:
        path = plan.artifact.path
        try:
            response = self._transport().upload(f"{SR}/local-copies", path, content_type="application/zip",
                                                progress=self.progress, message=f"uploading {path.name}")
        except ApiError as exc:
            raise self._refusal(exc, f"the server refused the upload of {path.name}") from None
        self._saw(response.headers.get("x-instance-id"))
        item = response.json()
        if item.get("state") != "valid":
            problem = item.get("problem") or {}
            raise BadInput(f"the server lists the uploaded local copy as invalid: {problem.get('message')}")
        answer = self._start_op("POST", f"{SR}/local-copies/{item['name']}/import", "import local copy")
        op = answer["operation"]
        result = self._op_result(self._wait_op(op["id"], "import local copy"), "import local copy")
        self._dismiss(op["id"])
        if result.get("already_present"):
            plan.notes.append(f"restore point {result['restore_point_id']} was already on the server")
        return result["restore_point_id"]

    def _apply(self, rp_id: str, safety: str | None, report: NeuroomNetRestoreReport) -> dict[str, Any]:
        """Apply with confirmation and follow it through the restart; the finished operation."""
        body: dict[str, Any] = {"confirm": True}
        if safety:
            body["safety_restore_point_id"] = safety
        before = self.instance_ids[-1] if self.instance_ids else None
        answer = self._start_op("POST", f"{SR}/restore-points/{rp_id}/apply", f"apply restore point {rp_id}",
                                json=body)
        for warning in answer.get("warnings") or []:
            report.notes.append(f"server warning: {warning}")
        try:
            op = self._wait_op(answer["operation"]["id"], f"apply {rp_id}", restart=True)
        except Refused as exc:
            # Only the login after the restart can be refused here: the sessions ended with the restart and
            # the restored users (§3.3, with their password hashes) no longer know this account (NN-F14).
            # The configuration was replaced, so this is not a refusal "before anything was touched" (exit
            # 2) but §6 step 9's login_failed_after_apply.
            raise DeviceError(f"Apply of restore point {rp_id} went ahead, but user {self.username} cannot log in "
                              f"with the restored configuration. Provide credentials that are valid in restore "
                              f"point {rp_id} (login_failed_after_apply; {exc})") from None
        if before and self.instance_ids and self.instance_ids[-1] != before:
            report.restarted = True
        return op

    def restore(self, plan: ApplyPlan) -> NeuroomNetRestoreReport:
        m = plan.data.manifest
        modules = [str(mod.get("name")) for mod in m.modules] or ["Setup", "Schedules", "Shows", "Users", "System"]
        report = NeuroomNetRestoreReport(restored=modules + (["assets"] if len(plan.data.files) > 1 else []),
                                         not_carried=list(EXCLUDED), notes=list(plan.notes))
        report.backups = plan.backups
        system = self._system()
        if system["server_id"] != plan.system["server_id"]:
            raise Refused(f"the server changed since the restore was checked (now {system['server_id']}); "
                          f"nothing was sent: check the restore again")
        rp_id = self._upload_and_import(plan)
        report.restore_point_id = rp_id
        item = self._call("GET", f"{SR}/restore-points/{rp_id}")
        compat = item.get("compatibility") or {}
        if compat.get("verdict") == "refuse":
            raise Refused(f"{compat.get('message')} ({compat.get('code')})")
        report.verdict = str(compat.get("verdict"))
        report.migration_path = list(compat.get("path") or [])
        # N-F8: a restore point of the current state first; it is what a failed apply rolls back to.
        safety = self._create_restore_point(f"safety before applying {rp_id}"[:80])
        report.safety_restore_point_id = safety
        report.notes.append(f"safety restore point {safety} created before the apply")
        if self.keep_safety_copy:
            plan.backups.append(self._download_restore_point(safety, self._device(system), "before-restore"))
        op = self._apply(rp_id, safety, report)
        if op["state"] != "succeeded":
            self._after_failed_apply(op, rp_id, safety, report)
        self._verify(item, report)
        if report.restarted:
            report.notes.append("the server restarted during the apply (new instance id)")
        log.info("%s: restore point %s applied (%s)", self.base, rp_id, report.verdict)
        return report

    def _after_failed_apply(self, op: dict[str, Any], rp_id: str, safety: str,
                            report: NeuroomNetRestoreReport) -> None:
        error = op.get("error") or {}
        code = error.get("code", op["state"])
        system = self._call("GET", f"{API}/system", poll=True, auth=False)
        if not (self.auto_rollback and (system.get("state") == "maintenance" or code == "apply_incomplete")):
            self._op_result(op, f"apply {rp_id}")  # raises with the server's reason
        log.warning("%s: apply of %s failed (%s); applying the safety restore point %s", self.base, rp_id, code,
                    safety)
        rollback = self._apply(safety, None, report)
        outcome = "succeeded" if rollback["state"] == "succeeded" else f"failed too ({rollback.get('error')})"
        raise DeviceError(f"apply of {rp_id} failed on the server ({code}: {error.get('message', '')}); the safety "
                          f"restore point {safety} was applied automatically and {outcome}")

    def _verify(self, item: dict[str, Any], report: NeuroomNetRestoreReport) -> None:
        try:
            summary = self._call("GET", f"{SR}/current-summary")
        except Refused as exc:
            raise DeviceError(f"Apply finished, but user {self.username} cannot log in with the restored "
                              f"configuration. Provide credentials that are valid in restore point "
                              f"{item['id']} (login_failed_after_apply; {exc})") from None
        keys = ["summary_digest"] if report.verdict == MIGRATE else ["config_digest", "summary_digest"]
        wrong = [k for k in keys if summary.get(k) != item.get(k)]
        if wrong:
            raise CheckFailed(f"after the apply the server's {' and '.join(wrong)} differ from restore point "
                              f"{item['id']}: the configuration was not fully restored")
        report.notes.append(f"read back: {' and '.join(keys)} equal the restore point's")

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Edit configuration cells (``config.<table>.<key>.<column>``) through the administrator API."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for name, value in values.items():
            parts = name.split(".")
            if len(parts) < 4 or parts[0] != "config":
                raise BadInput(f"{name}: settings are named config.<table>.<key>.<column>")
            table, column, key = parts[1], parts[-1], ".".join(parts[2:-1])
            if column == "password_hash":
                raise BadInput(f"{name}: password hashes cannot be written")
            rows.setdefault((table, key), {})[column] = value
        for (table, key), cells in rows.items():
            try:
                self._call("PATCH", f"{API}/config/{table}/{key}", json=cells, idempotent=True)
            except ApiError as exc:
                raise self._refusal(exc, f"setting {table} {key}") from None
