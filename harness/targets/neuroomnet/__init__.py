"""NeuroomNet server: system restore points over the (modelled) HTTP API, kept as the server's ZIP download.

Facts and model: the target spec shared/targets/neuroomnet.md; what the simulator speaks: docs/targets/neuroomnet.md.
Pieces: schema.py (SQLite/WAL headers with construct, restorepoint.json), harness/ziparchive.py (shared ZIP records, writer,
strict reader), config.py (configuration tables, digests, field view), artifact.py (validating a ZIP),
versions.py (compatibility rules), migrate.py (what a migrated backup should read back as, from the spec),
driver.py (the HTTP driver).
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from harness.compare import CompareRules
from harness.targets.base import Artifact, CompatRule, CompatVersion, DeviceInfo, Target
from harness.targets.neuroomnet.artifact import RestorePointZip, artifact_fields, load_artifact
from harness.targets.neuroomnet.driver import NeuroomNetDriver
from harness.targets.neuroomnet.migrate import declared_changes
from harness.targets.neuroomnet.migrate import migrate_fields as _migrate_fields
from harness.targets.neuroomnet.versions import AS_IS, MIGRATE, RELEASES, can_update, release, rule

# What every backup or restore rewrites by design, so a round trip can never make it equal:
COMPARE_IGNORE = (
    # Restore-point bookkeeping: each backup creates a new restore point with its own id, label ("harness
    # <reason>") and creation time. They say which snapshot this is, not what the server is configured as.
    "restore_point.id",
    "restore_point.label",
    "restore_point.created",
    # The config.sqlite container bytes: SQLite's file change counter, schema cookie and page layout differ
    # between two snapshots of the same rows. Its content is compared cell by cell (config.*) and by
    # config_digest, which hashes the rows only (§3.5).
    "files.config.sqlite.*",
)

_LANGUAGES = ("de", "fr", "nl", "it", "es", "da")


def _cues(seed: int, schema: int) -> list[dict[str, Any]]:
    """A cue list with millisecond-precise times, in the unit's own layout (``at_ms`` since schema 22).

    The seeded shows only have times in steps of 2.5 s; these make a migration onto 5.0 convert times with
    millisecond digits, which a wrong scale or rounding to tenths would get wrong. Whole milliseconds, so the
    conversion has no ties to round.
    """
    out = []
    for k in range(3):
        ms = k * 1125 + seed + 1  # from seed + 1 ms on, in steps of 1.125 s: never a whole second
        at = {"at_ms": ms} if schema >= 22 else {"at_s": ms / 1000}
        out.append({**at, "component": k + 1, "command": ("on", "play", "off")[(seed + k) % 3]})
    return out


class NeuroomNetTarget(Target):
    name = "neuroomnet"
    artifact_ext = "zip"
    compare_rules = CompareRules(ignore=COMPARE_IGNORE, float_decimals=None, nan_equal=True)
    driver = NeuroomNetDriver
    # Updated in place (the simulator: through its control plane), forward only: can_update narrows the pairs.
    updatable = True

    def artifact_name(self, device_id: str, created: dt.datetime) -> str:
        """``RP_<YYYY-MM-DD>_<HH-mm-ss>_utc.zip``: the server's local-copy naming (§3.1), in UTC.

        The server names its download after the restore point's local time and label; the store knows only
        the instant, so the name carries UTC and says so (docs/targets/neuroomnet.md, deviations).
        """
        if created.tzinfo is None:
            raise ValueError("backup times must be timezone-aware (UTC)")
        return created.astimezone(dt.UTC).strftime("RP_%Y-%m-%d_%H-%M-%S_utc.zip")

    def load_artifact(self, path: Path) -> Artifact:
        return load_artifact(Path(path))

    def fields(self, artifact: Artifact) -> dict[str, Any]:
        if not isinstance(artifact.data, RestorePointZip):
            raise TypeError("not a NeuroomNet artifact")
        return artifact_fields(artifact.data)

    def distinctive_settings(self, device: DeviceInfo, seed: int) -> dict[str, Any]:
        """Cells every modelled schema has (17..22), different for every seed."""
        rng = random.Random(seed)
        return {
            "config.system_setting.language.value": _LANGUAGES[seed % len(_LANGUAGES)],
            "config.system_setting.site_name.value": f"Museum wing {seed}-{rng.randrange(1000)}",
            "config.system_setting.ntp_server.value": f"ntp{seed}.museum.local",
            "config.component.1.address": f"10.{seed % 250}.{rng.randrange(250)}.{rng.randrange(1, 250)}",
            "config.component.2.enabled": seed % 2,
            "config.component.3.name": f"Projector foyer {seed}",
            "config.schedule.1.cron": f"{rng.randrange(60)} {rng.randrange(6, 10)} * * 1-6",
            "config.module.Shows.enabled": seed % 2,
            # The schema the server reports (/api/system), so an unmodelled release works too.
            "config.show.2.cues": _cues(seed, int(device.details.get("config_schema")
                                                  or release(device.firmware).config_schema)),
        }

    def compat_versions(self) -> list[CompatVersion]:
        return [CompatVersion(v) for v in RELEASES]

    def compat_rule(self, source: CompatVersion, destination: CompatVersion) -> CompatRule:
        verdict = rule(source.version, destination.version)
        if verdict.verdict == AS_IS:
            return CompatRule("restore", "same configuration schema")
        if verdict.verdict == MIGRATE:
            src, dst = release(source.version), release(destination.version)
            converted, added = declared_changes(src.config_schema, dst.config_schema)
            # Not compared: config_digest. It hashes the raw rows of one schema (§3.5: column order, JSON
            # cells as the server serialises them), and from 18 -> 20 on they hold values the backup cannot
            # predict (every schedule gets the destination server's time zone, every user a password scheme
            # the spec does not name): it changes by design. Everything else is compared: summary_digest must
            # survive every migration (§3.5), migrate_fields predicts the recorded format, version and
            # schema, and the converted rows are compared cell by cell. (files.config.sqlite.* is ignored
            # for every pair: COMPARE_IGNORE.)
            return CompatRule("migrate", "schema " + " -> ".join(map(str, verdict.path)),
                              converted=converted, added=added, ignore=("config_digest",))
        return CompatRule("refuse", f"{verdict.code}: {verdict.message}")

    def can_update(self, source: CompatVersion, destination: CompatVersion) -> bool:
        """Software updates go forward only, from a schema the new release can migrate (so not 3.9.4 ->
        5.0.0 directly); the same version is a reinstall. ``versions.update_refusal`` says why not."""
        return can_update(source.version, destination.version)

    def migrate_fields(self, fields: dict[str, Any], source: CompatVersion,
                       destination: CompatVersion) -> dict[str, Any]:
        """The spec's migration rules on the field view (migrate.py): renamed rows, seconds -> ms, the
        destination's recorded format/version/schema. Independent of the simulator's migration code."""
        return _migrate_fields(fields, release(source.version), release(destination.version))


TARGET = NeuroomNetTarget()

__all__ = ["TARGET", "NeuroomNetDriver", "NeuroomNetTarget"]
