"""The compatibility matrix can fail: a migration broken on purpose turns its cell red.

The sabotage lives in a driver subclass, the way a real regression would live in driver code: it swaps two
light-sensor slopes in the setter it sends. Everything else (simulators, store, read-back, judging, report
writing) is the code `harness compat` runs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from harness.compat import (
    FAIL,
    MIGRATED,
    REFUSED,
    RESTORED,
    Cell,
    Matrix,
    merge_rows,
    run_cell,
    write_reports,
)
from harness.targets.base import CompatRule, CompatVersion
from harness.targets.multispeq import MultispeqTarget
from harness.targets.multispeq.driver import MultispeqDriver

D = CompatVersion("1.11")
E = CompatVersion("1.17")
F = CompatVersion("1.19")


class SwappedSlopesDriver(MultispeqDriver):
    """A migration bug: set_par goes out with light_slope_r and light_slope_g in the wrong order."""

    def _send_group(self, group):
        if group.name == "set_par":
            head, args = group.data.split(b"+", 1)
            a = args.split(b"+")
            a[1], a[2] = a[2], a[1]
            group = dataclasses.replace(group, data=b"+".join([head, *a]))
        super()._send_group(group)


class SabotagedTarget(MultispeqTarget):
    driver = SwappedSlopesDriver


class DeclaresRefusal(MultispeqTarget):
    """Declares a pair refused that in fact restores: the matrix must not call that a pass either."""

    def compat_rule(self, source: CompatVersion, destination: CompatVersion) -> CompatRule:
        return CompatRule("refuse", "declared on purpose")


@pytest.mark.parametrize("path", ["fresh", "update"])
def test_an_honest_migration_passes_and_a_broken_one_turns_red(tmp_path: Path, path: str) -> None:
    honest = run_cell(MultispeqTarget(), D, E, path, _dir(tmp_path, "honest"), "52:00:13:1f")
    assert honest.outcome == MIGRATED, honest.detail
    assert honest.added and not honest.dropped  # 1.11 -> 1.17: userdef115..134 are new

    broken = run_cell(SabotagedTarget(), D, E, path, _dir(tmp_path, "broken"), "52:00:13:1f")
    assert broken.outcome == FAIL
    assert "light_slope" in broken.detail, broken.detail

    paths = write_reports(Matrix("multispeq", [D.name, E.name], [honest, broken]), tmp_path / "out")
    assert '<td style="background:#c62828"' in paths["html"].read_text()
    assert json.loads(paths["json"].read_text())["summary"]["FAIL"] == 1
    assert re.search(r"FAIL.*light_slope", paths["md"].read_text())


class CarriesAPhantomField(MultispeqTarget):
    """A migration that says a field carries over which the unit never gets back: a lost field."""

    def migrate_fields(self, fields, source, destination):
        return {**super().migrate_fields(fields, source, destination), "phantom_slope": "1.5"}


def test_a_field_the_migration_carries_but_the_unit_lacks_is_a_fail(tmp_path: Path) -> None:
    cell = run_cell(CarriesAPhantomField(), D, E, "fresh", tmp_path, "52:00:13:1f")
    assert cell.outcome == FAIL and "phantom_slope: only in A" in cell.detail, cell.detail


def test_a_declared_refusal_that_restores_is_a_fail(tmp_path: Path) -> None:
    cell = run_cell(DeclaresRefusal(), E, E, "fresh", tmp_path, "52:00:13:1f")
    assert cell.outcome == FAIL and "declared refused" in cell.detail


def test_a_declared_refusal_is_refused_with_its_message(tmp_path: Path) -> None:
    onto_f = run_cell(MultispeqTarget(), E, F, "fresh", _dir(tmp_path, "onto"), "52:00:13:1f")
    assert onto_f.outcome == REFUSED and "1.19/1.20" in onto_f.detail
    same = run_cell(MultispeqTarget(), E, E, "fresh", _dir(tmp_path, "same"), "52:00:13:1f")
    assert same.outcome == RESTORED


def test_rows_merge_into_one_matrix_and_a_failed_row_stays_red(tmp_path: Path) -> None:
    versions = [D.name, E.name]
    rows = tmp_path / "rows" / "multispeq"
    write_reports(Matrix("multispeq", versions, [Cell(E.name, E.name, "fresh", "restore", RESTORED),
                                                 Cell(E.name, D.name, "fresh", "migrate", FAIL, "slope")]),
                  rows / E.name)
    write_reports(Matrix("multispeq", versions, [Cell(D.name, D.name, "fresh", "restore", RESTORED),
                                                 Cell(D.name, E.name, "fresh", "migrate", MIGRATED)]),
                  rows / D.name)
    (matrix,) = merge_rows(tmp_path / "rows")
    assert [(c.source, c.destination) for c in matrix.cells] == [(D.name, D.name), (D.name, E.name),
                                                                 (E.name, D.name), (E.name, E.name)]
    assert [c.detail for c in matrix.failed] == ["slope"]
    assert json.loads(write_reports(matrix, tmp_path)["json"].read_text())["summary"]["FAIL"] == 1
    assert merge_rows(tmp_path / "nothing") == []


def _dir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path
