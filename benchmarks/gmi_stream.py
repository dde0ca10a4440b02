"""GMI streaming benchmark: `harness backup` / `harness restore` of a BactoBox against curl moving the same bytes.

For each profile (default: ``small`` and ``bench-2g``, a 2 GiB sparse disk) one simulator process runs in fast
mode (unthrottled), and every round does, in this order, on the same unit:

- curl backup:    POST /backups, poll until ``ready``, ``curl -o`` the artifact, poll until ``succeeded``;
- harness backup: ``harness backup --target bactobox --address …`` as a child process (checks the unit, follows
                  the operation, streams the GMI to disk, verifies every part, files it in a store);
- curl restore:   POST /restores with the GMI's manifest, ``curl -T`` the file (PUT), poll until
                  ``succeeded``, POST /system/restart, poll until the new boot answers;
- harness restore: ``harness restore FILE --target bactobox --address … --yes`` as a child process (verifies the
                  whole GMI, preflight, streamed upload, follows the operation, restart, post-restart checks).

Both sides of a pair go through the same device operation (the unit's own preparing pass and verification
are in both), so the ratio shows what the harness adds on top of moving the bytes. Wall times are the median
of the rounds; the harness's peak memory is ``ru_maxrss`` of its child process (``os.wait4``). The first
round is preceded by a warm-up download so both sides meet a warm page cache.

    .venv/bin/python benchmarks/gmi_stream.py                  # small and bench-2g, 3 rounds
    .venv/bin/python benchmarks/gmi_stream.py --profiles small --rounds 1

Targets (issue 4): backup and restore of the 2 GiB image within 1.5x of curl, and peak memory under 150 MiB
at both sizes (memory must not grow with the image). The ratio at ``small`` is printed too but is not the
target: there a fixed ~0.2 s (interpreter start and imports) weighs against a curl run of half a second. Everything it creates lives under --workdir (default ``.harness/bench-gmi``) and is deleted
at the end, the sparse disk image included. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.targets.bactobox.gmi import inspect_gmi  # noqa: E402
from harness.targets.bactobox.schema import MEDIA_TYPE  # noqa: E402
from simulators.core.options import SimOptions  # noqa: E402
from simulators.core.process import start_simulator  # noqa: E402

HARNESS = [sys.executable, "-m", "harness"]
POLL_S = 0.02


@dataclass
class Result:
    profile: str
    gmi_bytes: int = 0
    curl_backup: list[float] = field(default_factory=list)
    harness_backup: list[float] = field(default_factory=list)
    curl_restore: list[float] = field(default_factory=list)
    harness_restore: list[float] = field(default_factory=list)
    prep_curl: list[float] = field(default_factory=list)  # the unit's own preparing pass, from its log
    prep_harness: list[float] = field(default_factory=list)
    rss_backup_kib: list[int] = field(default_factory=list)
    rss_restore_kib: list[int] = field(default_factory=list)


def wait_state(api: httpx.Client, op: str, states: set[str]) -> dict:
    while True:
        body = api.get(f"/operations/{op}").json()
        if body["state"] in states:
            return body
        if body["state"] == "failed":
            raise RuntimeError(f"operation {op} failed: {body['error']}")
        time.sleep(POLL_S)


def wait_new_boot(api: httpx.Client, old: str) -> None:
    while True:
        try:
            r = api.get("/device")
            if r.status_code == 200 and r.headers.get("x-boot-id") != old and r.json()["mode"] == "normal":
                return
        except httpx.TransportError:
            pass
        time.sleep(POLL_S)


def preparing_s(api: httpx.Client) -> float:
    """Seconds the last backup spent in ``preparing`` (the unit's hash pass), from its log timestamps."""
    op = [o for o in api.get("/operations").json()["finished"] if o["kind"] == "backup"][-1]
    lines = api.get(f"/operations/{op['id']}/log").text.splitlines()
    stamp = {line.split(" ", 2)[2].split(":")[0]: line.split(" ", 1)[0] for line in reversed(lines)}

    def at(prefix: str) -> float:
        from datetime import datetime

        return datetime.fromisoformat(stamp[prefix].replace("Z", "+00:00")).timestamp()

    first = lines[0].split(" ", 2)[2].split(":")[0]
    return at("GMI ready") - at(first)


def settle() -> None:
    """Flush every dirty page before a timed step (not timed), so no step pays for the previous one's
    writeback: the disk, not the network, is the slowest part of this machine."""
    os.sync()


def curl_backup(api: httpx.Client, base: str, dest: Path) -> tuple[float, int]:
    settle()
    t0 = time.perf_counter()
    op = api.post("/backups", json={}).json()["operation"]["id"]
    wait_state(api, op, {"ready"})
    subprocess.run(["curl", "-sS", "--fail", "-o", str(dest), f"{base}/api/v1/operations/{op}/artifact"], check=True)
    wait_state(api, op, {"succeeded"})
    return time.perf_counter() - t0, dest.stat().st_size


def curl_restore(api: httpx.Client, base: str, gmi: Path) -> float:
    info = inspect_gmi(gmi)  # reading the manifest to announce it is the least any client must do
    body = {"confirm": True, "file_name": gmi.name, "file_size_bytes": info.size,
            "manifest_sha256": info.manifest_sha256, "manifest": json.loads(info.manifest_bytes)}
    settle()
    t0 = time.perf_counter()
    old = api.get("/device").headers["x-boot-id"]
    pre = api.post("/restores", json=body).json()
    subprocess.run(["curl", "-sS", "--fail", "-o", os.devnull, "-X", "PUT", "-H", f"Content-Type: {MEDIA_TYPE}",
                    "-T", str(gmi), base + pre["upload_url"]], check=True)
    wait_state(api, pre["operation"]["id"], {"succeeded"})
    api.post("/system/restart")
    wait_new_boot(api, old)
    return time.perf_counter() - t0


def run_child(cmd: list[str], env: dict[str, str], workdir: Path) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB) of the child itself (os.wait4, not the whole process tree), and its stdout."""
    out_path, err_path = workdir / "child.out", workdir / "child.err"
    settle()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    text, errors = out_path.read_text(), err_path.read_text()
    out_path.unlink()
    err_path.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:5])} failed ({proc.returncode}): {errors[-800:]}")
    return elapsed, usage.ru_maxrss, text


def bench_profile(profile: str, rounds: int, workdir: Path) -> Result:
    result = Result(profile)
    state = workdir / f"state-{profile}"
    store = workdir / f"store-{profile}"
    env = dict(os.environ, HARNESS_TMPDIR=str(workdir / "tmp"), PYTHONUNBUFFERED="1")
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    print(f"[{profile}] creating the unit (sparse disk) …", flush=True)
    proc = start_simulator(SimOptions(target="bactobox", state=state, profile=profile), startup_timeout=900)
    base = proc.address
    try:
        with httpx.Client(base_url=base + "/api/v1", timeout=600, trust_env=False) as api:
            while api.get("/device").status_code != 200:
                time.sleep(POLL_S)
            warm = workdir / "warm.gmi"
            curl_backup(api, base, warm)  # warm-up: the disk image and the page cache
            warm.unlink()
            for n in range(1, rounds + 1):
                target = workdir / "curl.gmi"
                seconds, size = curl_backup(api, base, target)
                target.unlink()
                result.prep_curl.append(preparing_s(api))
                result.curl_backup.append(seconds)
                result.gmi_bytes = size
                seconds, rss, out = run_child([*HARNESS, "backup", "--target", "bactobox", "--address", base,
                                               "--store", str(store)], env, workdir)
                gmi = Path(out.strip().splitlines()[-1])
                result.harness_backup.append(seconds)
                result.prep_harness.append(preparing_s(api))
                result.rss_backup_kib.append(rss)
                result.curl_restore.append(curl_restore(api, base, gmi))
                seconds, rss, _ = run_child([*HARNESS, "restore", str(gmi), "--target", "bactobox", "--address",
                                             base, "--store", str(store), "--yes"], env, workdir)
                result.harness_restore.append(seconds)
                result.rss_restore_kib.append(rss)
                shutil.rmtree(store, ignore_errors=True)
                print(f"[{profile}] round {n}: backup curl {result.curl_backup[-1]:.2f} s, harness "
                      f"{result.harness_backup[-1]:.2f} s ({result.rss_backup_kib[-1] / 1024:.0f} MiB); restore "
                      f"curl {result.curl_restore[-1]:.2f} s, harness {result.harness_restore[-1]:.2f} s "
                      f"({result.rss_restore_kib[-1] / 1024:.0f} MiB)", flush=True)
    finally:
        proc.stop()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
    return result


def report(results: list[Result]) -> dict:
    print()
    print(f"{'profile':<10} {'GMI':>8} {'operation':<26} {'curl s':>8} {'harness s':>10} {'ratio':>6} {'peak MiB':>9}")
    summary: dict[str, dict] = {}
    for r in results:
        rows = [("backup", r.curl_backup, r.harness_backup, r.rss_backup_kib),
                ("restore", r.curl_restore, r.harness_restore, r.rss_restore_kib),
                # The backup again without the unit's own preparing pass (its hash pass over the disk, which
                # both runs wait for): what remains is the transfer and what the harness adds to it.
                ("backup after preparing", [a - b for a, b in zip(r.curl_backup, r.prep_curl, strict=True)],
                 [a - b for a, b in zip(r.harness_backup, r.prep_harness, strict=True)], None)]
        for op, curl, harness, rss in rows:
            c, h = statistics.median(curl), statistics.median(harness)
            entry = {"curl_s": round(c, 3), "harness_s": round(h, 3), "ratio": round(h / c, 3),
                     "gmi_bytes": r.gmi_bytes}
            if rss:
                entry["peak_rss_mib"] = round(max(rss) / 1024, 1)
            summary[f"{r.profile}/{op}"] = entry
            peak = f"{entry['peak_rss_mib']:>9.1f}" if rss else f"{'':>9}"
            print(f"{r.profile:<10} {r.gmi_bytes / 2**20:>6.0f}Mi {op:<26} {c:>8.2f} {h:>10.2f} {h / c:>6.2f} {peak}")
    # The speed target is defined on the 2 GiB image; smaller images show the fixed start-up cost instead.
    ratios = [v["ratio"] for k, v in summary.items()
              if not k.endswith("after preparing") and v["gmi_bytes"] >= 2 * 2**30 * 0.95]
    peaks = [v["peak_rss_mib"] for v in summary.values() if "peak_rss_mib" in v]
    speed = f"{max(ratios):.2f} at 2 GiB" if ratios else "not measured (no 2 GiB profile run)"
    print(f"\nworst ratio {speed} (target <= 1.5); peak memory {max(peaks):.0f} MiB at every size "
          f"(target < 150)")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", nargs="+", default=["small", "bench-2g"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".harness" / "bench-gmi")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is needed for the baseline", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = [bench_profile(p, args.rounds, args.workdir) for p in args.profiles]
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    summary = report(results)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
