"""PhotosynQ MultispeQ v1: console backup to JSON, restore by setter commands with read-back.

Facts: the target spec shared/targets/multispeq.md. Pieces: schema.py (EEPROM layouts), protocol.py (console framing,
parsing, argument text, restore groups), artifact.py (the backup file), versions.py (compatibility rules),
driver.py (the serial driver).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from harness.compare import CompareRules
from harness.targets.base import Artifact, CompatRule, CompatVersion, DeviceInfo, Target
from harness.targets.multispeq.artifact import BackupDocument, load_document
from harness.targets.multispeq.driver import MultispeqDriver, distinctive_settings
from harness.targets.multispeq.schema import canonical_device_id
from harness.targets.multispeq.versions import DECLARED_VERSIONS, REFUSED_VERSIONS, rule

# The compatibility matrix covers every layout family: the declared versions, layout B (1.05 dev builds,
# only reachable by profile), and F, declared so the matrix shows its refusal.
COMPAT_VERSIONS = tuple(sorted(
    (*(CompatVersion(v.firmware, None, f"{v.firmware} ({v.family})") for v in DECLARED_VERSIONS),
     CompatVersion("1.05", "B", "1.05 (B)"),
     *(CompatVersion(v.firmware, None, f"{v.firmware} ({v.family})") for v in REFUSED_VERSIONS)),
    key=lambda v: (float(v.version), v.profile or "")))


class MultispeqTarget(Target):
    name = "multispeq"
    artifact_ext = "json"
    # Exact printed strings: print -> parse -> float32 -> print is idempotent (§8.3); NaN spellings equal.
    compare_rules = CompareRules(float_decimals=None, nan_equal=True)
    driver = MultispeqDriver
    updatable = True  # firmware is flashed in place (simulators: through the control plane)

    def compat_versions(self) -> list[CompatVersion]:
        return list(COMPAT_VERSIONS)

    def compat_rule(self, source: CompatVersion, destination: CompatVersion) -> CompatRule:
        r = rule(source.version, destination.version, src_profile=source.profile,
                 dst_profile=destination.profile)
        return CompatRule(r.kind, r.reason, r.dropped, r.added)

    def artifact_name(self, device_id: str, created: dt.datetime) -> str:
        """``YYYY-MM-DDTHH.MM.SS.json`` in UTC, dots for colons, as the desktop app names them (§7.2)."""
        if created.tzinfo is None:
            raise ValueError("backup times must be timezone-aware (UTC)")
        return created.astimezone(dt.UTC).strftime("%Y-%m-%dT%H.%M.%S") + ".json"

    def artifact_folder(self, device_id: str) -> str:
        """The per-unit folder: the canonical ID without colons (``5200131f``)."""
        return canonical_device_id(device_id).replace(":", "")

    def load_artifact(self, path: Path, *, force: bool = False) -> Artifact:
        """Validate the whole file; ``force`` also loads an edited one (its edits are listed, §8.4)."""
        return load_document(Path(path), allow_edited=force)

    def fields(self, artifact: Artifact) -> dict[str, Any]:
        data = artifact.data
        if not isinstance(data, BackupDocument):
            raise TypeError("not a MultispeQ artifact")
        out = dict(data.memory)
        out["device_id"] = artifact.device_id  # canonical: 1.15 and 1.17 print the same ID differently
        return out

    def distinctive_settings(self, device: DeviceInfo, seed: int) -> dict[str, Any]:
        return distinctive_settings(device, seed)


TARGET = MultispeqTarget()

__all__ = ["TARGET", "MultispeqDriver", "MultispeqTarget"]
