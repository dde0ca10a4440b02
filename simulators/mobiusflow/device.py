"""A MobiusFlow node's state and behaviour, without HTTP: configuration on disk, persisted values, backups,
uploads, staged restores applied at the next start, and jobs with logs (spec §2.4-2.6, §3).

The state directory is the node's world::

    deploy.json                 what the deployment gives (MOBIUS_HUB_ID, the software version, the licence,
                                PSK generation): never part of a backup, never restored
    data/config/...             the configuration, laid out like the backup entries (node/, services/, flows/,
                                profiles/, tags.json) plus values/<SID>.mpv, the persisted values
    data/.mobius/jobs/          jobs and their logs (outside the configuration: they survive restores)
    data/.mobius/uploads/       the one pending upload
    data/.mobius/backups/       the one prepared backup (job form)
    data/.mobius/restore/       pre/ snapshot, staged.zip, instruction.json, applying.json, result.json

Live resource values are in memory; they reach ``values/<SID>.mpv`` at a flush (a backup, a service stop, a
clean shutdown). A power cut (SIGKILL) loses unflushed values, as on a real node.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.targets.mobiusflow.archive import (
    ArchiveError,
    BackupArchive,
    Limits,
    build_backup,
    content_entries,
    content_from_files,
    read_backup,
)
from harness.targets.mobiusflow.schema import (
    FLAG_FLUSHED,
    FLAG_PERSISTENCE,
    MPV_LAYOUT_OF_FORMAT,
    Content,
    MpvFile,
    MpvRecord,
    backup_file_name,
    build_mpv,
    normalise_hub_id,
    rfc3339,
    sanitise_name,
)
from harness.targets.mobiusflow.versions import (
    DEFAULT_VERSION,
    Verdict,
    get_version,
    migrate,
    verdict,
    version_key,
)
from simulators.core.api_error import DeviceApiError
from simulators.mobiusflow.profiles import check_profile, seed_content

log = logging.getLogger(__name__)

DEFAULT_HUB = "00A1F3"
UPLOAD_LIMIT = 512 * (1 << 20)
SLOT_TTL_S = 3600  # a prepared backup and a pending upload live 1 h (node clock)
NODE_LIMITS = Limits(max_total=1024 * (1 << 20))


class NodeError(DeviceApiError):
    """An API refusal: HTTP status, the node's code and message (§6)."""


class ApplyFailed(Exception):
    pass


class ApplyCrash(Exception):  # noqa: N818 - a simulated crash of the engine, not an error of ours
    """The engine died during the apply (fault crash_during_apply): the container restarts."""


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# -- jobs ------------------------------------------------------------------------------------------------


class Jobs:
    """Jobs and their logs on disk (they survive reboots and restores)."""

    def __init__(self, folder: Path, now: Callable[[], dt.datetime]) -> None:
        self.folder = folder
        self.now = now
        self._lock = threading.RLock()

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def create(self, kind: str, state: str = "running", steps: int = 1) -> dict[str, Any]:
        job = {"jobId": f"job-{secrets.token_hex(3)}", "kind": kind, "state": state,
               "progress": {"step": 0, "steps": steps, "percent": 0.0, "message": ""},
               "created": rfc3339(self.now()), "finished": None, "result": None, "error": None, "log": []}
        with self._lock:
            _write_json(self._path(job["jobId"]), job)
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            path = self._path(job_id)
            if not job_id.startswith("job-") or "/" in job_id or not path.exists():
                return None
            return _read_json(path)

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            job.update(fields)
            if fields.get("state") in ("succeeded", "failed", "rolled_back"):
                job["finished"] = rfc3339(self.now())
            _write_json(self._path(job_id), job)
            return job

    def log(self, job_id: str, message: str, level: str = "INFO", step: int | None = None) -> None:
        with self._lock:
            job = self.get(job_id)
            if job is None:
                return
            stamp = self.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            job["log"].append(f"{stamp} {level} {message}")
            progress = job["progress"]
            if step is not None:
                progress["step"] = step
                progress["percent"] = round(100.0 * step / max(1, progress["steps"]), 1)
            progress["message"] = message
            _write_json(self._path(job_id), job)

    def running(self) -> dict[str, Any] | None:
        with self._lock:
            for path in sorted(self.folder.glob("job-*.json")):
                job = _read_json(path)
                if job["state"] in ("running", "staged", "rebooting", "applying"):
                    return job
        return None

    @staticmethod
    def public(job: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in job.items() if k != "log"}
        out["logLines"] = len(job["log"])
        return out


# -- the node --------------------------------------------------------------------------------------------


@dataclass
class Upload:
    upload_id: str
    file_name: str
    size: int
    sha256: str
    expires: dt.datetime
    path: Path


class Node:
    def __init__(self, state: Path, *, version: str | None = None, hub_id: str | None = None,
                 profile: str | None = None) -> None:
        self.root = Path(state)
        self.data = self.root / "data"
        self.config_dir = self.data / "config"
        self.mobius = self.data / ".mobius"
        self.restore_dir = self.mobius / "restore"
        self.lock = threading.RLock()
        self.clock_offset = dt.timedelta(0)
        self.jobs = Jobs(self.mobius / "jobs", self.now)
        self.state = "starting"
        self.boot_id = ""
        self.started_at = self.now()
        self._dirty: set[str] = set()
        self.live: dict[str, dict[tuple[int, int, int], MpvRecord]] = {}
        self.stopped_services: set[str] = set()
        deploy_path = self.root / "deploy.json"
        if deploy_path.exists() and (self.config_dir / "node" / "node.json").exists():
            self.deploy = _read_json(deploy_path)
            self.content = self._load_content()
            if hub_id is not None and normalise_hub_id(hub_id) != self.hub_id:
                self._change_hub(normalise_hub_id(hub_id))
            if version is not None and version != self.version:
                self.set_version(version)
        else:
            self.factory_reset(version=version or DEFAULT_VERSION, hub_id=hub_id or DEFAULT_HUB,
                               profile=profile)
        self._load_live()

    # -- basics ------------------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.clock_offset

    def now_ms(self) -> int:
        return int(self.now().timestamp() * 1000)

    @property
    def version(self) -> str:
        return self.deploy["version"]

    @property
    def hub_id(self) -> str:
        return self.deploy["hubId"]

    @property
    def generation(self) -> int:
        return get_version(self.version).generation

    @property
    def fmt(self) -> str:
        return get_version(self.version).writes

    def _save_deploy(self) -> None:
        _write_json(self.root / "deploy.json", self.deploy)

    def factory_reset(self, *, version: str, hub_id: str, profile: str | None = None, seed: int = 0) -> None:
        get_version(version)
        hub = normalise_hub_id(hub_id)
        profile = check_profile(profile)
        with self.lock:
            self.deploy = {"version": version, "hubId": hub, "profile": profile,
                           "licence": {"state": "valid", "key": f"LIC-{hub}", "source":
                                       "environment" if version_key(version) >= version_key("1.19.1") else "/.licence"},
                           "pskGeneration": 1}
            self._save_deploy()
            shutil.rmtree(self.mobius, ignore_errors=True)
            self.content = seed_content(version, hub, profile, seed, self.now_ms())
            self._save_content(self.content)
            self._load_live()

    def _change_hub(self, hub: str) -> None:
        content, _ = migrate(self.content, backup_format=self.fmt, backup_kind="full", backup_hub=self.hub_id,
                             node_version=self.version, node_hub=hub)
        self.deploy["hubId"] = hub
        self._save_deploy()
        self.content = content
        self._save_content(content)

    # -- configuration on disk -------------------------------------------------------------------------

    def _load_content(self) -> Content:
        files = {}
        for path in sorted(self.config_dir.rglob("*")):
            if path.is_file():
                files[path.relative_to(self.config_dir).as_posix()] = path.read_bytes()
        return content_from_files(get_version(self.deploy["version"]).writes, files)

    def _save_content(self, content: Content) -> None:
        """Replace data/config as a whole: write a new folder, then swap it in."""
        new = self.data / "config.new"
        old = self.data / "config.old"
        shutil.rmtree(new, ignore_errors=True)
        for rel, data in content_entries(content, self.fmt, "full"):
            path = new / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        shutil.rmtree(old, ignore_errors=True)
        if self.config_dir.exists():
            os.replace(self.config_dir, old)
        os.replace(new, self.config_dir)
        shutil.rmtree(old, ignore_errors=True)

    def storage_sha256(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.config_dir.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(self.config_dir).as_posix().encode() + b"\0")
                digest.update(path.read_bytes())
        return digest.hexdigest()

    # -- persisted values (M-F11) --------------------------------------------------------------------------

    def _service(self, sid: str) -> dict[str, Any]:
        for s in self.content.services:
            if s["sid"] == sid:
                return s
        raise NodeError(404, "service_not_found", f"There is no service {sid} on this node.")

    def _persistence(self, service: dict[str, Any]) -> bool:
        return self.generation == 3 and bool(service.get("persistence", {}).get("enabled", False))

    def _load_live(self) -> None:
        """At start: persisted values, else each resource's default."""
        self.live = {}
        self._dirty = set()
        if self.generation != 3:
            return
        for service in self.content.services:
            sid = service["sid"]
            values: dict[tuple[int, int, int], MpvRecord] = {}
            for obj in self.content.objects.get(sid, []):
                for res in obj.get("resources", []):
                    key = (int(obj["pid"], 16), int(obj["ins"], 16), int(res["rid"], 16))
                    values[key] = MpvRecord(*key, res.get("default"), None, {})
            mpv = self.content.values.get(sid)
            if mpv is not None and self._persistence(service):
                for record in mpv.records:
                    values[record.key] = MpvRecord(record.pid, record.ins, record.rid, record.value,
                                                   record.updated_unix_ms or mpv.persisted_at_unix_ms,
                                                   dict(record.slots))
            self.live[sid] = values

    def flush(self, sids: list[str] | None = None, *, force: bool = False) -> list[tuple[str, int]]:
        """Write the values of persistence-enabled services that changed since their last flush."""
        done = []
        with self.lock:
            if self.generation != 3:
                return done
            layout = MPV_LAYOUT_OF_FORMAT[self.fmt]
            for service in self.content.services:
                sid = service["sid"]
                if sids is not None and sid not in sids:
                    continue
                path = self.config_dir / "values" / f"{sid}.mpv"
                if not self._persistence(service):
                    # Disabling persistence deletes the persisted values (M-F11).
                    self.content.values.pop(sid, None)
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                if not force and sid not in self._dirty and sid in self.content.values:
                    continue
                now = self.now_ms()
                records = [MpvRecord(r.pid, r.ins, r.rid, r.value, (r.updated_unix_ms or now) if layout == 2 else None,
                                     dict(r.slots) if layout == 2 else {})
                           for r in sorted(self.live.get(sid, {}).values(), key=lambda r: r.key)]
                mpv = MpvFile(layout, self.hub_id, sid, FLAG_FLUSHED | FLAG_PERSISTENCE, now, records)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(build_mpv(mpv))
                os.replace(tmp, path)
                self.content.values[sid] = mpv
                self._dirty.discard(sid)
                done.append((sid, len(records)))
        return done

    def read_resource(self, sid: str, pid: str, ins: str, rid: str) -> dict[str, Any]:
        self._service(sid)
        key = (int(pid, 16), int(ins, 16), int(rid, 16))
        record = self.live.get(sid, {}).get(key)
        if record is None:
            raise NodeError(404, "resource_not_found", f"There is no resource {sid}/{pid}/{ins}/{rid}.")
        effective = record.slots[min(record.slots)] if record.slots else record.value
        return {"uri": f"{self.hub_id}/{sid}/{pid}/{ins}/{rid}", "value": effective, "plainValue": record.value,
                "priorities": {str(k): v for k, v in sorted(record.slots.items())},
                "updated": record.updated_unix_ms}

    def write_resource(self, sid: str, pid: str, ins: str, rid: str, value: Any, priority: int | None) -> dict[str, Any]:
        with self.lock:
            self._service(sid)
            key = (int(pid, 16), int(ins, 16), int(rid, 16))
            record = self.live.get(sid, {}).get(key)
            if record is None:
                raise NodeError(404, "resource_not_found", f"There is no resource {sid}/{pid}/{ins}/{rid}.")
            if priority is not None and self.fmt == "3.1":
                if value is None:
                    record.slots.pop(priority, None)  # relinquish the slot
                else:
                    record.slots[priority] = value
            else:
                # 3004 (MPV layout 1) has no priority slots: a priority write sets the plain value.
                record.value = value
            record.updated_unix_ms = self.now_ms()
            self._dirty.add(sid)
            return self.read_resource(sid, pid, ins, rid)

    # -- configuration writes (modelled: the engine UI's edits) ---------------------------------------

    def config_document(self) -> dict[str, Any]:
        c = self.content
        doc: dict[str, Any] = {"hubId": self.hub_id, "node": c.node, "services": c.services, "objects": c.objects}
        if c.flows is not None:
            doc["flows"] = c.flows
        if self.generation == 3:
            doc["profiles"] = c.profiles or {}
            doc["tags"] = c.tags or []
        return doc

    def patch_config(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{"nodeName"?, "services": {SID: {enabled?, runAtStart?, name?, config?: {...}, persistence?}},
        "objects": {"SID/PID/INS": {name?, config?: {...}}}}``; unknown names are refused (400)."""
        with self.lock:
            content = self.content
            node_name = body.get("nodeName")
            if node_name is not None:
                if not isinstance(node_name, str) or not node_name.strip():
                    raise NodeError(400, "invalid_request", "nodeName must be a non-empty string.")
                content.node["nodeName"] = node_name
            for sid, change in (body.get("services") or {}).items():
                service = self._service(sid)
                if not isinstance(change, dict):
                    raise NodeError(400, "invalid_request", f"services/{sid} must be an object.")
                for key, value in change.items():
                    if key == "config" and isinstance(value, dict):
                        service.setdefault("config", {}).update(value)
                    elif key in ("enabled", "runAtStart") and isinstance(value, bool):
                        if key == "runAtStart" and self.fmt == "1.0":
                            raise NodeError(400, "invalid_request", "runAtStart is not supported before 1.19.1.")
                        service[key] = value
                    elif key == "name" and isinstance(value, str):
                        service[key] = value
                    elif key == "persistence" and isinstance(value, dict) and self.generation == 3:
                        service.setdefault("persistence", {}).update(value)
                    else:
                        raise NodeError(400, "invalid_request", f"services/{sid}/{key} cannot be set that way.")
            for uri, change in (body.get("objects") or {}).items():
                sid, _, rest = uri.partition("/")
                pid, _, ins = rest.partition("/")
                self._service(sid)
                found = [o for o in content.objects.get(sid, []) if o["pid"] == pid and o["ins"] == ins]
                if not found or not isinstance(change, dict):
                    raise NodeError(404, "object_not_found", f"There is no object {uri}.")
                for key, value in change.items():
                    if key == "config" and isinstance(value, dict):
                        found[0].setdefault("config", {}).update(value)
                    elif key == "name" and isinstance(value, str):
                        found[0]["name"] = value
                    else:
                        raise NodeError(400, "invalid_request", f"objects/{uri}/{key} cannot be set that way.")
            self._save_content(content)
            self.flush()  # the save rewrote values from the last flush; keep them current
            return self.config_document()

    # -- info ---------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        version = get_version(self.version)
        last = self.deploy.get("lastRestore")
        return {
            "hubId": self.hub_id, "nodeName": self.content.node.get("nodeName", ""), "version": self.version,
            "generation": version.generation, "backupFormat": version.writes,
            "restoresBackupFormats": list(version.restores), "state": self.state, "bootId": self.boot_id,
            "startedAt": rfc3339(self.started_at), "configDigest": self.content.config_digest(self.hub_id),
            "summaryDigest": self.content.summary_digest(self.hub_id), "lastRestore": last,
        }

    def busy_check(self, what: str, own_job: str | None = None) -> None:
        if self.state == "restoring" or (self.restore_dir / "instruction.json").exists():
            raise NodeError(409, "restore_pending", "A restore is staged and the node is about to reboot.")
        job = self.jobs.running()
        if job is not None and job["jobId"] != own_job:
            raise NodeError(409, "job_running",
                            f"A {job['kind']} job is running ({job['jobId']}). Wait for it to finish.")

    # -- backup (§2.4) ------------------------------------------------------------------------------

    def make_backup(self, name: str | None, kind: str, job_id: str | None = None) -> tuple[bytes, str, dict[str, Any]]:
        """(zip bytes, file name, manifest JSON). Flushes persisted values first on 3.x full backups."""
        with self.lock:
            self.busy_check("backup", own_job=job_id)
            if kind not in ("full", "config"):
                raise NodeError(400, "invalid_request", "kind must be full or config.")
            if self.generation == 1:
                kind = "config"
            clean = sanitise_name(name)
            created = self.now().replace(microsecond=0)
            file_name = backup_file_name(clean, created)
            say = (lambda m: self.jobs.log(job_id, m)) if job_id else (lambda m: None)
            say(f'Backup "{clean}" requested (kind {kind}, MobiusFlow {self.version}, hub {self.hub_id})')
            if self.generation == 3 and kind == "full":
                enabled = [s["sid"] for s in self.content.services if self._persistence(s)]
                for i, sid in enumerate(enabled, 1):
                    self.flush([sid], force=sid not in self.content.values)
                    say(f"Flushing persisted values: service {sid} ({i} of {len(enabled)}, "
                        f"{len(self.live.get(sid, {}))} values)")
                self.flush()  # persistence-disabled services: their files go
            c = self.content
            say(f"Collecting node configuration ({len(c.services)} services, {c.object_count()} objects)")
            say(f"Collecting object profiles ({len(c.profiles or {})}), tags ({len(c.tags or [])}), "
                f"flows ({len(c.flows or [])})")
            content = c if kind == "full" else Content(c.node, c.services, c.objects, c.flows, c.profiles,
                                                       c.profile_files, c.tags, {})
            data, manifest = build_backup(content, fmt=self.fmt, kind=kind, name=clean, file_name=file_name,
                                          created=created, hub_id=self.hub_id, version=self.version,
                                          node_name=c.node.get("nodeName", ""))
            say(f"Writing {file_name} ({len(data)} bytes)")
            say(f"Backup ready: {file_name}")
            return data, file_name, manifest.to_json()

    def prepare_backup(self, name: str | None, kind: str) -> dict[str, Any]:
        """Job form: the zip is written to the node's /data; one prepared backup at a time."""
        with self.lock:
            self.busy_check("backup")
            job = self.jobs.create("backup", steps=6)
            try:
                data, file_name, manifest = self.make_backup(name, kind, job["jobId"])
            except NodeError as exc:
                self.jobs.update(job["jobId"], state="failed", error={"code": exc.code, "message": exc.message})
                raise
            folder = self.mobius / "backups"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            backup_id = "bk-" + job["jobId"][4:]
            (folder / f"{backup_id}.zip").write_bytes(data)
            meta = {"backupId": backup_id, "fileName": file_name, "sizeBytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(), "format": manifest["format"],
                    "expires": rfc3339(self.now() + dt.timedelta(seconds=SLOT_TTL_S))}
            _write_json(folder / f"{backup_id}.json", meta)
            self.jobs.update(job["jobId"], state="succeeded", result={k: v for k, v in meta.items() if k != "expires"},
                             progress={"step": 6, "steps": 6, "percent": 100.0, "message": f"Backup ready: {file_name}"})
            return {"jobId": job["jobId"], "backupId": backup_id}

    def prepared(self, backup_id: str) -> tuple[Path, dict[str, Any]]:
        folder = self.mobius / "backups"
        meta_path = folder / f"{backup_id}.json"
        if "/" in backup_id or not meta_path.exists():
            raise NodeError(404, "backup_not_found", f"There is no prepared backup {backup_id}.")
        meta = _read_json(meta_path)
        if self.now() >= dt.datetime.strptime(meta["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC):
            raise NodeError(410, "backup_expired", f"Prepared backup {backup_id} has expired. Request a new backup.")
        return folder / f"{backup_id}.zip", meta

    def discard_prepared(self, backup_id: str) -> None:
        path, _ = self.prepared(backup_id)
        shutil.rmtree(path.parent, ignore_errors=True)

    # -- upload and backup information (§2.5) ------------------------------------------------------------

    def _uploads(self) -> Path:
        return self.mobius / "uploads"

    def accept_upload(self, tmp: Path, size: int, sha256: str, file_name: str) -> dict[str, Any]:
        """Validate an uploaded zip (already on disk at ``tmp``) and keep it as the one pending upload."""
        with self.lock:
            self.busy_check("upload")
            try:
                archive = read_backup(tmp, NODE_LIMITS)
            except ArchiveError as exc:
                tmp.unlink(missing_ok=True)
                raise NodeError(422, exc.code, _sentence(str(exc))) from None
            folder = self._uploads()
            shutil.rmtree(folder, ignore_errors=True)  # one pending upload: a new one replaces the old
            folder.mkdir(parents=True)
            upload_id = f"up-{secrets.token_hex(3)}"
            os.replace(tmp, folder / f"{upload_id}.zip")
            meta = {"uploadId": upload_id, "fileName": file_name, "sizeBytes": size, "sha256": sha256,
                    "expiresAt": rfc3339(self.now() + dt.timedelta(seconds=SLOT_TTL_S))}
            _write_json(folder / f"{upload_id}.json", meta)
            return self.upload_info(upload_id, archive)

    def _upload(self, upload_id: str) -> tuple[Path, dict[str, Any]]:
        folder = self._uploads()
        meta_path = folder / f"{upload_id}.json"
        if "/" in upload_id or not meta_path.exists():
            raise NodeError(404, "upload_not_found", f"There is no upload {upload_id} (it expired or was replaced).")
        meta = _read_json(meta_path)
        if self.now() >= dt.datetime.strptime(meta["expiresAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC):
            raise NodeError(404, "upload_not_found", f"Upload {upload_id} has expired. Upload the file again.")
        return folder / f"{upload_id}.zip", meta

    def _verdict(self, archive: BackupArchive) -> Verdict:
        m = archive.manifest
        return verdict(backup_format=m.format, backup_version=m.version, backup_hub=m.hub_id, backup_kind=m.kind,
                       pids=archive.content.pids(), node_version=self.version, node_hub=self.hub_id,
                       persisted_values=bool(archive.content.values),
                       has_routers=any(s.get("spid") == "ROUTER" for s in archive.content.services))

    def upload_info(self, upload_id: str, archive: BackupArchive | None = None) -> dict[str, Any]:
        path, meta = self._upload(upload_id)
        if archive is None:
            archive = read_backup(path, NODE_LIMITS)
        m, c = archive.manifest, archive.content
        v = self._verdict(archive)
        return {
            **meta,
            "backup": {"name": m.name, "created": m.created, "format": m.format, "kind": m.kind,
                       "source": {"hubId": m.hub_id, "version": m.version, "nodeName": m.node_name},
                       "contents": {"services": len(c.services), "objects": c.object_count(),
                                    "profiles": len(c.profiles or {}), "flows": len(c.flows or []),
                                    "persistedValues": bool(c.values)},
                       "configDigest": m.config_digest, "summaryDigest": m.summary_digest},
            "target": {"hubId": self.hub_id, "version": self.version},
            "verdict": v.wire, "restorable": v.restorable,
            "refusal": None if v.restorable else {"code": v.code, "message": v.message},
            "changes": v.changes, "warnings": v.warnings + archive.warnings,
        }

    def discard_upload(self, upload_id: str) -> None:
        self._upload(upload_id)
        shutil.rmtree(self._uploads(), ignore_errors=True)

    # -- restore: stage now, apply at the next start (§2.5 mechanics) ------------------------------------

    def stage_restore(self, upload_id: str, confirm: Any) -> dict[str, Any]:
        with self.lock:
            path, meta = self._upload(upload_id)
            if confirm is not True:
                raise NodeError(428, "confirmation_required",
                                "Restoring replaces the configuration of this MobiusFlow node and reboots it. "
                                "Send confirm: true to proceed.")
            self.busy_check("restore")
            try:
                archive = read_backup(path, NODE_LIMITS)  # validates again
            except ArchiveError as exc:
                raise NodeError(422, exc.code, _sentence(str(exc))) from None
            v = self._verdict(archive)
            if not v.restorable:
                raise NodeError(422, v.code or "refused", v.message or "refused",
                                {"backupFormat": archive.manifest.format, "nodeVersion": self.version})
            job = self.jobs.create("restore", state="staged", steps=10)
            jid = job["jobId"]
            self.jobs.log(jid, f"Restore requested from upload {upload_id} ({meta['fileName']}, {meta['sizeBytes']} bytes)",
                          step=1)
            self.jobs.log(jid, "Verdict: " + ("as is" if v.kind == "as is" else f"migrate ({'; '.join(v.changes)})"))
            self.jobs.log(jid, "Taking pre-restore snapshot", step=2)
            self.flush()  # every live value on disk (unchanged ones already are)
            pre = self.restore_dir / "pre"
            shutil.rmtree(pre, ignore_errors=True)
            pre.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(self.config_dir, pre)
            self.jobs.log(jid, "Staging backup for restore at next start", step=3)
            shutil.copyfile(path, self.restore_dir / "staged.zip")
            _write_json(self.restore_dir / "instruction.json",
                        {"jobId": jid, "uploadSha256": meta["sha256"], "verdict": v.wire})
            self.jobs.log(jid, "The restoration process has started. MobiusFlow will now reboot.", step=4)
            self.jobs.update(jid, state="rebooting")
            self.state = "restoring"
            return job

    def boot(self, boot_id: str, *, fail_step: str | None = None, crash: bool = False) -> None:
        """The engine's start: consume a staged restore (instruction first, then the marker), or recover from
        a crash during an apply (marker without instruction), then load the values and run."""
        with self.lock:
            self.boot_id = boot_id
            self.started_at = self.now()
            instruction_path = self.restore_dir / "instruction.json"
            marker = self.restore_dir / "applying.json"
            if instruction_path.exists():
                instruction = _read_json(instruction_path)
                jid = instruction["jobId"]
                self.state = "applying_restore"
                self.jobs.log(jid, f"MobiusFlow {self.version} starting (boot {boot_id})", step=5)
                self.jobs.log(jid, "Applying staged restore")
                instruction_path.unlink()  # consumed before applying: a crash cannot cause a boot loop
                self.jobs.log(jid, "Restore instruction consumed")
                _write_json(marker, {"jobId": jid})
                self.jobs.update(jid, state="applying")
                try:
                    self._apply(jid, fail_step=fail_step, crash=crash)
                except ApplyFailed as exc:
                    self._roll_back(jid, "apply_failed", str(exc))
                marker.unlink(missing_ok=True)
            elif marker.exists():
                jid = _read_json(marker)["jobId"]
                self.jobs.log(jid, f"MobiusFlow {self.version} starting (boot {boot_id})")
                self._roll_back(jid, "apply_interrupted", "the engine stopped while applying the restore")
                marker.unlink(missing_ok=True)
            self._load_live()
            self.state = "running"

    def _apply(self, jid: str, *, fail_step: str | None, crash: bool) -> None:
        archive = read_backup(self.restore_dir / "staged.zip", NODE_LIMITS)
        m = archive.manifest
        v = self._verdict(archive)
        if not v.restorable:
            raise ApplyFailed(v.message or "the backup is no longer restorable")
        content, lines = migrate(archive.content, backup_format=m.format, backup_kind=m.kind, backup_hub=m.hub_id,
                                 node_version=self.version, node_hub=self.hub_id)

        def step(message: str, number: int) -> None:
            self.jobs.log(jid, message, step=number)
            if fail_step and message.startswith(fail_step):
                raise ApplyFailed(f"injected failure at {fail_step!r}")

        step("Removing current configuration", 6)
        shutil.rmtree(self.config_dir, ignore_errors=True)
        if crash:
            raise ApplyCrash("crash during apply")
        step(f"Writing node configuration ({len(content.services)} services)", 7)
        for line in lines:
            step(line, 8)
        self.content = content
        self._save_content(content)
        self.deploy["pskGeneration"] = int(self.deploy.get("pskGeneration", 1)) + 1  # PSKs regenerated
        step(f"Starting services ({len(content.services)})", 9)
        step("Restore complete", 10)
        result = {"verdict": v.wire, "configDigest": content.config_digest(self.hub_id),
                  "summaryDigest": content.summary_digest(self.hub_id), "format": m.format}
        _write_json(self.restore_dir / "result.json", {"jobId": jid, **result})
        self.jobs.update(jid, state="succeeded", result=result)
        self.deploy["lastRestore"] = {"jobId": jid, "state": "succeeded", "finished": rfc3339(self.now())}
        self._save_deploy()

    def _roll_back(self, jid: str, code: str, reason: str) -> None:
        self.jobs.log(jid, f"Restore failed: {reason}. Reverting to the pre-restore configuration.", "ERROR")
        pre = self.restore_dir / "pre"
        if pre.exists():
            shutil.rmtree(self.config_dir, ignore_errors=True)
            shutil.copytree(pre, self.config_dir)
        self.content = self._load_content()
        self.jobs.log(jid, "Pre-restore configuration restored")
        self.jobs.update(jid, state="rolled_back", error={"code": code, "message": reason})
        self.deploy["lastRestore"] = {"jobId": jid, "state": "rolled_back", "finished": rfc3339(self.now())}
        self._save_deploy()

    # -- versions --------------------------------------------------------------------------------------

    def set_version(self, version: str) -> None:
        """In-place upgrade with the migrations of §5 (a downgrade is refused: not modelled)."""
        new = get_version(version)
        with self.lock:
            old = get_version(self.version)
            if version_key(version) < version_key(old.version):
                raise ValueError(f"downgrading MobiusFlow {old.version} to {version} is not modelled")
            if version == old.version:
                return
            self.flush(force=True)
            content, _ = migrate(self.content, backup_format=old.writes, backup_kind="full", backup_hub=self.hub_id,
                                 node_version=version, node_hub=self.hub_id)
            self.deploy["version"] = new.version
            if version_key(version) >= version_key("1.19.1"):
                self.deploy["licence"]["source"] = "environment"
            self._save_deploy()
            self.content = content
            self._save_content(content)
            self._load_live()

    def shutdown(self) -> None:
        """A clean stop: services stop, which persists their values (M-F11)."""
        with self.lock:
            self.flush()


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


__all__ = ["DEFAULT_HUB", "UPLOAD_LIMIT", "ApplyCrash", "Jobs", "Node", "NodeError"]
