"""Bench files: which units a run talks to, simulated or real, and the simulators' lifecycle.

A bench is a YAML file::

    version: 1                    # optional
    description: QA laptop        # optional
    devices:
      multispeq:                  # device name: letters, digits, '_', '-', '.'
        target: multispeq         # a known target (harness.targets.available_targets())
        firmware: "1.17"          # firmware/software version the unit runs (kept as written: 1.10 stays "1.10")
        sim:                      # the harness starts this simulator itself
          device_id: "52:00:13:1f"  # optional: the simulator's default otherwise
          profile: null             # optional
          state: .harness/state/multispeq   # optional; default .harness/state/<bench stem>/<name>
          time_scale: 0.1           # optional (or realtime: true); default: fast
          control: true             # optional; false = no control plane, like a real unit
      bench7:
        target: multispeq
        firmware: "1.17"
        port: /dev/ttyUSB0        # or any pyserial URL (rfc2217://host:port, socket://…), or
        # visa: ASRL/dev/ttyUSB0::INSTR   or TCPIP::host::port::SOCKET
        # url: https://unit.local         (HTTP targets)
        credentials:              # optional, for targets with a login
          username: admin
          password_file: secrets/bench7.txt   # or password_env: BENCH7_PASSWORD

Rules: a device has either ``sim:`` or exactly one address (``port``, ``visa``, ``url``), never both. Unknown
keys are errors (a typo must not silently fall back to a default). A literal ``password:`` (or token/secret)
is refused: bench files get committed and copied into reports; name a file or an environment variable
instead, read only when the password is needed. YAML merge keys (``<<: *defaults``) work.

Relative paths: ``password_file`` is relative to the bench file (secrets live beside the bench);
``state`` and the runtime folder ``.harness/`` are relative to the working directory (the repository
root, where ``harness`` and ``make`` run), so a bench in ``fixtures/benches`` does not scatter state there.

Simulator lifecycle: ``Bench.sim_up()`` starts every simulated device as a detached process and records it
in ``.harness/run/<bench stem>.json`` (pid, address, control, state dir); ``Bench.sim_down()`` stops them and
removes the record. ``with bench.device(name) as resolved:`` gives the address of a real unit, of a running
simulator, or starts the simulator for the duration of the block (its state dir persists, like
power-cycling the unit).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import BadInput, DeviceError, Refused
from harness.targets import available_targets
from simulators.core.process import stop_pid

log = logging.getLogger(__name__)

RUN_DIR = Path(".harness/run")
STATE_DIR = Path(".harness/state")

_TOP_KEYS = ("version", "description", "devices")
_DEVICE_KEYS = ("target", "firmware", "description", "sim", "port", "visa", "url", "ssh", "credentials")
_ADDRESS_KEYS = ("port", "visa", "url")
_SIM_KEYS = ("device_id", "profile", "state", "time_scale", "realtime", "control")
_CRED_KEYS = ("username", "password_file", "password_env")
_SECRET_KEYS = ("password", "passwd", "pass", "token", "secret", "api_key")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STOP_TIMEOUT = 10.0


# --- the model ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A reference to a secret, never the secret itself."""

    username: str | None = None
    password_file: Path | None = None  # absolute (resolved against the bench file's folder)
    password_env: str | None = None

    def password(self) -> str | None:
        """Read the password now (file or environment); None if the bench names no password."""
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise BadInput(f"cannot read password file {self.password_file}: "
                               f"{exc.strerror or exc}") from exc
            return text.rstrip("\r\n")  # the editor's final newline is not part of the password
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise BadInput(f"environment variable {self.password_env} (the bench's password_env) "
                               f"is not set")
            return value
        return None


@dataclass(frozen=True)
class SimSpec:
    device_id: str | None = None
    profile: str | None = None
    state: Path = Path()  # absolute
    time_scale: float | None = None
    control: bool = True


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    target: str
    firmware: str
    sim: SimSpec | None = None
    address: str | None = None
    address_kind: str | None = None  # "port" | "visa" | "url"
    credentials: Credentials | None = None
    ssh: str | None = None  # a second address for SSH/SFTP (PlanktoScope: ssh://pi@host[:port]), real units
    description: str = ""
    line: int = 0  # where it is defined in the bench file, for messages

    @property
    def is_sim(self) -> bool:
        return self.sim is not None

    @property
    def username(self) -> str | None:
        return self.credentials.username if self.credentials else None

    def password(self) -> str | None:
        """The password, read at use time from the file or environment variable the bench names."""
        return self.credentials.password() if self.credentials else None


@dataclass(frozen=True)
class Resolved:
    """Where to reach a device now."""

    address: str
    control: str | None
    spec: DeviceSpec
    pid: int | None = None
    state: Path | None = None
    ssh: str | None = None  # a second address for SSH/SFTP, from the bench or the simulator's JSON line

    @property
    def username(self) -> str | None:
        return self.spec.username

    def password(self) -> str | None:
        return self.spec.password()


@dataclass
class Bench:
    path: Path
    devices: dict[str, DeviceSpec]
    workdir: Path
    description: str = ""
    _secret_files: dict[str, Path] = field(default_factory=dict, repr=False)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def run_file(self) -> Path:
        return self.workdir / RUN_DIR / f"{self.stem}.json"

    @property
    def is_simulated(self) -> bool:
        return all(spec.is_sim for spec in self.devices.values())

    def spec(self, name: str) -> DeviceSpec:
        try:
            return self.devices[name]
        except KeyError:
            known = ", ".join(self.devices) or "none"
            raise BadInput(f"{self.path}: no device named {name!r} (devices: {known})") from None

    # -- simulators --

    def sim_options(self, spec: DeviceSpec) -> Any:
        """The SimOptions that start ``spec``'s simulator."""
        from simulators.core.options import SimOptions

        if spec.sim is None:
            raise BadInput(f"{spec.name} is a real unit, not a simulator")
        password_file = None
        if spec.credentials is not None:
            password_file = spec.credentials.password_file
            if password_file is None and spec.credentials.password_env is not None:
                password_file = self._materialise_secret(spec)
        return SimOptions(target=spec.target, state=spec.sim.state, firmware=spec.firmware,
                          profile=spec.sim.profile, device_id=spec.sim.device_id, username=spec.username,
                          password_file=password_file, time_scale=spec.sim.time_scale,
                          control=spec.sim.control)

    def _materialise_secret(self, spec: DeviceSpec) -> Path:
        # The simulator takes only --password-file; an env password goes to a private file for its lifetime.
        path = self.workdir / RUN_DIR / f"{self.stem}.{spec.name}.password"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(spec.password() or "")
        return path

    def _drop_secret(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / RUN_DIR / f"{self.stem}.{name}.password").unlink()

    def _select_sims(self, names: Iterable[str] | None) -> list[DeviceSpec]:
        if names is None:
            return [s for s in self.devices.values() if s.is_sim]
        specs = [self.spec(n) for n in names]
        for s in specs:
            if not s.is_sim:
                raise BadInput(f"{s.name} is a real unit in {self.path}; only simulators start and stop")
        return specs

    def sim_up(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Start every simulated device (or ``names``) in the background; return name -> record.

        Idempotent: a device whose recorded process is alive is left running.
        """
        from simulators.core.process import start_simulator

        specs = self._select_sims(names)
        result: dict[str, dict[str, Any]] = {}
        with self._run_lock():
            records = self._read_records()
            for spec in specs:
                record = records.get(spec.name)
                if record is not None and _alive(record):
                    result[spec.name] = record
                    continue
                options = self.sim_options(spec)
                proc = start_simulator(options, detach=True)
                record = {
                    "target": spec.target,
                    "pid": proc.pid,
                    "address": proc.address,
                    "ssh": proc.info.get("ssh"),
                    "control": proc.control,
                    "device_id": proc.info.get("device_id"),
                    "firmware": proc.info.get("firmware"),
                    "state": str(spec.sim.state),  # type: ignore[union-attr]
                    "log": str(proc.log_path),
                    "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "proc_start": _proc_start(proc.pid),
                }
                records[spec.name] = record
                self._write_records(records)  # after each start, so a later failure leaves it stoppable
                result[spec.name] = record
                log.info("%s: %s simulator pid %s at %s", spec.name, spec.target, proc.pid, proc.address)
        return result

    def sim_down(self, names: Iterable[str] | None = None) -> list[str]:
        """Stop the recorded simulators (SIGTERM, then SIGKILL) and drop their records; return the names."""
        stopped: list[str] = []
        with self._run_lock():
            records = self._read_records()
            wanted = list(records) if names is None else [n for n in names if n in records]
            for name in wanted:
                record = records.pop(name)
                if _stop(record):
                    stopped.append(name)
                self._drop_secret(name)
                self._write_records(records)
        return stopped

    def running(self) -> dict[str, dict[str, Any]]:
        """The recorded simulators whose process is alive."""
        return {n: r for n, r in self._read_records().items() if _alive(r)}

    def resolve(self, name: str) -> Resolved:
        """Where ``name`` is now: a real unit's address, or a running simulator's.

        Raises DeviceError for a simulator that is not running (``device()`` would start it).
        """
        spec = self.spec(name)
        if spec.sim is None:
            assert spec.address is not None
            return Resolved(spec.address, None, spec, ssh=spec.ssh)
        record = self._read_records().get(name)
        if record is None or not _alive(record):
            raise DeviceError(f"simulator {name!r} of {self.path} is not running: "
                              f"start it with `harness sim up --bench {self.path}`")
        return Resolved(record["address"], record.get("control"), spec, pid=record["pid"],
                        state=Path(record["state"]), ssh=record.get("ssh"))

    @contextlib.contextmanager
    def device(self, name: str) -> Iterator[Resolved]:
        """``resolve(name)``, starting the simulator for the block if it is not running."""
        spec = self.spec(name)
        try:
            resolved = self.resolve(name)
        except DeviceError:
            if spec.sim is None:
                raise
        else:
            yield resolved
            return
        from simulators.core.process import start_simulator

        proc = start_simulator(self.sim_options(spec))
        try:
            yield Resolved(proc.address, proc.control, spec, pid=proc.pid, state=spec.sim.state,
                           ssh=proc.info.get("ssh"))
        finally:
            proc.stop()
            if spec.credentials is not None and spec.credentials.password_file is None:
                self._drop_secret(name)

    # -- the runtime record --

    @contextlib.contextmanager
    def _run_lock(self) -> Iterator[None]:
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.run_file.with_suffix(".lock"), "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _read_records(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.run_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise BadInput(f"{self.run_file}: unreadable runtime record ({exc}); stop the simulators "
                           f"by hand and delete it") from exc
        owner = raw.get("bench")
        if owner and Path(owner) != self.path:
            raise Refused(f"{self.run_file} records simulators of {owner}, not {self.path}: "
                          f"run `harness sim down --bench {owner}` first")
        devices = raw.get("devices", {})
        return devices if isinstance(devices, dict) else {}

    def _write_records(self, records: dict[str, dict[str, Any]]) -> None:
        if not records:
            with contextlib.suppress(FileNotFoundError):
                self.run_file.unlink()
            return
        tmp = self.run_file.with_name(f".{self.run_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"bench": str(self.path), "devices": records}, indent=2) + "\n",
                       encoding="utf-8")
        os.replace(tmp, self.run_file)  # readers never see half a record


# --- process helpers ---------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name in (...) may contain spaces
    return fields[0], int(fields[19])


def _proc_start(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _alive(record: dict[str, Any]) -> bool:
    """Is the recorded process still the simulator we started (not a zombie, not a reused pid)?"""
    pid = int(record.get("pid") or 0)
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child, so it does not linger as a zombie
    if Path("/proc").is_dir():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        recorded = record.get("proc_start")
        return recorded is None or recorded == stat[1]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(record: dict[str, Any], timeout: float = _STOP_TIMEOUT) -> bool:
    """SIGTERM, wait, SIGKILL. Only the recorded process, and only if it is still that process."""
    if not _alive(record):
        return False
    stop_pid(int(record["pid"]), timeout, alive=lambda: _alive(record))
    return not _alive(record)


# --- parsing -----------------------------------------------------------------------------------------------


class _Parser:
    """Walks the YAML node tree so every error names file:line, and strings stay as written."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        self.workdir = workdir
        self.loader: yaml.SafeLoader | None = None

    def fail(self, node: yaml.Node | None, message: str) -> BadInput:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return BadInput(f"{self.path}{line}: {message}")

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of keys to values")
        own: set[str] = set()
        for key_node, _ in node.value:  # duplicates among the keys written here (merged ones may repeat)
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in own:
                    raise self.fail(key_node, f"{what}: key {key_node.value!r} given twice")
                own.add(key_node.value)
        assert self.loader is not None
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor`: merged keys first, own keys override
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, f"{what}: keys must be plain names")
            key = key_node.value
            if key.lower() in _SECRET_KEYS:
                raise self.fail(key_node, f"{what}: a literal {key!r} is not allowed in a bench file "
                                          f"(it would end up in git and reports); use password_file: <path> "
                                          f"or password_env: <VARIABLE> under credentials")
            if key not in allowed:
                raise self.fail(key_node, f"{what}: unknown key {key!r} (allowed: {', '.join(allowed)})")
            out[key] = value_node
        return out

    def text(self, node: yaml.Node, what: str, *, optional: bool = False) -> str | None:
        """A scalar as written (so ``1.10`` and ``52:00:13:1f`` are not turned into numbers)."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        if node.tag == "tag:yaml.org,2002:null" and not node.style:
            if optional:
                return None
            raise self.fail(node, f"{what} must not be empty")
        value = node.value.strip()
        if not value and not optional:
            raise self.fail(node, f"{what} must not be empty")
        return value or None

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            raise self.fail(node, f"{what} must be true or false")
        return node.value.lower() in ("true", "yes", "on", "y")

    def number(self, node: yaml.Node, what: str) -> float:
        text = self.text(node, what) or ""
        try:
            value = float(text)
        except ValueError:
            raise self.fail(node, f"{what} must be a number, not {text!r}") from None
        if not value > 0:
            raise self.fail(node, f"{what} must be greater than 0")
        return value

    def parse(self, text: str) -> Bench:
        self.loader = yaml.SafeLoader(text)
        try:
            root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f":{mark.line + 1}" if mark else ""
            raise BadInput(f"{self.path}{line}: not valid YAML ({exc.problem or exc.context})") from exc
        except yaml.YAMLError as exc:
            raise BadInput(f"{self.path}: not valid YAML ({exc})") from exc
        finally:
            self.loader.dispose()
        if root is None:
            raise BadInput(f"{self.path}: empty bench file (it needs a devices: mapping)")
        top = self.mapping(root, "bench", _TOP_KEYS)
        if "version" in top and self.text(top["version"], "version") != "1":
            raise self.fail(top["version"], "only bench file version 1 is known")
        description = self.text(top["description"], "description", optional=True) if "description" in top \
            else None
        if "devices" not in top:
            raise self.fail(root, "missing devices: (a mapping of device names to devices)")
        devices_node = top["devices"]
        if not isinstance(devices_node, yaml.MappingNode) or not devices_node.value:
            raise self.fail(devices_node, "devices: must map at least one device name to a device")
        assert self.loader is not None
        self.loader.flatten_mapping(devices_node)
        devices: dict[str, DeviceSpec] = {}
        for key_node, value_node in devices_node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else ""
            if not _NAME.match(name):
                raise self.fail(key_node, f"device name {name!r} must be letters, digits, '_', '-' or '.'")
            if name in devices:
                raise self.fail(key_node, f"device {name!r} defined twice")
            devices[name] = self.device(name, value_node)
        return Bench(path=self.path, devices=devices, workdir=self.workdir, description=description or "")

    def device(self, name: str, node: yaml.Node) -> DeviceSpec:
        what = f"device {name!r}"
        keys = self.mapping(node, what, _DEVICE_KEYS)
        if "target" not in keys:
            raise self.fail(node, f"{what}: missing target: (one of {', '.join(available_targets())})")
        target = self.text(keys["target"], f"{what}: target") or ""
        if target not in available_targets():
            raise self.fail(keys["target"], f"{what}: unknown target {target!r} "
                                            f"(known: {', '.join(available_targets())})")
        if "firmware" not in keys:
            raise self.fail(node, f"{what}: missing firmware: (the version the unit runs, quoted: \"1.17\")")
        firmware = self.text(keys["firmware"], f"{what}: firmware") or ""
        addresses = [k for k in _ADDRESS_KEYS if k in keys]
        if "sim" in keys and addresses:
            raise self.fail(keys[addresses[0]], f"{what}: has both sim: and {addresses[0]}:; a device is "
                                                f"either simulated or a real unit")
        if "sim" not in keys and not addresses:
            raise self.fail(node, f"{what}: needs sim: (a simulator) or an address (port:, visa: or url:)")
        if len(addresses) > 1:
            raise self.fail(keys[addresses[1]], f"{what}: give one address, not {' and '.join(addresses)}")
        credentials = self.credentials(keys["credentials"], what) if "credentials" in keys else None
        description = self.text(keys["description"], f"{what}: description", optional=True) \
            if "description" in keys else None
        common = dict(name=name, target=target, firmware=firmware, credentials=credentials,
                      description=description or "", line=node.start_mark.line + 1)
        if "sim" in keys and "ssh" in keys:
            raise self.fail(keys["ssh"], f"{what}: a simulator gives its own ssh address (its JSON line); "
                                         f"ssh: is for a real unit")
        if "sim" in keys:
            return DeviceSpec(sim=self.sim(name, keys["sim"], what), **common)  # type: ignore[arg-type]
        kind = addresses[0]
        address = self.text(keys[kind], f"{what}: {kind}") or ""
        self.check_address(keys[kind], what, kind, address)
        ssh = self.text(keys["ssh"], f"{what}: ssh") if "ssh" in keys else None
        if ssh is not None and not ssh.lower().startswith("ssh://"):
            raise self.fail(keys["ssh"], f"{what}: ssh: must be an ssh://[user@]host[:port] address")
        return DeviceSpec(address=address, address_kind=kind, ssh=ssh, **common)  # type: ignore[arg-type]

    def check_address(self, node: yaml.Node, what: str, kind: str, address: str) -> None:
        is_http = address.lower().startswith(("http://", "https://"))
        if kind == "url" and not is_http:
            raise self.fail(node, f"{what}: url: must start with http:// or https://")
        if kind == "visa" and "::" not in address:
            raise self.fail(node, f"{what}: visa: must be a VISA resource name like ASRL/dev/ttyUSB0::INSTR")
        if kind == "port" and "::" in address:
            raise self.fail(node, f"{what}: {address!r} is a VISA resource name; write it as visa:")
        if kind == "port" and is_http:
            raise self.fail(node, f"{what}: {address!r} is an HTTP address; write it as url:")

    def sim(self, name: str, node: yaml.Node, what: str) -> SimSpec:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            keys: dict[str, yaml.Node] = {}  # `sim:` alone: every default
        else:
            keys = self.mapping(node, f"{what}: sim", _SIM_KEYS)
        get = keys.get
        state_text = self.text(keys["state"], f"{what}: sim.state", optional=True) if "state" in keys else None
        state = Path(state_text) if state_text else STATE_DIR / self.path.stem / name
        if not state.is_absolute():
            state = self.workdir / state
        time_scale = self.number(keys["time_scale"], f"{what}: sim.time_scale") if "time_scale" in keys \
            else None
        if "realtime" in keys and self.boolean(keys["realtime"], f"{what}: sim.realtime"):
            if time_scale is not None:
                raise self.fail(keys["realtime"], f"{what}: give sim.realtime or sim.time_scale, not both")
            time_scale = 1.0
        device_id_node, profile_node, control_node = get("device_id"), get("profile"), get("control")
        return SimSpec(
            device_id=self.text(device_id_node, f"{what}: sim.device_id", optional=True)
            if device_id_node is not None else None,
            profile=self.text(profile_node, f"{what}: sim.profile", optional=True)
            if profile_node is not None else None,
            state=state,
            time_scale=time_scale,
            control=self.boolean(control_node, f"{what}: sim.control") if control_node is not None else True,
        )

    def credentials(self, node: yaml.Node, what: str) -> Credentials:
        keys = self.mapping(node, f"{what}: credentials", _CRED_KEYS)
        if "password_file" in keys and "password_env" in keys:
            raise self.fail(keys["password_env"], f"{what}: give password_file or password_env, not both")
        username = self.text(keys["username"], f"{what}: credentials.username") if "username" in keys \
            else None
        password_file = None
        if "password_file" in keys:
            raw = Path(self.text(keys["password_file"], f"{what}: credentials.password_file") or "")
            password_file = raw if raw.is_absolute() else (self.path.parent / raw).absolute()
        password_env = None
        if "password_env" in keys:
            password_env = self.text(keys["password_env"], f"{what}: credentials.password_env") or ""
            if not _ENV.match(password_env):
                raise self.fail(keys["password_env"],
                                f"{what}: password_env must name an environment variable, like BENCH_PASSWORD")
        return Credentials(username=username, password_file=password_file, password_env=password_env)


def load_bench(path: Path | str, *, workdir: Path | None = None) -> Bench:
    """Read and validate a bench file; BadInput with file:line for anything wrong.

    ``workdir`` (default: the current directory) anchors relative state dirs and ``.harness/``.
    """
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"no bench file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read bench file {path}: {exc}") from exc
    return _Parser(path, Path(workdir or Path.cwd()).absolute()).parse(text)
