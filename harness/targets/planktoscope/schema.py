"""Models of hardware.json and config.json per release, and release recognition (targets/planktoscope.md §3,
§4, §12). Pure: bytes in, findings out.

``recognise(kind, data)`` says which releases a file can belong to (key rules of §12.1, then the preset
library), whether it is an unmodified default, how it is formatted and what is odd about it.
``validate(kind, doc, release)`` checks a document against the per-release shape of §12.2: required and
known optional keys, tolerated unknown keys (real readers ignore them, R1), types and ranges, and the
red/blue cross-key rule (R2). ``release_changes`` lists what differs between two releases (§12.3).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.targets.planktoscope import presets
from harness.targets.planktoscope.formats import evidence, parse_object
from harness.targets.planktoscope.releases import RELEASES, V2_3, V2023, V2024, V2025, V2026

HARDWARE = "hardware"
CONFIG = "config"
KINDS = (HARDWARE, CONFIG)

# -- key sets per release (§3.1, §4.1), in shipped order --------------------------------------------------

_HW_CORE = ("microsteps", "focus_steps_per_mm", "pump_steps_per_ml", "focus_max_speed", "pump_max_speed")
_GAINS = ("analog_gain", "digital_gain", "acq_fnumber_objective")

HW_REQUIRED: dict[str, tuple[str, ...]] = {
    V2_3: ("stepper_reverse", *_HW_CORE, "stepper_type", "wb_red_gain", "wb_blue_gain", *_GAINS),
    V2023: ("stepper_reverse", *_HW_CORE, "stepper_type", "red_gain", "blue_gain", *_GAINS,
            "process_pixel_fixed"),
    V2024: ("stepper_reverse", *_HW_CORE, "stepper_type", "red_gain", "blue_gain", *_GAINS,
            "process_pixel_fixed"),
    V2025: (*_HW_CORE, "red_gain", "blue_gain", *_GAINS, "process_pixel_fixed"),
    V2026: (*_HW_CORE, "red_gain", "blue_gain", *_GAINS, "process_pixel_fixed", "hat_type", "hat_version"),
}
HW_OPTIONAL: dict[str, tuple[str, ...]] = {
    V2_3: ("red_gain", "blue_gain", "process_pixel_fixed", "camera_type"),  # the v2.3 UI writes these
    V2023: ("camera_type",),
    V2024: ("camera_type",),
    V2025: ("stepper_reverse", "camera_type"),  # stepper_reverse: v2.1 / adafruithat-latest only
    V2026: ("camera_type",),
}

_CFG_18 = ("sample_project", "sample_id", "sample_ship", "sample_operator", "sample_sampling_gear",
           "sample_gear_net_opening", "acq_id", "acq_instrument", "acq_celltype", "acq_minimum_mesh",
           "acq_maximum_mesh", "acq_volume", "object_depth_min", "object_depth_max", "process_id", "nb_frame",
           "sleep_before", "imaging_pump_volume")
CFG_REQUIRED: dict[str, tuple[str, ...]] = {r: _CFG_18 for r in (V2_3, V2023, V2024, V2025)}
CFG_REQUIRED[V2026] = (*_CFG_18, "user_setup")
# Keys of the pre-v2.3 (v2.1) root config: reference only, never a profile (§4.1).
CFG_PRE_V2_3 = ("generic_sleep_before", "generic_volume_before", "generic_path", "generic_nb_frame",
                "generic_sleep_during", "acq_min_esd", "acq_max_esd", "acq_magnification",
                "acq_camera_name", "object_date", "object_time", "process_pixel")

_INSTRUMENT = re.compile(r"^PlanktoScope v\d+\.\d+$")


@dataclass(frozen=True)
class Finding:
    level: str  # "error" (the readers would misbehave), "warning", "info"
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


@dataclass
class Recognition:
    kind: str
    candidates: list[str]  # releases, oldest first
    preset: str | None = None  # "<release>/<preset name>" of the first match
    presets: list[str] = field(default_factory=list)
    is_default: bool = False
    lineage: str = ""  # e.g. "v2.3 lineage", "pre-v2.3 reference file"
    formatting: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    doc: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"candidates": list(self.candidates), "preset": self.preset, "is_default": self.is_default,
                "lineage": self.lineage, "formatting": list(self.formatting),
                "findings": [str(f) for f in self.findings]}


# -- recognition (§12.1) ----------------------------------------------------------------------------------


def _hardware_candidates(doc: Mapping[str, Any]) -> tuple[list[str], str]:
    if "hat_version" in doc or "hat_type" in doc:
        return [V2026], "v2026 (hat_* keys)"
    if "wb_red_gain" in doc or "wb_blue_gain" in doc:
        lineage = "v2.2 lineage (no analog_gain)" if "analog_gain" not in doc else "v2.3 lineage (wb_* keys)"
        return [V2_3], lineage
    if "stepper_type" in doc and "microsteps" not in doc:
        return [], "the v2.1 root file (reference only, not a profile)"
    if "stepper_type" in doc:
        return [V2023, V2024], "v2023.9.0/v2024.0.0 (stepper_type)"
    return [V2025], "v2025.0.0 (no stepper_type, no hat_*)"


def _config_candidates(doc: Mapping[str, Any]) -> tuple[list[str], str]:
    if "user_setup" in doc or doc.get("acq_instrument") == "PlanktoScope v3.0":
        return [V2026], "v2026 (user_setup)"
    if any(k.startswith("generic_") for k in doc):
        return [], "pre-v2.3 (v2.1/v2.2) root file with generic_* keys (reference only, not a profile)"
    if doc.get("acq_instrument") is None and "acq_instrument" in doc:
        return [V2024, V2025], "v2024.0.0/v2025.0.0 (acq_instrument null: first-run preset)"
    if doc.get("acq_celltype") == 200 and doc.get("acq_instrument") == "PlanktoScope v2.3":
        return [V2_3], "the v2.3 root file (celltype 200, PlanktoScope v2.3)"
    return [V2_3, V2023, V2024, V2025], "v2.3 ... v2025.0.0 (the 18-key set)"


def _semantic_equal(a: Any, b: Any) -> bool:
    """JSON equality where 1 == 1.0 (a Node-RED re-save is no change) but True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_semantic_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_semantic_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def semantic_equal(a: Any, b: Any) -> bool:
    return _semantic_equal(a, b)


def library(kind: str, release: str) -> dict[str, bytes]:
    return presets.hardware_presets(release) if kind == HARDWARE else presets.config_presets(release)


def matching_presets(kind: str, doc: Mapping[str, Any], releases: list[str] | tuple[str, ...] = RELEASES
                     ) -> list[str]:
    """``<release>/<preset>`` of every preset whose content equals ``doc`` semantically."""
    found = []
    for release in releases:
        for name, data in library(kind, release).items():
            if _semantic_equal(parse_object(data, name), doc):
                found.append(f"{release}/{name}")
    return found


def recognise(kind: str, data: bytes) -> Recognition:
    """Which release a hardware.json / config.json belongs to; BadInput if it is not a JSON object."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    doc = parse_object(data, f"{kind}.json")
    candidates, lineage = (_hardware_candidates if kind == HARDWARE else _config_candidates)(doc)
    matches = matching_presets(kind, doc, candidates)
    if matches:
        matched_releases = {m.split("/", 1)[0] for m in matches}
        candidates = [r for r in candidates if r in matched_releases]
    elif kind == HARDWARE and candidates == [V2023, V2024]:
        candidates = _split_2023_2024(doc) or candidates
    rec = Recognition(kind=kind, candidates=candidates, preset=matches[0] if matches else None,
                      presets=matches, is_default=bool(matches), lineage=lineage, formatting=evidence(data),
                      doc=doc)
    for release in candidates[-1:]:  # check against the newest candidate's shape
        rec.findings = validate(kind, doc, release)
    if not candidates:
        rec.findings = [Finding("error", "", f"not a file of any modelled release: {lineage}")]
    return rec


def _split_2023_2024(doc: Mapping[str, Any]) -> list[str] | None:
    """Rule 4: v2.5 (f16) with pixel 0.75 is v2023.9.0, with 0.88 v2024.0.0; v2.6 (f12) the reverse."""
    f, px = doc.get("acq_fnumber_objective"), doc.get("process_pixel_fixed")
    if doc.get("microsteps") != 256:
        return None
    if (f, px) in ((16, 0.75), (12, 0.88)):
        return [V2023]
    if (f, px) in ((16, 0.88), (12, 0.75)):
        return [V2024]
    return None


# -- validation (§12.2) -----------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wb_limit(release: str) -> float:
    """White-balance gains must stay below this: 32 (v2024 validator), 8 on the v2.3 profile (#166)."""
    return 8.0 if release == V2_3 else 32.0


def white_balance(doc: Mapping[str, Any], release: str) -> tuple[str, str]:
    """R2/R3: ("ok" | "absent" | "partial" | "not_numeric" | "out_of_range", message)."""
    has_red, has_blue = "red_gain" in doc, "blue_gain" in doc
    if not has_red and not has_blue:
        return "absent", "no red_gain/blue_gain: the imager uses its default gains"
    if has_red != has_blue:
        present = "red_gain" if has_red else "blue_gain"
        return "partial", (f"only {present} is present: white balance needs both, so both are ignored and "
                           f"the default gains are used")
    red, blue = doc["red_gain"], doc["blue_gain"]
    if not (_is_number(red) and _is_number(blue)):
        return "not_numeric", "red_gain/blue_gain is not a number: both are ignored, default gains are used"
    limit = wb_limit(release)
    for name, value in (("red_gain", red), ("blue_gain", blue)):
        if not 0 <= value < limit if release == V2_3 else not 0 <= value <= limit:
            return "out_of_range", (f"{name} {value} is outside 0..{limit:g}: the imager crashes after the "
                                    f"next reboot (#166)")
    return "ok", "white balance in range"


def validate(kind: str, doc: Mapping[str, Any], release: str) -> list[Finding]:
    """Findings for ``doc`` as a file of ``release``: missing/unknown keys, types, ranges, cross-key rule."""
    out: list[Finding] = []
    if kind == HARDWARE:
        required, optional = HW_REQUIRED[release], HW_OPTIONAL[release]
    else:
        required, optional = CFG_REQUIRED[release], ()
    for key in required:
        if key not in doc:
            hint = ("the UI will never add it back" if kind == CONFIG else "readers use their built-in default")
            out.append(Finding("warning", key, f"missing ({hint})"))
    for key in doc:
        if key not in required and key not in optional:
            keeper = "Node-RED keeps it" if release != V2026 else "readers ignore it"
            out.append(Finding("info", key, f"not a {release} key: {keeper}"))
    out += _value_findings(kind, doc, release)
    return out


def _value_findings(kind: str, doc: Mapping[str, Any], release: str) -> list[Finding]:
    out: list[Finding] = []

    def bad(key: str, message: str, level: str = "error") -> None:
        out.append(Finding(level, key, message))

    if kind == HARDWARE:
        if "microsteps" in doc and doc["microsteps"] not in (32, 256):
            bad("microsteps", f"{doc['microsteps']!r} is neither 32 nor 256", "warning")
        if "focus_steps_per_mm" in doc and not (_is_int(doc["focus_steps_per_mm"])
                                                and doc["focus_steps_per_mm"] > 0):
            bad("focus_steps_per_mm", "must be an integer > 0")
        for key in ("pump_steps_per_ml", "focus_max_speed", "pump_max_speed", "process_pixel_fixed"):
            if key in doc and not (_is_number(doc[key]) and doc[key] > 0):
                level = "warning" if key == "process_pixel_fixed" else "error"
                bad(key, f"{doc[key]!r} must be a number > 0", level)
        for key in ("analog_gain", "digital_gain"):
            if key in doc and not (_is_number(doc[key]) and 0 <= doc[key] <= 16):
                bad(key, f"{doc[key]!r} must be a number in 0..16")
        if "acq_fnumber_objective" in doc and not (_is_int(doc["acq_fnumber_objective"])
                                                   and doc["acq_fnumber_objective"] > 0):
            bad("acq_fnumber_objective", "must be an integer > 0")
        if "hat_type" in doc and doc["hat_type"] not in ("planktoscope", "adafruit"):
            bad("hat_type", f"{doc['hat_type']!r} is neither 'planktoscope' nor 'adafruit'", "warning")
        if "hat_version" in doc and not (_is_number(doc["hat_version"]) and doc["hat_version"] in (1.2, 3.3)):
            bad("hat_version", f"{doc['hat_version']!r}: the v2026 light controller accepts only 1.2 and 3.3")
        if "stepper_type" in doc:
            value = doc["stepper_type"]
            if not (isinstance(value, str) and (value in ("adafruit", "pscope_hat") or "waveshare" in value)):
                bad("stepper_type", f"{value!r} is not adafruit, *waveshare* or pscope_hat", "warning")
        state, message = white_balance(doc, release)
        if state in ("partial", "not_numeric", "out_of_range"):
            bad("red_gain/blue_gain", message)
    else:
        if "acq_instrument" in doc:
            value = doc["acq_instrument"]
            if value is not None and not (isinstance(value, str) and _INSTRUMENT.match(value)):
                bad("acq_instrument", f"{value!r} is not 'PlanktoScope v<major>.<minor>' or null", "warning")
        if "user_setup" in doc and not isinstance(doc["user_setup"], bool):
            bad("user_setup", "must be true or false", "warning")
    return out


# -- what changes between releases (§12.3) ----------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseChange:
    kind: str
    added: tuple[str, ...]  # keys the destination's presets carry and the source's do not
    removed: tuple[str, ...]  # keys of the source's presets the destination's readers no longer use
    notes: tuple[str, ...] = ()


_NOTES: dict[tuple[str, str], tuple[str, ...]] = {
    (V2_3, V2023): ("wb_* renamed red_gain/blue_gain in the presets (no migration on the unit)",
                    "PlanktoScope-HAT presets get 256 microsteps and speeds 5/50"),
    (V2023, V2024): ("pscopehat-latest renamed planktoscopehat-latest (v2.5 values); fairscope-latest added",
                     "process_pixel_fixed of v2.5 and v2.6 swapped (0.75 <-> 0.88)",
                     "planktoscopehat-latest config has acq_instrument null"),
    (V2024, V2025): ("stepper_type removed; stepper_reverse kept only on v2.1/adafruithat-latest",
                     "v2.6-family white balance 1.99/1.65; focus 27 steps/mm on the -latest HAT presets"),
    (V2025, V2026): ("hat_type/hat_version added; only v2.6 and v3.0 exist",
                     "config gains user_setup and a 2-space indent"),
}


def release_changes(kind: str, src: str, dst: str) -> ReleaseChange:
    """Keys added and removed going from ``src`` presets to ``dst`` presets, with the notes of §12.3."""
    if kind == HARDWARE:
        a = set(HW_REQUIRED[src]) | set(HW_OPTIONAL[src])
        b = set(HW_REQUIRED[dst]) | set(HW_OPTIONAL[dst])
        order = [k for r in RELEASES for k in HW_REQUIRED[r] + HW_OPTIONAL[r]]
    else:
        a, b = set(CFG_REQUIRED[src]), set(CFG_REQUIRED[dst])
        order = list(CFG_REQUIRED[V2026])
    seen: list[str] = []
    for key in order:
        if key not in seen:
            seen.append(key)
    added = tuple(k for k in seen if k in b and k not in a)
    removed = tuple(k for k in seen if k in a and k not in b)
    i, j = RELEASES.index(src), RELEASES.index(dst)
    notes: list[str] = []
    step = 1 if j >= i else -1
    for n in range(i, j, step):
        pair = (RELEASES[min(n, n + step)], RELEASES[max(n, n + step)])
        notes += _NOTES.get(pair, ())
    return ReleaseChange(kind, added, removed, tuple(notes))
