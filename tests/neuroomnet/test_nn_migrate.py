"""NeuroomNet ``migrate_fields``: what a backup should read back as on a newer server, from the spec alone.

Pure tests on hand-built field views and on the committed goldens (real server ZIPs), then the matrix itself
on real simulators: an honest migration passes, a destination that holds the wrong thing turns the cell red.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from harness.compat import FAIL, MIGRATED, run_cell
from harness.errors import DeviceError
from harness.operations import backup_to_store, restore_from
from harness.store import Store
from harness.targets.base import CompatVersion
from harness.targets.neuroomnet import TARGET, NeuroomNetTarget
from harness.targets.neuroomnet.config import redact_secret
from harness.targets.neuroomnet.driver import API, NeuroomNetDriver
from harness.targets.neuroomnet.migrate import seconds_to_ms
from simulators.core.options import SimOptions
from simulators.core.process import start_simulator

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden" / "neuroomnet"
SID = "srv-7d2c41e0"
V = {v: CompatVersion(v) for v in ("3.9.4", "4.0.2", "4.2.0", "5.0.0")}


def view(schema: int, version: str, fmt: int = 2) -> dict[str, Any]:
    """A small field view as artifact_fields gives it, in the layout of ``schema``."""
    cues_key = "at_ms" if schema >= 22 else "at_s"
    out: dict[str, Any] = {
        "restore_point.format": fmt, "source.software_version": version, "source.config_schema": schema,
        "device_id": SID, "config_digest": "c" * 64, "summary_digest": "s" * 64,
        "files.config.sqlite.sha256": "f" * 64, "files.assets/setup/plan.png.sha256": "a" * 64,
        "config.system_setting.language.value": "fr",
        "config.app_user.1.name": "admin", "config.app_user.1.password_hash": redact_secret("pbkdf2-sha256$1$x$y"),
        "config.schedule.1.cron": "0 9 * * 1-6",
        "config.component.3.name": "Projector 003", "config.component.3.address": "10.0.0.4",
        "config.component.7.name": "Light 007",
        "config.show.2.name": "Show 2",
        "config.show.2.cues": [{cues_key: 1001 if schema >= 22 else 1.001, "component": 1, "command": "on"},
                               {cues_key: 2500 if schema >= 22 else 2.5, "component": 2, "command": "off"}],
    }
    if schema == 17:
        out["config.component.3.properties"] = {"input": "hdmi1", "port": 4352}
        out["config.component.7.properties"] = {}
    else:
        out["config.component_property.3/input.value"] = "hdmi1"
        out["config.component.3.group_id"] = 1
    return out


# -- converted values -------------------------------------------------------------------------------------


def test_cue_seconds_become_integer_milliseconds_on_5_0() -> None:
    out = TARGET.migrate_fields(view(20, "4.2.0"), V["4.2.0"], V["5.0.0"])
    assert out["config.show.2.cues"] == [{"at_ms": 1001, "component": 1, "command": "on"},
                                         {"at_ms": 2500, "component": 2, "command": "off"}]
    assert all(isinstance(c["at_ms"], int) for c in out["config.show.2.cues"])


@pytest.mark.parametrize(("at_s", "at_ms"), [(0.0, 0), (0.012, 12), (1.001, 1001), (2.5, 2500), (7, 7000),
                                              (1137 / 1000, 1137), ("soon", "soon"), (True, True)])
def test_seconds_to_ms_is_exact_for_the_decimal_written(at_s: Any, at_ms: Any) -> None:
    # 1.001 * 1000 is 1000.9999999999999 in binary floating point: truncating would say 1000.
    assert seconds_to_ms(at_s) == at_ms


def test_cues_are_not_converted_below_schema_22() -> None:
    out = TARGET.migrate_fields(view(18, "4.0.2"), V["4.0.2"], V["4.2.0"])
    assert out["config.show.2.cues"][0] == {"at_s": 1.001, "component": 1, "command": "on"}


# -- renamed fields ----------------------------------------------------------------------------------------


def test_schema17_properties_become_component_property_rows_in_group_all() -> None:
    out = TARGET.migrate_fields(view(17, "3.9.4", fmt=1), V["3.9.4"], V["4.0.2"])
    assert "config.component.3.properties" not in out and "config.component.7.properties" not in out
    assert out["config.component_property.3/input.value"] == "hdmi1"
    assert out["config.component_property.3/port.value"] == "4352"  # a TEXT column: the number as text
    assert not any(k.startswith("config.component_property.7/") for k in out)  # {} has no rows
    assert out["config.component.3.group_id"] == out["config.component.7.group_id"] == 1
    assert out["config.component_group.1.name"] == "All"


def test_a_destination_records_its_own_format_version_and_schema() -> None:
    out = TARGET.migrate_fields(view(17, "3.9.4", fmt=1), V["3.9.4"], V["4.2.0"])
    assert (out["restore_point.format"], out["source.software_version"], out["source.config_schema"]) == \
        (2, "4.2.0", 20)


def test_values_the_spec_does_not_give_are_not_invented() -> None:
    out = TARGET.migrate_fields(view(17, "3.9.4", fmt=1), V["3.9.4"], V["5.0.0"])
    assert not any(k.endswith((".time_zone", ".password_scheme")) for k in out)


# -- unchanged fields --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [("3.9.4", "4.2.0"), ("4.0.2", "5.0.0"), ("4.2.0", "5.0.0")])
def test_everything_else_is_unchanged(src: str, dst: str) -> None:
    schema = {"3.9.4": 17, "4.0.2": 18, "4.2.0": 20}[src]
    before = view(schema, src, fmt=1 if schema == 17 else 2)
    kept = {k: v for k, v in before.items() if not k.startswith(("restore_point.format", "source.",
                                                                   "config.show.2.cues",
                                                                   "config.component.3.properties",
                                                                   "config.component.7.properties"))}
    snapshot = dict(before)
    out = TARGET.migrate_fields(before, V[src], V[dst])
    assert {k: out.get(k) for k in kept} == kept
    assert out["config.app_user.1.password_hash"] == redact_secret("pbkdf2-sha256$1$x$y")  # hashes kept (§5)
    assert before == snapshot  # the backup's own view is not modified


def test_there_is_no_migration_down() -> None:
    with pytest.raises(ValueError, match="no migration"):
        TARGET.migrate_fields(view(22, "5.0.0"), V["5.0.0"], V["4.2.0"])


# -- what the rules declare --------------------------------------------------------------------------------


def test_the_rules_declare_the_conversions_and_ignore_only_the_row_digest() -> None:
    r = TARGET.compat_rule(V["3.9.4"], V["4.2.0"])
    assert r.kind == "migrate" and r.ignore == ("config_digest",)
    assert "config.component.*.properties" in r.converted and "config.show.*.cues" not in r.converted
    assert {"config.schedule.*.time_zone", "config.app_user.*.password_scheme"} <= set(r.added)
    r = TARGET.compat_rule(V["4.2.0"], V["5.0.0"])
    assert "config.show.*.cues" in r.converted and "config.component.*.properties" not in r.converted
    assert not r.added  # 20 -> 22 adds no field
    same = TARGET.compat_rule(V["4.2.0"], V["4.2.0"])
    assert same.kind == "restore" and not same.ignore and not same.converted
    assert TARGET.compat_rule(V["3.9.4"], V["5.0.0"]).kind == "refuse"


# -- on real restore points (the committed goldens) --------------------------------------------------------


def golden(version: str) -> dict[str, Any]:
    path = GOLDEN / f"{version}.zip"
    assert path.is_file(), f"no golden {path}: run python -m harness.golden --target neuroomnet"
    return TARGET.fields(TARGET.load_artifact(path))


def test_a_real_4_2_restore_point_migrated_to_5_0() -> None:
    before = golden("4.2.0")
    out = TARGET.migrate_fields(before, V["4.2.0"], V["5.0.0"])
    shows = [k for k in before if k.endswith(".cues")]
    assert shows
    for key in shows:
        seconds = [c["at_s"] for c in before[key]]
        assert [c["at_ms"] for c in out[key]] == [round(s * 1000) for s in seconds]
        assert not any("at_s" in c for c in out[key])


def test_a_real_3_9_restore_point_migrated_to_4_0() -> None:
    before = golden("3.9.4")
    out = TARGET.migrate_fields(before, V["3.9.4"], V["4.0.2"])
    props = {k: v for k, v in before.items() if k.endswith(".properties")}
    rows = {k: v for k, v in out.items() if k.startswith("config.component_property.")}
    assert props and len(rows) == sum(len(p) for p in props.values())
    assert out["summary_digest"] == before["summary_digest"]


# -- the matrix on real simulators -------------------------------------------------------------------------


class SecondsLeftInPlaceDriver(NeuroomNetDriver):
    """A broken 20 -> 22 migration on the unit: show 2's cue times stay in seconds under ``at_ms``."""

    def restore(self, plan):
        report = super().restore(plan)
        rows = self._call("GET", f"{API}/config/show")["rows"]
        cues = json.loads(next(r["cues"] for r in rows if r["id"] == 2))
        self.apply_settings({"config.show.2.cues": [{**c, "at_ms": c["at_ms"] // 1000} for c in cues]})
        return report


class SecondsLeftInPlace(NeuroomNetTarget):
    driver = SecondsLeftInPlaceDriver


def test_an_honest_migration_onto_5_0_is_migrated(tmp_path: Path) -> None:
    honest = run_cell(TARGET, V["4.2.0"], V["5.0.0"], "fresh", tmp_path, SID)
    assert honest.outcome == MIGRATED, honest.detail


def test_a_unit_that_holds_the_wrong_cue_times_turns_the_cell_red(tmp_path: Path) -> None:
    broken = run_cell(SecondsLeftInPlace(), V["4.2.0"], V["5.0.0"], "fresh", tmp_path, SID)
    assert broken.outcome == FAIL
    assert "config.show.2.cues[1].at_ms" in broken.detail, broken.detail


# -- restoring another server's users (§3.3, §6 step 9, NN-F14) ------------------------------------------


def test_a_restore_whose_users_lack_the_login_is_login_failed_after_apply(tmp_path: Path) -> None:
    """The apply goes through, then the harness's password is not in the restored users: not a refusal
    (exit 2 says nothing changed) but a device error naming login_failed_after_apply."""
    store = Store(tmp_path / "store")
    artifacts = []
    for i in range(2):
        password = secrets.token_urlsafe(9)
        (tmp_path / f"pw{i}").write_text(password)
        options = SimOptions(target="neuroomnet", state=tmp_path / f"u{i}", firmware="4.2.0", device_id=SID,
                             username="qa", password_file=tmp_path / f"pw{i}")
        with start_simulator(options) as sim, TARGET.driver(sim.address, username="qa", password=password) as d:
            if not artifacts:
                artifacts.append(backup_to_store(d, TARGET, store, address=sim.address))
                continue
            with pytest.raises(DeviceError, match="login_failed_after_apply") as caught:
                restore_from(d, TARGET, artifacts[0], store, address=sim.address)
    assert caught.value.exit_code == 3
