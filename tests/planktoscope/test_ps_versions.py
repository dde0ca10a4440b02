"""Cross-release rules, pure: every pair has a rule; each hazard of §15 fires on its bytes."""

from __future__ import annotations

import json

import pytest

from harness.targets.planktoscope import presets, versions
from harness.targets.planktoscope.formats import parse_object
from harness.targets.planktoscope.releases import (
    CALIBRATION_PATH,
    CONFIG_PATH,
    HARDWARE_PATH,
    RELEASES,
    V2_3,
    V2024,
    V2025,
    V2026,
)
from harness.targets.planktoscope.versions import MIGRATE, REFUSE, RESTORE, WARN, UnitSettings, plan_settings


def test_every_pair_has_a_rule():
    assert set(versions.RULES) == {(s, d) for s in RELEASES for d in RELEASES}
    for (src, dst), rule in versions.RULES.items():
        assert rule.kind in (RESTORE, MIGRATE, WARN) and rule.reason
        assert (rule.kind == RESTORE) == (src == dst) or (src, dst) in {(versions.V2023, V2024)}
    assert versions.pair_rule(V2_3, V2026).kind == MIGRATE
    assert versions.pair_rule(V2026, V2024).kind == WARN


def seeds(release, variant=None):
    hw, cfg = presets.seed(release, variant)
    return hw, cfg


def unit(release, variant=None, channel="http", **kw):
    hw, cfg = seeds(release, variant)
    return UnitSettings(release, channel, "", kw.get("hardware", hw), kw.get("config", cfg), kw.get("calibration"))


def edit(data: bytes, **changes) -> bytes:
    doc = parse_object(data, "x")
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return (json.dumps(doc, indent=2) + "\n").encode()


def ids(plan, kind=None):
    return {h.id for h in plan.hazards if kind is None or h.kind == kind}


def test_same_release_default_is_plain_with_the_hz09_warning():
    hw, cfg = seeds(V2025, "v2.6")
    plan = plan_settings({HARDWARE_PATH: hw, CONFIG_PATH: cfg}, src_release=V2025, src_hardware_version=None,
                         unit=unit(V2025, "v2.6"))
    assert ids(plan) == {"HZ-09"}
    assert [u.data for u in plan.uploads] == [hw, cfg]  # bytes untouched
    assert plan.refusals(False) == []


def test_hz01_migrates_wb_keys_in_place_and_keeps_style():
    hw, cfg = seeds(V2_3)
    plan = plan_settings({HARDWARE_PATH: hw}, src_release=V2_3, src_hardware_version=None, unit=unit(V2024))
    assert "HZ-01" in ids(plan, MIGRATE)
    new = plan.uploads[0].data
    doc = parse_object(new, "hw")
    assert "wb_red_gain" not in doc and doc["red_gain"] == 2 and doc["blue_gain"] == 1.41
    assert list(doc).index("red_gain") == 7  # where wb_red_gain sat
    assert not new.endswith(b"\n") and b"1.0" in new  # the v2.3 writer's style: no LF, 1.0 kept
    same = plan_settings({HARDWARE_PATH: hw}, src_release=V2_3, src_hardware_version=None, unit=unit(V2_3, "default",
                                                                                                      "ssh"))
    assert "HZ-01" in ids(same, WARN) and same.uploads[0].data == hw


def test_hz02_hz03_onto_v2026():
    hw, cfg = seeds(V2025, "v2.6")
    plan = plan_settings({HARDWARE_PATH: hw, CONFIG_PATH: cfg}, src_release=V2025, src_hardware_version=None,
                         unit=unit(V2026, "v3.0", "ssh"))
    assert "HZ-13" in ids(plan, REFUSE)
    doc = parse_object(plan.uploads[0].data, "hw")
    assert doc["hat_version"] == 3.3 and doc["hat_type"] == "planktoscope"
    ada, _ = seeds(V2024, "adafruithat")
    plan = plan_settings({HARDWARE_PATH: ada}, src_release=V2024, src_hardware_version=None,
                         unit=unit(V2026, channel="ssh"))
    refusal = [h for h in plan.hazards if h.id == "HZ-03"][0]
    assert refusal.kind == REFUSE and not refusal.forcible
    reset = UnitSettings(V2026, "ssh", "", None, None)
    plan = plan_settings({HARDWARE_PATH: edit(hw)}, src_release=V2025, src_hardware_version=None, unit=reset)
    assert "HZ-02" in ids(plan, REFUSE) and "HZ-22" in ids(plan, REFUSE)


@pytest.mark.parametrize(("change", "hz", "forcible"), [
    ({"blue_gain": ...}, "HZ-10", True),
    ({"red_gain": 40}, "HZ-11", False),
    ({"red_gain": "2"}, "HZ-11", True),
])
def test_white_balance_refusals(change, hz, forcible):
    hw, cfg = seeds(V2024, "v2.6")
    plan = plan_settings({HARDWARE_PATH: edit(hw, **change)}, src_release=V2024, src_hardware_version="2.6",
                         unit=unit(V2024, "v2.6"))
    refusal = [h for h in plan.hazards if h.id == hz][0]
    assert refusal.kind == REFUSE and refusal.forcible == forcible
    assert bool(plan.refusals(True)) != forcible


def test_v2_3_white_balance_limit_is_8():
    hw, _ = seeds(V2_3)
    plan = plan_settings({HARDWARE_PATH: edit(hw, red_gain=8, blue_gain=1)}, src_release=V2_3,
                         src_hardware_version=None, unit=unit(V2_3, channel="ssh"))
    assert "HZ-11" in ids(plan, REFUSE)


def test_hz08_three_ways():
    hw, cfg = seeds(V2024)  # planktoscopehat-latest: acq_instrument null
    files = {HARDWARE_PATH: hw, CONFIG_PATH: cfg}
    plan = plan_settings(files, src_release=V2024, src_hardware_version="2.5", unit=unit(V2024))
    assert "HZ-08" in ids(plan, MIGRATE)
    assert parse_object(plan.uploads[1].data, "c")["acq_instrument"] == "PlanktoScope v2.5"
    plan = plan_settings(files, src_release=V2024, src_hardware_version=None, unit=unit(V2024),
                         hardware_is_default=True)
    assert "HZ-08" in ids(plan, WARN)
    plan = plan_settings({**files, HARDWARE_PATH: edit(hw, pump_steps_per_ml=1)}, src_release=V2024,
                         src_hardware_version=None, unit=unit(V2025), hardware_is_default=False)
    assert [h.forcible for h in plan.hazards if h.id == "HZ-08"] == [True]


def test_hz13_mismatch_and_unknown():
    hw, cfg = seeds(V2025, "v2.6")
    files = {HARDWARE_PATH: hw, CONFIG_PATH: cfg}
    assert "HZ-13" in ids(plan_settings(files, src_release=V2025, src_hardware_version=None,
                                        unit=unit(V2025, "adafruithat")), REFUSE)
    assert "HZ-13" not in ids(plan_settings(files, src_release=V2025, src_hardware_version=None,
                                            unit=unit(V2025)))  # null on the unit: no mismatch


def test_hz14_hz15_unreachable_settings():
    hw, cfg = seeds(V2024, "v2.6")
    plan = plan_settings({HARDWARE_PATH: hw}, src_release=V2024, src_hardware_version=None,
                         unit=UnitSettings(V2026, None, "Cockpit"))
    assert [(h.id, h.forcible) for h in plan.hazards] == [("HZ-14", True)] and not plan.uploads
    plan = plan_settings({HARDWARE_PATH: hw}, src_release=V2024, src_hardware_version=None,
                         unit=UnitSettings(V2_3, None, "nginx"))
    assert [(h.id, h.forcible) for h in plan.hazards] == [("HZ-15", False)]


def test_v2026_sources_onto_older_warn_and_calibration_stays():
    hw, cfg = seeds(V2026)
    plan = plan_settings({HARDWARE_PATH: hw, CONFIG_PATH: cfg, CALIBRATION_PATH: b"{}"}, src_release=V2026,
                         src_hardware_version=None, unit=unit(V2024))
    assert {"HZ-04", "HZ-06", "HZ-25"} <= ids(plan, WARN)
    assert CALIBRATION_PATH in plan.skipped and all(u.device_path != CALIBRATION_PATH for u in plan.uploads)


def test_hz05_hz07_hz12_hz23_hz26():
    hw, cfg = seeds(V2024, "v2.6")
    plan = plan_settings({HARDWARE_PATH: edit(hw, stepper_reverse=True)}, src_release=V2024,
                         src_hardware_version=None, unit=unit(V2025))
    assert "HZ-05" in ids(plan, WARN)
    plan = plan_settings({CONFIG_PATH: cfg, HARDWARE_PATH: hw}, src_release=V2024, src_hardware_version=None,
                         unit=unit(V2026, channel="ssh"))
    assert "HZ-07" in ids(plan, MIGRATE) and parse_object(plan.uploads[1].data, "c")["user_setup"] is False
    plan = plan_settings({HARDWARE_PATH: edit(hw, process_pixel_fixed=0)}, src_release=V2024,
                         src_hardware_version=None, unit=unit(V2024, "v2.6"))
    assert "HZ-12" in ids(plan, WARN)
    plan = plan_settings({HARDWARE_PATH: hw}, src_release=V2024, src_hardware_version=None,
                         unit=UnitSettings(V2024, "http", "", None, cfg))
    assert "HZ-23" in ids(plan, WARN)
    plan = plan_settings({CONFIG_PATH: edit(cfg, generic_path="/x")}, src_release=V2024,
                         src_hardware_version=None, unit=unit(V2024, "v2.6"))
    assert [h.forcible for h in plan.hazards if h.id == "HZ-26"] == [False]
