"""MobiusFlow-only steps: token expiry mid-run, the reboot's proxy pages, hostile ZIPs, incompatible versions.

Everything else (units, backups, restores, diffs, "the unit's memory is unchanged") is the shared library in
steps/common.py. These steps use only the control plane (``@sim_only`` scenarios) and files on disk.
"""

from __future__ import annotations

from typing import Any

from pytest_bdd import given, parsers, then, when

from harness.errors import HarnessError, Refused
from harness.operations import restore_from
from harness.simctl import SimControl
from harness.targets.mobiusflow.corpus import DAMAGES
from steps.common import Scenario, _apply, _backup, _snapshot


def _state(scenario: Scenario) -> dict[str, Any]:
    return SimControl(scenario.unit.control).state()


@given(parsers.re(r"the unit's tokens expire after (?P<seconds>[\d.]+) seconds? without notice"))
def tokens_expire(scenario: Scenario, seconds: str) -> None:
    # The node still announces 600 s, so the driver cannot refresh ahead: it meets 401 mid-run (MF-F01).
    SimControl(scenario.unit.control).set_fault("token_ttl", seconds=float(seconds), announce=False)


@given(parsers.re(r"the unit's backup downloads are slowed to (?P<rate>\d+) bytes per second"))
def slow_downloads(scenario: Scenario, rate: str) -> None:
    SimControl(scenario.unit.control).set_fault("slow_body", rate=float(rate), path="/api/v3/node/backupfull")


@given(parsers.re(r"the unit shows its proxy's 502 page for (?P<seconds>[\d.]+) seconds? while rebooting"))
def long_502(scenario: Scenario, seconds: str) -> None:
    SimControl(scenario.unit.control).set_fault("nginx_502_phase", seconds=float(seconds))


@given(parsers.re(r"the unit's restore fails at \"(?P<step>[^\"]+)\""))
def apply_fails(scenario: Scenario, step: str) -> None:
    SimControl(scenario.unit.control).set_fault("apply_fails", step=step)


@given(parsers.re(r"the backup ZIP is damaged: (?P<damage>.+)"))
def damage_zip(scenario: Scenario, damage: str) -> None:
    maker, _code = DAMAGES[damage]
    source = scenario.artifacts[-1]
    edited = source.parent / f"damaged-{source.name}"
    edited.write_bytes(maker(source.read_bytes()))
    scenario.edited = edited


@given(parsers.re(r"a backup made on a (?P<target>[a-z]+) unit running (?P<version>[\w.\-]+)"))
def backup_made_elsewhere(scenario: Scenario, unit_factory, target: str, version: str) -> None:
    other = unit_factory(target, version, role="source")
    scenario.other = other
    _apply(scenario, other, seed=3)
    scenario.other_artifact = _backup(scenario, other)


@then(parsers.re(r'the unit answered 401 "(?P<code>\w+)" at least once'))
def answered_401(scenario: Scenario, code: str) -> None:
    rejections = _state(scenario).get("rejections", {})
    assert rejections.get(code, 0) > 0, rejections


@then(parsers.re(r"the driver waited through (?P<status>\d{3}) answers"))
def waited_through(scenario: Scenario, status: str) -> None:
    served = _state(scenario).get("unavailableServed", {})
    assert served.get(status, 0) > 0, served


@then(parsers.re(r'the restore is refused as incompatible with "(?P<code>\w+)"'))
def refused_incompatible(scenario: Scenario, code: str) -> None:
    error = scenario.error
    assert isinstance(error, Refused), error
    assert error.exit_code == 2
    assert "\n" not in str(error)
    assert code in str(error), str(error)


@then("the restore reports a migration")
def reports_migration(scenario: Scenario) -> None:
    assert scenario.error is None, scenario.error
    assert scenario.report is not None and "verdict: migrate" in scenario.report.notes, scenario.report


@then(parsers.re(r'the restore fails with a device error that mentions "(?P<text>[^"]+)"'))
def restore_device_error(scenario: Scenario, text: str) -> None:
    error = scenario.error
    assert error is not None and error.exit_code == 3, error
    assert text in str(error), str(error)


@when("I restore the backup onto the failing unit")
def restore_onto_failing_unit(scenario: Scenario) -> None:
    """Like "I restore the backup", but a device error is kept for the Then steps (after a baseline)."""
    _snapshot(scenario)
    with scenario.unit.driver() as driver:
        try:
            scenario.report = restore_from(driver, scenario.target, scenario.artifacts[0], scenario.store,
                                           address=scenario.unit.link_address)
        except HarnessError as exc:
            scenario.error = exc
