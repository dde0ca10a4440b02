"""`harness`: the command line of DESIGN.md.

Exit codes: 0 success, 1 a check failed (diff, read-back, EOL FAIL), 2 bad input or a refused operation,
3 a device or link error. Every error is one line on stderr, never a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import __version__
from harness.errors import BadInput, DeviceError, HarnessError, Refused
from harness.targets import ALL_TARGETS, available_targets, get_target
from harness.targets.base import DeviceInfo, Driver, RestoreReport, Target

log = logging.getLogger("harness")

DEFAULT_BENCH = Path("fixtures/benches/sim.yaml")
RESULTS_DIR = Path("reports/allure-results")
HTML_DIR = Path("reports/html")
COMPAT_DIR = Path("reports/compat")


def _default_store() -> Path:
    return Path(os.environ.get("HARNESS_STORE", "store"))


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise BadInput(f"cannot read password file {path}: {exc.strerror}") from exc


@dataclass
class Connection:
    driver: Driver
    target: Target
    address: str
    control: str | None


@contextmanager
def connect(args: argparse.Namespace, progress) -> Iterator[Connection]:
    """Open a driver on DEVICE (from the bench) or on --target/--address; a bench sim is started if down."""
    from harness.operations import open_driver

    ssh = getattr(args, "ssh", None)
    if getattr(args, "device", None):
        from harness.bench import load_bench

        bench = load_bench(args.bench)
        with bench.device(args.device) as resolved:
            spec = resolved.spec
            target = get_target(spec.target)
            password = _read_password(args.password_file) if args.password_file else spec.password()
            driver = open_driver(target, resolved.address, username=args.username or spec.username,
                                 password=password, progress=progress, ssh=ssh or resolved.ssh,
                                 control=resolved.control)
            try:
                yield Connection(driver, target, resolved.address, resolved.control)
            finally:
                driver.close()
        return
    if not (args.target and args.address):
        raise BadInput("name a bench DEVICE, or give both --target and --address")
    target = get_target(args.target)
    control = getattr(args, "control", None)
    driver = open_driver(target, args.address, username=args.username,
                         password=_read_password(args.password_file), progress=progress, ssh=ssh,
                         control=control)
    try:
        yield Connection(driver, target, args.address, control)
    finally:
        driver.close()


# ---------------------------------------------------------------------------------------------- commands


def cmd_sim_run(args: argparse.Namespace) -> int:
    from simulators.core.options import SimOptions
    from simulators.core.runner import serve

    if args.realtime and args.time_scale is not None:
        raise BadInput("give --realtime or --time-scale, not both")
    time_scale = 1.0 if args.realtime else args.time_scale
    state = Path(args.state) if args.state else Path(".harness/state") / args.target
    serve(SimOptions(target=args.target, state=state, firmware=args.firmware, profile=args.profile,
                     device_id=args.device_id, username=args.username,
                     password_file=Path(args.password_file) if args.password_file else None,
                     time_scale=time_scale, control=not args.no_control))
    return 0


def cmd_sim_up(args: argparse.Namespace) -> int:
    from harness.bench import load_bench

    bench = load_bench(args.bench)
    for name, info in bench.sim_up().items():
        print(json.dumps({"device": name, **info}), flush=True)
    return 0


def cmd_sim_down(args: argparse.Namespace) -> int:
    from harness.bench import load_bench

    stopped = load_bench(args.bench).sim_down()
    for name in stopped:
        print(f"stopped {name}")
    return 0


def _bench_target(args: argparse.Namespace) -> str | None:
    """The target of the bench DEVICE named on the command line, if any (None when it cannot be told)."""
    if not getattr(args, "device", None):
        return None
    from harness.bench import load_bench

    try:
        spec = load_bench(args.bench).devices.get(args.device)
    except HarnessError:
        return None  # connect() reports the bench problem with its own message
    return spec.target if spec else None


def _progress_unit(target_name: str | None) -> str:
    """"bytes" (sizes and a transfer rate) for targets whose artifacts are big, else "steps"."""
    if not target_name:
        return "steps"
    try:
        return get_target(target_name).progress_unit
    except HarnessError:
        return "steps"


def cmd_backup(args: argparse.Namespace) -> int:
    from harness.operations import backup_to_store
    from harness.progress import progress_reporter
    from harness.store import Store

    unit = _progress_unit(args.target or _bench_target(args))
    with progress_reporter("backup", unit=unit) as progress, connect(args, progress) as conn:
        path = backup_to_store(conn.driver, conn.target, Store(args.store), address=conn.address)
    print(path)
    return 0


def _confirm(question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise Refused("restore overwrites the unit: confirm with --yes when running from a script")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise Refused("restore cancelled: the unit was not touched")


def _print_report(report: RestoreReport, labels: tuple[str, str, str]) -> None:
    for label, names in zip(labels, (report.skipped, report.untouched, report.not_carried), strict=True):
        if names:
            print(f"{label}: {', '.join(names)}")
    for note in report.notes:
        print(f"note: {note}")


def cmd_restore(args: argparse.Namespace) -> int:
    from harness.operations import load_artifact, restore_from
    from harness.progress import progress_reporter
    from harness.store import Store

    hint = args.target
    if args.device and not hint:
        from harness.bench import load_bench

        spec = load_bench(args.bench).devices.get(args.device)
        hint = spec.target if spec else None
    # The whole artifact is checked before the unit is opened, once: restore_from takes it as it is.
    art_target, artifact = load_artifact(Path(args.artifact), hint)

    def confirm(unit: DeviceInfo) -> None:
        _confirm(f"Overwrite {unit.target} unit {unit.device_id} (firmware {unit.firmware}) with "
                 f"{args.artifact}?", args.yes)

    with progress_reporter("restore", unit=_progress_unit(art_target.name)) as progress, \
            connect(args, progress) as conn:
        report = restore_from(conn.driver, conn.target, Path(args.artifact), Store(args.store),
                              address=conn.address, force=args.force, allow_cross_family=args.migrate,
                              confirm=confirm, artifact=artifact)
    print(f"restored {len(report.restored)} fields")
    _print_report(report, ("skipped (not on this unit)", "untouched (not in the backup)",
                           "not carried by this kind of backup"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from harness.operations import load_artifact, manifest_path

    path = Path(args.artifact)
    target, artifact = load_artifact(path, args.target)
    manifest = "manifest ok" if manifest_path(path).exists() else "no manifest beside it"
    print(f"OK {target.name} backup of {artifact.device_id}, firmware {artifact.firmware}, "
          f"created {artifact.created} ({manifest})")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from harness.compare import diff
    from harness.operations import load_artifact

    ta, a = load_artifact(Path(args.a))
    tb, b = load_artifact(Path(args.b))
    if ta.name != tb.name:
        raise BadInput(f"cannot compare a {ta.name} backup with a {tb.name} backup")
    result = diff(ta.fields(a), tb.fields(b), ta.compare_rules)
    for difference in result.differences:
        print(difference)
    summary = f"{len(result.differences)} differences in {result.compared} fields"
    if result.ignored:
        summary += f" ({result.ignored} ignored by the {ta.name} rules)"
    print(summary, file=sys.stderr)
    return 0 if result.equal else 1


def cmd_latest(args: argparse.Namespace) -> int:
    from harness.store import Store

    print(Store(args.store).latest(args.target, args.device_id))
    return 0


def cmd_firmware_update(args: argparse.Namespace) -> int:
    """Backup first, flash (simulators: through the control plane), then restore by field name."""
    from harness.operations import firmware_update
    from harness.progress import progress_reporter
    from harness.store import Store

    with progress_reporter("firmware update") as progress, connect(args, progress) as conn:
        saved, report = firmware_update(conn.driver, conn.target, Store(args.store), address=conn.address,
                                        control=conn.control, firmware=args.firmware, profile=args.profile)
    print(f"backup before the update: {saved}")
    print(f"firmware now {args.firmware}: restored {len(report.restored)} fields by name")
    _print_report(report, ("dropped (not in the new layout)", "new in this firmware, left as they were",
                           "not carried by this kind of backup"))
    return 0


def _bench_device_id(target: str) -> str | None:
    """The simulated unit's ID from the default bench, so matrix units look like the bench's."""
    try:
        from harness.bench import load_bench

        spec = next((d for d in load_bench(DEFAULT_BENCH).devices.values() if d.target == target and d.is_sim),
                    None)
        return spec.sim.device_id if spec else None
    except HarnessError:
        return None


def cmd_compat(args: argparse.Namespace) -> int:
    from harness.compat import FAIL, run_matrix, write_reports

    names = [args.target] if args.target else list(available_targets())
    failed = 0
    for name in names:
        target = get_target(name)
        try:
            target.compat_versions()
        except NotImplementedError:
            print(f"{name}: no versions declared, skipped")
            continue

        def show(cell, name=name) -> None:
            log.info("%s %s -> %s (%s): %s %s", name, cell.source, cell.destination, cell.path,
                     cell.outcome, cell.detail)

        matrix = run_matrix(target, jobs=args.jobs, device_id=_bench_device_id(name), progress=show)
        paths = write_reports(matrix, Path(args.output))
        counts = {k: sum(1 for c in matrix.cells if c.outcome == k)
                  for k in ("restored", "migrated", "refused", FAIL)}
        print(f"{name}: {len(matrix.cells)} cells, " + ", ".join(f"{n} {k}" for k, n in counts.items())
              + f" -> {paths['html']}")
        for cell in matrix.failed:
            print(f"  FAIL {cell.source} -> {cell.destination} ({cell.path}): {cell.detail}")
        failed += len(matrix.failed)
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    extra = list(args.pytest_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(COMPAT_DIR / "rows", ignore_errors=True)  # the matrix rows are this run's, not a mix
    # Features report through allure-pytest-bdd; the project's addopts disable it for the unit tests
    # (both plugins own --alluredir), so swap them here.
    cmd = [sys.executable, "-m", "pytest", "features", "-o", "addopts=--strict-markers",
           "-p", "no:allure_pytest", "--alluredir", str(RESULTS_DIR), "--bench", str(args.bench), *extra]
    log.info("running %s", " ".join(cmd))
    code = subprocess.call(cmd)
    return {0: 0, 1: 1, 5: 1}.get(code, 2 if code in (3, 4) else code)


def _allure_command() -> list[str]:
    local = Path("node_modules/.bin/allure")
    if local.exists():
        return [str(local)]
    raise BadInput("the Allure report tool is not installed: run `npm ci` (make demo does it)")


def cmd_report(args: argparse.Namespace) -> int:
    results = Path(args.results)
    if not results.is_dir() or not any(results.iterdir()):
        raise BadInput(f"no test results in {results}: run `harness run` first")
    cmd = [*_allure_command(), "generate", str(results), "-c", "allurerc.mjs", "-o", str(args.output)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    index = Path(args.output) / "index.html"
    if proc.returncode != 0 or not index.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DeviceError(f"allure generate failed: {tail[0]}")
    summary = json.loads((Path(args.output) / "summary.json").read_text(encoding="utf-8"))
    stats = summary.get("stats", {})
    parts = [f"{stats.get(k, 0)} {k}" for k in ("passed", "failed", "broken", "skipped") if stats.get(k)]
    print(f"report: {index}  ({stats.get('total', 0)} tests: {', '.join(parts) or 'none'})")
    _merge_compat_rows()
    return 0


def _merge_compat_rows() -> None:
    """The compatibility feature ran the matrix row by row: put each target's rows back into one table."""
    from harness.compat import merge_rows, write_reports

    for matrix in merge_rows(COMPAT_DIR / "rows"):
        paths = write_reports(matrix, COMPAT_DIR)
        summary = ", ".join(f"{sum(c.outcome == k for c in matrix.cells)} {k}"
                            for k in ("restored", "migrated", "refused", "FAIL"))
        print(f"compat: {paths['html']}  ({len(matrix.cells)} cells: {summary})")


# ------------------------------------------------------------------------------------------------ parser


def _add_device_args(p: argparse.ArgumentParser, *, device_required: bool = False) -> None:
    p.add_argument("device", nargs="?" if not device_required else None, help="device name in the bench")
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help="bench file (default: %(default)s)")
    p.add_argument("--target", choices=available_targets(), help="target, with --address, for a unit not in a bench")
    p.add_argument("--address", help="pty path, pyserial URL, ASRL…::INSTR, TCPIP…::SOCKET or https URL")
    p.add_argument("--ssh", help="second address for SSH/SFTP, ssh://[user@]HOST[:PORT] (PlanktoScope settings)")
    p.add_argument("--control", help="a simulator's control-plane URL (lets a restore reboot it)")
    p.add_argument("--username")
    p.add_argument("--password-file", type=Path, help="file holding the password (never on the command line)")
    p.add_argument("--store", type=Path, default=_default_store(),
                   help="artifact store (default: $HARNESS_STORE or ./store)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Back up, restore and verify device units; run their simulators and the feature suites.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="simulators").add_subparsers(dest="sim_command", required=True)
    run = sim.add_parser("run", help="run one simulator until SIGTERM; first stdout line is JSON")
    run.add_argument("target", choices=ALL_TARGETS)
    run.add_argument("--firmware", help="firmware or software version")
    run.add_argument("--profile")
    run.add_argument("--state", help="state directory (non-volatile storage)")
    run.add_argument("--device-id")
    run.add_argument("--username")
    run.add_argument("--password-file")
    run.add_argument("--realtime", action="store_true", help="real device timing")
    run.add_argument("--time-scale", type=float, help="real timing scaled by this factor")
    run.add_argument("--no-control", action="store_true", help="no control plane, like a real unit")
    run.set_defaults(func=cmd_sim_run)
    for name, func in (("up", cmd_sim_up), ("down", cmd_sim_down)):
        p = sim.add_parser(name, help=f"{'start' if name == 'up' else 'stop'} every simulator of a bench")
        p.add_argument("--bench", type=Path, default=DEFAULT_BENCH)
        p.set_defaults(func=func)

    p = sub.add_parser("backup", help="back up a unit into the store; prints the artifact path")
    _add_device_args(p)
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="restore an artifact onto a unit")
    p.add_argument("artifact")
    _add_device_args(p)
    p.add_argument("--yes", action="store_true", help="do not ask before overwriting the unit")
    p.add_argument("--force", action="store_true", help="also override a device ID mismatch")
    p.add_argument("--migrate", action="store_true",
                   help="allow a restore across firmware layouts, by field name (the target's rules)")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("firmware-update", help="backup, update firmware, restore by field name")
    _add_device_args(p)
    p.add_argument("--firmware", required=True)
    p.add_argument("--profile")
    p.set_defaults(func=cmd_firmware_update)

    p = sub.add_parser("verify", help="check an artifact: schema, checksums, manifest")
    p.add_argument("artifact")
    p.add_argument("--target", choices=available_targets())
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("diff", help="field-level differences between two artifacts; exit 1 if any")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("latest", help="the newest artifact of a unit, by manifest")
    p.add_argument("--target", required=True, choices=available_targets())
    p.add_argument("--device-id", required=True)
    p.add_argument("--store", type=Path, default=_default_store())
    p.set_defaults(func=cmd_latest)

    p = sub.add_parser("run", help="run the feature suites against a bench; results to reports/")
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compat", help="version compatibility matrix -> reports/compat/; exit 1 on a FAIL")
    p.add_argument("--target", choices=available_targets())
    p.add_argument("--jobs", type=int, default=max(2, (os.cpu_count() or 2)), help="pairs run in parallel")
    p.add_argument("--output", default=str(COMPAT_DIR))
    p.set_defaults(func=cmd_compat)

    p = sub.add_parser("report", help="single-file HTML report from reports/allure-results")
    p.add_argument("--results", default=str(RESULTS_DIR))
    p.add_argument("--output", default=str(HTML_DIR))
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"harness: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
