"""The issue's acceptance checks through the real CLI: round trip ends with `harness diff` exit 0; hostile or
corrupted ZIPs exit 2 with one line and leave the configuration (read back through the API) unchanged."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from simulators.core.options import SimOptions
from simulators.core.process import start_simulator

pytestmark = pytest.mark.target_neuroomnet

HARNESS = [sys.executable, "-m", "harness"]


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def server(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("cli-secret\n")
    with start_simulator(SimOptions(target="neuroomnet", state=tmp_path / "state", firmware="4.2.0",
                                    device_id="srv-0c11c11c", username="qa", password_file=pw)) as proc:
        yield proc, ["--target", "neuroomnet", "--address", proc.address, "--username", "qa", "--password-file",
                     str(pw), "--store", str(tmp_path / "store")]


def api(address: str) -> httpx.Client:
    token = httpx.post(f"{address}/api/auth/login", json={"username": "qa", "password": "cli-secret"}).json()["token"]
    return httpx.Client(base_url=address, headers={"Authorization": f"Bearer {token}"})


def test_round_trip_through_the_cli(server):
    proc, common = server
    first = harness("backup", *common)
    assert first.returncode == 0, first.stderr
    first_path = first.stdout.strip()
    assert Path(first_path).name.startswith("RP_") and first_path.endswith("_utc.zip")
    with api(proc.address) as c:
        assert c.patch("/api/config/system_setting/language", json={"value": "fr"}).status_code == 200
        assert c.post("/api/config/component", json={"module": "Setup", "name": "Extra", "kind": "pc",
                                                      "address": "10.1.1.1", "protocol": "wol", "enabled": 1,
                                                      "group_id": 1}).status_code == 201
    changed = harness("backup", *common)
    assert harness("diff", first_path, changed.stdout.strip()).returncode == 1
    restored = harness("restore", first_path, *common, "--yes")
    assert restored.returncode == 0, restored.stderr
    assert "the server restarted during the apply" in restored.stdout
    again = harness("backup", *common)
    result = harness("diff", first_path, again.stdout.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 differences" in result.stderr
    assert harness("verify", again.stdout.strip()).returncode == 0


def test_hostile_and_corrupted_zips_exit_2_and_change_nothing(server, tmp_path):
    proc, common = server
    good = Path(harness("backup", *common).stdout.strip())
    with api(proc.address) as c:
        before = c.get("/api/system-restore/current-summary").json()["config_digest"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(evil, "w") as out:
        for info in z.infolist():
            out.writestr(info, z.read(info))
        out.writestr("../evil.txt", b"pwned")
    corrupt = tmp_path / "corrupt.zip"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as out:
        out.writestr("backup.json", b'{"hub_id": "x"}')
    for path, text in ((evil, "unsafe_path"), (corrupt, "CRC-32"), (foreign, "restorepoint.json")):
        result = harness("restore", str(path), *common, "--yes")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], result.stderr
    with api(proc.address) as c:
        assert c.get("/api/system-restore/current-summary").json()["config_digest"] == before
        assert len(c.get("/api/system-restore/local-copies").json()["local_copies"]) == 1  # nothing uploaded
    assert not (tmp_path / "evil.txt").exists()


def test_sim_run_on_an_existing_state_updates_it_forward_only(tmp_path):
    state = tmp_path / "state"
    with start_simulator(SimOptions(target="neuroomnet", state=state, firmware="3.9.4")) as proc:
        sid = proc.info["device_id"]
    refused = harness("sim", "run", "neuroomnet", "--state", str(state), "--firmware", "5.0.0")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "5.0.0 can migrate configurations from schema 18 on" in refused.stderr
    with start_simulator(SimOptions(target="neuroomnet", state=state, firmware="4.0.2")) as proc:
        assert (proc.info["firmware"], proc.info["device_id"]) == ("4.0.2", sid)
