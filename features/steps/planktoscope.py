"""PlanktoScope steps: units reached over HTTP or SSH, bundles from another release, the cross-release hazards
of targets/planktoscope.md §15, and datasets. Everything else goes through the common steps.

A unit "reached over ssh" gets a driver with the simulator's SSH address (its JSON line names it); a unit
"reached over http" gets the simulator's reboot through its control plane as the caller's reboot strategy
(the driver itself never calls /_sim). On a real bench the SSH scenarios need the bench's ssh: address.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, then, when

from harness.errors import BadInput, Refused
from harness.operations import load_artifact
from harness.simctl import SimControl
from harness.targets import get_target
from harness.targets.base import no_progress
from harness.targets.planktoscope import bundle as bundle_mod
from harness.targets.planktoscope import integrity, presets
from harness.targets.planktoscope.formats import detect_style, dump, parse_object
from harness.targets.planktoscope.releases import CALIBRATION_PATH, CONFIG_PATH, DATA_ROOT, HARDWARE_PATH
from steps.common import Scenario, _restore

FILES = {"hardware.json": HARDWARE_PATH, "config.json": CONFIG_PATH}


def _split(spec: str) -> tuple[str, str | None]:
    release, _, variant = spec.partition("/")
    return release, variant or None


def _wire(unit, link: str) -> None:
    """Give the unit a driver for ``link``: the simulator's SSH address, or its reboot as the caller's hook."""
    info = getattr(unit.process, "info", {}) or {}
    ssh = info.get("ssh") if link == "ssh" else None
    if link == "ssh" and not ssh:
        pytest.skip("this bench names no SSH address for the unit")
    control = unit.control

    def reboot() -> None:
        for action in unit.extra.pop("before_reboot", []):
            action()
        SimControl(control).reset()

    def make(progress=no_progress):
        hook = reboot if control and link == "http" else None
        return get_target("planktoscope").driver(unit.address, username=unit.username, password=unit.password,
                                                 progress=progress, ssh=ssh, reboot=hook)

    unit.driver = make  # type: ignore[method-assign]
    unit.transport = link


@given(parsers.re(r"a planktoscope unit running (?P<spec>[\w.\-/]+) reached over (?P<link>http|ssh)"),
       target_fixture="unit")
def given_planktoscope(scenario: Scenario, unit_factory, spec: str, link: str):
    release, variant = _split(spec)
    unit = unit_factory("planktoscope", release, profile=variant)
    _wire(unit, link)
    scenario.unit = unit
    return unit


def _control(scenario: Scenario) -> SimControl:
    if not scenario.unit.control:
        pytest.skip("needs the simulator's control plane")
    return SimControl(scenario.unit.control)


def _disk_read(scenario: Scenario, path: str) -> bytes:
    return base64.b64decode(_control(scenario).request("POST", "/disk/read", {"path": path})["base64"])


# -- bundles from another release (§15) ------------------------------------------------------------------


def _edit(edit: str, hw: dict[str, Any], cfg: dict[str, Any], extra: dict[str, bytes],
          source: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if edit == "none":
        pass
    elif edit == "only red_gain":
        hw.pop("blue_gain", None)
    elif edit.startswith("red_gain "):
        hw["red_gain"] = json.loads(edit.split(" ", 1)[1])
    elif edit == "stepper_reverse true":
        hw["stepper_reverse"] = True
    elif edit == "no process_pixel_fixed":
        hw.pop("process_pixel_fixed", None)
    elif edit == "modified calibration":
        hw["pump_steps_per_ml"] = 1234
    elif edit == "generic keys":
        cfg["generic_path"] = "/home/pi/data"
        cfg["generic_nb_frame"] = 100
    elif edit == "calibration.json":
        extra[CALIBRATION_PATH] = b'{"focus_offset": 12}\n'
    elif edit == "hardware.json only":
        return hw, None
    elif edit.startswith("recorded hardware "):
        source["hardware_version"] = edit.rsplit(" v", 1)[1]
    else:
        raise AssertionError(f"unknown edit {edit!r}")
    return hw, cfg


def build_bundle(path: Path, *, device_id: str, release: str, variant: str | None, edit: str) -> Path:
    """A bundle as the driver writes them, holding the real preset files of ``release``/``variant``, edited."""
    hw_bytes, cfg_bytes = presets.seed(release, variant)
    hw, cfg = parse_object(hw_bytes, "hardware"), parse_object(cfg_bytes, "config")
    source: dict[str, Any] = {"base_url": "http://source.invalid", "device_id": device_id, "release": release,
                              "release_evidence": ["built by the feature steps from the preset library"],
                              "installer_versioning": None, "hardware_version": None, "filebrowser": "unknown"}
    extra: dict[str, bytes] = {}
    new_hw, new_cfg = _edit(edit, dict(hw), dict(cfg), extra, source)
    files: dict[str, bytes] = {}
    if new_hw is not None:
        files[HARDWARE_PATH] = hw_bytes if new_hw == hw else dump(new_hw, detect_style(hw_bytes))
    if new_cfg is not None:
        files[CONFIG_PATH] = cfg_bytes if new_cfg == cfg else dump(new_cfg, detect_style(cfg_bytes))
    files.update(extra)
    if source["hardware_version"] is None and new_cfg is not None:
        from harness.targets.planktoscope.releases import hardware_version_of

        source["hardware_version"] = hardware_version_of(new_cfg.get("acq_instrument"))
    writer = bundle_mod.BundleWriter(path)
    entries = []
    for device_path, data in files.items():
        sha, size = writer.add_bytes(bundle_mod.file_entry(device_path), data)
        entries.append({"device_path": device_path, "bundle_path": bundle_mod.file_entry(device_path),
                        "size": size, "sha256": sha, "recognised": None})
    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    writer.finish({"format": bundle_mod.FORMAT, "created_utc": bundle_mod.created_text(created),
                   "tool": {"name": "feature steps", "version": "0"}, "source": source,
                   "settings": {"available": True, "files": entries}, "datasets": [], "warnings": []})
    return path


@given(parsers.re(r"an? (?P<spec>v[\w.\-/]+) planktoscope bundle for this unit with (?P<edit>.+)"))
def given_bundle(scenario: Scenario, tmp_path: Path, spec: str, edit: str) -> None:
    release, variant = _split(spec)
    path = tmp_path / f"source-{release}-{abs(hash(edit))}.zip"
    with scenario.unit.driver() as driver:  # the ID the driver sees (the URL host where no hostname is read)
        device_id = driver.identify().device_id
    scenario.other_artifact = build_bundle(path, device_id=device_id, release=release, variant=variant,
                                           edit=edit)


@then(parsers.re(r"the restore is (?P<outcome>refused unless forced|refused|migrated|warned|plain) "
                 r"for (?P<hz>HZ-\d\d)"))
def restore_outcome(scenario: Scenario, outcome: str, hz: str) -> None:
    if outcome.startswith("refused"):
        assert isinstance(scenario.error, Refused), f"not refused: {scenario.error or scenario.report}"
        assert f"{hz} (refuse)" in str(scenario.error), str(scenario.error)
        assert scenario.error.exit_code == 2 and "\n" not in str(scenario.error)
        if outcome == "refused unless forced":
            assert "--force overrides" in str(scenario.error)
            scenario.error = None
            _restore(scenario, scenario.other_artifact, force=True)
            assert scenario.error is None, scenario.error
            assert any(hz in n and "overridden by --force" in n for n in scenario.report.notes), \
                scenario.report.notes
        else:
            assert "--force overrides" not in str(scenario.error)
        return
    assert scenario.error is None, scenario.error
    notes = scenario.report.notes
    kind = {"migrated": "migrate", "warned": "warn"}.get(outcome)
    if kind:
        assert any(n.startswith(f"{hz} ({kind})") for n in notes), notes
    else:
        assert not any(n.startswith(("HZ-01", "HZ-02", "HZ-07", "HZ-08 (migrate)")) for n in notes), notes


@then(parsers.re(r"the unit's (?P<name>hardware\.json|config\.json) (?P<check>.+)"))
def unit_file_check(scenario: Scenario, name: str, check: str) -> None:
    if check == "is as it was":
        return
    doc = parse_object(_disk_read(scenario, FILES[name]), name)
    if check.startswith("has no "):
        key = check[len("has no "):]
        assert key not in doc, doc
        return
    assert check.startswith("has "), check
    key, _, value = check[len("has "):].partition("=")
    assert key in doc and doc[key] == json.loads(value), f"{key}: {doc.get(key)!r}, expected {value}"


# -- reboots, health, clobbering --------------------------------------------------------------------------


@given(parsers.parse("a dashboard save of the white balance happens before the reboot"))
def dashboard_save(scenario: Scenario) -> None:
    control = _control(scenario)
    scenario.unit.extra.setdefault("before_reboot", []).append(
        lambda: control.request("POST", "/ui/white-balance", {"red": 2.2, "blue": 1.4}))


@given(parsers.parse("the hardware version {version} is selected on the dashboard before the reboot"))
def dashboard_w1(scenario: Scenario, version: str) -> None:
    control = _control(scenario)
    scenario.unit.extra.setdefault("before_reboot", []).append(
        lambda: control.request("POST", "/ui/select-hardware-version", {"version": version}))


@then("the unit rebooted and its imager is healthy")
def rebooted_healthy(scenario: Scenario) -> None:
    assert getattr(scenario.report, "rebooted", False), scenario.report.notes
    state = _control(scenario).state()
    assert state["services"]["imager"] == "Ready", state
    assert state["boots"] >= 2


@then(parsers.parse('the restore warns "{text}"'))
def restore_warns(scenario: Scenario, text: str) -> None:
    assert scenario.error is None, scenario.error
    assert any(text in n for n in scenario.report.notes), scenario.report.notes


@given("the unit's settings were reset through its API")
def api_reset(scenario: Scenario) -> None:
    import httpx

    response = httpx.post(scenario.unit.address + "/api/reset", trust_env=False)
    assert response.status_code == 200


@given(parsers.parse("the white balance is set to red {red:g} on the dashboard and the unit reboots"))
def bad_white_balance(scenario: Scenario, red: float) -> None:
    control = _control(scenario)
    control.request("POST", "/ui/white-balance", {"red": red, "blue": 1.3})
    boots = control.state()["boots"]
    control.reset()
    _wait_boots(control, boots + 1)


def _wait_boots(control: SimControl, boots: int) -> None:
    import time

    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            if control.state()["boots"] >= boots:
                return
        except Exception:  # noqa: BLE001 - the control plane is down during the reboot
            pass
        time.sleep(0.05)
    raise AssertionError("the unit did not reboot")


@then(parsers.parse("the imager reports {status}"))
def imager_status(scenario: Scenario, status: str) -> None:
    assert _control(scenario).state()["services"]["imager"] == status


# -- datasets ---------------------------------------------------------------------------------------------


@given("the unit's datasets are deleted")
@when("the unit's datasets are deleted")
def delete_datasets(scenario: Scenario) -> None:
    _control(scenario).request("POST", "/disk/delete", {"path": f"{DATA_ROOT}/img", "writer": "sim"})


@given("an image of a dataset on the unit is corrupted")
def corrupt_dataset(scenario: Scenario) -> None:
    control = _control(scenario)
    folder = f"{DATA_ROOT}/img/2024-05-01/sample_a/acq_1"
    rows = integrity.parse(_disk_read(scenario, f"{folder}/{integrity.NAME}"))
    image = next(r.name for r in rows if r.name.endswith(".jpg"))
    data = bytearray(_disk_read(scenario, f"{folder}/{image}"))
    data[100] ^= 0xFF
    control.request("POST", "/disk/write", {"path": f"{folder}/{image}", "writer": "sim",
                                            "base64": base64.b64encode(bytes(data)).decode()})


@then("every dataset in the backup passes its integrity check")
def datasets_ok(scenario: Scenario) -> None:
    art = load_artifact(scenario.artifacts[-1])[1]
    assert art.data.datasets, "the backup holds no dataset"
    assert all(d.integrity == "ok" for d in art.data.datasets), [(d.rel_path, d.integrity)
                                                                  for d in art.data.datasets]


@then("every dataset of the backup is on the unit again and passes its integrity check")
def datasets_back(scenario: Scenario) -> None:
    art = load_artifact(scenario.artifacts[0])[1]
    for d in art.data.datasets:
        files = {}
        for entry in d.entries:
            files[entry["path"].rsplit("/", 1)[-1]] = _disk_read(scenario, f"{DATA_ROOT}/{entry['path']}")
        assert not integrity.verify(files[integrity.NAME], files), d.rel_path


@when("I try to restore the backup")
def try_restore(scenario: Scenario) -> None:
    _restore(scenario, scenario.artifacts[0])


@then(parsers.parse('the restore is refused because "{text}"'))
def refused_because(scenario: Scenario, text: str) -> None:
    assert isinstance(scenario.error, Refused), scenario.error
    assert text in str(scenario.error), str(scenario.error)


@given(parsers.re(r"the bundle is damaged: (?P<damage>an image altered|a path escaping its folder|a zip bomb)"))
def damage_bundle(scenario: Scenario, damage: str) -> None:
    source = scenario.artifacts[-1]
    edited = source.parent / f"edited-{source.name}"
    with zipfile.ZipFile(source) as zin:
        manifest = json.loads(zin.read(bundle_mod.MANIFEST))
        with zipfile.ZipFile(edited, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if damage == "an image altered" and info.filename.endswith(".jpg"):
                    data = data[:50] + bytes([data[50] ^ 0xFF]) + data[51:]
                    import hashlib

                    for d in manifest["datasets"]:
                        for e in d["entries"]:
                            if bundle_mod.dataset_entry(e["path"]) == info.filename:
                                e["sha256"] = hashlib.sha256(data).hexdigest()
                    damage = "done"
                if info.filename != bundle_mod.MANIFEST:
                    zout.writestr(info, data)
            if damage == "a path escaping its folder":
                zout.writestr("files/../../etc/evil", b"x")
            if damage == "a zip bomb":
                zout.writestr("datasets/bomb.bin", bytes(50 * 1024 * 1024))
            zout.writestr(bundle_mod.MANIFEST, json.dumps(manifest))
    scenario.edited = edited


@then("the restore is refused as bad input before anything is uploaded")
def refused_bad(scenario: Scenario) -> None:
    assert isinstance(scenario.error, BadInput), scenario.error
    assert scenario.error.exit_code == 2 and "\n" not in str(scenario.error)
