"""PlanktoScope driver (targets/planktoscope.md §14): backup of the settings files, the version file and chosen
datasets into one bundle; restore with the cross-release rules of versions.py, an immediate reboot and a
read-back.

Addresses: ``http(s)://host`` (the unit's web server: the file browsers) and/or ``ssh://pi@host[:port]``
(the ``ssh=`` keyword, or the address itself). Channels, chosen per release:

===============  ==========================  =========================================================
what             HTTP only                   with SSH
===============  ==========================  =========================================================
settings         /admin/fs (v2023.9-v2025);  SFTP, every release
                 unreachable on v2.3, v2026
datasets         /ps/data/browse (v2023.9+); /ps/data/browse where it exists, SFTP on v2.3 and with an
                 v2.3: nginx, read-only      ssh:// address alone
reboot           the caller's ``reboot``     ``sudo reboot`` over SSH
                 hook, else "pending"
===============  ==========================  =========================================================

The driver never calls a simulator's control plane (DESIGN rule 1): a caller that knows one passes
``reboot=`` (e.g. ``SimControl(control).reset``). A new boot is told from the old one by the kernel's
``/proc/sys/kernel/random/boot_id``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import html
import logging
import posixpath
import re
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import BadInput, CheckFailed, DeviceError, LinkError, Refused
from harness.targets.base import Artifact, Backup, DeviceInfo, Driver, RestoreReport, no_progress
from harness.targets.planktoscope import bundle as bundle_mod
from harness.targets.planktoscope import integrity, schema, versionfile
from harness.targets.planktoscope.bundle import Bundle, BundleWriter
from harness.targets.planktoscope.fbclient import FileBrowserClient, Unavailable
from harness.targets.planktoscope.formats import JS, NODE_RED, dump, parse_object
from harness.targets.planktoscope.releases import (
    CALIBRATION_PATH,
    CONFIG_PATH,
    DATA_ROOT,
    FILEBROWSER_ERA,
    GIT_DIR,
    GLOBAL_CONTEXT_PATH,
    HARDWARE_PATH,
    HOSTNAME_PATH,
    INSTALLER_CONFIG_PATH,
    RELEASE_INFO,
    V2_3,
    V2024,
    V2025,
    V2026,
    VERSIONING_PATH,
    canonical_release,
    hardware_version_of,
)
from harness.targets.planktoscope.sshlink import SshLink
from harness.targets.planktoscope.versions import SettingsPlan, UnitSettings, plan_settings

log = logging.getLogger(__name__)

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
SETTINGS_FILES = (HARDWARE_PATH, CONFIG_PATH, CALIBRATION_PATH, GLOBAL_CONTEXT_PATH, VERSIONING_PATH,
                  INSTALLER_CONFIG_PATH)
REQUIRED_SETTINGS = (HARDWARE_PATH, CONFIG_PATH)
DEFAULT_DATASETS = ("img/*/*/*", "export/ecotaxa/*")
REBOOT_TIMEOUT_S = 180.0  # a Raspberry Pi reboot takes ~40 s; SD cards can be slow
NOT_CARRIED = ["Node-RED flows and dashboard state", "/var/lib/overlays/overrides/etc (OS overrides)",
               "the forklift pallet", "the file browsers' databases", "Cockpit settings",
               "segmented objects and EcoTaxa exports outside the selection"]
_ACQ = re.compile(r"^img/([^/]+)/([^/]+)/([^/]+)$")


@dataclass
class UnitView:
    """What identify() learned about the unit."""

    release: str
    device_id: str
    evidence: list[str]
    versioning: dict[str, str] | None
    git_version: str | None
    filebrowser: str
    settings_channel: str | None  # "http" | "ssh" | None
    settings_reason: str
    datasets_channel: str | None  # "http" | "nginx" | "ssh" | None
    datasets_writable: bool
    hardware_version: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class RestorePlan:
    artifact: Artifact
    bundle: Bundle
    unit: UnitView
    settings: SettingsPlan
    datasets: list[bundle_mod.Dataset]
    refused_datasets: list[str]
    notes: list[str]
    force: bool = False

    @property
    def uploads(self) -> list[str]:
        return [u.device_path for u in self.settings.uploads] + [d.rel_path for d in self.datasets]


@dataclass
class PlanktoscopeRestoreReport(RestoreReport):
    rebooted: bool = False
    backups: list[Backup] = field(default_factory=list)


class PlanktoscopeDriver(Driver):
    """A PlanktoScope over its web server (file browsers) and, when given, SSH."""

    target = "planktoscope"

    def __init__(self, address: str, *, username: str | None = None, password: str | None = None,
                 progress=no_progress, time_scale: float = 1.0, ssh: str | None = None,
                 datasets: list[str] | tuple[str, ...] | None = None, reboot: Callable[[], Any] | None = None,
                 verify: bool | str | Path = True, overwrite_datasets: bool = False,
                 reboot_timeout: float | None = None, known_hosts: str | None = None) -> None:
        super().__init__(address, username=username, password=password, progress=progress,
                         time_scale=time_scale)
        scheme = urllib.parse.urlsplit(address).scheme.lower()
        if scheme == "ssh":
            self.http_base, self.ssh_url = None, address
            if ssh and ssh != address:
                raise BadInput("give the SSH address once: as the address or as --ssh")
        elif scheme in ("http", "https"):
            self.http_base, self.ssh_url = address.rstrip("/"), ssh
        else:
            raise BadInput(f"{address!r}: a PlanktoScope is reached at http(s)://HOST or ssh://pi@HOST")
        self.dataset_patterns = tuple(DEFAULT_DATASETS if datasets is None else datasets)
        self.reboot_hook = reboot
        self.verify = verify
        self.overwrite_datasets = overwrite_datasets
        self.reboot_timeout = reboot_timeout or REBOOT_TIMEOUT_S * max(1.0, time_scale)
        self.known_hosts = known_hosts
        self._admin: FileBrowserClient | None = None
        self._data: FileBrowserClient | None = None
        self._plain: Any = None
        self._ssh: SshLink | None = None
        self._unit: UnitView | None = None

    # -- links -----------------------------------------------------------------------------------------

    def _plain_http(self) -> Any:
        from harness.transports.http import HttpTransport

        if self._plain is None:
            assert self.http_base is not None
            self._plain = HttpTransport(self.http_base, verify=self.verify, timeout=30.0, retries=2)
        return self._plain

    def _admin_fs(self) -> FileBrowserClient:
        if self._admin is None:
            self._admin = FileBrowserClient(f"{self.http_base}/admin/fs", username=self.username,
                                            password=self.password, verify=self.verify)
        return self._admin

    def _datasets_fs(self) -> FileBrowserClient:
        if self._data is None:
            self._data = FileBrowserClient(f"{self.http_base}/ps/data/browse", username=self.username,
                                           password=self.password, verify=self.verify)
        return self._data

    def _sftp(self) -> SshLink:
        if self._ssh is None:
            assert self.ssh_url is not None
            self._ssh = SshLink(self.ssh_url, username=self.username, password=self.password,
                                known_hosts=self.known_hosts)
        return self._ssh

    def close(self) -> None:
        for client in (self._admin, self._data, self._plain):
            if client is not None:
                client.close()
        if self._ssh is not None:
            self._ssh.close()
        self._admin = self._data = self._plain = self._ssh = None
        self._unit = None

    # -- identify (§10) --------------------------------------------------------------------------------

    def _probe_http(self, evidence: list[str]) -> str | None:
        """The release family the web server shows: v2026, the file-browser era (None: read the YAML), v2.3."""
        plain = self._plain_http()
        response = plain.request("GET", "/admin/fs", expect=tuple(range(200, 600)))
        location = response.headers.get("location", "")
        if response.status_code in (301, 302, 303, 307, 308):
            path = urllib.parse.urlsplit(location).path.rstrip("/")
            if path.endswith("/admin/cockpit/files"):
                evidence.append("GET /admin/fs: 302 to /admin/cockpit/files (Cockpit: v2026)")
                return V2026
            if path.endswith("/admin/fs"):
                evidence.append("GET /admin/fs: 302 to /admin/fs/ (file browser)")
                return "filebrowser"
        if response.status_code == 404:
            root = plain.request("GET", "/", expect=tuple(range(200, 600)))
            if root.status_code == 200 and "Index of /" in root.text:
                evidence.append("GET /admin/fs: 404; GET /: an nginx directory index (v2.3)")
                return V2_3
        raise DeviceError(f"{self.http_base}: not a recognisable PlanktoScope (GET /admin/fs answered "
                          f"{response.status_code}{' to ' + location if location else ''})")

    def identify(self) -> DeviceInfo:
        unit = self._identify()
        return DeviceInfo(self.target, unit.device_id, unit.release, model="PlanktoScope",
                          details={"evidence": unit.evidence, "hardware_version": unit.hardware_version,
                                   "settings_channel": unit.settings_channel,
                                   "datasets_channel": unit.datasets_channel, "filebrowser": unit.filebrowser})

    def _identify(self, *, fresh: bool = False) -> UnitView:
        if self._unit is not None and not fresh:
            return self._unit
        evidence: list[str] = []
        warnings: list[str] = []
        family = self._probe_http(evidence) if self.http_base else None
        versioning: dict[str, str] | None = None
        git: str | None = None
        release: str | None = family if family in (V2_3, V2026) else None
        if family == "filebrowser":
            data = self._admin_fs().read(VERSIONING_PATH)
            if data is None:
                raise DeviceError(f"{self.http_base}: {VERSIONING_PATH} is missing: cannot tell the release")
            parsed = versionfile.parse_versioning(data)
            versioning = parsed.as_json()
            release = canonical_release(parsed.version)
            evidence.append(f"{VERSIONING_PATH}: version {parsed.version}")
        if self.ssh_url:
            ssh = self._sftp()
            data = ssh.read(VERSIONING_PATH)
            ssh_release: str | None = None
            if data is not None:
                parsed = versionfile.parse_versioning(data)
                versioning = versioning or parsed.as_json()
                ssh_release = canonical_release(parsed.version)
                evidence.append(f"ssh {VERSIONING_PATH}: version {parsed.version}")
            else:
                head, refs = ssh.read(f"{GIT_DIR}/HEAD"), ssh.read(f"{GIT_DIR}/packed-refs")
                git = versionfile.git_version(head or b"", refs or b"") if head else None
                if git:
                    ssh_release = canonical_release(git)
                    evidence.append(f"ssh git checkout at tag {git}")
            if ssh_release and release and ssh_release != release:
                warnings.append(f"the web server looks like {release} but the files say {ssh_release}")
            release = ssh_release or release
        if release is None:
            raise DeviceError(f"{self.address}: cannot tell the PlanktoScope release (no version file, no tagged "
                              f"git checkout)")
        info = RELEASE_INFO[release]
        if self.ssh_url:
            settings_channel, reason = "ssh", ""
        elif release in FILEBROWSER_ERA:
            settings_channel, reason = "http", ""
        elif release == V2026:
            settings_channel = None
            reason = "on v2026 /admin/fs redirects to Cockpit, so the settings files are unreachable over HTTP"
        else:
            settings_channel = None
            reason = "v2.3 has no file browser (nginx serves /home/pi/data read-only), so the settings files " \
                     "are unreachable over HTTP"
        if self.http_base and release != V2_3:
            datasets_channel, writable = "http", True
        elif self.ssh_url:
            datasets_channel, writable = "ssh", True
        elif self.http_base:
            datasets_channel, writable = "nginx", False
        else:
            datasets_channel, writable = None, False
        device_id = self._hostname(settings_channel)
        hardware_version = None
        config = self._read_setting(CONFIG_PATH, settings_channel) if settings_channel else None
        if config is not None:
            try:
                hardware_version = hardware_version_of(parse_object(config, "config.json").get("acq_instrument"))
            except BadInput:
                hardware_version = None
        fb = info.filebrowser or info.datasets_filebrowser or "unknown"
        self._unit = UnitView(release, device_id, evidence, versioning, git, fb, settings_channel, reason,
                              datasets_channel, writable, hardware_version, warnings)
        return self._unit

    def _hostname(self, channel: str | None) -> str:
        data = self._read_setting(HOSTNAME_PATH, channel) if channel else None
        name = data.decode("utf-8", errors="replace").strip() if data else ""
        if name and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", name):
            return name
        base = self.http_base or self.ssh_url or self.address
        return urllib.parse.urlsplit(base).hostname or "planktoscope"

    # -- channel primitives ----------------------------------------------------------------------------

    def _read_setting(self, path: str, channel: str | None) -> bytes | None:
        if channel == "ssh":
            return self._sftp().read(path)
        if channel == "http":
            return self._admin_fs().read(path)
        raise Refused(f"settings are unreachable: {self._unit.settings_reason if self._unit else path}")

    def _write_setting(self, path: str, data: bytes, channel: str) -> None:
        if channel == "ssh":
            self._sftp().write(path, data)
        else:
            self._admin_fs().upload(path, data, override=True)  # always override; never delete first

    def _setting_sha256(self, path: str, channel: str) -> str | None:
        if channel == "http":
            return self._admin_fs().checksum(path, "sha256")
        data = self._sftp().read(path)
        return hashlib.sha256(data).hexdigest() if data is not None else None

    def _list(self, rel: str, channel: str) -> list[tuple[str, bool, int]] | None:
        """(name, is_dir, size) of a datasets folder relative to the data root; None if it does not exist."""
        if channel == "http":
            items = self._datasets_fs().listdir(rel)
            return None if items is None else [(i.name, i.is_dir, i.size) for i in items]
        if channel == "ssh":
            entries = self._sftp().listdir(posixpath.join(DATA_ROOT, rel))
            return None if entries is None else [(e.name, e.is_dir, e.size) for e in entries]
        return self._nginx_list(rel)

    def _nginx_list(self, rel: str) -> list[tuple[str, bool, int]] | None:
        response = self._plain_http().request("GET", "/" + urllib.parse.quote(rel.strip("/") + "/").lstrip("/"),
                                              expect=tuple(range(200, 600)))
        if response.status_code == 404:
            return None
        if response.status_code != 200 or "Index of" not in response.text:
            raise DeviceError(f"{self.http_base}: /{rel}/ is not a directory index")
        out = []
        for match in re.finditer(r'<a href="([^"]+)">[^<]*</a> +\S+ \S+ +(-|\d+)', response.text):
            name = urllib.parse.unquote(html.unescape(match.group(1)))
            if name in ("../", "./"):
                continue
            is_dir = name.endswith("/")
            out.append((name.rstrip("/"), is_dir, 0 if match.group(2) == "-" else int(match.group(2))))
        return out

    def _fetch(self, rel: str, dest: Path, channel: str) -> None:
        if channel == "http":
            self._datasets_fs().download(rel, dest)
        elif channel == "ssh":
            self._sftp().download(posixpath.join(DATA_ROOT, rel), dest)
        else:
            self._plain_http().download("/" + urllib.parse.quote(rel), dest)

    # -- backup (§14.2) --------------------------------------------------------------------------------

    def _expand(self, channel: str) -> list[tuple[str, bool]]:
        """Dataset selection: the patterns expanded level by level through directory listings."""
        found: dict[str, bool] = {}
        for pattern in self.dataset_patterns:
            parts = [p for p in pattern.strip("/").split("/") if p]
            level: list[tuple[str, bool]] = [("", True)]
            for part in parts:
                nxt = []
                for base, is_dir in level:
                    if not is_dir:
                        continue
                    entries = self._list(base, channel)
                    for name, child_dir, _ in entries or []:
                        if fnmatch.fnmatchcase(name, part):
                            nxt.append((f"{base}/{name}".lstrip("/"), child_dir))
                level = nxt
                if not level:
                    break
            for rel, is_dir in level:
                found.setdefault(rel, is_dir)
        return sorted(found.items())

    def _walk(self, rel: str, channel: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for name, is_dir, size in sorted(self._list(rel, channel) or []):
            child = f"{rel}/{name}"
            if is_dir:
                out += self._walk(child, channel)
            else:
                out.append((child, size))
        return out

    def backup(self, *, reason: str = "manual") -> Backup:
        unit = self._identify(fresh=True)
        created = dt.datetime.now(dt.UTC).replace(microsecond=0)
        work = Path(tempfile.mkdtemp(prefix="planktoscope-backup-"))
        path = work / bundle_mod.bundle_name(unit.device_id, created)
        writer = BundleWriter(path)
        try:
            manifest = self._write_bundle(writer, unit, created, work)
            writer.finish(manifest)
        except BaseException:
            writer.abort()
            shutil.rmtree(work, ignore_errors=True)
            raise
        device = DeviceInfo(self.target, unit.device_id, unit.release, model="PlanktoScope")
        return Backup(device=device, created=created, path=path, reason=reason)

    def _write_bundle(self, writer: BundleWriter, unit: UnitView, created: dt.datetime,
                      work: Path) -> dict[str, Any]:
        warnings = list(unit.warnings)
        files: list[dict[str, Any]] = []
        missing: list[str] = []
        if unit.settings_channel is not None:
            for n, device_path in enumerate(SETTINGS_FILES):
                self.progress(n, len(SETTINGS_FILES), f"settings: {device_path}")
                data = self._read_setting(device_path, unit.settings_channel)
                if data is None:
                    missing.append(device_path)
                    if device_path in REQUIRED_SETTINGS:
                        warnings.append(f"{device_path} is missing on the unit")
                    continue
                sha, size = writer.add_bytes(bundle_mod.file_entry(device_path), data)
                recognised = self._recognise(device_path, data, unit, warnings)
                files.append({"device_path": device_path, "bundle_path": bundle_mod.file_entry(device_path),
                              "size": size, "sha256": sha, "recognised": recognised})
        else:
            warnings.append(f"settings not backed up: {unit.settings_reason}")
        datasets = self._backup_datasets(writer, unit, work, warnings)
        for warning in warnings:
            log.warning("%s: %s", unit.device_id, warning)  # the CLI shows these on stderr
        source = {"base_url": self.http_base or "", "ssh": self.ssh_url or "", "device_id": unit.device_id,
                  "release": unit.release, "release_evidence": unit.evidence,
                  "installer_versioning": unit.versioning, "git_version": unit.git_version,
                  "hardware_version": unit.hardware_version, "filebrowser": unit.filebrowser}
        return {"format": bundle_mod.FORMAT, "created_utc": bundle_mod.created_text(created),
                "tool": {"name": "bench-harness", "version": __version__}, "source": source,
                "settings": {"available": unit.settings_channel is not None, "channel": unit.settings_channel,
                             "unavailable_reason": unit.settings_reason, "files": files,
                             "missing_optional": [m for m in missing if m not in REQUIRED_SETTINGS]},
                "datasets": datasets, "warnings": warnings}

    @staticmethod
    def _recognise(device_path: str, data: bytes, unit: UnitView, warnings: list[str]) -> dict[str, Any] | None:
        kind = {HARDWARE_PATH: schema.HARDWARE, CONFIG_PATH: schema.CONFIG}.get(device_path)
        if kind is None:
            return None
        try:
            rec = schema.recognise(kind, data)
        except BadInput as exc:
            warnings.append(f"{device_path}: {exc}")
            return {"candidates": [], "preset": None, "is_default": False, "error": str(exc)}
        if unit.release not in rec.candidates:
            warnings.append(f"{device_path} looks like {', '.join(rec.candidates) or 'no modelled release'}, "
                            f"not the unit's {unit.release}")
        return rec.as_json()

    def _backup_datasets(self, writer: BundleWriter, unit: UnitView, work: Path,
                         warnings: list[str]) -> list[dict[str, Any]]:
        channel = unit.datasets_channel
        if channel is None or not self.dataset_patterns:
            return []
        selected = self._expand(channel)
        out = []
        for index, (rel, is_dir) in enumerate(selected):
            self.progress(index, len(selected), f"dataset {rel}")
            files = self._walk(rel, channel) if is_dir else [(rel, 0)]
            entries, hashes, check = [], {}, None
            for file_rel, _ in files:
                tmp = work / "part"
                self._fetch(file_rel, tmp, channel)
                project = integrity.StreamHash(file_rel.rsplit("/", 1)[-1])

                def chunks(path: Path = tmp, h: integrity.StreamHash = project) -> Any:
                    with open(path, "rb") as f:
                        while chunk := f.read(bundle_mod.CHUNK):
                            h.update(chunk)
                            yield chunk

                sha, size = writer.add_stream(bundle_mod.dataset_entry(file_rel), chunks())
                entries.append({"path": file_rel, "size": size, "sha256": sha})
                if posixpath.dirname(file_rel) == rel:
                    base = file_rel.rsplit("/", 1)[-1]
                    hashes[base] = (size, project.hexdigest())
                    if base == integrity.NAME:
                        check = tmp.read_bytes()
                tmp.unlink()
            state, mismatches = "absent", []
            if check is not None:
                try:
                    mismatches = integrity.verify_hashes(check, {k: v for k, v in hashes.items()
                                                                 if k != integrity.NAME})
                except BadInput as exc:
                    mismatches = [str(exc)]
                state = "mismatch" if mismatches else "ok"
                if mismatches:
                    warnings.append(f"dataset {rel} fails its integrity.check ({mismatches[0]}): it will not "
                                    f"be restored without --force")
            out.append({"rel_path": rel, "files": len(entries), "bytes": sum(e["size"] for e in entries),
                        "integrity": state, "mismatches": mismatches, "entries": entries})
        return out

    # -- restore (§14.3) -------------------------------------------------------------------------------

    def _unit_settings(self, unit: UnitView) -> UnitSettings:
        if unit.settings_channel is None:
            return UnitSettings(unit.release, None, unit.settings_reason)
        read = lambda p: self._read_setting(p, unit.settings_channel)  # noqa: E731
        return UnitSettings(unit.release, unit.settings_channel, "", read(HARDWARE_PATH), read(CONFIG_PATH),
                            read(CALIBRATION_PATH) if unit.release == V2026 else None)

    def check_restore(self, artifact: Artifact, *, force: bool = False) -> RestorePlan:
        data = artifact.data
        if not isinstance(data, Bundle):
            raise Refused(f"{artifact.path.name} is a whole SD-card image: write it back with dd or Raspberry Pi "
                          f"Imager; it cannot be restored over the network")
        unit = self._identify(fresh=True)
        if data.device_id != unit.device_id and not force:
            raise Refused(f"the backup is of unit {data.device_id} but this unit is {unit.device_id}: the device "
                          f"IDs differ (--force restores it anyway)")
        settings_files = {f.device_path: data.read(f.bundle_path) for f in data.settings
                          if f.device_path in (HARDWARE_PATH, CONFIG_PATH, CALIBRATION_PATH)}
        is_default = None
        if HARDWARE_PATH in settings_files:  # recomputed: the manifest's own claim is not trusted
            try:
                is_default = schema.recognise(schema.HARDWARE, settings_files[HARDWARE_PATH]).is_default
            except BadInput:
                is_default = False
        plan = plan_settings(settings_files, src_release=data.release,
                             src_hardware_version=data.source.get("hardware_version"),
                             unit=self._unit_settings(unit), hardware_is_default=is_default)
        notes = [f"rule {plan.rule.kind}: {plan.rule.reason}"]
        datasets, refused_datasets = [], []
        refusals = list(plan.refusals(force))
        if data.datasets and not unit.datasets_writable:
            refusals.append(_Refusal("HZ-15", "datasets cannot be uploaded to this unit over HTTP (nginx serves "
                                              "/home/pi/data read-only): give its SSH address", False))
        for d in data.datasets:
            if d.integrity == "mismatch":
                if force:
                    notes.append(f"HZ-20: dataset {d.rel_path} fails its integrity.check; restored because of "
                                 f"--force")
                    datasets.append(d)
                else:
                    refused_datasets.append(d.rel_path)
                    refusals.append(_Refusal("HZ-20", f"dataset {d.rel_path} fails its integrity.check "
                                                      f"({(d.mismatches or ['mismatch'])[0]})", True))
            else:
                datasets.append(d)
        acquisitions = [m.groups() for d in datasets if (m := _ACQ.match(d.rel_path))]
        if acquisitions:
            notes.append("HZ-19: the imager refuses new acquisitions with these ids: "
                         + ", ".join("/".join(t) for t in acquisitions))
        if refusals:
            forcible = all(r.forcible for r in refusals)
            hint = " (--force overrides)" if forcible else ""
            raise Refused("restore refused: " + "; ".join(str(r) for r in refusals) + hint)
        notes += plan.warnings(force)
        return RestorePlan(artifact, data, unit, plan, datasets, refused_datasets, notes, force)

    def restore(self, plan: RestorePlan) -> PlanktoscopeRestoreReport:
        unit = plan.unit
        report = PlanktoscopeRestoreReport(notes=list(plan.notes), not_carried=list(NOT_CARRIED))
        report.skipped += plan.settings.skipped
        channel = unit.settings_channel
        uploaded: dict[str, bytes] = {}
        for n, upload in enumerate(plan.settings.uploads):
            assert channel is not None
            self.progress(n, len(plan.settings.uploads), f"upload {upload.device_path}")
            self._write_setting(upload.device_path, upload.data, channel)
            got = self._setting_sha256(upload.device_path, channel)
            if got != hashlib.sha256(upload.data).hexdigest():
                raise CheckFailed(f"{upload.device_path}: the unit holds other bytes right after the upload "
                                  f"(read-back sha256 differs)")
            uploaded[upload.device_path] = upload.data
            names = _field_names(upload.device_path, upload.data)
            if upload.migrated:
                # A migration drops keys of the backup (wb_*, the dead stepper keys: not on the unit now) and
                # adds keys at the unit's own values (hat_*, user_setup: not in the backup); say which.
                before = _field_names(upload.device_path, upload.original)
                report.skipped += [f for f in before if f not in names]
                report.untouched += [f for f in names if f not in before]
                names = [f for f in names if f in before]
            report.restored += names
        present = 0
        for d in plan.datasets:
            present += self._restore_dataset(plan.bundle, d, unit, report)
        if present:
            report.notes.append(f"{present} dataset files were already on the unit, identical")
        report.untouched += self._untouched_datasets(plan, unit)
        if uploaded:
            report.rebooted = self._reboot_and_wait(report.notes)
            self._post_check(uploaded, channel, report)
        return report

    def _restore_dataset(self, bundle: Bundle, d: bundle_mod.Dataset, unit: UnitView,
                         report: PlanktoscopeRestoreReport) -> int:
        channel = unit.datasets_channel
        present = 0
        with bundle.open_entries() as zf:
            for entry in d.entries:
                data = zf.read(bundle_mod.dataset_entry(entry["path"]))
                written = self._put_dataset_file(entry["path"], data, channel, overwrite=False)
                if not written:
                    server = self._dataset_sha256(entry["path"], channel)
                    if server == entry["sha256"]:
                        present += 1
                        continue
                    if self.overwrite_datasets:
                        self._put_dataset_file(entry["path"], data, channel, overwrite=True)
                    else:
                        report.notes.append(f"{entry['path']}: a different file of that name is on the unit; "
                                            f"kept (restore with overwrite_datasets to replace it)")
                        report.skipped.append(entry["path"])
                        continue
                if self._dataset_sha256(entry["path"], channel) != entry["sha256"]:
                    raise CheckFailed(f"{entry['path']}: the unit holds other bytes after the upload")
        report.restored.append(d.rel_path)
        return present

    def _put_dataset_file(self, rel: str, data: bytes, channel: str | None, *, overwrite: bool) -> bool:
        if channel == "http":
            return self._datasets_fs().upload(rel, data, override=overwrite)
        if channel == "ssh":
            return self._sftp().write(posixpath.join(DATA_ROOT, rel), data, exclusive=not overwrite)
        raise Refused("datasets cannot be uploaded to this unit")

    def _dataset_sha256(self, rel: str, channel: str | None) -> str | None:
        if channel == "http":
            return self._datasets_fs().checksum(rel, "sha256")
        data = self._sftp().read(posixpath.join(DATA_ROOT, rel))
        return hashlib.sha256(data).hexdigest() if data is not None else None

    def _untouched_datasets(self, plan: RestorePlan, unit: UnitView) -> list[str]:
        if unit.datasets_channel is None or not plan.bundle.manifest.get("datasets") and not plan.datasets:
            return []
        try:
            on_unit = {rel for rel, _ in self._expand(unit.datasets_channel)}
        except (DeviceError, LinkError):
            return []
        in_bundle = {d.rel_path for d in plan.bundle.datasets}
        return sorted(on_unit - in_bundle)

    # -- reboot and read-back --------------------------------------------------------------------------

    def _boot_id(self, channel: str | None) -> str | None:
        try:
            if channel == "ssh" or (channel is None and self.ssh_url):
                data = self._sftp().read(BOOT_ID_PATH)
            elif self.http_base and self._unit is not None and self._unit.release in FILEBROWSER_ERA:
                self._admin_fs().transport.reset_connections()
                data = self._admin_fs().read(BOOT_ID_PATH)
            else:
                return None
        except Unavailable:
            return None
        return data.decode().strip() if data else None

    def _alive(self) -> bool:
        if self.http_base:
            plain = self._plain_http()
            plain.reset_connections()
            plain.request("GET", "/admin/fs", expect=tuple(range(200, 600)))
        if self.ssh_url:
            self._sftp().read(HOSTNAME_PATH)
        return True

    def _reboot_and_wait(self, notes: list[str]) -> bool:
        """Reboot at once (W8: a dashboard save would overwrite the uploads) and wait for the new boot."""
        channel = self._unit.settings_channel if self._unit else None
        old = self._boot_id(channel)
        if self.ssh_url:
            self._sftp().run("sudo reboot", expect_drop=True)
        elif self.reboot_hook is not None:
            self.reboot_hook()
        else:
            notes.append("HZ-18: reboot the unit now (dashboard or Cockpit): until it reboots, Node-RED keeps "
                         "the old settings in memory and a dashboard save would overwrite the restored files")
            return False
        end = time.monotonic() + self.reboot_timeout
        seen_down = False
        last = "no answer yet"
        while time.monotonic() < end:
            time.sleep(0.1)
            try:
                current = self._boot_id(channel)
                if old is not None and current is not None and current != old:
                    return True
                if old is None and self._alive() and seen_down:
                    return True
            except (LinkError, DeviceError) as exc:
                seen_down, last = True, str(exc)
        raise LinkError(f"{self.address}: the unit did not come back from its reboot within "
                        f"{self.reboot_timeout:g} s (last: {last})")

    def _post_check(self, uploaded: dict[str, bytes], channel: str | None,
                    report: PlanktoscopeRestoreReport) -> None:
        """HZ-21: semantics after the reboot (a re-format is no change); HZ-18: a clobbered file is reported."""
        assert channel is not None
        for path, data in uploaded.items():
            now = self._read_setting(path, channel)
            if now == data:
                continue
            same = False
            if now is not None and path in (HARDWARE_PATH, CONFIG_PATH):
                try:
                    same = schema.semantic_equal(parse_object(now, path), parse_object(data, path))
                except BadInput:
                    same = False
            if not same:
                report.notes.append(f"HZ-18: {path} changed on the unit after the restore (a dashboard save or a "
                                    f"hardware-version choice overwrote it): restore again and reboot at once")

    # -- settings for feature steps --------------------------------------------------------------------

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Edit hardware.json / config.json keys as the dashboard would save them (Node-RED style on v2.3-
        v2025, the JS writer on v2026), through the settings channel."""
        unit = self._identify(fresh=True)
        if unit.settings_channel is None:
            raise Refused(f"cannot apply settings: {unit.settings_reason}")
        by_file: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            kind, _, key = name.partition(".")
            path = {"hardware": HARDWARE_PATH, "config": CONFIG_PATH}.get(kind)
            if path is None or not key:
                raise BadInput(f"{name!r}: settings are named hardware.<key> or config.<key>")
            by_file.setdefault(path, {})[key] = value
        for path, changes in by_file.items():
            current = self._read_setting(path, unit.settings_channel)
            doc = parse_object(current, path) if current is not None else {}
            doc.update(changes)
            style = JS if unit.release == V2026 else NODE_RED
            self._write_setting(path, dump(doc, style), unit.settings_channel)
        self._unit = None


@dataclass(frozen=True)
class _Refusal:
    id: str
    message: str
    forcible: bool

    def __str__(self) -> str:
        return f"{self.id} (refuse): {self.message}"


def _field_names(device_path: str, data: bytes) -> list[str]:
    prefix = {HARDWARE_PATH: "hardware", CONFIG_PATH: "config", CALIBRATION_PATH: "calibration"}.get(device_path)
    if prefix is None:
        return [device_path]
    try:
        return [f"{prefix}.{k}" for k in parse_object(data, device_path)]
    except BadInput:
        return [device_path]


def distinctive_settings(device: DeviceInfo, seed: int) -> dict[str, Any]:
    """Non-default calibration and sample settings for ``seed``, in the field view (hardware.*, config.*)."""
    release = device.firmware
    values: dict[str, Any] = {
        "hardware.pump_steps_per_ml": 2000 + 17 * seed,
        "hardware.red_gain": round(1.5 + 0.11 * seed, 2),
        "hardware.blue_gain": round(1.2 + 0.07 * seed, 2),
        "hardware.process_pixel_fixed": round(0.7 + 0.013 * seed, 3),
        "config.sample_project": f"QA project {seed}",
        "config.sample_operator": f"operator {seed}",
        "config.acq_id": 100 + seed,
    }
    if release in (V2024, V2025) and not (device.details or {}).get("hardware_version"):
        # A unit that has been calibrated has been through the first-run hardware-version dialog.
        values["config.acq_instrument"] = "PlanktoScope v2.5" if release == V2024 else "PlanktoScope v2.6"
    return values


__all__ = ["PlanktoscopeDriver", "PlanktoscopeRestoreReport", "RestorePlan", "distinctive_settings"]
