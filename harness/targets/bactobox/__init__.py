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
from harness.errors import Refused
from harness.targets.bactobox.artifact import gmi_fields, load_gmi
from harness.targets.bactobox.driver import BactoboxDriver
from harness.targets.bactobox.gmi import GmiInfo
from harness.targets.bactobox.versions import AS_IS, get_version, restore_verdict, version_key
from harness.targets.base import Artifact, CompatRule, CompatVersion, DeviceInfo, Target

_TIMEZONES = ("Europe/Copenhagen", "America/Chicago", "Asia/Tokyo", "Australia/Perth", "Africa/Nairobi")
_WIFI = ("client", "access_point", "off")
# The versions the simulator runs, on the smallest disk (profile ``micro``, 6 MiB; 1.8.4's layout L1 packed
# into it): the matrix and the committed goldens (a ``tiny`` GMI of format 2 is 32 MiB, ``micro`` 6 MiB).
# The same disk size everywhere also keeps a 1.8.4 GMI restorable on 2.x (disk_too_small otherwise).
COMPAT_VERSIONS = tuple(CompatVersion(v, "micro", v) for v in ("1.8.4", "2.2.0", "2.6.3", "3.1.0"))


class BactoboxTarget(Target):
    name = "bactobox"
    artifact_ext = "gmi"
    # The backup time differs between any two backups; every boot rewrites the boot counter (and, under env
    # v2, which copy is current), so the boot partition is compared by its parsed environment without it.
    compare_rules = CompareRules(ignore=("created", "boot.boot_count", "boot_env.boot_count"))
    driver = BactoboxDriver
    progress_unit = "bytes"  # multi-GiB GMIs: show sizes and the transfer rate
    # Software is updated in place (the inactive slot, then a switch), forward only: can_update.
    updatable = True

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

    def compat_versions(self) -> list[CompatVersion]:
        return list(COMPAT_VERSIONS)

    def compat_rule(self, source: CompatVersion, destination: CompatVersion) -> CompatRule:
        """§5: the software on the unit at restore time reads the GMI (its format is the source version's);
        after the restart the unit runs the GMI's software, so a restore is "as is" (the whole disk, byte for
        byte, software included: time travel), "migrate" for a format-1 GMI read by 2.x's legacy reader (the
        disk still comes back whole), or refused when the unit cannot read the format."""
        src, dst = get_version(source.version), get_version(destination.version)
        try:
            verdict = restore_verdict(src.writes_format, src.name, dst.reads_formats, dst.name)
        except Refused as exc:
            return CompatRule("refuse", str(exc))
        if verdict == AS_IS:
            return CompatRule("restore", f"GMI format {src.writes_format} restored as is; the unit then runs "
                                         f"{src.name} (time travel)")
        return CompatRule("migrate", f"GMI format {src.writes_format} converted by the legacy reader")

    def can_update(self, source: CompatVersion, destination: CompatVersion) -> bool:
        """Software updates go forward only (a same-version update reinstalls it in the other slot), within
        one layout: the simulator does not model the 1.8.4 -> 2.x updater's L1 -> L2 conversion (§5 notes)."""
        src, dst = get_version(source.version), get_version(destination.version)
        return version_key(dst.name) >= version_key(src.name) and src.layout == dst.layout

    def distinctive_settings(self, device: DeviceInfo, seed: int) -> dict[str, Any]:
        return {"settings.timezone": _TIMEZONES[seed % len(_TIMEZONES)],
                "settings.clean_interval_h": str(12 + seed % 60),
                "settings.wifi_mode": _WIFI[seed % len(_WIFI)]}


TARGET = BactoboxTarget()

__all__ = ["TARGET", "BactoboxDriver", "BactoboxTarget"]
