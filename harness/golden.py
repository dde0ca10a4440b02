"""Golden artifacts: one backup per target and declared version, committed under fixtures/golden/.

    python -m harness.golden [--target T]

writes ``fixtures/golden/<target>/<version>.<ext>`` and an ``index.json`` (version, profile, file, sha256,
device ID). tests/test_golden.py proves that today's code still reads every golden and restores it onto a
unit of its version, so a schema change that breaks old backups fails CI. Regenerate only on purpose: a
golden that changes is a backup format that changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import tempfile
from pathlib import Path

from harness.errors import HarnessError
from harness.operations import backup_to_store, open_driver
from harness.store import Store
from harness.targets import available_targets, get_target
from harness.targets.base import CompatVersion, Target

log = logging.getLogger(__name__)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
# One fixed, simulator-only password for writing and restoring goldens: a backup may carry the unit's own
# accounts (NeuroomNet's users), so the restoring harness must log in with the password they were made with.
PASSWORD_FILE = GOLDEN / "sim-password.txt"
SEED = 7


def slug(version: CompatVersion) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", version.name).strip("-")


def write_golden(target: Target, outdir: Path, device_id: str | None) -> list[dict]:
    from simulators.core.options import SimOptions
    from simulators.core.process import start_simulator

    outdir.mkdir(parents=True, exist_ok=True)
    index = []
    with tempfile.TemporaryDirectory(prefix=f"golden-{target.name}-") as tmp:
        pw_file = PASSWORD_FILE
        password = pw_file.read_text(encoding="utf-8").strip()
        for i, version in enumerate(target.compat_versions()):
            options = SimOptions(target=target.name, state=Path(tmp) / f"unit{i}", firmware=version.version,
                                 profile=version.profile, device_id=device_id, username="golden",
                                 password_file=pw_file)
            with start_simulator(options) as sim, open_driver(
                    target, sim.address, username="golden", password=password, ssh=sim.info.get("ssh"),
                    control=sim.control) as driver:
                try:
                    driver.apply_settings(target.distinctive_settings(driver.identify(), SEED))
                    stored = backup_to_store(driver, target, Store(Path(tmp) / "store"), address="golden")
                except HarnessError as exc:  # a version whose backups the target refuses
                    log.info("%s %s: no golden (%s)", target.name, version.name, exc)
                    continue
            dest = outdir / f"{slug(version)}{''.join(stored.suffixes[-1:])}"
            dest.write_bytes(stored.read_bytes())
            index.append({"version": version.version, "profile": version.profile, "label": version.name,
                          "file": dest.name, "sha256": hashlib.sha256(dest.read_bytes()).hexdigest()})
    (outdir / "index.json").write_text(json.dumps({"target": target.name, "device_id": device_id,
                                                   "goldens": index}, indent=2) + "\n", encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=available_targets())
    parser.add_argument("--output", type=Path, default=GOLDEN)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from harness.cli import _bench_device_id

    for name in [args.target] if args.target else available_targets():
        target = get_target(name)
        try:
            target.compat_versions()
        except NotImplementedError:
            continue
        written = write_golden(target, args.output / name, _bench_device_id(name))
        print(f"{name}: {len(written)} goldens in {args.output / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
