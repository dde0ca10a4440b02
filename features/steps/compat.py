"""Steps of the compatibility feature: one row of the version matrix, through harness.compat."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import allure
from pytest_bdd import given, parsers, then, when

from harness.compat import FAIL, Matrix, row_pairs, run_cell, write_reports
from harness.targets import get_target
from harness.targets.base import Target

REPORTS = Path("reports/compat/rows")
CELLS_AT_ONCE = 3


@given(parsers.parse("the declared versions of {target}"), target_fixture="compat_target")
def declared_versions(target: str) -> Target:
    t = get_target(target)
    assert len(t.compat_versions()) >= 3, f"{target} declares fewer than three versions"
    return t


@when(parsers.parse("backups made at {source} are restored onto every declared version"),
      target_fixture="matrix_row")
def run_row(compat_target: Target, source: str, bench) -> Matrix:
    versions = compat_target.compat_versions()
    src = next((v for v in versions if v.name == source), None)
    assert src is not None, f"{source} is not a declared {compat_target.name} version"
    spec = next((d for d in bench.devices.values() if d.target == compat_target.name and d.is_sim), None)
    device_id = spec.sim.device_id if spec else None
    pairs = row_pairs(compat_target, src, versions)
    with tempfile.TemporaryDirectory(prefix="compat-row-") as tmp:
        def one(i: int):
            workdir = Path(tmp) / f"cell{i}"
            workdir.mkdir()
            return run_cell(compat_target, src, *pairs[i], workdir, device_id)

        # Cells mostly wait (simulator start-up, device timeouts), so a few run at once; each has its own
        # simulators and state directories.
        with ThreadPoolExecutor(max_workers=CELLS_AT_ONCE) as pool:
            cells = list(pool.map(one, range(len(pairs))))
    return Matrix(compat_target.name, [v.name for v in versions], cells)


@then("every cell is what the rules declare")
def no_fail(matrix_row: Matrix) -> None:
    expected = {"restore": "restored", "migrate": "migrated", "refuse": "refused"}
    for cell in matrix_row.cells:
        assert cell.outcome != FAIL, f"{cell.source} -> {cell.destination} ({cell.path}): {cell.detail}"
        assert cell.outcome == expected[cell.declared], cell


@then("the row is attached to the report")
def attach_row(matrix_row: Matrix) -> None:
    source = matrix_row.cells[0].source
    out = REPORTS / matrix_row.target / "".join(c if c.isalnum() or c in ".-" else "_" for c in source)
    paths = write_reports(matrix_row, out)
    allure.attach.file(str(paths["html"]), name=f"{matrix_row.target} from {source}",
                       attachment_type=allure.attachment_type.HTML)
    allure.attach.file(str(paths["md"]), name="table", attachment_type=allure.attachment_type.TEXT)
