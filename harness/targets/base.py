"""The common interface every target implements: a Target (artifact format, compare rules, versions) and a
Driver (protocol: identify, backup, restore, status) that talks only through a transport to an address.

Feature steps, the CLI and the EOL station use only what is defined here, never a target's internals.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.compare import CompareRules
from harness.errors import BadInput

# progress(done, total, message): total may be None when unknown; message may be "" (no new log line).
ProgressFn = Callable[[int, int | None, str], None]


def no_progress(done: int, total: int | None, message: str) -> None:
    """Default progress sink: drivers always report, callers decide whether to show it."""


@dataclass(frozen=True)
class DeviceInfo:
    """Who the unit is. ``device_id`` is the target's canonical form (MultispeQ: ``52:00:13:1f``)."""

    target: str
    device_id: str
    firmware: str
    model: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Backup:
    """What a driver hands to the store: the artifact's bytes, or a verified temp file streamed to disk."""

    device: DeviceInfo
    created: dt.datetime  # UTC, whole seconds
    content: bytes | None = None
    path: Path | None = None
    reason: str = "manual"
    source_address: str = ""
    # With ``path``: the whole file's sha256 and size as the driver computed them while it wrote and verified
    # the file. The store then trusts the hash (it checks the size) instead of reading the file once more.
    sha256: str | None = None
    size: int | None = None


@dataclass
class Artifact:
    """A backup read back from disk and validated (structure, checksums). ``data`` is target-specific."""

    path: Path
    target: str
    device_id: str
    firmware: str
    created: str
    data: Any = None
    warnings: list[str] = field(default_factory=list)  # e.g. "device ID unset" on a blank unit


@dataclass
class RestoreReport:
    """What a restore did, in field names a QA engineer can read."""

    restored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the backup, absent on the unit
    untouched: list[str] = field(default_factory=list)  # on the unit, absent in the backup
    not_carried: list[str] = field(default_factory=list)  # what this kind of backup can never carry
    notes: list[str] = field(default_factory=list)


def semver_key(version: str) -> tuple[int, ...]:
    """A dotted numeric version as a sortable tuple: ``2.10.0`` after ``2.9.1``. BadInput if it is not one."""
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        raise BadInput(f"software version {version!r} is not of the form X.Y.Z") from None


@dataclass(frozen=True)
class CompatVersion:
    """A version a target declares for the compatibility matrix (``sim run --firmware V --profile P``)."""

    version: str
    profile: str | None = None
    label: str = ""  # what the matrix shows; defaults to the version

    @property
    def name(self) -> str:
        return self.label or (f"{self.version} ({self.profile})" if self.profile else self.version)


@dataclass(frozen=True)
class CompatRule:
    """What a target declares for a (source, destination) pair: DESIGN rule 7."""

    kind: str  # "restore" | "migrate" | "refuse"
    reason: str = ""
    dropped: tuple[str, ...] = ()  # fields of the backup the destination lacks
    added: tuple[str, ...] = ()  # fields of the destination the backup lacks
    converted: tuple[str, ...] = ()  # fields whose name or value a migration converts (migrate_fields)
    # Field globs a migration rewrites by design (a schema version, a digest over converted rows); the
    # matrix does not compare them for this pair. Say why in the target's versions.py.
    ignore: tuple[str, ...] = ()


class Driver(ABC):
    """Protocol driver for one unit. The same code talks to a simulator and to a real unit."""

    target: ClassVar[str]

    def __init__(self, address: str, *, username: str | None = None, password: str | None = None,
                 progress: ProgressFn = no_progress, time_scale: float = 1.0) -> None:
        self.address = address
        self.username = username
        self.password = password
        self.progress = progress
        self.time_scale = time_scale  # stretches the driver's timeouts for realtime simulators

    @abstractmethod
    def identify(self) -> DeviceInfo: ...

    @abstractmethod
    def backup(self, *, reason: str = "manual") -> Backup: ...

    @abstractmethod
    def check_restore(self, artifact: Artifact, *, force: bool = False) -> Any:
        """Validate the artifact against the connected unit and return a plan; never writes to the unit.

        Raises Refused (ID mismatch without force, a version the target refuses) or BadInput.
        """

    @abstractmethod
    def restore(self, plan: Any) -> RestoreReport:
        """Carry out a plan from check_restore, then read back and verify; raise CheckFailed on a mismatch."""

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Write settings the way the maker's calibration tool does (no backup, no read-back).

        Feature steps use it to give a unit a distinctive state through the same link a restore uses.
        """
        raise NotImplementedError(f"{self.target}: applying settings is not supported")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the link."""

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Target(ABC):
    """A device family: artifact naming and validation, field view for diffs, compare rules, driver."""

    name: ClassVar[str]
    artifact_ext: ClassVar[str]
    compare_rules: ClassVar[CompareRules]
    driver: ClassVar[type[Driver]]

    @abstractmethod
    def artifact_name(self, device_id: str, created: dt.datetime) -> str:
        """The artifact's file name as the maker's own tools name it."""

    @abstractmethod
    def load_artifact(self, path: Path) -> Artifact:
        """Read and validate a whole artifact (structure, checksums, target); raise BadInput if it is not."""

    @abstractmethod
    def fields(self, artifact: Artifact) -> dict[str, Any]:
        """A flat field-name -> value view for compare.diff."""

    # Whether a unit can be updated in place (firmware/software update), so the compatibility matrix also
    # runs "the same unit after an update" besides "a fresh unit at the destination version".
    updatable: ClassVar[bool] = False
    # How the CLI shows backup/restore progress: "steps" (n of m), or "bytes" (sizes and a transfer rate)
    # for targets whose artifacts are big enough to watch them stream.
    progress_unit: ClassVar[str] = "steps"

    def compat_versions(self) -> list[CompatVersion]:
        """The versions this target declares and the matrix runs."""
        raise NotImplementedError(f"{self.name}: no versions declared")

    def compat_rule(self, source: CompatVersion, destination: CompatVersion) -> CompatRule:
        """The declared rule for restoring a backup made at ``source`` onto ``destination``."""
        raise NotImplementedError(f"{self.name}: no compatibility rules declared")

    def can_update(self, source: CompatVersion, destination: CompatVersion) -> bool:
        """Whether a unit at ``source`` can be updated in place to ``destination`` (the matrix's "update"
        path for this pair). Targets whose updates only go forward narrow it per pair."""
        return self.updatable

    def compat_fresh_unit(self, control: str | None) -> None:  # noqa: B027 - optional hook
        """The matrix's "fresh unit at the destination version", just started: where a simulator's first start
        seeds more than a fresh unit holds (demo data), take it away through ``control`` (its control plane).
        Default: the unit as started."""

    def migrate_fields(self, fields: dict[str, Any], source: CompatVersion,
                       destination: CompatVersion) -> dict[str, Any]:
        """What a backup's field view becomes once migrated onto ``destination``: renamed and converted
        fields as the target's rules declare them. The matrix compares the unit's read-back to this.
        Default: names and values unchanged (fields missing on one side are dropped/added, not compared)."""
        return fields

    def distinctive_settings(self, device: DeviceInfo, seed: int) -> dict[str, Any]:
        """Non-default settings, different for every seed, in the field view of ``fields``."""
        raise NotImplementedError(f"{self.name}: no distinctive settings defined")
