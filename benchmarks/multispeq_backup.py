"""MultispeQ backup time, in fast mode and in realtime mode, against the wire time of the same bytes.

Baseline: the bytes that crossed the link during one backup (host -> unit and unit -> host, counted by the
simulator's port) at 115200 baud 8N1, 10 bits per byte. A ratio of 1.0 means the backup took exactly as long
as the UART needs to carry its bytes; above it is the protocol's own waits (the quiet line before the first
command, the CRC check, the driver's idle timeouts).

    .venv/bin/python benchmarks/multispeq_backup.py [--runs N] [--firmware 1.17]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.simctl import SimControl  # noqa: E402
from harness.targets import get_target  # noqa: E402
from simulators.core.options import SimOptions  # noqa: E402
from simulators.core.process import start_simulator  # noqa: E402

BAUD = 115200
BITS_PER_BYTE = 10  # start + 8 data + stop


def measure(mode: str, time_scale: float | None, runs: int, firmware: str, workdir: Path) -> dict:
    options = SimOptions(target="multispeq", state=workdir / mode, firmware=firmware,
                         device_id="52:00:13:1f", time_scale=time_scale)
    target = get_target("multispeq")
    with start_simulator(options) as sim:
        control = SimControl(sim.control)
        driver = target.driver(sim.address, time_scale=time_scale or 1.0)
        try:
            driver.backup()  # warm-up: opens the port and drains the boot line once
            times, wire = [], []
            for _ in range(runs):
                before = control.state()["port"]
                start = time.perf_counter()
                driver.backup()
                times.append(time.perf_counter() - start)
                after = control.state()["port"]
                moved = (after["bytes_in"] - before["bytes_in"]) + (after["bytes_out"] - before["bytes_out"])
                wire.append(moved * BITS_PER_BYTE / BAUD)
        finally:
            driver.close()
    median_time, median_wire = statistics.median(times), statistics.median(wire)
    return {"mode": mode, "runs": runs, "backup_s": median_time, "wire_s": median_wire,
            "bytes": round(median_wire * BAUD / BITS_PER_BYTE), "ratio": median_time / median_wire}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--firmware", default="1.17")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-multispeq-") as tmp:
        rows = [measure("fast", None, args.runs, args.firmware, Path(tmp)),
                measure("realtime", 1.0, max(2, args.runs // 2), args.firmware, Path(tmp))]
    print(f"MultispeQ {args.firmware} backup vs wire time of the same bytes at {BAUD} baud 8N1")
    print(f"{'mode':<10}{'runs':>5}{'bytes':>8}{'backup s':>10}{'wire s':>9}{'ratio':>8}")
    for r in rows:
        print(f"{r['mode']:<10}{r['runs']:>5}{r['bytes']:>8}{r['backup_s']:>10.3f}{r['wire_s']:>9.3f}"
              f"{r['ratio']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
