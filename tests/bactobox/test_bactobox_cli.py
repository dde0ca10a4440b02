"""The command line against a BactoBox simulator process: backup, restore --yes, verify, diff, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.simctl import SimControl
from simulators.core.options import SimOptions
from simulators.core.process import start_simulator

HARNESS = [sys.executable, "-m", "harness"]


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    work = tmp_path / "work"
    work.mkdir()
    root = Path(__file__).resolve().parents[2]
    return dict(os.environ, HARNESS_TMPDIR=str(work), PYTHONPATH=str(root))


def test_round_trip_through_the_cli(tmp_path: Path, env: dict[str, str]):
    token = tmp_path / "token"
    token.write_text("bench-token\n")
    proc = start_simulator(SimOptions(target="bactobox", state=tmp_path / "unit", username="access",
                                      password_file=token))
    store = tmp_path / "store"
    auth = ["--target", "bactobox", "--address", proc.address, "--store", str(store), "--username", "access",
            "--password-file", str(token)]
    try:
        first = cli("backup", *auth, env=env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        gmi = Path(first.stdout.strip())
        assert gmi.name.startswith("backup-of-bb2241039-") and gmi.suffix == ".gmi"
        verify = cli("verify", str(gmi), env=env, cwd=tmp_path)
        assert verify.returncode == 0 and verify.stdout.startswith("OK bactobox backup of bb2241039, firmware 2.6.3")

        headers = {"Authorization": "Bearer bench-token"}
        r = httpx.put(proc.address + "/api/v1/settings", json={"timezone": "Asia/Tokyo"}, headers=headers)
        assert r.status_code == 200
        SimControl(proc.control).set_firmware("2.2.0")  # a software update after the backup

        no = cli("restore", str(gmi), *auth, env=env, cwd=tmp_path)
        assert no.returncode == 2 and "--yes" in no.stderr  # never overwrites a unit without being told
        restored = cli("restore", str(gmi), *auth, "--yes", env=env, cwd=tmp_path)
        assert restored.returncode == 0, restored.stderr
        assert "2.2.0 -> 2.6.3" in restored.stdout

        second = cli("backup", *auth, env=env, cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        same = cli("diff", str(gmi), second.stdout.strip(), env=env, cwd=tmp_path)
        assert same.returncode == 0, same.stdout + same.stderr
        assert "0 differences" in same.stderr

        assert "bench-token" not in (store / "bactobox" / "bb2241039").joinpath(gmi.name + ".manifest.json") \
            .read_text()

        short = tmp_path / "short.gmi"
        short.write_bytes(gmi.read_bytes()[:1_000_000])
        bad = cli("restore", str(short), *auth, "--yes", env=env, cwd=tmp_path)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        proc.stop()
    down = cli("backup", "--target", "bactobox", "--address", proc.address, "--store", str(store), env=env,
               cwd=tmp_path)
    assert down.returncode == 3 and "connection refused" in down.stderr
