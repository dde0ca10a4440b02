"""The compatibility matrix: does a backup made under version A restore onto version B as the target declares?

For every declared (source, destination) pair: start a unit at the source version, give it a distinctive
state, back it up; then restore onto a fresh unit at the destination version and, where the target can be
updated in place, onto the same unit after an update; read back and compare by field name under the target's
rules. A cell is ``restored``, ``migrated`` (fields dropped/added), ``refused`` as declared (with the
message), or ``FAIL`` (anything else: a refusal that was not declared, a restore that should have been
refused, or a field that came back different). Pairs run in parallel, each on simulators of its own.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.compare import diff
from harness.errors import HarnessError
from harness.operations import backup_to_store, firmware_update, load_artifact, open_driver, restore_from
from harness.store import Store
from harness.targets.base import CompatRule, CompatVersion, Target

log = logging.getLogger(__name__)

RESTORED, MIGRATED, REFUSED, FAIL = "restored", "migrated", "refused", "FAIL"
SEED = 11  # distinctive settings of every source unit


@dataclass
class Cell:
    source: str
    destination: str
    path: str  # "fresh": a new unit at the destination version; "update": the same unit, updated
    declared: str  # the target's rule: restore | migrate | refuse
    outcome: str  # restored | migrated | refused | FAIL
    detail: str = ""
    dropped: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Matrix:
    target: str
    versions: list[str]
    cells: list[Cell]

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.outcome == FAIL]

    def cell(self, source: str, destination: str, path: str) -> Cell | None:
        return next((c for c in self.cells if (c.source, c.destination, c.path) == (source, destination,
                                                                                       path)), None)


class _Units:
    """Simulators for one cell, each on its own state directory, with a throwaway credential."""

    def __init__(self, target: Target, workdir: Path, device_id: str | None) -> None:
        self.target, self.workdir, self.device_id = target, workdir, device_id
        self.username = "compat"
        self.password = secrets.token_urlsafe(12)
        self.password_file = workdir / "password"
        self.password_file.write_text(self.password, encoding="utf-8")
        self.password_file.chmod(0o600)

    @contextmanager
    def unit(self, version: CompatVersion, name: str):
        from simulators.core.options import SimOptions
        from simulators.core.process import start_simulator

        options = SimOptions(target=self.target.name, state=self.workdir / name, firmware=version.version,
                             profile=version.profile, device_id=self.device_id, username=self.username,
                             password_file=self.password_file)
        with start_simulator(options) as proc:
            yield proc

    def driver(self, proc):
        return open_driver(self.target, proc.address, username=self.username, password=self.password,
                           ssh=proc.info.get("ssh"), control=proc.control)


def _compare(target: Target, source: Path, restored: Path, rule: CompatRule, src: CompatVersion,
             dst: CompatVersion) -> str | None:
    """None if the unit holds what the backup should become on ``dst``; else the first differences."""
    a = target.fields(load_artifact(source, target.name)[1])
    b = target.fields(load_artifact(restored, target.name)[1])
    rules = target.compare_rules
    if rule.kind == "migrate":
        a = target.migrate_fields(a, src, dst)  # what the backup becomes on dst
        # Fields new at dst hold its defaults (listed as added); the declared drops are not compared. Any
        # other field of the backup that the unit lacks after the restore is a difference.
        b = {k: v for k, v in b.items() if k in a}
        dropped = tuple(f"{name}{tail}" for name in rule.dropped for tail in ("", "[*", ".*"))  # and their items
        rules = dataclasses.replace(rules, ignore=rules.ignore + rule.ignore + dropped)
    result = diff(a, b, rules)
    if result.equal:
        return None
    return "; ".join(str(d) for d in result.differences[:3]) + (
        f" (+{len(result.differences) - 3} more)" if len(result.differences) > 3 else "")


def run_cell(target: Target, source: CompatVersion, destination: CompatVersion, path: str,
             workdir: Path, device_id: str | None = None) -> Cell:
    rule = target.compat_rule(source, destination)
    cell = Cell(source.name, destination.name, path, rule.kind, FAIL)
    started = time.monotonic()
    units = _Units(target, workdir, device_id)
    store = Store(workdir / "store")

    def refusal(exc: HarnessError, stage: str) -> None:
        if rule.kind == "refuse" and exc.exit_code == 2:
            cell.outcome, cell.detail = REFUSED, str(exc)
        else:
            cell.detail = f"{stage}: {exc}" + (f" (declared: {rule.kind})" if rule.kind != "refuse" else "")

    try:
        with units.unit(source, "source") as src:
            with units.driver(src) as driver:
                try:
                    driver.apply_settings(target.distinctive_settings(driver.identify(), SEED))
                    artifact = backup_to_store(driver, target, store, address=src.address)
                except HarnessError as exc:
                    refusal(exc, "backup at the source version")
                    return cell
                if path == "update":
                    try:
                        _, report = firmware_update(driver, target, store, address=src.address,
                                                    control=src.control, firmware=destination.version,
                                                    profile=destination.profile)
                        readback = backup_to_store(driver, target, store, address=src.address)
                    except HarnessError as exc:
                        refusal(exc, "update and restore")
                        return cell
                    _judge(cell, rule, report, _compare(target, artifact, readback, rule, source, destination))
                    return cell
        with units.unit(destination, "destination") as dst, units.driver(dst) as driver:
            target.compat_fresh_unit(dst.control)
            try:
                report = restore_from(driver, target, artifact, store, address=dst.address,
                                      allow_cross_family=True)
                readback = backup_to_store(driver, target, store, address=dst.address)
            except HarnessError as exc:
                refusal(exc, "restore")
                return cell
            _judge(cell, rule, report, _compare(target, artifact, readback, rule, source, destination))
            return cell
    except HarnessError as exc:  # a simulator that would not start, a link error: the cell failed
        cell.detail = f"harness error: {exc}"
        return cell
    finally:
        cell.seconds = round(time.monotonic() - started, 2)


def _judge(cell: Cell, rule: CompatRule, report: Any, difference: str | None) -> None:
    # A driver that replaces a whole configuration reports no per-field skips: show the declared ones.
    cell.dropped = list(report.skipped) or list(rule.dropped)
    cell.added = list(report.untouched) or list(rule.added) + list(rule.converted)
    if rule.kind == "refuse":
        cell.detail = "declared refused, but the restore went through"
    elif difference is not None:
        cell.detail = f"read back differs: {difference}"
    elif rule.kind == "migrate":
        cell.outcome, cell.detail = MIGRATED, rule.reason
    else:
        cell.outcome, cell.detail = RESTORED, rule.reason


def row_pairs(target: Target, source: CompatVersion,
              versions: list[CompatVersion]) -> list[tuple[CompatVersion, str]]:
    """The cells of one row: every destination on a fresh unit, and on the same unit after an update where
    the target can update ``source`` to it."""
    return [(d, p) for d in versions for p in (["fresh", "update"] if target.can_update(source, d) else ["fresh"])]


def run_matrix(target: Target, *, jobs: int = 2, device_id: str | None = None,
               progress: Callable[[Cell], None] | None = None) -> Matrix:
    versions = target.compat_versions()
    pairs = [(s, d, p) for s in versions for d, p in row_pairs(target, s, versions)]
    with tempfile.TemporaryDirectory(prefix=f"compat-{target.name}-") as tmp:
        def one(i: int) -> Cell:
            s, d, p = pairs[i]
            workdir = Path(tmp) / f"cell{i}"
            workdir.mkdir()
            cell = run_cell(target, s, d, p, workdir, device_id)
            if progress:
                progress(cell)
            return cell

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            cells = list(pool.map(one, range(len(pairs))))
    return Matrix(target.name, [v.name for v in versions], cells)


def merge_rows(rows_dir: Path) -> list[Matrix]:
    """Whole matrices from the rows the compatibility feature wrote (``<rows>/<target>/<source>/<target>.json``):
    the feature runs row by row, CI wants one table per target."""
    matrices = []
    for target_dir in sorted(p for p in rows_dir.iterdir() if p.is_dir()) if rows_dir.is_dir() else []:
        versions: list[str] = []
        cells: list[Cell] = []
        for row in sorted(target_dir.glob(f"*/{target_dir.name}.json")):
            data = json.loads(row.read_text(encoding="utf-8"))
            versions = versions or data["versions"]
            cells += [Cell(**c) for c in data["cells"]]
        if cells:
            order = {v: i for i, v in enumerate(versions)}
            cells.sort(key=lambda c: (order.get(c.source, len(order)), order.get(c.destination, len(order))))
            matrices.append(Matrix(target_dir.name, versions, cells))
    return matrices


# -------------------------------------------------------------------------------------------------- output

_SYMBOL = {RESTORED: "restored", MIGRATED: "migrated", REFUSED: "refused", FAIL: "FAIL"}
# FAIL is red, so a broken migration shows at a glance.
_COLOUR = {RESTORED: "#2e7d32", MIGRATED: "#1565c0", REFUSED: "#6d6d6d", FAIL: "#c62828"}


def _cell_text(cells: list[Cell]) -> str:
    if not cells:
        return "not run"
    parts = []
    for c in cells:
        text = _SYMBOL[c.outcome]
        if c.outcome == MIGRATED:
            text += f" −{len(c.dropped)} +{len(c.added)}"
        parts.append(text if len(cells) == 1 else f"{c.path}: {text}")
    return " / ".join(parts)


def write_reports(matrix: Matrix, outdir: Path) -> dict[str, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {kind: outdir / f"{matrix.target}.{kind}" for kind in ("json", "md", "html")}
    summary = {k: sum(1 for c in matrix.cells if c.outcome == k) for k in _SYMBOL}
    paths["json"].write_text(json.dumps({"target": matrix.target, "versions": matrix.versions,
                                         "summary": summary, "cells": [asdict(c) for c in matrix.cells]},
                                        indent=2) + "\n", encoding="utf-8")
    grid: dict[tuple[str, str], list[Cell]] = {(s, d): [] for s in matrix.versions for d in matrix.versions}
    for c in matrix.cells:
        grid.setdefault((c.source, c.destination), []).append(c)

    md = [f"# {matrix.target}: restore compatibility (rows: backup made at; columns: restored onto)", "",
          "| source \\ destination | " + " | ".join(matrix.versions) + " |",
          "|---" * (len(matrix.versions) + 1) + "|"]
    for s in matrix.versions:
        md.append(f"| **{s}** | " + " | ".join(_cell_text(grid[(s, d)]) for d in matrix.versions) + " |")
    md += ["", ", ".join(f"{n} {k}" for k, n in summary.items()), ""]
    md += [f"- {c.source} → {c.destination} ({c.path}): **{c.outcome}** {c.detail}"
           for c in matrix.cells if c.outcome == FAIL]
    paths["md"].write_text("\n".join(md) + "\n", encoding="utf-8")

    def td(cells: list[Cell]) -> str:
        if not cells:
            return "<td>not run</td>"
        worst = FAIL if any(c.outcome == FAIL for c in cells) else cells[0].outcome
        tip = "\n".join(f"[{c.path}] {c.outcome}: {c.detail}" + (
            f"\ndropped: {', '.join(c.dropped)}\nadded: {', '.join(c.added)}" if c.dropped or c.added else "")
            for c in cells)
        return (f'<td style="background:{_COLOUR[worst]}" title="{html.escape(tip)}">'
                f"{html.escape(_cell_text(cells))}</td>")

    rows = "".join(f"<tr><th>{html.escape(s)}</th>" + "".join(td(grid[(s, d)]) for d in matrix.versions)
                   + "</tr>" for s in matrix.versions)
    head = "".join(f"<th>{html.escape(d)}</th>" for d in matrix.versions)
    paths["html"].write_text(f"""<!doctype html><meta charset="utf-8">
<title>{matrix.target} compatibility</title>
<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:6px 10px;font-size:13px}}td{{color:#fff;cursor:help}}</style>
<h1>{matrix.target}: restore compatibility</h1>
<p>Rows: the version a backup was made at. Columns: the version it is restored onto. Hover a cell for the
details. {html.escape(", ".join(f"{n} {k}" for k, n in summary.items()))}</p>
<table><tr><th>source \\ destination</th>{head}</tr>{rows}</table>
""", encoding="utf-8")
    return paths
