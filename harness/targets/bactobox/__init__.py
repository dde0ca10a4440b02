"""SBT BactoBox (through Access's backup and restore): full-device GMI images, streamed.

Facts: the target spec shared/targets/bactobox.md; what the simulator speaks: docs/targets/bactobox.md. Pieces:
schema.py (construct layouts: MBR, boot environment, slot header, data store, ZIP records; the manifest),
gmi.py (GMI writing and reading in constant memory), artifact.py (validation and the field view),
versions.py (compatibility rule), driver.py (the HTTP driver).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from harness.compare import CompareRules, flatten
from harness.targets.bactobox.artifact import gmi_fields, load_gmi
from harness.targets.bactobox.driver import BactoboxDriver
from harness.targets.bactobox.gmi import GmiInfo
from harness.targets.base import Artifact, DeviceInfo, Target

_TIMEZONES = ("Europe/Copenhagen", "America/Chicago", "Asia/Tokyo", "Australia/Perth", "Africa/Nairobi")
_WIFI = ("client", "access_point", "off")


class BactoboxTarget(Target):
    name = "bactobox"
    artifact_ext = "gmi"
    # The backup time differs between any two backups; every boot rewrites the boot counter (and, under env
    # v2, which copy is current), so the boot partition is compared by its parsed environment without it.
    compare_rules = CompareRules(ignore=("created", "boot.boot_count", "boot_env.boot_count"))
    driver = BactoboxDriver
    progress_unit = "bytes"  # multi-GiB GMIs: show sizes and the transfer rate

    def artifact_name(self, device_id: str, created: dt.datetime) -> str:
        """``backup-of-<id>-<YYYY-MM-DD>.gmi``: the unit's ID and the date of the backup in UTC (F14)."""
        if created.tzinfo is None:
            raise ValueError("backup times must be timezone-aware (UTC)")
        return f"backup-of-{device_id}-{created.astimezone(dt.UTC):%Y-%m-%d}.gmi"

    def load_artifact(self, path: Path) -> Artifact:
        return load_gmi(Path(path))

    def fields(self, artifact: Artifact) -> dict[str, Any]:
        if not isinstance(artifact.data, GmiInfo):
            raise TypeError("not a BactoBox artifact")
        return dict(flatten(gmi_fields(artifact.data)))

    def distinctive_settings(self, device: DeviceInfo, seed: int) -> dict[str, Any]:
        return {"settings.timezone": _TIMEZONES[seed % len(_TIMEZONES)],
                "settings.clean_interval_h": str(12 + seed % 60),
                "settings.wifi_mode": _WIFI[seed % len(_WIFI)]}


TARGET = BactoboxTarget()

__all__ = ["TARGET", "BactoboxDriver", "BactoboxTarget"]
