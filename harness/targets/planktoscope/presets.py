"""The preset library of every release, byte-exact (targets/planktoscope.md §3.2, §3.3, §4.1, §6).

The real upstream files live in ``fixtures/planktoscope/<release>/`` (copied from the research data, see
SOURCES.md there); every other preset is derived from them with the recipes of §3.3, §4.1 and §6, which are
byte-exact against upstream. The schema uses the library to tell an unmodified default, the simulator seeds
its disks from it.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from harness.errors import BadInput
from harness.targets.planktoscope.releases import RELEASE_INFO, V2_3, V2023, V2024, V2025, V2026, release_info

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "planktoscope"


@cache
def fixture(release: str, name: str) -> bytes:
    path = FIXTURES / release / name
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"PlanktoScope preset fixture {path} is missing ({exc.strerror}); the harness needs "
                       f"the repository's fixtures/planktoscope folder") from exc


# -- byte-level recipes ------------------------------------------------------------------------------------


def drop_lines(data: bytes, *keys: str) -> bytes:
    """Remove the lines of ``keys`` (never the last key line of the object: the comma would dangle)."""
    lines = data.split(b"\n")
    out = [ln for ln in lines if not any(ln.lstrip().startswith(f'"{k}":'.encode()) for k in keys)]
    return b"\n".join(out)


def set_value(data: bytes, key: str, value_json: str) -> bytes:
    pattern = re.compile(rb'^(\s*"' + re.escape(key.encode()) + rb'":\s*)([^,\n]*)(,?)$', re.MULTILINE)
    new, count = pattern.subn(lambda m: m.group(1) + value_json.encode() + m.group(3), data)
    if count != 1:
        raise ValueError(f"key {key!r} not found once in a preset")
    return new


def append_keys(data: bytes, pairs: list[tuple[str, str]], indent: int) -> bytes:
    """Append ``"key": value`` lines before the closing brace, keeping the final newline as it was."""
    tail = b"\n" if data.endswith(b"\n") else b""
    body = data[: len(data) - len(tail)]
    assert body.endswith(b"\n}")
    body = body[: -2]
    pad = b" " * indent
    extra = b"".join(b",\n" + pad + f'"{k}": {v}'.encode() for k, v in pairs)
    return body + extra + b"\n}" + tail


def reindent(data: bytes, old: int, new: int) -> bytes:
    lines = data.split(b"\n")
    out = []
    for ln in lines:
        stripped = ln.lstrip(b" ")
        depth = (len(ln) - len(stripped)) // old
        out.append(b" " * (depth * new) + stripped)
    return b"\n".join(out)


def _config(instrument: str | None, celltype: int) -> bytes:
    """A v2023.9.0-v2025.0.0 config preset: the v2.5 fixture with only these two values changed (§4.1)."""
    base = fixture(V2023, "v2.5.config.json")
    value = "null" if instrument is None else f'"PlanktoScope {instrument}"'
    return set_value(set_value(base, "acq_instrument", value), "acq_celltype", str(celltype))


# -- the libraries -----------------------------------------------------------------------------------------


@cache
def hardware_presets(release: str) -> dict[str, bytes]:
    """``{preset name: bytes}`` of the hardware presets shipped with ``release`` (v2.3: ``root``)."""
    name = release_info(release).name
    if name == V2_3:
        return {"root": fixture(V2_3, "hardware.json")}
    if name == V2023:
        return {n: fixture(V2023, f"{n}.hardware.json") for n in
                ("v2.1", "v2.3", "v2.5", "v2.6", "adafruithat-latest", "pscopehat-latest")}
    if name == V2024:
        v26 = fixture(V2024, "v2.6.hardware.json")
        return {
            "v2.1": fixture(V2023, "v2.1.hardware.json"),
            "v2.3": fixture(V2023, "v2.3.hardware.json"),
            "v2.5": fixture(V2024, "v2.5.hardware.json"),
            "v2.6": v26,
            "adafruithat-latest": fixture(V2023, "adafruithat-latest.hardware.json"),
            "planktoscopehat-latest": fixture(V2024, "planktoscopehat-latest.hardware.json"),
            "fairscope-latest": v26,
        }
    if name == V2025:
        latest = fixture(V2025, "planktoscopehat-latest.hardware.json")
        return {
            "v2.1": fixture(V2025, "adafruithat-latest.hardware.json"),
            "v2.3": drop_lines(fixture(V2023, "v2.3.hardware.json"), "stepper_reverse", "stepper_type"),
            "v2.5": drop_lines(fixture(V2024, "v2.5.hardware.json"), "stepper_reverse", "stepper_type"),
            "v2.6": fixture(V2025, "v2.6.hardware.json"),
            "adafruithat-latest": fixture(V2025, "adafruithat-latest.hardware.json"),
            "planktoscopehat-latest": latest,
            "fairscope-latest": latest,
        }
    v26 = append_keys(fixture(V2025, "planktoscopehat-latest.hardware.json"),
                      [("hat_type", '"planktoscope"'), ("hat_version", "1.2")], 2)
    v30 = v26
    for key, value in (("focus_steps_per_mm", "40"), ("pump_steps_per_ml", "3220"), ("pump_max_speed", "20"),
                       ("hat_version", "3.3")):
        v30 = set_value(v30, key, value)
    return {"v2.6": v26, "v3.0": v30}


@cache
def config_presets(release: str) -> dict[str, bytes]:
    """``{preset name: bytes}`` of the config presets shipped with ``release`` (v2.3: ``root``)."""
    name = release_info(release).name
    if name == V2_3:
        return {"root": fixture(V2_3, "config.json")}
    if name == V2023:
        v25 = fixture(V2023, "v2.5.config.json")
        return {"v2.1": _config("v2.1", 200), "v2.3": _config("v2.3", 300), "v2.5": v25,
                "adafruithat-latest": _config("v2.1", 200), "pscopehat-latest": v25}
    if name in (V2024, V2025):  # byte-identical between the two releases (§4.1)
        v26 = fixture(V2025, "v2.6.config.json")
        return {"v2.1": _config("v2.1", 200), "v2.3": _config("v2.3", 300),
                "v2.5": fixture(V2023, "v2.5.config.json"), "v2.6": v26,
                "adafruithat-latest": _config("v2.1", 200),
                "planktoscopehat-latest": fixture(V2024, "planktoscopehat-latest.config.json"),
                "fairscope-latest": v26}
    v26 = append_keys(reindent(fixture(V2025, "v2.6.config.json"), 4, 2), [("user_setup", "false")], 2)
    return {"v2.6": v26, "v3.0": set_value(v26, "acq_instrument", '"PlanktoScope v3.0"')}


# Which presets a fresh image of each hardware variant installs (§6).
_SEEDS: dict[tuple[str, str], tuple[str, str]] = {
    (V2_3, "default"): ("root", "root"),
    (V2023, "pscopehat"): ("pscopehat-latest", "pscopehat-latest"),
    (V2023, "adafruithat"): ("adafruithat-latest", "adafruithat-latest"),
    (V2026, "v2.6"): ("v2.6", "v2.6"),
    (V2026, "v3.0"): ("v3.0", "v3.0"),
}
for _release in (V2024, V2025):
    _SEEDS[(_release, "planktoscopehat")] = ("planktoscopehat-latest", "planktoscopehat-latest")
    _SEEDS[(_release, "v2.6")] = ("v2.6", "v2.6")
    _SEEDS[(_release, "adafruithat")] = ("adafruithat-latest", "adafruithat-latest")
    _SEEDS[(_release, "fairscope")] = ("fairscope-latest", "fairscope-latest")


def seed(release: str, variant: str | None = None) -> tuple[bytes, bytes]:
    """(hardware.json, config.json) bytes that a fresh image of ``release``/``variant`` carries."""
    info = release_info(release)
    variant = variant or info.default_variant
    key = (info.name, variant)
    if key not in _SEEDS:
        raise BadInput(f"PlanktoScope {info.name} has no hardware variant {variant!r} "
                       f"(variants: {', '.join(info.variants)})")
    hw, cfg = _SEEDS[key]
    return hardware_presets(info.name)[hw], config_presets(info.name)[cfg]


def all_releases() -> tuple[str, ...]:
    return tuple(RELEASE_INFO)
