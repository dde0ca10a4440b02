"""BactoBox-only steps: programs that block a backup, a GMI from another unit, the power cut mid-restore.

Everything else (units, backups, restores, diffs, "the unit's memory is unchanged") is the shared library in
steps/common.py. Steps here talk to the unit through the BactoBox driver's own calls (programs, the operation
list), and to the simulator only in ``@sim_only`` scenarios (power).
"""

from __future__ import annotations

import re
import threading
import time

from pytest_bdd import given, parsers, then, when

from harness.errors import DeviceError, Refused
from harness.operations import restore_from
from harness.simctl import SimControl
from harness.targets.bactobox.gmi import inspect_gmi
from harness.targets.bactobox.schema import MEDIA_TYPE
from steps.common import Scenario, _apply, _backup

OTHER_UNIT = "bb2240017"
_NAME = re.compile(r"^backup-of-bb\d{7}-\d{4}-\d{2}-\d{2}(_\d+)?\.gmi$")


@given("the Measure program is running on the unit")
def measure_running(scenario: Scenario) -> None:
    with scenario.unit.driver() as driver:
        driver.start_program("measure", dilution=2.0, label="feature run", sampling_time_s=3600)


@when("the unit takes a measurement")
def take_measurement(scenario: Scenario) -> None:
    with scenario.unit.driver() as driver:
        driver.start_program("measure", dilution=4.0, label="after the backup", sampling_time_s=1)
        driver.wait_idle()


@given("a GMI made on another bactobox unit")
def gmi_of_other_unit(scenario: Scenario, unit_factory) -> None:
    other = unit_factory("bactobox", scenario.unit.firmware, device_id=OTHER_UNIT, role="other")
    scenario.other = other
    _apply(scenario, other, seed=3)
    scenario.other_artifact = _backup(scenario, other)


@then(parsers.parse('the backup is refused because "{code}"'))
def backup_refused(scenario: Scenario, code: str) -> None:
    assert isinstance(scenario.error, Refused), scenario.error
    assert scenario.error.exit_code == 2 and code in str(scenario.error), str(scenario.error)


@then("the unit started no backup")
def no_backup_started(scenario: Scenario) -> None:
    with scenario.unit.driver() as driver:
        ops = driver.http.json("GET", "/operations")
    assert ops["current"] is None and not [op for op in ops["finished"] if op["kind"] == "backup"], ops


@then("the backup is named as Access names it")
def named_like_access(scenario: Scenario) -> None:
    path = scenario.artifacts[-1]
    assert _NAME.match(path.name), path.name
    with open(path, "rb") as f:
        head = f.read(65)
    assert head[30:38] == b"mimetype" and head[38:65] == MEDIA_TYPE.encode()
    info = inspect_gmi(path)
    assert [e.name for e in info.entries[:2]] == ["mimetype", "manifest.json"]


@then(parsers.parse("the unit runs {version} again"))
def runs_again(scenario: Scenario, version: str) -> None:
    with scenario.unit.driver() as driver:
        assert driver.identify().firmware == version


@when("the power is cut in the middle of restoring the backup")
def power_cut_mid_restore(scenario: Scenario) -> None:
    unit = scenario.unit
    SimControl(unit.control).request("POST", "/timing", {"usb_mb_s": 24})  # a tiny GMI takes ~1.4 s
    total = scenario.artifacts[0].stat().st_size
    errors: list[BaseException] = []

    def restore() -> None:
        try:
            with unit.driver() as driver:
                restore_from(driver, scenario.target, scenario.artifacts[0], scenario.store,
                             address=unit.link_address)
        except BaseException as exc:  # noqa: BLE001 - the scenario checks it
            errors.append(exc)

    thread = threading.Thread(target=restore, name="restore")
    thread.start()
    end = time.monotonic() + 30
    with unit.driver() as watcher:
        while True:
            current = watcher.http.json("GET", "/operations")["current"]
            if current and current["state"] == "receiving" and current["progress"]["done_bytes"] > total // 3:
                break
            assert time.monotonic() < end, f"the restore never got a third of the way: {current}"
            time.sleep(0.02)
    unit.process.kill()  # the power cut: SIGKILL, nothing flushed that a real unit would not have kept
    thread.join(60)
    assert errors, "the restore finished before the power cut"
    assert isinstance(errors[0], DeviceError), errors[0]
    # Kept apart from scenario.error: the shared restore step re-raises that one.
    scenario.power_cut_error = errors[0]  # type: ignore[attr-defined]


@when("the unit is powered on again")
def power_on(scenario: Scenario) -> None:
    unit = scenario.unit
    unit.process.restart()
    # An HTTP simulator gets a new port from the OS when its process starts again.
    unit.address, unit.control = unit.process.address, unit.process.control


@then("the unit reports an incomplete restore")
def reports_incomplete(scenario: Scenario) -> None:
    error = getattr(scenario, "power_cut_error", None)
    assert error is not None and "recovery" in str(error), error
    with scenario.unit.driver() as driver:
        info = driver.identify()
    assert info.details["mode"] == "recovery", info.details
