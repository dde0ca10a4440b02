"""The command line against a simulator process: `harness sim run` and its JSON line, a curl-style backup
with a token from the login endpoint, the backup/restore/diff round trip, and hostile ZIPs refused (exit 2)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.targets.mobiusflow.corpus import DAMAGES

ROOT = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, "-m", "harness"]
USER = "cli-user"
PASSWORD = "cli-pass-31"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def node(tmp_path: Path) -> Iterator[dict[str, Any]]:
    pw = tmp_path / "password"
    pw.write_text(PASSWORD + "\n")
    proc = subprocess.Popen([*HARNESS, "sim", "run", "mobiusflow", "--state", str(tmp_path / "state"),
                             "--username", USER, "--password-file", str(pw)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "sim.log", "wb"), text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        yield {**info, "line": line, "pw": pw, "dir": tmp_path}
    finally:
        proc.terminate()
        proc.wait(10)


def _common(node: dict[str, Any]) -> list[str]:
    return ["--target", "mobiusflow", "--address", node["address"], "--username", USER,
            "--password-file", str(node["pw"]), "--store", str(node["dir"] / "store")]


def test_json_line_and_a_curl_style_backup(node: dict[str, Any]) -> None:
    assert node["user"] == USER and PASSWORD not in node["line"] and node["control"].endswith("/_sim")
    with httpx.Client(base_url=node["address"], trust_env=False) as c:
        token = c.post("/api/v3/auth/login", json={"username": USER, "password": PASSWORD}).json()["sessionToken"]
        r = c.get("/api/v3/node/backupfull/00A1F3", params={"name": "example-backup"},
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(r.content)).testzip() is None


def test_round_trip_through_the_cli(node: dict[str, Any]) -> None:
    cwd = node["dir"]
    first = run("backup", *_common(node), cwd=cwd)
    assert first.returncode == 0, first.stderr
    a = first.stdout.strip()
    with httpx.Client(base_url=node["address"], trust_env=False) as c:
        token = c.post("/api/v3/auth/login", json={"username": USER, "password": PASSWORD}).json()["sessionToken"]
        auth = {"Authorization": f"Bearer {token}"}
        c.patch("/api/v3/node/config/00A1F3", json={"nodeName": "edited", "services": {"021": {"enabled": False}}},
                headers=auth).raise_for_status()
        c.patch("/api/v3/object/resource/00A1F3/020/0028/0001/01", json={"value": 77.0}, headers=auth)
    b = run("backup", *_common(node), cwd=cwd).stdout.strip()
    changed = run("diff", a, b, cwd=cwd)
    assert changed.returncode == 1 and "node.nodeName" in changed.stdout
    restore = run("restore", a, *_common(node), "--yes", cwd=cwd)
    assert restore.returncode == 0, restore.stderr
    assert "verdict: as is" in restore.stdout
    c_path = run("backup", *_common(node), cwd=cwd).stdout.strip()
    same = run("diff", a, c_path, cwd=cwd)
    assert same.returncode == 0, same.stdout
    assert run("verify", c_path, cwd=cwd).returncode == 0
    # the safety backup the driver took before restoring is in the store, with its reason
    manifests = [json.loads(p.read_text()) for p in (cwd / "store").rglob("*.manifest.json")]
    assert any(m["reason"] == "before-restore" for m in manifests)
    assert not any(PASSWORD in p.read_text() for p in (cwd / "store").rglob("*.manifest.json"))


@pytest.mark.parametrize("damage", ["zip-slip entry", "corrupted byte", "another target's ZIP", "zip bomb"])
def test_hostile_zip_exits_2_and_the_node_is_unchanged(node: dict[str, Any], damage: str) -> None:
    cwd = node["dir"]
    good = Path(run("backup", *_common(node), cwd=cwd).stdout.strip())
    bad = cwd / "bad.zip"
    maker, code = DAMAGES[damage]
    bad.write_bytes(maker(good.read_bytes()))
    state = httpx.get(node["control"] + "/state", trust_env=False).json()
    result = run("restore", str(bad), *_common(node), "--yes", cwd=cwd)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and code in lines[0], result.stderr
    after = httpx.get(node["control"] + "/state", trust_env=False).json()
    assert after["storage_sha256"] == state["storage_sha256"] and after["bootId"] == state["bootId"]


def test_incompatible_version_exits_2(node: dict[str, Any], tmp_path: Path) -> None:
    """A 3021 backup onto a 1.19.1 node: refused by the version rule before anything is uploaded."""
    cwd = node["dir"]
    good = run("backup", *_common(node), cwd=cwd).stdout.strip()
    pw = node["pw"]
    old = subprocess.Popen([*HARNESS, "sim", "run", "mobiusflow", "--firmware", "1.19.1", "--state",
                            str(tmp_path / "old"), "--username", USER, "--password-file", str(pw)], cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        info = json.loads(old.stdout.readline())
        result = run("restore", good, "--target", "mobiusflow", "--address", info["address"], "--username", USER,
                     "--password-file", str(pw), "--store", str(cwd / "store2"), "--yes", cwd=cwd)
        assert result.returncode == 2 and "backup_generation_unsupported" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        old.terminate()
        old.wait(10)
