"""The PlanktoScope in the version compatibility matrix (DESIGN rule 7; targets/planktoscope.md §12.3, §15).

Four things, stated from the spec and the shipped presets, never from the simulator's code:

- ``compat_versions()``: the five release profiles, each at its default hardware variant (§1, §6), as a
  fresh image installs it.
- ``compat_rule(src, dst)``: what a backup of a matrix unit at ``src`` does on a fresh unit at ``dst``.
  The §15 refusals that can fire for these units are decided from what the units hold: HZ-03 (Adafruit-HAT
  settings onto v2026) and HZ-13 (the bundle's hardware version differs from the unit's known one). Any
  other pair is ``restore`` when nothing changes field by field (the same release), else ``migrate``: a
  unit always reports its *own* release and keeps its own installer version files, so a backup restored
  onto another release can never read back equal to it, even where versions.py says ``restore`` (same key
  set) or ``warn`` (keys kept as they are).
- ``migrate_fields(fields, src, dst)``: the read-back the spec predicts after the §15 migrations;
- ``fresh_unit(control)``: a destination as a fresh card holds it, without the simulator's seeded datasets.

The matrix units: ``distinctive_settings`` calibrates every source unit through the dashboard writers; on
v2024.0.0/v2025.0.0 that also answers the first-run hardware-version dialog (``acq_instrument``), as a
calibrated unit has. A fresh destination unit holds its release's default presets and no datasets, so
every dataset file of the backup is uploaded and compared.
"""

from __future__ import annotations

from typing import Any

from harness.targets.base import CompatRule, CompatVersion, DeviceInfo
from harness.targets.planktoscope import presets
from harness.targets.planktoscope.driver import distinctive_settings
from harness.targets.planktoscope.formats import parse_object
from harness.targets.planktoscope.releases import (
    CALIBRATION_PATH,
    CONFIG_PATH,
    DATA_ROOT,
    HARDWARE_PATH,
    RELEASES,
    V2_3,
    V2024,
    V2025,
    V2026,
    hardware_version_of,
)
from harness.targets.planktoscope.versions import (
    DEAD_ON_V2026,
    HAT_VERSIONS,
    MIGRATE,
    REFUSE,
    RESTORE,
    WARN,
    pair_rule,
)

HW, CFG = "hardware.", "config."
# The unit's own release record (§2, §10): the restore uploads settings files and datasets only (§14.3), so
# the destination keeps its own installer files (none on v2.3 and v2026; their commit, tag and hardware
# lines are the destination image's, not the backup's) and reports its own release (predicted: ``release``).
INSTALLER_FILES = ("files./usr/share/planktoscope/*",)
HARDWARE_FILE = f"files.{HARDWARE_PATH}"
CONFIG_FILE = f"files.{CONFIG_PATH}"
# Where a simulated unit's first start seeds its synthetic acquisitions (§11.3); a fresh card has none.
SEEDED_DATASETS = f"{DATA_ROOT}/img"


def compat_versions() -> list[CompatVersion]:
    return [CompatVersion(r) for r in RELEASES]


# -- what the matrix units hold (from the preset library, §3.2, §4.1, §6) ----------------------------------


def _preset(version: CompatVersion) -> tuple[dict[str, Any], dict[str, Any]]:
    hardware, config = presets.seed(version.version, version.profile)
    return parse_object(hardware, "hardware preset"), parse_object(config, "config preset")


def destination_hardware_version(version: CompatVersion) -> str | None:
    """The hardware version a fresh unit states: its config's ``acq_instrument`` (null on the v2024/v2025
    PlanktoScope-HAT image: unknown), on v2026 also its ``hat_version``."""
    hardware, config = _preset(version)
    known = hardware_version_of(config.get("acq_instrument"))
    if known is None and version.version == V2026:
        known = next((v for v, h in HAT_VERSIONS.items() if h == hardware.get("hat_version")), None)
    return known


def source_settings(version: CompatVersion) -> tuple[dict[str, Any], dict[str, Any]]:
    """hardware.json and config.json of a matrix source unit: the preset plus the distinctive settings."""
    hardware, config = _preset(version)
    device = DeviceInfo("planktoscope", "matrix", version.version,
                        details={"hardware_version": hardware_version_of(config.get("acq_instrument"))})
    for name, value in distinctive_settings(device, 0).items():
        kind, _, key = name.partition(".")
        (hardware if kind == "hardware" else config)[key] = value
    return hardware, config


def _adafruit(hardware: dict[str, Any], hardware_version: str | None) -> bool:
    """HZ-03: v2.1 / Adafruit-HAT settings (32 microsteps, stepper_type adafruit, or hardware v2.1)."""
    return hardware.get("microsteps") == 32 or hardware.get("stepper_type") == "adafruit" \
        or hardware_version == "2.1"


def fresh_unit(control: str | None) -> None:
    """Make a just-started matrix destination a fresh card: no acquisitions.

    A new SD-card image carries no datasets (the simulator's re-flash, ``_sim/firmware``, leaves none), but a
    simulator's first start seeds two (§11.3), with the same ids on every unit. Left there, a same-release
    restore finds every dataset file already present and uploads none, and across releases the destination's
    own ``metadata.json``/``integrity.check`` collide with the backup's (§14.3: kept). Without them the restore
    uploads every dataset file of the backup, and the read-back compares each one byte for byte.
    """
    from harness.simctl import SimControl

    with SimControl(control or "") as sim:
        sim.request("POST", "/disk/delete", {"path": SEEDED_DATASETS, "writer": "matrix"})


# -- the declared rule --------------------------------------------------------------------------------------


def compat_rule(source: CompatVersion, destination: CompatVersion) -> CompatRule:
    src, dst = source.version, destination.version
    base = pair_rule(src, dst)
    hardware, config = source_settings(source)
    src_hw = hardware_version_of(config.get("acq_instrument"))
    dst_hw = destination_hardware_version(destination)
    refusals = []
    if dst == V2026 and _adafruit(hardware, src_hw):
        refusals.append("HZ-03: Adafruit-HAT settings, and v2026 supports only v2.6 and v3.0 hardware")
    if src_hw and dst_hw and src_hw != dst_hw:
        refusals.append(f"HZ-13: a hardware v{src_hw} backup onto a v{dst_hw} unit")
    if refusals:
        return CompatRule(REFUSE, "; ".join(refusals))
    if src == dst:
        return CompatRule(RESTORE, base.reason)

    migrated_hw, migrated_cfg = _migrate_docs(hardware, config, src, dst, destination)
    old = {HW + k for k in hardware} | {CFG + k for k in config}
    new = {HW + k for k in migrated_hw} | {CFG + k for k in migrated_cfg}
    converted = sorted({HW + k for k in migrated_hw if k in hardware and migrated_hw[k] != hardware[k]}
                       | {CFG + k for k in migrated_cfg if k in config and migrated_cfg[k] != config[k]}
                       | {"release"})
    ignore = list(INSTALLER_FILES)
    # A migrated file is re-written in its writer's style (versions._rewrite), so its sha256 is not the
    # backup's; its content is compared key by key (hardware.*, config.*) instead.
    if migrated_hw != hardware:
        ignore.append(HARDWARE_FILE)
    if migrated_cfg != config:
        ignore.append(CONFIG_FILE)
    kind = {RESTORE: "same key set", WARN: "kept as they are, with warnings", MIGRATE: "migrated"}[base.kind]
    reason = (f"{base.reason} (versions.py: {base.kind}, settings {kind}); the unit reports its own release "
              f"{dst}")
    return CompatRule(MIGRATE, reason, dropped=tuple(sorted(old - new)), added=tuple(sorted(new - old)),
                      converted=tuple(converted), ignore=tuple(ignore))


# -- the predicted read-back ---------------------------------------------------------------------------------


def _migrate_docs(hardware: dict[str, Any], config: dict[str, Any], src: str, dst: str,
                  destination: CompatVersion) -> tuple[dict[str, Any], dict[str, Any]]:
    """§15 on the two documents: what the destination holds after the restore."""
    hw, cfg = dict(hardware), dict(config)
    # HZ-01: wb_* -> red_gain/blue_gain where those are absent; wb_* dropped. Not onto v2.3 itself: no release
    # reads wb_*, so a v2.3 unit keeps the bytes (deviation in docs/targets/planktoscope.md).
    if dst != V2_3 and ("wb_red_gain" in hw or "wb_blue_gain" in hw):
        for old, new in (("wb_red_gain", "red_gain"), ("wb_blue_gain", "blue_gain")):
            if old in hw:
                value = hw.pop(old)
                hw.setdefault(new, value)
    if dst == V2026 and "hat_version" not in hw:
        # HZ-02: hat_type "planktoscope" and hat_version from the unit's hardware version (its current
        # hardware.json first); the keys no v2026 reader knows are dropped.
        unit_hw, _ = _preset(destination)
        hat = unit_hw.get("hat_version")
        if hat not in HAT_VERSIONS.values():
            hat = HAT_VERSIONS.get(destination_hardware_version(destination) or "")
        for key in DEAD_ON_V2026:
            hw.pop(key, None)
        hw.setdefault("hat_type", "planktoscope")
        hw["hat_version"] = hat
    if dst == V2026 and "user_setup" not in cfg:
        # HZ-07: user_setup from the unit (true only if the unit was set up; a fresh unit was not).
        _, unit_cfg = _preset(destination)
        cfg["user_setup"] = unit_cfg.get("user_setup") is True
    if dst in (V2024, V2025) and "acq_instrument" in cfg and cfg["acq_instrument"] is None:
        # HZ-08: acq_instrument filled from the bundle's hardware version where it states one. The manifest
        # records only what acq_instrument says, so with it null the one source left is a v2026 hat_version.
        known = next((v for v, h in HAT_VERSIONS.items() if h == hardware.get("hat_version")), None)
        if known:
            cfg["acq_instrument"] = f"PlanktoScope v{known}"
    return hw, cfg


def _nest(fields: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    keys = [k for k in fields if k.startswith(prefix)]
    if not keys:
        return None
    return {k[len(prefix):]: fields[k] for k in keys}


def migrate_fields(fields: dict[str, Any], source: CompatVersion, destination: CompatVersion) -> dict[str, Any]:
    """The field view a backup of ``source`` should read back as on a fresh ``destination`` unit.

    The settings documents get the §15 migrations and ``release`` is the destination's (a unit reports its
    own). Datasets, the device ID and the settings availability are unchanged; calibration.json is uploaded
    only to v2026 (HZ-25), so elsewhere it is not predicted. What cannot be predicted from the backup is
    declared in the rule's ``ignore`` (compat_rule), not guessed here.
    """
    src, dst = source.version, destination.version
    hardware, config = _nest(fields, HW), _nest(fields, CFG)
    hw2, cfg2 = _migrate_docs(hardware or {}, config or {}, src, dst, destination)
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key.startswith((HW, CFG)):
            continue
        if dst != V2026 and (key == f"files.{CALIBRATION_PATH}" or key.startswith("calibration.")):
            continue
        out[key] = value
    out["release"] = dst
    if hardware is not None:
        out.update({HW + k: v for k, v in hw2.items()})
    if config is not None:
        out.update({CFG + k: v for k, v in cfg2.items()})
    return out

