"""PlanktoScope (Raspberry Pi): settings files, the version file and datasets over the file-browser API
(``/admin/fs``, ``/ps/data/browse``), or over SSH/SFTP where HTTP cannot reach them.

Facts: the target spec shared/targets/planktoscope.md; what the simulator speaks and what is modelled:
docs/targets/planktoscope.md. Pieces: releases.py (release facts), presets.py (the preset library from
fixtures/planktoscope), formats.py (writer styles), schema.py (per-release models, recognition),
versionfile.py, integrity.py, card.py (dd images: MBR + FAT boot sector), bundle.py (the backup ZIP),
versions.py (cross-release rules), compat.py (the version compatibility matrix), fbclient.py / sshlink.py (links), driver.py.

The device ID is the unit's host name (``/etc/hostname``), read through ``/admin/fs`` or SFTP; where neither
reaches it (v2.3 and v2026 over HTTP alone), the host part of the address.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from harness.compare import CompareRules, flatten
from harness.errors import BadInput
from harness.targets.base import Artifact, CompatRule, CompatVersion, DeviceInfo, Target
from harness.targets.planktoscope import card as card_mod
from harness.targets.planktoscope import compat as compat_mod
from harness.targets.planktoscope.bundle import Bundle, bundle_name, load_bundle
from harness.targets.planktoscope.driver import PlanktoscopeDriver, distinctive_settings
from harness.targets.planktoscope.formats import parse_object
from harness.targets.planktoscope.releases import CALIBRATION_PATH, CONFIG_PATH, HARDWARE_PATH

_PARSED = {HARDWARE_PATH: "hardware", CONFIG_PATH: "config", CALIBRATION_PATH: "calibration"}


class PlanktoscopeTarget(Target):
    name = "planktoscope"
    artifact_ext = "zip"
    compare_rules = CompareRules(float_decimals=None, nan_equal=True)
    driver = PlanktoscopeDriver

    def artifact_name(self, device_id: str, created: dt.datetime) -> str:
        if created.tzinfo is None:
            raise ValueError("backup times must be timezone-aware (UTC)")
        return bundle_name(device_id, created)

    def load_artifact(self, path: Path) -> Artifact:
        """A backup bundle, or a whole SD-card image (``dd``) checked by its MBR and FAT boot sector."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                head = f.read(512)
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
        if head.startswith(b"PK"):
            bundle = load_bundle(path)
            return Artifact(path=path, target=self.name, device_id=bundle.device_id, firmware=bundle.release,
                            created=bundle.manifest["created_utc"], data=bundle, warnings=list(bundle.warnings))
        if card_mod.looks_like_card(head) or path.suffix.lower() in (".img", ".iso", ".bin"):
            image = card_mod.check_card(path)
            created = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            label = image.boot.get("volume_label") or "boot"
            return Artifact(path=path, target=self.name, device_id=path.stem, created=created,
                            firmware=f"unknown (SD card image, {image.boot['fat_type']} {label})", data=image,
                            warnings=list(image.warnings))
        raise BadInput(f"{path.name} is neither a PlanktoScope backup bundle (ZIP) nor an SD card image")

    def fields(self, artifact: Artifact) -> dict[str, Any]:
        data = artifact.data
        if isinstance(data, card_mod.CardImage):
            return {"card": data.fields()}
        if not isinstance(data, Bundle):
            raise TypeError("not a PlanktoScope artifact")
        out: dict[str, Any] = {"device_id": data.device_id, "release": data.release,
                               "settings_available": data.settings_available}
        for f in data.settings:
            out[f"files.{f.device_path}"] = f.sha256
            prefix = _PARSED.get(f.device_path)
            if prefix is not None:
                try:
                    doc = parse_object(data.read(f.bundle_path), f.device_path)
                except BadInput:
                    continue
                out.update(flatten(doc, prefix))  # hardware.red_gain, config.acq_instrument, ...
        for d in data.datasets:
            out[f"datasets.{d.rel_path}.integrity"] = d.integrity
            for entry in d.entries:
                out[f"datasets.{entry['path']}"] = entry["sha256"]
        return out

    def distinctive_settings(self, device: DeviceInfo, seed: int) -> dict[str, Any]:
        return distinctive_settings(device, seed)

    # Not updatable in the matrix's sense: moving a unit to another release re-flashes its SD card, which
    # wipes the settings (§2), so "the same unit after an update" is a fresh unit at that release.
    updatable = False

    def compat_versions(self) -> list[CompatVersion]:
        return compat_mod.compat_versions()

    def compat_rule(self, source: CompatVersion, destination: CompatVersion) -> CompatRule:
        return compat_mod.compat_rule(source, destination)

    def compat_fresh_unit(self, control: str | None) -> None:
        compat_mod.fresh_unit(control)

    def migrate_fields(self, fields: dict[str, Any], source: CompatVersion,
                       destination: CompatVersion) -> dict[str, Any]:
        """The §15 migrations on the field view (compat.py), stated from the spec, not the simulator."""
        return compat_mod.migrate_fields(fields, source, destination)


TARGET = PlanktoscopeTarget()

__all__ = ["TARGET", "PlanktoscopeDriver", "PlanktoscopeTarget"]
