"""Cross-release restore rules as data (DESIGN rule 7; targets/planktoscope.md §12.3 and §15).

Two layers:

- ``pair_rule(src, dst)``: the rule for a bundle of release ``src`` onto a unit of release ``dst`` —
  ``restore`` (same release, plain), ``migrate`` (keys are changed before upload), ``warn`` (uploaded as is,
  with warnings) — and the hazard IDs that can fire for the pair. ``RULES`` holds it for every pair, so a
  compatibility matrix can print it.
- ``plan_settings(...)``: the hazards of §15 evaluated on the actual bytes of the bundle and the unit, giving
  the exact bytes to upload, the migrations made, the warnings and the refusals. Every refusal says whether
  ``--force`` may override it; a refused *version* never can (DESIGN).

Deviation (documented in docs/targets/planktoscope.md): HZ-01 migrates only when the destination is not v2.3
itself. No release reads ``wb_*``, a v2.3 unit included, so a same-release v2.3 restore keeps the bytes (and
round-trips byte-identically) and only warns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import BadInput
from harness.targets.planktoscope import schema
from harness.targets.planktoscope.formats import detect_style, dump, parse_object
from harness.targets.planktoscope.releases import (
    CALIBRATION_PATH,
    CONFIG_PATH,
    HARDWARE_PATH,
    RELEASES,
    V2_3,
    V2023,
    V2024,
    V2025,
    V2026,
    hardware_version_of,
)

RESTORE = "restore"
MIGRATE = "migrate"
WARN = "warn"
REFUSE = "refuse"

HAT_VERSIONS = {"2.6": 1.2, "3.0": 3.3}  # hardware version -> hat_version (HZ-02, R4)
DEAD_ON_V2026 = ("stepper_type", "stepper_reverse")


@dataclass(frozen=True)
class Rule:
    kind: str  # restore | migrate | warn
    reason: str
    hazards: tuple[str, ...] = ()


def _pair(src: str, dst: str) -> Rule:
    if src == dst:
        return Rule(RESTORE, f"same release {src}: plain restore", ("HZ-09", "HZ-20", "HZ-10", "HZ-11"))
    i, j = RELEASES.index(src), RELEASES.index(dst)
    if dst == V2026:
        return Rule(MIGRATE, f"{src} -> v2026: hat_type/hat_version added, user_setup added, dead stepper keys "
                             f"dropped; Adafruit-HAT (v2.1) settings refused",
                    ("HZ-01", "HZ-02", "HZ-03", "HZ-07", "HZ-22", "HZ-26") if src == V2_3 else
                    ("HZ-02", "HZ-03", "HZ-07", "HZ-22"))
    if src == V2_3:
        return Rule(MIGRATE, f"v2.3 -> {dst}: legacy wb_* gains become red_gain/blue_gain", ("HZ-01", "HZ-26"))
    if src == V2026:
        return Rule(WARN, f"v2026 -> {dst}: hat_* and user_setup are kept but read by nobody",
                    ("HZ-04", "HZ-06", "HZ-25"))
    if dst == V2025 and src in (V2023, V2024):
        return Rule(WARN, f"{src} -> v2025.0.0: stepper_type is dead; stepper_reverse no longer swaps the motors "
                          f"on PlanktoScope-HAT units", ("HZ-05", "HZ-08"))
    if j < i:
        return Rule(WARN, f"{src} -> {dst} (downgrade): keys the older release expects may be missing; readers "
                          f"use their defaults", ("HZ-08",))
    return Rule(RESTORE, f"{src} -> {dst}: same key set", ("HZ-08",))


RULES: dict[tuple[str, str], Rule] = {(s, d): _pair(s, d) for s in RELEASES for d in RELEASES}


def pair_rule(src: str, dst: str) -> Rule:
    return RULES[(src, dst)]


# -- the content plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hazard:
    id: str
    kind: str  # migrate | warn | refuse
    message: str
    forcible: bool = False

    def __str__(self) -> str:
        return f"{self.id} ({self.kind}): {self.message}"


@dataclass
class Upload:
    device_path: str
    data: bytes
    original: bytes
    existed: bool

    @property
    def migrated(self) -> bool:
        return self.data != self.original


@dataclass
class UnitSettings:
    """What the unit holds now, as far as the driver can read it."""

    release: str
    channel: str | None  # "http" (/admin/fs), "ssh" (SFTP), or None: settings unreachable
    unreachable_reason: str = ""
    hardware: bytes | None = None
    config: bytes | None = None
    calibration: bytes | None = None


@dataclass
class SettingsPlan:
    rule: Rule
    uploads: list[Upload] = field(default_factory=list)
    hazards: list[Hazard] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # settings files of the bundle not uploaded

    def refusals(self, force: bool) -> list[Hazard]:
        return [h for h in self.hazards if h.kind == REFUSE and not (force and h.forcible)]

    def warnings(self, force: bool = False) -> list[str]:
        """Report lines: migrations and warnings, and the refusals that ``force`` overrode."""
        lines = [str(h) for h in self.hazards if h.kind in (WARN, MIGRATE)]
        if force:
            lines += [f"{h} (overridden by --force)" for h in self.hazards if h.kind == REFUSE and h.forcible]
        return lines


def bundle_hardware_version(hardware: bytes | None, config: bytes | None, recorded: str | None) -> str | None:
    """The hardware version a bundle belongs to: recorded, else ``acq_instrument``, else a versioned preset."""
    if recorded:
        return recorded
    if config is not None:
        try:
            version = hardware_version_of(parse_object(config, "config.json").get("acq_instrument"))
        except BadInput:
            version = None
        if version:
            return version
    if hardware is not None:
        try:
            doc = parse_object(hardware, "hardware.json")
        except BadInput:
            return None
        hat = doc.get("hat_version")
        for version, value in HAT_VERSIONS.items():
            if hat == value:
                return version
    return None


def unit_hardware_version(unit: UnitSettings) -> str | None:
    if unit.config is not None:
        try:
            version = hardware_version_of(parse_object(unit.config, "config.json").get("acq_instrument"))
        except BadInput:
            version = None
        if version:
            return version
    if unit.release == V2026 and unit.hardware is not None:
        try:
            hat = parse_object(unit.hardware, "hardware.json").get("hat_version")
        except BadInput:
            return None
        return next((v for v, h in HAT_VERSIONS.items() if h == hat), None)
    return None


def _rewrite(original: bytes, doc: Mapping[str, Any]) -> bytes:
    """Re-write a migrated document in the style its file came in (who wrote it last, §5)."""
    return dump(doc, detect_style(original))


def _replace_keys(doc: dict[str, Any], old: tuple[str, str], new: tuple[str, str]) -> dict[str, Any]:
    """wb_red_gain/wb_blue_gain -> red_gain/blue_gain at the same place in the key order."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in old:
            target = new[old.index(key)]
            if target not in doc:
                out[target] = value
            continue
        out[key] = value
    return out


def plan_settings(files: Mapping[str, bytes], *, src_release: str, src_hardware_version: str | None,
                  unit: UnitSettings, hardware_is_default: bool | None = None) -> SettingsPlan:
    """The settings part of a restore: uploads (possibly migrated) and hazards. Never touches a unit."""
    dst = unit.release
    rule = pair_rule(src_release, dst)
    plan = SettingsPlan(rule)
    add = plan.hazards.append
    hardware, config = files.get(HARDWARE_PATH), files.get(CONFIG_PATH)
    calibration = files.get(CALIBRATION_PATH)

    if not files:
        return plan
    if unit.channel is None:
        hz = "HZ-15" if dst == V2_3 else "HZ-14"
        add(Hazard(hz, REFUSE, f"the settings of a {dst} unit cannot be written: {unit.unreachable_reason}; "
                              f"give the unit's SSH address (--ssh ssh://pi@HOST) to restore them",
                   forcible=dst != V2_3))
        plan.skipped = sorted(files)
        return plan

    hw_doc = parse_object(hardware, "hardware.json in the bundle") if hardware is not None else None
    cfg_doc = parse_object(config, "config.json in the bundle") if config is not None else None
    unit_cfg = _maybe(unit.config, "config.json on the unit")
    unit_hw = _maybe(unit.hardware, "hardware.json on the unit")
    src_version = bundle_hardware_version(hardware, config, src_hardware_version)
    dst_version = unit_hardware_version(unit)

    # HZ-26: pre-v2.3 config (not forcible: a refused version)
    if cfg_doc is not None and any(k.startswith("generic_") for k in cfg_doc):
        add(Hazard("HZ-26", REFUSE, "config.json is a pre-v2.3 file (generic_* keys): its key set differs from "
                                    "every modelled release and Node-RED would never add the new keys; map it "
                                    "onto the unit's preset by hand"))

    # HZ-03: Adafruit-HAT / v2.1 settings onto v2026 (not forcible)
    if dst == V2026:
        adafruit = (hw_doc is not None and (hw_doc.get("microsteps") == 32
                                            or hw_doc.get("stepper_type") == "adafruit")) \
            or src_version == "2.1"
        if adafruit:
            add(Hazard("HZ-03", REFUSE, "these are v2.1 / Adafruit-HAT settings and v2026 supports only v2.6 and "
                                        "v3.0 hardware"))

    # HZ-13: hardware version mismatch (forcible); unknown on either side is not a mismatch
    if src_version and dst_version and src_version != dst_version:
        add(Hazard("HZ-13", REFUSE, f"the backup is of hardware v{src_version} but the unit is v{dst_version}: its "
                                    f"calibrations would apply to the wrong optics and pump", forcible=True))

    if hw_doc is not None:
        assert hardware is not None
        new_hw = dict(hw_doc)
        # HZ-01: legacy white balance keys
        if "wb_red_gain" in hw_doc or "wb_blue_gain" in hw_doc:
            if dst == V2_3:
                add(Hazard("HZ-01", WARN, "hardware.json holds wb_red_gain/wb_blue_gain, which no release reads: "
                                          "the unit keeps using its default white balance"))
            else:
                new_hw = _replace_keys(new_hw, ("wb_red_gain", "wb_blue_gain"), ("red_gain", "blue_gain"))
                add(Hazard("HZ-01", MIGRATE, "legacy wb_red_gain/wb_blue_gain moved to red_gain/blue_gain "
                                             "(no release reads wb_*)"))
        # HZ-10 / HZ-11: white balance validity (on the migrated document)
        state, message = schema.white_balance(new_hw, dst)
        if state == "partial":
            add(Hazard("HZ-10", REFUSE, message, forcible=True))
        elif state == "not_numeric":
            add(Hazard("HZ-11", REFUSE, message, forcible=True))
        elif state == "out_of_range":
            add(Hazard("HZ-11", REFUSE, message))
        # HZ-12: pixel size
        pixel = new_hw.get("process_pixel_fixed")
        if "process_pixel_fixed" not in new_hw or pixel == 0:
            add(Hazard("HZ-12", WARN, "process_pixel_fixed is absent or 0: consumers use their built-in default "
                                      "pixel size"))
        if dst == V2026 and "hat_version" not in new_hw:
            # HZ-02: the light service exits without hat_version
            hat = None
            if unit_hw is not None and unit_hw.get("hat_version") in HAT_VERSIONS.values():
                hat = unit_hw["hat_version"]
            elif dst_version in HAT_VERSIONS:
                hat = HAT_VERSIONS[dst_version]
            if hat is None:
                add(Hazard("HZ-02", REFUSE, "hardware.json has no hat_version and the unit's hardware version "
                                            "cannot be determined: the v2026 light service would not start"))
            else:
                for key in DEAD_ON_V2026:
                    new_hw.pop(key, None)
                new_hw.setdefault("hat_type", "planktoscope")
                new_hw["hat_version"] = hat
                add(Hazard("HZ-02", MIGRATE, f"added hat_type 'planktoscope' and hat_version {hat} (from the "
                                             f"unit), dropped stepper_type/stepper_reverse"))
        if dst != V2026 and ("hat_version" in new_hw or "hat_type" in new_hw):
            add(Hazard("HZ-04", WARN, "hat_type/hat_version are v2026 keys that this release ignores; a missing "
                                      "stepper_type means 'adafruit' on an Adafruit-HAT controller"))
        if dst in (V2025, V2026) and new_hw.get("stepper_reverse") is True and new_hw.get("microsteps") != 32:
            add(Hazard("HZ-05", WARN, "stepper_reverse true no longer swaps the pump and focus motor outputs on "
                                      f"{dst}: check the motor wiring"))
        if dst in (V2023, V2024) and "stepper_type" not in new_hw and src_release in (V2025, V2026):
            add(Hazard("HZ-04", WARN, "stepper_type is missing: an Adafruit-HAT controller assumes 'adafruit'"))
        plan.uploads.append(Upload(HARDWARE_PATH, hardware if new_hw == hw_doc else _rewrite(hardware, new_hw),
                                   hardware, unit.hardware is not None))

    if cfg_doc is not None:
        assert config is not None
        new_cfg = dict(cfg_doc)
        if dst == V2026 and "user_setup" not in new_cfg:
            value = bool(unit_cfg.get("user_setup") is True) if unit_cfg is not None else False
            new_cfg["user_setup"] = value
            add(Hazard("HZ-07", MIGRATE, f"added user_setup {str(value).lower()} (the unit's current value); "
                                         f"without it v2026 redirects to the setup page"))
        if dst != V2026 and "user_setup" in new_cfg:
            add(Hazard("HZ-06", WARN, "user_setup is a v2026 key: Node-RED keeps and re-saves it, harmlessly"))
        if dst in (V2024, V2025) and "acq_instrument" in new_cfg and new_cfg["acq_instrument"] is None:
            if src_version:
                new_cfg["acq_instrument"] = f"PlanktoScope v{src_version}"
                add(Hazard("HZ-08", MIGRATE, f"acq_instrument was null: set to 'PlanktoScope v{src_version}' so "
                                             f"the dashboard does not ask for the hardware version (W1 would "
                                             f"replace hardware.json)"))
            elif hardware is not None and hardware_is_default is False:
                add(Hazard("HZ-08", REFUSE, "acq_instrument is null and the hardware version is unknown: the "
                                            "dashboard will ask for it, and choosing one replaces the restored "
                                            "hardware.json calibration", forcible=True))
            else:
                add(Hazard("HZ-08", WARN, "acq_instrument is null: the dashboard will ask for the hardware "
                                          "version, which replaces hardware.json"))
        plan.uploads.append(Upload(CONFIG_PATH, config if new_cfg == cfg_doc else _rewrite(config, new_cfg),
                                   config, unit.config is not None))

    # HZ-22: partial restore onto v2026
    if dst == V2026 and (hardware is None) != (config is None):
        missing = CONFIG_PATH if config is None else HARDWARE_PATH
        on_unit = unit.config if config is None else unit.hardware
        if on_unit is None:
            add(Hazard("HZ-22", REFUSE, f"only one settings file is in the backup and the unit has no {missing}: "
                                        f"v2026 needs both", forcible=True))

    if calibration is not None:
        if dst == V2026:
            plan.uploads.append(Upload(CALIBRATION_PATH, calibration, calibration, unit.calibration is not None))
            if unit.calibration is None:
                add(Hazard("HZ-25", WARN, "calibration.json (schema unknown) is created on a unit that had none"))
        else:
            plan.skipped.append(CALIBRATION_PATH)
            add(Hazard("HZ-25", WARN, f"calibration.json is only used by v2026: not uploaded to {dst}"))

    for upload in plan.uploads:
        if not upload.existed:
            add(Hazard("HZ-23", WARN, f"{upload.device_path} did not exist on the unit: the upload creates it "
                                      f"as the file browser's user, and the dashboard may be unable to save it"))
    if plan.uploads:
        add(Hazard("HZ-09", WARN, "re-selecting the hardware version on the unit replaces hardware.json (and on "
                                  "v2026 config.json too), wiping the restored calibration"))
    return plan


def _maybe(data: bytes | None, what: str) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        return parse_object(data, what)
    except BadInput:
        return None
