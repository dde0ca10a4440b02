"""One step library for every target. Steps talk to the common Target/Driver interface and the shared
operations (the same code the CLI runs), never to a target's internals."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import allure
import pytest
from pytest_bdd import given, parsers, then, when

from harness.compare import diff
from harness.errors import BadInput, DeviceError, HarnessError, Refused
from harness.operations import backup_to_store, firmware_update, load_artifact, restore_from
from harness.pytest_plugin import Unit
from harness.simctl import SimControl
from harness.store import Store
from harness.targets import get_target
from harness.targets.base import RestoreReport, Target

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@dataclass
class Scenario:
    """What a scenario has done so far: its unit, its store, its artifacts, the last error."""

    store: Store
    unit: Unit | None = None
    other: Unit | None = None
    applied: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    other_artifact: Path | None = None
    edited: Path | None = None
    baseline: Path | None = None
    baseline_eeprom: str | None = None
    report: RestoreReport | None = None
    error: HarnessError | None = None
    before_update: Path | None = None

    @property
    def target(self) -> Target:
        assert self.unit is not None, "no unit in this scenario"
        return get_target(self.unit.target)


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(store=Store(tmp_path / "store"))


def _backup(sc: Scenario, unit: Unit, reason: str = "manual") -> Path:
    with unit.driver() as driver:
        path = backup_to_store(driver, get_target(unit.target), sc.store, address=unit.link_address,
                               reason=reason)
    _attach_backup(path)
    return path


ATTACH_LIMIT = 256 * 1024  # a report is mailed around: attach small artifacts whole, big ones by manifest


def _attach_backup(path: Path) -> None:
    manifest = Path(str(path) + ".manifest.json")
    if path.stat().st_size <= ATTACH_LIMIT and path.suffix == ".json":
        allure.attach.file(str(path), name=f"backup {path.name}", attachment_type=allure.attachment_type.JSON)
    elif manifest.exists():
        allure.attach.file(str(manifest), name=f"manifest of {path.name} ({path.stat().st_size} bytes)",
                           attachment_type=allure.attachment_type.JSON)


def _fields(path: Path) -> dict[str, Any]:
    target, artifact = load_artifact(path)
    return target.fields(artifact)


def _assert_same(sc: Scenario, a: Path, b: Path, *, ignore: tuple[str, ...] = ()) -> None:
    rules = sc.target.compare_rules
    if ignore:
        from dataclasses import replace

        rules = replace(rules, ignore=rules.ignore + ignore)
    result = diff(_fields(a), _fields(b), rules)
    text = "\n".join(str(d) for d in result.differences) or "no differences"
    allure.attach(text, name=f"diff {a.name} vs {b.name}", attachment_type=allure.attachment_type.TEXT)
    assert result.equal, f"{len(result.differences)} fields differ:\n{text}"
    assert result.compared > 0, "nothing was compared"


def _apply(sc: Scenario, unit: Unit, seed: int) -> dict[str, Any]:
    with unit.driver() as driver:
        values = get_target(unit.target).distinctive_settings(driver.identify(), seed)
        driver.apply_settings(values)
    return values


def _eeprom_digest(unit: Unit) -> str | None:
    """Digest of the whole non-volatile state, from the control plane (covers bytes no backup shows)."""
    if not unit.control:
        return None
    state = SimControl(unit.control).state()
    return state.get("storage_sha256") or state.get("eeprom_sha256")


# ------------------------------------------------------------------------------------------------- given

UNIT = (r"an? (?P<blank>blank )?(?P<target>[a-z]+) unit running (?P<version>[\w.\-]+)"
        r"(?: reached through (?P<transport>serial|visa|http|https))?")


@given(parsers.re(UNIT), target_fixture="unit")
def given_unit(scenario: Scenario, unit_factory, target: str, version: str, transport: str | None,
               blank: str | None) -> Unit:
    unit = unit_factory(target, version, blank=bool(blank))
    unit.transport = transport or "serial"
    scenario.unit = unit
    allure.dynamic.parameter("address", unit.link_address)
    return unit


@given("the unit has a distinctive calibration")
def given_distinctive(scenario: Scenario) -> None:
    scenario.applied = _apply(scenario, scenario.unit, seed=1)


@given("I back up the unit")
@when("I back up the unit")
def back_up(scenario: Scenario) -> None:
    scenario.artifacts.append(_backup(scenario, scenario.unit))


@given("the unit's settings are changed")
@when("the unit's settings are changed")
def change_settings(scenario: Scenario) -> None:
    _apply(scenario, scenario.unit, seed=2)
    changed = _backup(scenario, scenario.unit, reason="after-calibration")
    # A change that changes nothing would make every restore scenario pass vacuously.
    assert not diff(_fields(scenario.artifacts[0]), _fields(changed), scenario.target.compare_rules).equal


@given(parsers.re(r"a backup of another (?P<target>[a-z]+) unit running (?P<version>[\w.\-]+)"))
def backup_of_other(scenario: Scenario, unit_factory, target: str, version: str) -> None:
    other = unit_factory(target, version, device_id=_other_id(scenario.unit), role="other")
    other.transport = scenario.unit.transport
    scenario.other = other
    _apply(scenario, other, seed=3)
    scenario.other_artifact = _backup(scenario, other)
    assert load_artifact(scenario.other_artifact)[1].device_id != scenario.unit.device_id


def _other_id(unit: Unit) -> str | None:
    """A device ID that differs from the unit's (simulators only; a real bench names its second unit)."""
    if unit.device_id is None:
        return None
    last = unit.device_id.rsplit(":", 1)
    return f"{last[0]}:{(int(last[1], 16) + 1) % 256:02x}" if len(last) == 2 else unit.device_id + "x"


@given("the link corrupts one byte of every memory dump")
def corrupt_every(scenario: Scenario) -> None:
    SimControl(scenario.unit.control).set_fault("corrupt", offset=40, count=1000)


@given("the link corrupts one byte of the next memory dump only")
def corrupt_next(scenario: Scenario) -> None:
    SimControl(scenario.unit.control).set_fault("corrupt", offset=40, count=1)


@given(parsers.re(r"the backup file is (?P<damage>edited by hand|truncated|foreign)"))
def damage_backup(scenario: Scenario, damage: str) -> None:
    source = scenario.artifacts[-1]
    edited = source.parent / f"edited-{source.name}"
    data = source.read_bytes()
    if damage == "edited by hand":
        doc = json.loads(data)
        # A user "fixes" one calibration value in the raw dump: the dump's CRC no longer matches.
        raw = doc["print_memory_raw"]
        i = raw.index('"light_slope_all": "') + len('"light_slope_all": "')
        doc["print_memory_raw"] = raw[:i] + ("9" if raw[i] != "9" else "8") + raw[i + 1:]
        data = json.dumps(doc).encode()
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = (FIXTURES / "bad" / "planktoscope-hardware.json").read_bytes()
    edited.write_bytes(data)
    scenario.edited = edited


# -------------------------------------------------------------------------------------------------- when


def _snapshot(scenario: Scenario) -> None:
    scenario.baseline = _backup(scenario, scenario.unit, reason="before-restore")
    scenario.baseline_eeprom = _eeprom_digest(scenario.unit)


def _restore(scenario: Scenario, artifact: Path, *, force: bool = False) -> None:
    with scenario.unit.driver() as driver:
        try:
            scenario.report = restore_from(driver, scenario.target, artifact, scenario.store,
                                           address=scenario.unit.link_address, force=force)
        except (Refused, BadInput) as exc:
            scenario.error = exc


@when("I restore the backup")
def restore_backup(scenario: Scenario) -> None:
    _restore(scenario, scenario.artifacts[0])
    if scenario.error:
        raise scenario.error


@when("I restore that backup onto the unit")
def restore_other(scenario: Scenario) -> None:
    _snapshot(scenario)
    _restore(scenario, scenario.other_artifact)


@when("I force the restore of that backup onto the unit")
def force_restore_other(scenario: Scenario) -> None:
    _restore(scenario, scenario.other_artifact, force=True)
    if scenario.error:
        raise scenario.error


@when("I restore the edited backup onto the unit")
def restore_edited(scenario: Scenario) -> None:
    _snapshot(scenario)
    _restore(scenario, scenario.edited)


@when("I try to back up the unit")
def try_backup(scenario: Scenario) -> None:
    try:
        scenario.artifacts.append(_backup(scenario, scenario.unit))
    except HarnessError as exc:
        scenario.error = exc


@when(parsers.parse("the firmware is updated to {firmware} through the harness"))
def update_firmware(scenario: Scenario, firmware: str) -> None:
    unit = scenario.unit
    with unit.driver() as driver:
        scenario.before_update, scenario.report = firmware_update(
            driver, scenario.target, scenario.store, address=unit.link_address, control=unit.control,
            firmware=firmware)
    unit.firmware = firmware


@when(parsers.parse("the firmware is flashed to {firmware} without a backup"))
def flash_without_backup(scenario: Scenario, firmware: str) -> None:
    SimControl(scenario.unit.control).set_firmware(firmware)
    scenario.unit.firmware = firmware


# -------------------------------------------------------------------------------------------------- then


@then("the backup is filed under the unit's ID with a manifest")
def filed_under_id(scenario: Scenario) -> None:
    path = scenario.artifacts[-1]
    target = scenario.target
    artifact = load_artifact(path)[1]
    folder = artifact.device_id.replace(":", "").lower()
    assert path.parent == scenario.store.root / target.name / folder, path
    assert path.suffix == f".{target.artifact_ext}"
    manifest = json.loads(Path(str(path) + ".manifest.json").read_text())
    assert manifest["target"] == target.name
    assert manifest["device_id"] == artifact.device_id
    assert manifest["size"] == path.stat().st_size
    assert not os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), "artifact is writable"


@then("the backup verifies")
def backup_verifies(scenario: Scenario) -> None:
    target, artifact = load_artifact(scenario.artifacts[-1])
    assert artifact.target == target.name == scenario.unit.target
    assert artifact.firmware == scenario.unit.firmware


@then("the backup holds the unit's calibration")
def holds_calibration(scenario: Scenario) -> None:
    fields = _fields(scenario.artifacts[-1])
    expected = dict(scenario.applied)
    assert expected, "no calibration was applied"
    result = diff(expected, {k: fields.get(k) for k in expected}, scenario.target.compare_rules)
    assert result.equal, "\n".join(map(str, result.differences))


@then(parsers.parse('the backup is flagged "{warning}"'))
def backup_flagged(scenario: Scenario, warning: str) -> None:
    artifact = load_artifact(scenario.artifacts[-1])[1]
    assert any(warning in w for w in artifact.warnings), artifact.warnings


@then("the restore reports every field restored")
def every_field_restored(scenario: Scenario) -> None:
    """Same version on both sides: something was restored, nothing skipped, nothing left untouched."""
    report = scenario.report
    assert report is not None and report.restored, "the restore restored nothing"
    assert not report.skipped and not report.untouched, (report.skipped, report.untouched)


@then("the unit's settings equal the backup")
def settings_equal_backup(scenario: Scenario) -> None:
    _assert_same(scenario, scenario.artifacts[0], _backup(scenario, scenario.unit))


@then("the unit's settings equal the backup except the device ID")
def settings_equal_except_id(scenario: Scenario) -> None:
    now = _backup(scenario, scenario.unit)
    _assert_same(scenario, scenario.other_artifact, now, ignore=("device_id",))
    assert load_artifact(now)[1].device_id == scenario.unit.device_id, "the unit's ID was overwritten"


@then("a new backup equals the first, field by field")
def new_backup_equals_first(scenario: Scenario) -> None:
    _assert_same(scenario, scenario.artifacts[0], _backup(scenario, scenario.unit))


@then("the restore is refused because the device IDs differ")
def refused_id(scenario: Scenario) -> None:
    assert isinstance(scenario.error, Refused), scenario.error
    assert scenario.error.exit_code == 2
    assert "ID" in str(scenario.error), str(scenario.error)


@then(parsers.re(r'the restore is refused as bad input(?: that mentions "(?P<text>[^"]+)")?'))
def refused_bad_input(scenario: Scenario, text: str | None) -> None:
    assert isinstance(scenario.error, BadInput), scenario.error
    assert scenario.error.exit_code == 2
    assert "\n" not in str(scenario.error)
    if text:
        assert text in str(scenario.error), str(scenario.error)


@then("the unit's memory is unchanged")
def memory_unchanged(scenario: Scenario) -> None:
    _assert_same(scenario, scenario.baseline, _backup(scenario, scenario.unit))
    if scenario.baseline_eeprom is not None:
        assert _eeprom_digest(scenario.unit) == scenario.baseline_eeprom, "non-volatile storage changed"


@then(parsers.parse('the backup fails with a device error that mentions "{text}"'))
def backup_failed(scenario: Scenario, text: str) -> None:
    assert isinstance(scenario.error, DeviceError), scenario.error
    assert scenario.error.exit_code == 3
    assert text in str(scenario.error), str(scenario.error)


@then("no backup is filed")
def no_backup_filed(scenario: Scenario) -> None:
    files = [p for p in scenario.store.root.rglob("*") if p.is_file()] if scenario.store.root.exists() else []
    assert files == [], files


@then("a backup was filed before the update")
def filed_before_update(scenario: Scenario) -> None:
    path = scenario.before_update
    assert path is not None and path.exists()
    manifest = json.loads(Path(str(path) + ".manifest.json").read_text())
    assert manifest["reason"] == "before-firmware-update"


@then("every calibration field present in both versions is kept")
def fields_kept(scenario: Scenario) -> None:
    before = _fields(scenario.before_update)
    after = _fields(_backup(scenario, scenario.unit))
    common = {k: before[k] for k in before if k in after}
    assert len(common) > 50, f"only {len(common)} fields in common"
    result = diff(common, {k: after[k] for k in common}, scenario.target.compare_rules)
    assert result.equal, "\n".join(map(str, result.differences))


def _expand(reported: list[str], fields: dict[str, Any]) -> set[str]:
    """Reported names may be group names (``userdef``) or field names (``userdef7``)."""
    names = set(reported)
    return {k for k in fields if k in names or k.rstrip("0123456789") in names} | names


@then(parsers.parse("the fields new in {firmware} are reported as left untouched"))
def new_fields_untouched(scenario: Scenario, firmware: str) -> None:
    before = _fields(scenario.before_update)
    after = _fields(scenario.store.latest(scenario.unit.target, scenario.unit.device_id))
    new = {k.split("[")[0] for k in after if k not in before}
    assert new, f"{firmware} adds no fields"
    assert new <= set(_expand(scenario.report.untouched, dict.fromkeys(new))), \
        (sorted(new), scenario.report.untouched)


@then("a new backup differs from the first in fields after the inserted PAR slopes")
def scrambled(scenario: Scenario) -> None:
    before = _fields(scenario.artifacts[0])
    after = _fields(_backup(scenario, scenario.unit))
    result = diff({k: before[k] for k in before if k in after}, after, scenario.target.compare_rules)
    changed = {d.field.split("[")[0] for d in result.differences if d.kind == "changed"}
    assert "par_to_dac_yint" in changed, sorted(changed)  # now read from where slope3 was written
    # Fields before the insertion keep their offsets in both layouts, so they must read the same.
    prefix = {k.split("[")[0] for k in before if k.startswith(("mag_", "accel_", "light_", "detector_",
                                                                 "thickness_", "par_to_dac_slope"))}
    assert not changed & prefix, f"the common prefix moved: {sorted(changed & prefix)}"
