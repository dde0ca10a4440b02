"""Every committed golden backup still reads, verifies and restores onto a unit of its version.

A schema or parser change that breaks old backups fails here. Goldens are written by
``python -m harness.golden``; see fixtures/golden/<target>/index.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.compare import diff
from harness.golden import PASSWORD_FILE
from harness.operations import backup_to_store, load_artifact, open_driver, restore_from
from harness.store import Store
from harness.targets import available_targets, get_target
from simulators.core.options import SimOptions
from simulators.core.process import start_simulator

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"


def _goldens() -> list[tuple[str, str | None, dict]]:
    out = []
    for index in sorted(GOLDEN.glob("*/index.json")):
        doc = json.loads(index.read_text())
        out += [(doc["target"], doc["device_id"], entry) for entry in doc["goldens"]]
    return out


GOLDENS = _goldens()


def test_every_available_target_with_declared_versions_has_goldens() -> None:
    have = {t for t, _, _ in GOLDENS}
    for name in available_targets():
        try:
            get_target(name).compat_versions()
        except NotImplementedError:
            continue
        assert name in have, f"no goldens for {name}: run python -m harness.golden --target {name}"


@pytest.mark.parametrize(("target_name", "device_id", "entry"), GOLDENS,
                         ids=[f"{t}-{e['label']}" for t, _, e in GOLDENS])
def test_golden_reads_and_restores(tmp_path: Path, target_name: str, device_id: str | None,
                                   entry: dict) -> None:
    path = GOLDEN / target_name / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], "golden file was modified"
    target, artifact = load_artifact(path, target_name)
    assert target.name == target_name and artifact.firmware == entry["version"]

    password = PASSWORD_FILE.read_text().strip()
    options = SimOptions(target=target_name, state=tmp_path / "unit", firmware=entry["version"],
                         profile=entry["profile"], device_id=device_id, username="golden",
                         password_file=PASSWORD_FILE)
    store = Store(tmp_path / "store")
    with start_simulator(options) as sim, open_driver(target, sim.address, username="golden", password=password,
                                                      ssh=sim.info.get("ssh"), control=sim.control) as driver:
        restore_from(driver, target, path, store, address=sim.address)
        readback = backup_to_store(driver, target, store, address=sim.address)
    result = diff(target.fields(artifact), target.fields(load_artifact(readback)[1]), target.compare_rules)
    assert result.equal, [str(d) for d in result.differences[:5]]
