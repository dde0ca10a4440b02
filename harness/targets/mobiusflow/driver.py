"""MobiusFlow driver: the Engine API over HTTP(S), for a simulator and a real node alike (spec §2, §6).

- Generation: ``GET /api/v1/mobius/node/info`` exists on 1.x (401 without a token) and not on 3000+ (404).
- Auth: a token manager (harness.transports.http.BearerAuth) logs in, refreshes 60 s before expiry (1.x
  ``/auth/refresh``, v3 ``/auth/validate-session``), and on a 401 refreshes once, logs in again once, then fails.
- Hub ID (v3 paths carry it): from ``GET /api/v3/node/info/000001``, the documented default; a node with another
  ID answers 404 ``hub_not_found`` naming its own ID in ``details.hubId``.
- Backup: the one-request form, streamed to disk with sha256 checked against ``X-Backup-Sha256``; the server's
  file name is kept (``backup_<date>_<time>.zip``: the harness always names its backups ``backup``).
- Restore: check (no writes) -> safety backup of the node (M-F16) -> upload -> backup information (refused if
  not restorable) -> restore with ``confirm: true`` -> wait out the reboot (new ``bootId``, state running) ->
  log in again -> job ``succeeded`` -> digests, hub ID and sampled persisted values verified.

TLS: ``verify`` is True by default (``SSL_CERT_FILE`` names a CA/pinned certificate), or give ``verify=<pem>``;
``HARNESS_MOBIUSFLOW_CERT`` pins a certificate for drivers built by the CLI (the simulator's JSON line ``cert``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.errors import BadInput, CheckFailed, DeviceError, LinkError, Refused
from harness.targets.base import Artifact, Backup, DeviceInfo, Driver, ProgressFn, RestoreReport, no_progress
from harness.targets.mobiusflow.archive import ArchiveError, BackupArchive, read_backup
from harness.targets.mobiusflow.schema import EXCLUDED, Content, is_hub_id
from harness.targets.mobiusflow.versions import VERSIONS, Verdict, Version, verdict
from harness.transports.http import ApiError, BearerAuth, Grant, HttpTransport

log = logging.getLogger(__name__)

V1 = "/api/v1/mobius/node"
V3 = "/api/v3"
DEFAULT_HUB_PROBE = "000001"
CERT_ENV = "HARNESS_MOBIUSFLOW_CERT"
BACKUP_NAME = "backup"
REBOOT_DEADLINE_S = 600.0  # spec §6.3: 10 min by default; a realistic reboot takes 30-90 s
JOB_DEADLINE_S = 600.0
SAMPLE_VALUES = 8
# Node codes that mean "this file is bad" (BadInput) or "this restore is not allowed" (Refused).
BAD_INPUT_CODES = {"not_a_zip", "manifest_missing", "manifest_invalid", "not_a_mobiusflow_backup",
                   "integrity_failed", "values_corrupt", "unsafe_path", "encrypted_zip", "zip_bomb_suspected",
                   "upload_too_large", "unsupported_media_type"}
REFUSAL_CODES = {"backup_too_new", "backup_generation_unsupported", "profile_template_missing"}


@dataclass
class RestorePlan:
    artifact: Artifact
    archive: BackupArchive
    node: dict[str, Any]
    verdict: Verdict


class MobiusFlowRestoreReport(RestoreReport):
    backups: list[Backup]


class MobiusFlowDriver(Driver):
    target = "mobiusflow"

    def __init__(self, address: str, *, username: str | None = None, password: str | None = None,
                 progress: ProgressFn = no_progress, time_scale: float = 1.0,
                 verify: bool | str | Path | None = None, reboot_deadline_s: float = REBOOT_DEADLINE_S) -> None:
        super().__init__(address, username=username, password=password, progress=progress, time_scale=time_scale)
        if verify is None:
            verify = os.environ.get(CERT_ENV) or True
        self.reboot_deadline_s = reboot_deadline_s
        self.auth = BearerAuth(self._login, self._refresh, margin_s=60.0)
        # Reads of a large v3 node wait for the flush before the headers: >= 120 s read timeout (§2.4).
        self.http = HttpTransport(address, verify=verify, auth=self.auth,
                                  timeout=httpx.Timeout(30.0 * max(1.0, time_scale), connect=10.0,
                                                        read=max(120.0, 120.0 * time_scale)))
        self.generation: int | None = None
        self.hub: str | None = None

    def close(self) -> None:
        self.http.close()

    # -- discovery and auth --------------------------------------------------------------------------------

    def _gen(self) -> int:
        if self.generation is None:
            try:
                response = self.http.request("GET", f"{V1}/info", auth=False, expect=(200, 401, 404))
            except ApiError as exc:
                raise DeviceError(f"{self.address} does not answer like a MobiusFlow node ({exc})") from None
            self.generation = 1 if response.status_code in (200, 401) else 3
        return self.generation

    def _credentials(self) -> tuple[str, str]:
        if not self.username or self.password is None:
            raise BadInput("mobiusflow needs credentials: give --username and --password-file "
                           "(or credentials in the bench file)")
        return self.username, self.password

    def _login(self, http: HttpTransport) -> Grant:
        user, password = self._credentials()
        path = "/api/v1/auth/login" if self._gen() == 1 else f"{V3}/auth/login"
        try:
            doc = http.json("POST", path, json={"username": user, "password": password}, auth=False)
        except ApiError as exc:
            if exc.code == "invalid_credentials":
                raise BadInput(f"{self.address}: login refused for user {user!r}: {exc.detail}") from None
            raise
        token = doc.get("accessToken") if self._gen() == 1 else doc.get("sessionToken")
        if not isinstance(token, str) or not token:
            raise DeviceError(f"{self.address}: the login answer carries no token")
        return Grant(token, time.monotonic() + float(doc.get("expiresIn", 600)), doc.get("refreshToken"))

    def _refresh(self, http: HttpTransport, grant: Grant) -> Grant:
        if self._gen() == 1:
            if not grant.refresh_token:
                return self._login(http)
            doc = http.json("POST", "/api/v1/auth/refresh", json={"refreshToken": grant.refresh_token}, auth=False)
            return Grant(doc["accessToken"], time.monotonic() + float(doc.get("expiresIn", 600)),
                         doc.get("refreshToken"))
        doc = http.json("POST", f"{V3}/auth/validate-session", json={"sessionToken": grant.token}, auth=False)
        return Grant(doc["sessionToken"], time.monotonic() + float(doc.get("expiresIn", 600)))

    def _hub(self) -> str:
        if self.hub is None:
            if self._gen() == 1:
                self.hub = self._info()["hubId"]
            else:
                try:
                    self.hub = self.http.json("GET", f"{V3}/node/info/{DEFAULT_HUB_PROBE}")["hubId"]
                except ApiError as exc:
                    found = (exc.body or {}).get("details", {}).get("hubId") if isinstance(exc.body, dict) else None
                    if exc.code != "hub_not_found" or not is_hub_id(found):
                        raise
                    self.hub = found.upper()
        return self.hub

    # -- paths -----------------------------------------------------------------------------------------------

    def _path(self, what: str, *ids: str) -> str:
        if self._gen() == 1:
            paths = {"info": f"{V1}/info", "backup": f"{V1}/backup", "upload": f"{V1}/restore/upload",
                     "upload_item": f"{V1}/restore/upload/{{0}}", "restore": f"{V1}/restore/{{0}}",
                     "job": f"{V1}/jobs/{{0}}", "config": f"{V1}/config/{{hub}}"}
        else:
            paths = {"info": f"{V3}/node/info/{{hub}}", "backup": f"{V3}/node/backupfull/{{hub}}",
                     "upload": f"{V3}/node/restore/upload/{{hub}}",
                     "upload_item": f"{V3}/node/restore/upload/{{hub}}/{{0}}",
                     "restore": f"{V3}/node/restore/{{hub}}/{{0}}", "job": f"{V3}/node/jobs/{{hub}}/{{0}}",
                     "config": f"{V3}/node/config/{{hub}}",
                     "resource": f"{V3}/object/resource/{{hub}}/{{0}}/{{1}}/{{2}}/{{3}}"}
        template = paths[what]
        hub = self._hub() if "{hub}" in template else ""
        return template.format(*ids, hub=hub)

    def _info(self, *, retry: bool = True) -> dict[str, Any]:
        return self.http.json("GET", self._path("info"), retry=retry)

    # -- identify / backup --------------------------------------------------------------------------------

    def identify(self) -> DeviceInfo:
        info = self._info()
        config = self.http.json("GET", self._path("config"))
        services = [s["sid"] for s in config.get("services", [])]
        objects = [f"{sid}/{o['pid']}/{o['ins']}" for sid in services for o in config.get("objects", {}).get(sid, [])]
        resources = [f"{sid}/{o['pid']}/{o['ins']}/{r['rid']}" for sid in services
                     for o in config.get("objects", {}).get(sid, []) for r in o.get("resources", [])
                     if isinstance(r.get("default"), float)]
        return DeviceInfo(self.target, info["hubId"], info["version"], model=f"MobiusFlow {info['generation']}",
                          details={"generation": info["generation"], "backupFormat": info["backupFormat"],
                                   "restoresBackupFormats": info["restoresBackupFormats"],
                                   "nodeName": info.get("nodeName"), "services": services,
                                   "objects": objects[:20], "resources": resources[:20]})

    def backup(self, *, reason: str = "manual") -> Backup:
        info = self._info()
        folder = Path(tempfile.mkdtemp(prefix="mobiusflow-backup-"))
        try:
            part = folder / "download.zip"
            got = self.http.download(self._path("backup"), part, params={"name": BACKUP_NAME},
                                     progress=self.progress, message="downloading backup")
            expected = got.headers.get("x-backup-sha256")
            if expected and expected.lower() != got.sha256:
                raise LinkError(f"{self.address}: the backup download does not match X-Backup-Sha256")
            name = got.filename or "backup.zip"
            final = folder / name
            os.replace(part, final)
            try:
                archive = read_backup(final)
            except ArchiveError as exc:
                raise DeviceError(f"{self.address}: the node sent a backup that does not verify: {exc}") from None
            manifest = archive.manifest
            if manifest.hub_id != info["hubId"]:
                raise DeviceError(f"{self.address}: the backup names hub {manifest.hub_id}, the node is "
                                  f"{info['hubId']}")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        device = DeviceInfo(self.target, info["hubId"], info["version"], model=f"MobiusFlow {info['generation']}")
        log.info("backup %s of hub %s (%d bytes, format %s)", final.name, device.device_id, got.size, manifest.format)
        return Backup(device=device, created=manifest.created_at, path=final, reason=reason)

    # -- restore ------------------------------------------------------------------------------------------

    def _node_version(self, info: dict[str, Any]) -> Version:
        known = VERSIONS.get(info["version"])
        if known is not None:
            return known
        return Version(info["version"], int(info["generation"]), str(info["backupFormat"]),
                       tuple(info.get("restoresBackupFormats") or ()))

    def _verdict(self, archive: BackupArchive, info: dict[str, Any]) -> Verdict:
        m, c = archive.manifest, archive.content
        return verdict(backup_format=m.format, backup_version=m.version, backup_hub=m.hub_id, backup_kind=m.kind,
                       pids=c.pids(), node_version=info["version"], node_hub=info["hubId"],
                       persisted_values=bool(c.values), node=self._node_version(info))

    def check_restore(self, artifact: Artifact, *, force: bool = False) -> RestorePlan:
        archive = artifact.data
        if not isinstance(archive, BackupArchive):
            raise BadInput(f"{artifact.path} is not a MobiusFlow backup")
        info = self._info()
        result = self._verdict(archive, info)
        if not result.restorable:
            raise Refused(f"{result.message} ({result.code})")
        if info.get("state") != "running":
            raise DeviceError(f"{self.address}: the node is {info.get('state')}, not running; try again later")
        return RestorePlan(artifact, archive, info, result)

    def restore(self, plan: RestorePlan) -> MobiusFlowRestoreReport:
        report = MobiusFlowRestoreReport()
        report.backups = []
        # 1. The node's own backup first (M-F16): the safety copy the caller files in the store.
        report.backups.append(self.backup(reason="before-restore"))
        before = self._info()
        # 2. Upload, and read the backup information the node shows.
        upload = self._upload(plan.artifact.path)
        if not upload.get("restorable"):
            refusal = upload.get("refusal") or {}
            self._discard_upload(upload["uploadId"])
            raise Refused(f"{refusal.get('message', 'the node will not restore this backup')} "
                          f"({refusal.get('code', 'refused')})")
        node_verdict = str(upload.get("verdict", "")).replace("_", " ")
        if node_verdict != plan.verdict.kind:
            log.warning("the node's verdict (%s) differs from the harness's (%s)", node_verdict, plan.verdict.kind)
        # 3. Restore with the explicit confirmation; the node answers 202 and reboots.
        try:
            started = self.http.json("POST", self._path("restore", upload["uploadId"]), json={"confirm": True})
        except ApiError as exc:
            raise self._refusal(exc) from None
        job_id = started["jobId"]
        self.progress(0, None, started.get("message", "restoration started"))
        # 4. Wait out the reboot: a new boot ID and state running.
        self._wait_for_reboot(before["bootId"])
        # 5. The job's end (it survives the reboot), then verification.
        job = self._wait_for_job(job_id)
        after = self._info()
        if after["hubId"] != before["hubId"]:
            raise CheckFailed(f"the node's hub ID changed from {before['hubId']} to {after['hubId']}")
        if job["state"] == "rolled_back":
            error = job.get("error") or {}
            same = after["configDigest"] == before["configDigest"]
            raise DeviceError(f"restore rolled back: {error.get('message', 'unknown reason')} "
                              f"({error.get('code', '?')}); the pre-restore configuration is "
                              + ("active again" if same else "NOT back: configuration digest differs"))
        if job["state"] != "succeeded":
            error = job.get("error") or {}
            raise DeviceError(f"restore job {job_id} ended {job['state']}: {error.get('message', '')}".strip())
        self._verify(plan, after)
        report.restored = sorted(self._restored_fields(plan))
        report.not_carried = list(EXCLUDED)
        report.notes = [f"verdict: {plan.verdict.kind}", *plan.verdict.changes, *upload.get("warnings", [])]
        return report

    def _upload(self, path: Path) -> dict[str, Any]:
        try:
            response = self.http.upload(self._path("upload"), path, content_type="application/zip",
                                        headers={"Content-Disposition": f'attachment; filename="{path.name}"'},
                                        progress=self.progress, message="uploading backup", expect=(201,))
        except ApiError as exc:
            raise self._refusal(exc) from None
        return response.json()

    def _discard_upload(self, upload_id: str) -> None:
        try:
            self.http.request("DELETE", self._path("upload_item", upload_id))
        except DeviceError as exc:
            log.info("could not discard upload %s: %s", upload_id, exc)

    def _refusal(self, exc: ApiError) -> Exception:
        text = f"{exc.detail or exc} ({exc.code or exc.status})"
        if exc.code in BAD_INPUT_CODES:
            return BadInput(f"the node refused the backup: {text}")
        if exc.code in REFUSAL_CODES:
            return Refused(text)
        return exc

    def _wait_for_reboot(self, old_boot: str) -> None:
        def probe() -> dict[str, Any] | None:
            info = self._info(retry=False)
            return info if info.get("bootId") != old_boot and info.get("state") == "running" else None

        deadline = self.reboot_deadline_s * max(1.0, self.time_scale)
        self.http.wait_for_reboot(probe, deadline_s=deadline, what="the MobiusFlow node")

    def _wait_for_job(self, job_id: str) -> dict[str, Any]:
        end = time.monotonic() + JOB_DEADLINE_S * max(1.0, self.time_scale)
        while True:
            job = self.http.json("GET", self._path("job", job_id))
            if job["state"] in ("succeeded", "failed", "rolled_back"):
                return job
            if time.monotonic() > end:
                raise DeviceError(f"restore job {job_id} is still {job['state']} after {JOB_DEADLINE_S:g} s")
            time.sleep(0.2)

    def _verify(self, plan: RestorePlan, after: dict[str, Any]) -> None:
        m, content = plan.archive.manifest, plan.archive.content
        if plan.verdict.kind == "as is":
            want = content.config_digest(m.hub_id)
            if after["configDigest"] != want:
                raise CheckFailed(f"after the restore the node's configDigest is {after['configDigest'][:12]}…, "
                                  f"the backup's {want[:12]}…")
        else:
            want = content.summary_digest(m.hub_id)
            if after["summaryDigest"] != want:
                raise CheckFailed(f"after the restore the node's summaryDigest is {after['summaryDigest'][:12]}…, "
                                  f"the backup's {want[:12]}…")
        if after["generation"] == 3 and m.kind == "full" and m.format.startswith("3.") and content.values:
            self._verify_values(content)

    def _verify_values(self, content: Content) -> None:
        """Sample persisted values through the documented resource read and compare with the MPV content."""
        checked = 0
        for sid, mpv in sorted(content.values.items()):
            for record in mpv.records[: max(1, SAMPLE_VALUES // max(1, len(content.values)))]:
                got = self.http.json("GET", self._path("resource", sid, f"{record.pid:04X}", f"{record.ins:04X}",
                                                       f"{record.rid:02X}"))
                want = record.slots[min(record.slots)] if record.slots else record.value
                if got.get("value") != want:
                    raise CheckFailed(f"persisted value {sid}/{record.uri} reads {got.get('value')!r} after the "
                                      f"restore; the backup holds {want!r}")
                checked += 1
        log.info("sampled %d persisted values after the restore: all equal", checked)

    def _restored_fields(self, plan: RestorePlan) -> list[str]:
        from harness.targets.mobiusflow.fields import artifact_fields

        return list(artifact_fields(plan.archive))

    # -- settings (the engine UI's edits) ----------------------------------------------------------------

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Field names of ``fields()`` -> the node's configuration PATCH and (v3) resource writes."""
        body: dict[str, Any] = {}
        writes: list[tuple[list[str], Any]] = []
        for name, value in values.items():
            parts = name.split(".")
            if name == "node.nodeName":
                body["nodeName"] = value
            elif parts[0] == "services" and len(parts) >= 3:
                change = body.setdefault("services", {}).setdefault(parts[1], {})
                if parts[2] == "config" and len(parts) == 4:
                    change.setdefault("config", {})[parts[3]] = value
                elif len(parts) == 3:
                    change[parts[2]] = value
                else:
                    raise BadInput(f"mobiusflow: cannot set {name}")
            elif parts[0] == "objects" and len(parts) >= 3:
                change = body.setdefault("objects", {}).setdefault(parts[1], {})
                if parts[2] == "config" and len(parts) == 4:
                    change.setdefault("config", {})[parts[3]] = value
                elif parts[2] == "name" and len(parts) == 3:
                    change["name"] = value
                else:
                    raise BadInput(f"mobiusflow: cannot set {name}")
            elif parts[0] == "values" and len(parts) == 3 and len(parts[2].split("/")) == 3:
                writes.append(([parts[1], *parts[2].split("/")], value))
            else:
                raise BadInput(f"mobiusflow: unknown setting {name}")
        if body:
            self.http.json("PATCH", self._path("config"), json=body, idempotent=True)
        for ids, value in writes:
            if self._gen() != 3:
                raise BadInput("mobiusflow: persisted values exist only on 3000+ nodes")
            self.http.json("PATCH", self._path("resource", *ids), json={"value": value}, idempotent=True)


def distinctive_settings(device: DeviceInfo, seed: int) -> dict[str, Any]:
    """Non-default settings, different for every seed, named as in ``fields()``."""
    details = device.details
    services = details.get("services") or []
    objects = details.get("objects") or []
    if not services or not objects:
        raise BadInput("mobiusflow: the node has no services or objects to give distinctive settings")
    values: dict[str, Any] = {
        "node.nodeName": f"bench-node-{seed}",
        f"services.{services[0]}.config.pollIntervalS": 10 + 7 * seed,
        f"services.{services[0]}.config.endpoint": f"10.9.{seed}.{seed + 1}",
        f"services.{services[-1]}.enabled": seed % 2 == 0,
        f"objects.{objects[0]}.name": f"Calibrated sensor {seed}",
        f"objects.{objects[-1]}.config.address": 500 + seed,
    }
    if details.get("generation") == 3:
        for i, uri in enumerate((details.get("resources") or [])[:2]):
            sid, pid, ins, rid = uri.split("/")
            values[f"values.{sid}.{pid}/{ins}/{rid}"] = 20.25 + seed + i
    return values
