"""Run one simulator in this process: what ``harness sim run TARGET …`` does.

``serve(options)`` builds the simulator of ``options.target`` (``simulators.<target>.interface.create``),
starts it and its control plane, prints ONE line of JSON on stdout::

    {"target": …, "address": …, "control": …, "device_id": …, "firmware": …, "pid": …, …}

then serves until SIGTERM/SIGINT (or ``stop_event`` when run in a thread) and shuts down cleanly.
Logs go to stderr; nothing else is ever written to stdout, so a parent can read the line and leave
the pipe alone.

The state directory holds the unit's non-volatile storage. A lock file in it stops a second
simulator from serving the same unit; the kernel releases the lock when a process is killed, so a
power cut (SIGKILL) followed by a restart on the same directory just works.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import logging
import os
import signal
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from harness.errors import BadInput, DeviceError, HarnessError
from simulators.core.control import ControlPlane, ControlServer, require
from simulators.core.faults import Faults
from simulators.core.options import SimOptions

log = logging.getLogger(__name__)

LOCK_NAME = ".sim.lock"
INFO_NAME = "sim.json"  # the JSON line of the running simulator, for `harness sim down` and humans


class Simulator(ABC):
    """What ``simulators.<target>.interface.create(options)`` returns."""

    target: str = ""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.faults = Faults()

    @abstractmethod
    def start(self) -> dict[str, Any]:
        """Power on and serve. Return the JSON-line fields: ``address``, ``device_id``, ``firmware``
        and any extra keys of the target (``user``, ``visa``…); ``target``, ``control`` and ``pid``
        are added by the runner."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving and flush the non-volatile state (a clean shutdown, not a power cut)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """``GET /_sim/state``: what a test may want to check, as JSON."""

    @abstractmethod
    def power(self, on: bool) -> dict[str, Any]:
        """Off: the unit stops answering (port gone / connection refused). On: boot on the same state."""

    @abstractmethod
    def reset(self) -> dict[str, Any]:
        """Reboot the unit, as its own reset command would."""

    @abstractmethod
    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        """Flash another firmware/software version, keeping the non-volatile storage."""

    def faults_changed(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Hook: a fault was set or cleared (e.g. wake the link so ``drop after=0`` fires now)."""

    def register_routes(self, plane: ControlPlane) -> None:
        """Install the standard control routes; targets extend this with their own."""
        plane.add("GET", "/state", lambda body: self.state())
        plane.add("GET", "/faults", lambda body: {"faults": self.faults.describe(), "kinds": self.faults.kinds})
        plane.add("POST", "/faults", self._set_fault)
        plane.add("DELETE", "/faults", self._clear_faults)
        plane.add("POST", "/power", lambda body: self.power(require(body, "on", bool)))
        plane.add("POST", "/reset", lambda body: self.reset())
        plane.add("POST", "/firmware", self._set_firmware)

    def _set_fault(self, body: dict[str, Any]) -> dict[str, Any]:
        params = dict(body)
        kind = require(params, "kind", str)
        del params["kind"]
        self.faults.set(kind, **params)
        self.faults_changed()
        return {"faults": self.faults.describe()}

    def _clear_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        kind = body.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise ValueError("field 'kind' must be a string")
        self.faults.clear(kind)
        self.faults_changed()
        return {"faults": self.faults.describe()}

    def _set_firmware(self, body: dict[str, Any]) -> dict[str, Any]:
        firmware = require(body, "firmware", str)
        profile = body.get("profile")
        if profile is not None and not isinstance(profile, str):
            raise ValueError("field 'profile' must be a string or null")
        return self.set_firmware(firmware, profile)


def create_simulator(options: SimOptions) -> Simulator:
    try:
        module = importlib.import_module(f"simulators.{options.target}.interface")
    except ModuleNotFoundError as exc:
        if exc.name in (f"simulators.{options.target}", f"simulators.{options.target}.interface"):
            raise BadInput(f"no simulator for target {options.target!r}") from None
        raise
    return module.create(options)


class _StateLock:
    """An exclusive flock on the state directory, held for the life of the process."""

    def __init__(self, state: Path) -> None:
        self.path = state / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise DeviceError(f"state directory {state} is in use by another simulator (pid {holder})") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def serve(
    options: SimOptions,
    *,
    stdout: TextIO | None = None,
    stop_event: threading.Event | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Serve one simulator until SIGTERM/SIGINT or ``stop_event``.

    In the main thread SIGTERM and SIGINT set the stop event; in another thread (fast unit tests)
    only ``stop_event`` stops it. ``on_ready`` gets the JSON-line dict once everything is up.
    """
    if logging.getLogger().handlers == []:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = stdout if stdout is not None else sys.stdout
    stop = stop_event or threading.Event()
    state = Path(options.state).absolute()
    state.mkdir(parents=True, exist_ok=True)
    options.state = state

    restore_signals: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            restore_signals[signum] = signal.signal(signum, lambda *_: stop.set())

    lock = _StateLock(state)
    simulator: Simulator | None = None
    server: ControlServer | None = None
    info_path = state / INFO_NAME
    try:
        simulator = create_simulator(options)
        fields = simulator.start()
        # An HTTP simulator serves its control plane under /_sim on its own server and says so by
        # returning "control" itself (null with --no-control); the others get a ControlServer here.
        own_control = "control" in fields
        control = fields.pop("control", None)
        if options.control and not own_control:
            plane = ControlPlane()
            simulator.register_routes(plane)
            server = ControlServer(plane).start()
            control = server.url
        info = {
            "target": options.target,
            "address": fields.pop("address"),
            "control": control if options.control else None,
            "device_id": fields.pop("device_id", None),
            "firmware": fields.pop("firmware", options.firmware),
            "pid": os.getpid(),
            **fields,
        }
        line = json.dumps(info)
        _write_atomic(info_path, line + "\n")
        out.write(line + "\n")
        out.flush()
        log.info("%s simulator serving at %s", options.target, info["address"])
        if on_ready is not None:
            on_ready(info)
        while not stop.wait(0.5):
            pass
        log.info("stopping %s simulator", options.target)
    finally:
        if server is not None:
            server.stop()
        if simulator is not None:
            simulator.stop()
        try:
            info_path.unlink()
        except FileNotFoundError:
            pass
        lock.release()
        for signum, handler in restore_signals.items():
            signal.signal(signum, handler)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- a stand-alone entry point mirroring `harness sim run` (the lead's CLI is the real one) -------


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``harness sim run`` (DESIGN.md), for any parser that wants them."""
    parser.add_argument("target")
    parser.add_argument("--firmware")
    parser.add_argument("--profile")
    parser.add_argument("--state", type=Path)
    parser.add_argument("--device-id")
    parser.add_argument("--username")
    parser.add_argument("--password-file", type=Path)
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--realtime", action="store_const", const=1.0, dest="time_scale")
    speed.add_argument("--time-scale", type=float, dest="time_scale")
    parser.add_argument("--no-control", action="store_false", dest="control")


def options_from_args(args: argparse.Namespace) -> SimOptions:
    if args.time_scale is not None and not args.time_scale > 0:
        raise BadInput(f"--time-scale must be > 0, got {args.time_scale}")
    if (args.username is None) != (args.password_file is None):
        raise BadInput("--username and --password-file go together")
    state = args.state if args.state is not None else Path.cwd() / f"sim-{args.target}"
    return SimOptions(target=args.target, state=state, firmware=args.firmware, profile=args.profile,
                      device_id=args.device_id, username=args.username, password_file=args.password_file,
                      time_scale=args.time_scale, control=args.control)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.core.runner",
                                     description="Run one simulator (same flags as `harness sim run`).")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve(options_from_args(args))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
