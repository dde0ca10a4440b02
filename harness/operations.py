"""The jobs users run, as one code path shared by the CLI, the feature steps and the EOL station:
backup into the store, restore from an artifact, firmware update with backup-first.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.errors import BadInput, Refused
from harness.store import Store, verify_manifest
from harness.targets import available_targets, get_target
from harness.targets.base import Artifact, DeviceInfo, Driver, RestoreReport, Target

log = logging.getLogger(__name__)


def manifest_path(artifact: Path) -> Path:
    return Path(str(artifact) + ".manifest.json")


def detect_target(path: Path, hint: str | None = None) -> Target:
    """The target of an artifact: the manifest beside it says; else the one target whose loader accepts it."""
    if hint:
        return get_target(hint)
    manifest = manifest_path(path)
    if manifest.exists():
        try:
            name = json.loads(manifest.read_text(encoding="utf-8"))["target"]
        except (ValueError, KeyError, OSError) as exc:
            raise BadInput(f"{manifest}: unreadable manifest ({exc})") from exc
        return get_target(name)
    reasons = []
    for name in available_targets():
        target = get_target(name)
        try:
            target.load_artifact(path)
            return target
        except BadInput as exc:
            reasons.append(f"{name}: {exc}")
    raise BadInput(f"{path} is not a backup of any known target ({'; '.join(reasons)})")


def load_artifact(path: Path, hint: str | None = None) -> tuple[Target, Artifact]:
    """Validate a whole artifact: its own structure and checksums, and its manifest when one is beside it."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such artifact: {path}")
    target = detect_target(path, hint)
    if not manifest_path(path).exists():
        return target, target.load_artifact(path)
    # Two independent full reads of a possibly multi-GB file (the target's own checksums, the store
    # manifest's sha256): hashlib releases the GIL, so they run side by side instead of one after the other.
    with ThreadPoolExecutor(max_workers=1) as pool:
        stored = pool.submit(verify_manifest, path)
        artifact = target.load_artifact(path)
        stored.result()
    return target, artifact


def open_driver(target: Target, address: str, *, username: str | None = None, password: str | None = None,
                progress=None, ssh: str | None = None, control: str | None = None) -> Driver:
    """Build a target's driver. Optional capabilities go only to drivers that take them: a second ``ssh``
    address (PlanktoScope settings over SFTP), and on a simulator a ``reboot`` through its control plane
    (a real unit is rebooted by its own means; the driver then says so in its report)."""
    kwargs: dict = {"username": username, "password": password}
    if progress is not None:
        kwargs["progress"] = progress
    params = inspect.signature(target.driver.__init__).parameters
    if ssh and "ssh" in params:
        kwargs["ssh"] = ssh
    if control and "reboot" in params:
        from harness.simctl import SimControl

        kwargs["reboot"] = SimControl(control).reset
    return target.driver(address, **kwargs)


def backup_to_store(driver: Driver, target: Target, store: Store, *, address: str,
                    reason: str = "manual") -> Path:
    backup = driver.backup(reason=reason)
    backup.source_address = address
    return store.save(target, backup)


def _check(driver: Driver, artifact: Artifact, **options: bool):
    """Pass only the options this driver's check_restore knows (cross-family is a MultispeQ notion)."""
    params = inspect.signature(driver.check_restore).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return driver.check_restore(artifact, **options)


def restore_from(driver: Driver, target: Target, artifact_path: Path, store: Store, *, address: str,
                 force: bool = False, allow_cross_family: bool = False,
                 confirm: Callable[[DeviceInfo], None] | None = None,
                 artifact: Artifact | None = None) -> RestoreReport:
    """Validate the artifact and its fit to the unit, confirm, restore, read back.

    Nothing is written to the unit until the artifact, its manifest, the device ID and the version rule
    have all passed. Backups the driver takes on the way (before/after restore) go into the store.
    ``artifact``: the one ``load_artifact(artifact_path)`` already returned (artifact and manifest checked),
    so a multi-GB file is not hashed twice; without it the file is loaded and checked here.
    """
    if artifact is None:
        art_target, artifact = load_artifact(artifact_path, target.name)
        art_name = art_target.name
    else:
        art_name = artifact.target
    if art_name != target.name:
        raise Refused(f"{artifact_path} is a {art_name} backup; the unit is a {target.name}")
    plan = _check(driver, artifact, force=force, allow_cross_family=allow_cross_family)
    if confirm is not None:
        confirm(driver.identify())
    report = None
    try:
        report = driver.restore(plan)
        return report
    finally:
        # The unit's state before the restore (and after it) is filed even when the read-back fails:
        # it is the only copy of what the restore overwrote. Drivers keep them on the plan or the report.
        for backup in getattr(plan, "backups", None) or getattr(report, "backups", None) or []:
            backup.source_address = address
            store.save(target, backup)


def firmware_update(driver: Driver, target: Target, store: Store, *, address: str, control: str | None,
                    firmware: str, profile: str | None = None) -> tuple[Path, RestoreReport]:
    """Back up, flash, restore by field name. Returns the pre-update artifact and the restore report.

    Flashing goes through a simulator's control plane; a real unit is flashed with the maker's tool.
    """
    from harness.simctl import SimControl

    if not control:
        raise Refused("this unit has no simulator control plane: flash it with the maker's tool, then run "
                      "`harness restore --migrate` with the backup taken before")
    saved = backup_to_store(driver, target, store, address=address, reason="before-firmware-update")
    log.info("backup before the firmware update: %s", saved)
    with SimControl(control) as ctl:
        ctl.set_firmware(firmware, profile)
    driver.close()  # flashing re-enumerates the port; the driver opens it afresh
    report = restore_from(driver, target, saved, store, address=address, allow_cross_family=True)
    return saved, report
