"""Start simulators as separate processes (DESIGN.md rule 4): the bench, the pytest plugin and
``harness sim up`` use this.

A simulator process is ``python -m harness sim run TARGET …``; its first stdout line is JSON
(``address``, ``control``, ``pid``…). Killing it is a power cut; starting it again on the same state
directory is powering the unit on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.errors import DeviceError
from simulators.core.options import SimOptions

log = logging.getLogger(__name__)

LOG_NAME = "sim.log"  # default stderr file, in the state directory
STDOUT_NAME = "sim.out"  # stdout of a detached simulator


def entry_module() -> str:
    """``harness`` once the CLI exists; until then the runner's own entry point (same flags)."""
    if importlib.util.find_spec("harness.__main__") is not None and \
            importlib.util.find_spec("harness.cli") is not None:
        return "harness"
    return "simulators.core.runner"


def sim_command(options: SimOptions, *, python: str | None = None) -> list[str]:
    """The command line of ``harness sim run`` for ``options``."""
    module = entry_module()
    cmd = [python or sys.executable, "-m", module]
    if module == "harness":
        cmd += ["sim", "run"]
    cmd.append(options.target)
    if options.firmware is not None:
        cmd += ["--firmware", options.firmware]
    if options.profile is not None:
        cmd += ["--profile", options.profile]
    cmd += ["--state", str(Path(options.state).absolute())]
    if options.device_id is not None:
        cmd += ["--device-id", options.device_id]
    if options.username is not None:
        cmd += ["--username", options.username]
    if options.password_file is not None:
        cmd += ["--password-file", str(Path(options.password_file).absolute())]
    if options.time_scale is not None:
        cmd += ["--time-scale", repr(float(options.time_scale))]
    if not options.control:
        cmd.append("--no-control")
    return cmd


class SimProcess:
    """A running simulator process and its JSON line."""

    def __init__(self, options: SimOptions, *, log_path: Path | None = None, detach: bool = False,
                 startup_timeout: float = 15.0) -> None:
        self.options = options
        self.state = Path(options.state).absolute()
        self.log_path = Path(log_path) if log_path is not None else self.state / LOG_NAME
        self.detach = detach
        self.startup_timeout = startup_timeout
        self.popen: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._stdout_file: IO[bytes] | None = None

    # -- the JSON line ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.info["address"]

    @property
    def control(self) -> str | None:
        return self.info.get("control")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SimProcess:
        """Start the process and wait for its JSON line; DeviceError (with its stderr) if it fails."""
        if self.alive:
            raise RuntimeError(f"simulator already running (pid {self.pid})")
        self.state.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = sim_command(self.options)
        log.debug("starting %s", " ".join(cmd))
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as err:
            if self.detach:
                out_path = self.state / STDOUT_NAME
                with open(out_path, "wb") as out:
                    self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                                  env=env, start_new_session=True, close_fds=True)
            else:
                self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=err, env=env, close_fds=True)
        try:
            line = self._read_line_detached(out_path) if self.detach else self._read_line_pipe()
            info = json.loads(line)
            if not isinstance(info, dict) or "address" not in info:
                raise ValueError(f"not a simulator JSON line: {line!r}")
        except (DeviceError, ValueError) as exc:
            self.kill()
            tail = _tail(self.log_path, log_start)
            reason = str(exc)
            raise DeviceError(f"{self.options.target} simulator did not start ({reason})"
                              + (f": {tail}" if tail else "")) from None
        self.info = info
        log.info("%s simulator pid %s at %s", self.options.target, self.pid, self.address)
        return self

    def _read_line_pipe(self) -> str:
        assert self.popen is not None and self.popen.stdout is not None
        stdout = self.popen.stdout
        buf = b""
        deadline = time.monotonic() + self.startup_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeviceError(f"no JSON line within {self.startup_timeout:g} s")
                if sel.select(left):
                    chunk = os.read(stdout.fileno(), 4096)
                    if not chunk:
                        self.popen.wait(timeout=5)
                        raise DeviceError(f"exited with status {self.popen.returncode}")
                    buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def _read_line_detached(self, path: Path) -> str:
        assert self.popen is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            text = path.read_bytes() if path.exists() else b""
            if b"\n" in text:
                return text.split(b"\n", 1)[0].decode()
            if self.popen.poll() is not None:
                raise DeviceError(f"exited with status {self.popen.returncode}")
            if time.monotonic() > deadline:
                raise DeviceError(f"no JSON line within {self.startup_timeout:g} s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Clean shutdown: SIGTERM, wait, then SIGKILL. Return the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("simulator pid %s ignored SIGTERM; killing it", self.popen.pid)
                self.popen.kill()
                self.popen.wait()
        self._close_pipes()
        return self.popen.returncode

    def kill(self) -> None:
        """Power cut: SIGKILL, no chance to flush anything the unit would not have kept."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        self._close_pipes()

    def restart(self, startup_timeout: float | None = None) -> SimProcess:
        """Power on again on the same state directory (stops a running process first).

        The address (the symlink in the state directory) stays the same; the control URL may not,
        since the OS picks its port anew.
        """
        if self.alive:
            self.stop()
        if startup_timeout is not None:
            self.startup_timeout = startup_timeout
        return self.start()

    def _close_pipes(self) -> None:
        if self.popen is not None and self.popen.stdout is not None:
            self.popen.stdout.close()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        pid = self.popen.pid if self.popen is not None else None
        return f"SimProcess({self.options.target!r}, pid={pid}, address={self.info.get('address')!r})"


def start_simulator(options: SimOptions, *, log_path: Path | None = None, detach: bool = False,
                    startup_timeout: float = 15) -> SimProcess:
    """Start ``harness sim run`` for ``options`` and return once its JSON line arrived.

    stderr (the simulator's log) goes to ``log_path`` (default ``<state>/sim.log``), never to a pipe
    nobody reads. ``detach``: the process gets its own session and survives the parent, and its
    stdout is ``<state>/sim.out`` (for ``harness sim up``).
    """
    return SimProcess(options, log_path=log_path, detach=detach, startup_timeout=startup_timeout).start()


def _tail(path: Path, start: int, limit: int = 600) -> str:
    """The last lines the process wrote to its log, on one line."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    tail = " | ".join(lines[-5:])
    return tail[-limit:]


def stop_pid(pid: int, timeout: float = 10.0, *, alive: Callable[[], bool] | None = None) -> bool:
    """Stop a simulator this process did not start (``harness sim down``): SIGTERM, wait, then SIGKILL.

    Return True if a running process was signalled. ``alive`` says whether it still runs (default: the
    pid exists and is not a zombie); the bench passes one that also checks the process start time, so a
    reused pid is never signalled. Use only with a pid from the simulator's own JSON line.
    """
    alive = alive or (lambda: _running(pid))
    if not alive():
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive():
                return True
            time.sleep(0.05)
        if sig == signal.SIGTERM:
            log.warning("simulator pid %s ignored SIGTERM for %g s; killing it", pid, timeout)
    return True


def _running(pid: int) -> bool:
    """True while ``pid`` runs; an exited child not yet reaped by its parent (a zombie) has stopped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
