"""The PlanktoScope in the compatibility matrix: declared versions, rules, and the predicted migrations.

The rule and migrate_fields tests are pure (spec facts typed in here, not derived from the code under test);
the simulator tests run real cells: a read-back whose settings key sets must be exactly the prediction
(stricter than the matrix, which compares the keys both sides have), and a migration broken on purpose in a
driver subclass, which must turn its cell red.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.compat import FAIL, REFUSED, SEED, _Units, run_cell
from harness.operations import backup_to_store, load_artifact, restore_from
from harness.store import Store
from harness.targets import get_target
from harness.targets.base import CompatVersion
from harness.targets.planktoscope import PlanktoscopeTarget
from harness.targets.planktoscope.driver import PlanktoscopeDriver
from harness.targets.planktoscope.releases import HARDWARE_PATH

T = get_target("planktoscope")
V23, V2023, V2024, V2025, V2026 = (CompatVersion(v) for v in
                                   ("v2.3", "v2023.9.0", "v2024.0.0", "v2025.0.0", "v2026"))
ALL = [V23, V2023, V2024, V2025, V2026]


def _id(pair: tuple[CompatVersion, CompatVersion]) -> str:
    return f"{pair[0].name}->{pair[1].name}"


# -- declared versions and rules ---------------------------------------------------------------------------


def test_the_five_release_profiles_are_declared_at_their_default_variant() -> None:
    assert [(v.version, v.profile, v.name) for v in T.compat_versions()] == [
        ("v2.3", None, "v2.3"), ("v2023.9.0", None, "v2023.9.0"), ("v2024.0.0", None, "v2024.0.0"),
        ("v2025.0.0", None, "v2025.0.0"), ("v2026", None, "v2026")]
    assert T.updatable is False  # set_firmware re-flashes the card: settings are wiped


# The matrix units' hardware versions (§3.2, §4.1, §6): v2.3 root file "PlanktoScope v2.3" (Adafruit type);
# v2023.9.0 pscopehat-latest config = the v2.5 preset; v2024.0.0/v2025.0.0 planktoscopehat-latest config has
# acq_instrument null (calibrated sources answer the dialog: v2.5 values on v2024, v2.6 values on v2025);
# v2026 v2.6. So HZ-13 refuses every pair of two known, different versions, and HZ-03 v2.3 -> v2026.
REFUSED_PAIRS = {
    (V23, V2023): "HZ-13", (V23, V2026): "HZ-03",
    (V2023, V23): "HZ-13", (V2023, V2026): "HZ-13",
    (V2024, V23): "HZ-13", (V2024, V2026): "HZ-13",
    (V2025, V23): "HZ-13", (V2025, V2023): "HZ-13",
    (V2026, V23): "HZ-13", (V2026, V2023): "HZ-13",
}


@pytest.mark.parametrize("pair", [(s, d) for s in ALL for d in ALL], ids=_id)
def test_every_pair_has_the_rule_the_spec_gives_it(pair: tuple[CompatVersion, CompatVersion]) -> None:
    src, dst = pair
    rule = T.compat_rule(src, dst)
    if src == dst:
        assert rule.kind == "restore" and not rule.ignore and not rule.converted
    elif pair in REFUSED_PAIRS:
        assert rule.kind == "refuse" and REFUSED_PAIRS[pair] in rule.reason
    else:
        # Another release: the unit reports its own release, so never a field-by-field restore.
        assert rule.kind == "migrate", rule
        assert "release" in rule.converted and dst.version in rule.reason
        assert re.search(r"versions\.py: (restore|warn|migrate)", rule.reason)


def test_the_matrix_shape() -> None:
    kinds = [T.compat_rule(s, d).kind for s in ALL for d in ALL]
    assert (kinds.count("restore"), kinds.count("migrate"), kinds.count("refuse")) == (5, 10, 10)


def test_migrations_declare_the_keys_of_section_15() -> None:
    wb = T.compat_rule(V23, V2025)  # HZ-01 (the source has red_gain too: the dashboard wrote it)
    assert wb.dropped == ("hardware.wb_blue_gain", "hardware.wb_red_gain") and wb.added == ()
    assert f"files.{HARDWARE_PATH}" in wb.ignore  # re-written by the migration
    hat = T.compat_rule(V2025, V2026)  # HZ-02, HZ-07
    assert hat.added == ("config.user_setup", "hardware.hat_type", "hardware.hat_version")
    assert hat.dropped == ()  # the v2025 PlanktoScope-HAT preset has no stepper keys left
    kept = T.compat_rule(V2026, V2024)  # HZ-04/HZ-06: warn, nothing changes
    assert kept.dropped == kept.added == () and kept.converted == ("release",)
    assert not any(g.startswith("files./home") for g in kept.ignore)  # uploaded byte for byte: compared


def test_ignores_never_hide_a_setting() -> None:
    fields = ["hardware.red_gain", "hardware.hat_version", "config.user_setup", "config.acq_instrument",
              "release", "device_id", "datasets.img/2024-05-01/sample_a/acq_1/a.jpg",
              "datasets.img/2024-05-01/sample_a/acq_1.integrity"]
    for s in ALL:
        for d in ALL:
            for glob in T.compat_rule(s, d).ignore:
                assert not [f for f in fields if fnmatch.fnmatchcase(f, glob)], (s, d, glob)


# -- migrate_fields ----------------------------------------------------------------------------------------

V23_FIELDS: dict[str, Any] = {
    "device_id": "pk-1", "release": "v2.3", "settings_available": True,
    f"files.{HARDWARE_PATH}": "aa" * 32,
    "hardware.stepper_reverse": False, "hardware.microsteps": 32, "hardware.stepper_type": "adafruit",
    "hardware.wb_red_gain": 2, "hardware.wb_blue_gain": 1.41, "hardware.analog_gain": 1.0,
    "config.acq_instrument": "PlanktoScope v2.3", "config.acq_id": 7,
    "datasets.img/d/s/a/x.jpg": "bb" * 32, "datasets.img/d/s/a.integrity": "ok",
}


def test_wb_gains_become_red_and_blue_gain_off_v2_3() -> None:
    out = T.migrate_fields(dict(V23_FIELDS), V23, V2025)
    assert out["hardware.red_gain"] == 2 and out["hardware.blue_gain"] == 1.41
    assert "hardware.wb_red_gain" not in out and "hardware.wb_blue_gain" not in out
    assert out["release"] == "v2025.0.0"
    # Everything else as it was: stepper keys are not dead on v2025 for this check, datasets, the ID.
    for key in ("device_id", "settings_available", "hardware.stepper_type", "config.acq_id",
                "datasets.img/d/s/a/x.jpg", "datasets.img/d/s/a.integrity", f"files.{HARDWARE_PATH}"):
        assert out[key] == V23_FIELDS[key]


def test_gains_the_dashboard_wrote_win_over_wb() -> None:
    out = T.migrate_fields({**V23_FIELDS, "hardware.red_gain": 2.71, "hardware.blue_gain": 1.97}, V23, V2024)
    assert (out["hardware.red_gain"], out["hardware.blue_gain"]) == (2.71, 1.97)
    assert not any(k.startswith("hardware.wb_") for k in out)


def test_onto_v2_3_itself_wb_is_kept() -> None:  # the documented deviation from HZ-01
    out = T.migrate_fields(dict(V23_FIELDS), V23, V23)
    assert out["hardware.wb_red_gain"] == 2 and "hardware.red_gain" not in out


V2024_FIELDS: dict[str, Any] = {
    "release": "v2024.0.0", "hardware.stepper_reverse": True, "hardware.microsteps": 256,
    "hardware.stepper_type": "pscope_hat", "hardware.red_gain": 2.4, "hardware.blue_gain": 1.35,
    "hardware.process_pixel_fixed": 0.88, "config.acq_instrument": "PlanktoScope v2.6", "config.acq_id": 3,
    "files./home/pi/PlanktoScope/calibration.json": "cc" * 32,
}


@pytest.mark.parametrize(("profile", "hat"), [(None, 1.2), ("v2.6", 1.2), ("v3.0", 3.3)])
def test_onto_v2026_hat_keys_come_from_the_unit_and_dead_keys_go(profile: str | None, hat: float) -> None:
    out = T.migrate_fields(dict(V2024_FIELDS), V2024, CompatVersion("v2026", profile))
    assert out["hardware.hat_type"] == "planktoscope" and out["hardware.hat_version"] == hat
    assert "hardware.stepper_type" not in out and "hardware.stepper_reverse" not in out
    assert out["config.user_setup"] is False  # a fresh unit has not been set up
    assert out["release"] == "v2026"
    assert out["files./home/pi/PlanktoScope/calibration.json"] == "cc" * 32  # uploaded to v2026 (HZ-25)


def test_calibration_is_not_predicted_below_v2026() -> None:
    out = T.migrate_fields({**V2024_FIELDS, "calibration.x": 1}, V2024, V2025)
    assert not any("calibration" in k for k in out)


def test_v2026_keys_are_kept_on_older_releases() -> None:  # HZ-04, HZ-06: warn, no strip
    fields = {"release": "v2026", "hardware.hat_type": "planktoscope", "hardware.hat_version": 1.2,
              "config.user_setup": True, "hardware.red_gain": 1.99}
    out = T.migrate_fields(dict(fields), V2026, V2024)
    assert out == {**fields, "release": "v2024.0.0"}


@pytest.mark.parametrize("dst", [V2024, V2025])
def test_a_null_acq_instrument_is_filled_only_where_the_bundle_knows_it(dst: CompatVersion) -> None:
    out = T.migrate_fields({"release": "v2024.0.0", "config.acq_instrument": None}, V2024, dst)
    assert out["config.acq_instrument"] is None  # unknown: left (HZ-08 warns or refuses)
    hat = {"release": "v2026", "config.acq_instrument": None, "hardware.hat_version": 3.3}
    assert T.migrate_fields(hat, V2026, dst)["config.acq_instrument"] == "PlanktoScope v3.0"
    assert T.migrate_fields(hat, V2026, V2023)["config.acq_instrument"] is None  # HZ-08 is v2024/v2025 only


@given(st.dictionaries(st.sampled_from(["wb_red_gain", "wb_blue_gain", "red_gain", "blue_gain", "microsteps"]),
                       st.floats(0, 8, allow_nan=False), min_size=1))
def test_migrate_fields_property_no_wb_left_and_input_untouched(hardware: dict[str, float]) -> None:
    fields = {"release": "v2.3", **{f"hardware.{k}": v for k, v in hardware.items()}}
    copy = dict(fields)
    out = T.migrate_fields(fields, V23, V2025)
    assert fields == copy
    assert not any(k.startswith("hardware.wb_") for k in out)
    for colour in ("red", "blue"):
        expected = hardware.get(f"{colour}_gain", hardware.get(f"wb_{colour}_gain"))
        assert out.get(f"hardware.{colour}_gain") == expected


# -- against the simulators --------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", [(V23, V2025), (V2025, V2026)], ids=_id)
def test_the_read_back_settings_are_exactly_the_prediction(tmp_path: Path,
                                                           pair: tuple[CompatVersion, CompatVersion]) -> None:
    """All settings keys, dropped and added ones included (the matrix only compares keys both sides hold), and
    every dataset file: the fresh destination holds none, so the restore uploads each one."""
    src, dst = pair
    units, store = _Units(T, tmp_path, None), Store(tmp_path / "store")
    with units.unit(src, "source") as proc, units.driver(proc) as driver:
        driver.apply_settings(T.distinctive_settings(driver.identify(), SEED))
        backup = backup_to_store(driver, T, store, address=proc.address)
    with units.unit(dst, "destination") as proc, units.driver(proc) as driver:
        T.compat_fresh_unit(proc.control)
        report = restore_from(driver, T, backup, store, address=proc.address)
        readback = backup_to_store(driver, T, store, address=proc.address)
    rule = T.compat_rule(src, dst)
    before = T.fields(load_artifact(backup, T.name)[1])
    after = T.fields(load_artifact(readback, T.name)[1])
    predicted = T.migrate_fields(before, src, dst)
    settings = lambda f: {k: v for k, v in f.items() if k.startswith(("hardware.", "config."))}  # noqa: E731
    assert settings(after) == settings(predicted)
    assert after["release"] == dst.version
    dropped = set(settings(before)) - set(settings(after))
    added = set(settings(after)) - set(settings(before))
    assert dropped == set(rule.dropped) and added == set(rule.added)
    # The driver's report names the same keys (what the matrix cell shows).
    assert {f for f in report.skipped if f.startswith(("hardware.", "config."))} == dropped
    assert {f for f in report.untouched if f.startswith(("hardware.", "config."))} == added
    datasets = lambda f: {k: v for k, v in f.items() if k.startswith("datasets.")}  # noqa: E731
    assert len(datasets(before)) >= 10  # two acquisitions: metadata, images, integrity.check
    assert datasets(after) == datasets(before)  # metadata.json and integrity.check included
    assert not [f for f in report.skipped if not f.startswith(("hardware.", "config."))]
    assert not [n for n in report.notes if "already on the unit" in n]  # uploaded, every one


class WrongHatVersionDriver(PlanktoscopeDriver):
    """A migration bug: HZ-02 writes the v3.0 hat_version whatever the unit is."""

    def check_restore(self, artifact, *, force=False):
        plan = super().check_restore(artifact, force=force)
        for upload in plan.settings.uploads:
            if upload.device_path == HARDWARE_PATH:
                upload.data = upload.data.replace(b'"hat_version": 1.2', b'"hat_version": 3.3')
        return plan


class SabotagedTarget(PlanktoscopeTarget):
    driver = WrongHatVersionDriver


def test_a_broken_migration_turns_its_cell_red(tmp_path: Path) -> None:
    cell = run_cell(SabotagedTarget(), V2025, V2026, "fresh", tmp_path)
    assert cell.outcome == FAIL and "hardware.hat_version" in cell.detail, cell.detail


def test_a_declared_refusal_refuses_with_the_spec_reason(tmp_path: Path) -> None:
    cell = run_cell(T, V23, V2026, "fresh", tmp_path)
    assert cell.outcome == REFUSED and "HZ-03" in cell.detail, cell.detail
