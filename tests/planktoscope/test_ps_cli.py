"""The command line against simulator processes: round trip over HTTP, refusals, unreachable settings."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.mark.parametrize("release", ["v2023.9.0", "v2024.0.0", "v2025.0.0"])
def test_round_trip_over_http_ends_with_diff_exit_0(start_sim, tmp_path, release):
    proc = start_sim(release)
    store = str(tmp_path / "store")
    common = ["--target", "planktoscope", "--address", proc.address, "--store", store]
    first = harness("backup", *common)
    assert first.returncode == 0, first.stderr
    a = first.stdout.strip()
    assert harness("verify", a).returncode == 0
    restored = harness("restore", a, *common, "--yes")
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout and "HZ-09" in restored.stdout
    time.sleep(1.05)  # a second backup in the same second gets a _2 name; either is fine
    second = harness("backup", *common)
    diff = harness("diff", a, second.stdout.strip())
    assert diff.returncode == 0, diff.stdout
    assert "0 differences" in diff.stderr


@pytest.mark.parametrize(("release", "reason"), [("v2.3", "no file browser"), ("v2026", "Cockpit")])
def test_without_ssh_settings_are_reported_unreachable(start_sim, tmp_path, release, reason):
    proc = start_sim(release)
    common = ["--target", "planktoscope", "--address", proc.address, "--store", str(tmp_path / "s")]
    backup = harness("backup", *common)
    assert backup.returncode == 0, backup.stderr
    assert "settings not backed up" in backup.stderr and reason in backup.stderr


def test_refusals_are_one_line_exit_2(start_sim, tmp_path):
    proc = start_sim("v2024.0.0")
    common = ["--target", "planktoscope", "--address", proc.address, "--store", str(tmp_path / "s")]
    foreign = tmp_path / "foreign.zip"
    foreign.write_bytes(b'{"format": "multispeq-console-backup"}')
    result = harness("restore", str(foreign), *common, "--yes")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    hardware = ROOT / "fixtures" / "bad" / "planktoscope-hardware.json"
    result = harness("restore", str(hardware), *common, "--yes")
    assert result.returncode == 2 and "neither a PlanktoScope backup bundle" in result.stderr, result.stderr
