"""MobiusFlow node: configuration backup/restore over the Engine API (1.x and 3000+), ZIP artifacts.

Facts: the target spec shared/targets/mobiusflow.md; what is modelled: docs/targets/mobiusflow.md. Pieces: schema.py
(manifest, MPV value files, digests), archive.py (ZIP writing and safe reading), versions.py (compatibility
rules and migrations), fields.py (field view for diffs), driver.py (the HTTP driver).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from harness.compare import CompareRules
from harness.errors import BadInput
from harness.targets.base import Artifact, CompatRule, CompatVersion, DeviceInfo, Target
from harness.targets.mobiusflow.archive import ArchiveError, BackupArchive, read_backup
from harness.targets.mobiusflow.driver import BACKUP_NAME, MobiusFlowDriver, distinctive_settings
from harness.targets.mobiusflow.fields import artifact_fields
from harness.targets.mobiusflow.schema import backup_file_name
from harness.targets.mobiusflow.versions import TEMPLATES, VERSIONS, get_version, verdict


def load_backup(path: Path) -> BackupArchive:
    """Read and check a whole backup ZIP; BadInput with one line naming the file and the node's code."""
    path = Path(path)
    try:
        archive = read_backup(path)
    except ArchiveError as exc:
        raise BadInput(f"{path.name}: {exc} ({exc.code})") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    m = archive.manifest
    # The digests are recomputed, not trusted: a manifest whose file hashes were "fixed" after an edit still
    # fails here, because the digest covers the decoded configuration.
    if m.config_digest is not None and m.config_digest != archive.content.config_digest(m.hub_id):
        raise BadInput(f"{path.name}: configDigest in backup.json does not match the configuration "
                       f"(integrity_failed)")
    if m.summary_digest is not None and m.summary_digest != archive.content.summary_digest(m.hub_id):
        raise BadInput(f"{path.name}: summaryDigest in backup.json does not match the configuration "
                       f"(integrity_failed)")
    return archive


class MobiusFlowTarget(Target):
    name = "mobiusflow"
    artifact_ext = "zip"
    compare_rules = CompareRules()
    driver = MobiusFlowDriver

    def artifact_name(self, device_id: str, created: dt.datetime) -> str:
        """The node's own name: ``backup_<YYYY-MM-DD>_<HH-mm-ss>.zip`` (UTC), as the driver asks for it."""
        if created.tzinfo is None:
            raise ValueError("backup times must be timezone-aware (UTC)")
        return backup_file_name(BACKUP_NAME, created)

    def load_artifact(self, path: Path) -> Artifact:
        archive = load_backup(path)
        m = archive.manifest
        return Artifact(path=Path(path), target=self.name, device_id=m.hub_id, firmware=m.version,
                        created=m.created, data=archive, warnings=list(archive.warnings))

    def fields(self, artifact: Artifact) -> dict[str, Any]:
        if not isinstance(artifact.data, BackupArchive):
            raise TypeError("not a MobiusFlow artifact")
        return artifact_fields(artifact.data)

    def distinctive_settings(self, device: DeviceInfo, seed: int) -> dict[str, Any]:
        return distinctive_settings(device, seed)

    # -- the compatibility matrix (spec §5) ----------------------------------------------------------------

    def compat_versions(self) -> list[CompatVersion]:
        return [CompatVersion(v) for v in VERSIONS]

    def compat_rule(self, source: CompatVersion, destination: CompatVersion) -> CompatRule:
        # The matrix's units share one hub ID, and their objects use profiles that all have v3 templates.
        pids = set(TEMPLATES)
        src = get_version(source.version)
        v = verdict(backup_format=src.writes, backup_version=src.version, backup_hub="00A1F3",
                    backup_kind="full" if src.generation == 3 else "config", pids=pids,
                    node_version=destination.version, node_hub="00A1F3")
        if not v.restorable:
            return CompatRule("refuse", f"{v.code}: {v.message}")
        if v.kind == "as is":
            return CompatRule("restore", "restored as is")
        return CompatRule("migrate", "; ".join(v.changes))

    def migrate_fields(self, fields: dict[str, Any], source: CompatVersion,
                       destination: CompatVersion) -> dict[str, Any]:
        """The backup's fields as the destination node reads them back after the §5 migration: its format,
        version and kind; 1.x values are absent (services start at defaults), other fields keep their names."""
        dst = get_version(destination.version)
        out = {k: v for k, v in fields.items() if not (k.startswith("values.") and dst.generation == 3
                                                       and get_version(source.version).generation == 1)}
        out["format"] = dst.writes
        out["source.version"] = dst.version
        out["kind"] = "full" if dst.generation == 3 else "config"
        return out


TARGET = MobiusFlowTarget()

__all__ = ["TARGET", "MobiusFlowDriver", "MobiusFlowTarget", "load_backup"]
