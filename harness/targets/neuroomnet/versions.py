"""NeuroomNet compatibility rules as data (DESIGN rule 7, targets/neuroomnet.md §5).

A restore point carries its restore-point *format* (how the files are described: 1 = 3.9.x md5 manifest,
2 = 4.x/5.x sha256 manifest with digests) and its *configuration schema* (the layout of the tables in
``config.sqlite``). The software running on the server when the restore point is imported and applied
decides:

- import: the format must be readable and the schema not older than the server's ``min_config_schema``;
  a newer schema may be imported (so restore points can be carried to a newer server) but not applied;
- apply: schema == server schema -> ``as_is``; min <= schema < server -> ``migrate`` through every step of
  the schema history in order; schema > server -> ``refuse`` (``restore_point_too_new``).

The source server does not matter (a cross-server apply follows the same rule). On 5.0.0 a format-1 restore
point is reported as ``restore_point_too_old`` rather than ``restore_point_format_unsupported``: every format-1
restore point is schema 17, and "too old" tells the user what to do.

Pure data and functions: the simulator and the driver share them, and the compatibility matrix reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import BadInput
from harness.targets.base import semver_key

AS_IS = "as_is"
MIGRATE = "migrate"
REFUSE = "refuse"

FORMAT_UNSUPPORTED = "restore_point_format_unsupported"
TOO_NEW = "restore_point_too_new"
TOO_OLD = "restore_point_too_old"


@dataclass(frozen=True)
class Release:
    """One modelled NeuroomNet software release."""

    version: str
    config_schema: int
    writes_format: int
    reads_formats: tuple[int, ...]
    min_config_schema: int
    note: str = ""

    @property
    def short(self) -> str:
        """``4.2`` for 4.2.0: what the refusal messages name."""
        return ".".join(self.version.split(".")[:2])


RELEASES: dict[str, Release] = {
    r.version: r
    for r in (
        Release("3.9.4", 17, 1, (1,), 17, "component properties as a JSON column; no groups"),
        Release("4.0.2", 18, 2, (1, 2), 17, "adds component groups and properties, assets, sha256 manifest"),
        Release("4.2.0", 20, 2, (1, 2), 17, "adds schedule time zones and user password schemes"),
        Release("5.0.0", 22, 2, (2,), 18, "cue times in ms; migrations from schema 17 dropped"),
    )
}
DEFAULT_VERSION = "4.2.0"

# Every schema the model has ever had, in order; 19 and 21 have no release of their own (§5), but a
# migration runs through them.
SCHEMA_HISTORY: tuple[int, ...] = (17, 18, 19, 20, 21, 22)
SCHEMA_RELEASE: dict[int, str] = {r.config_schema: r.version for r in RELEASES.values()}


def release(version: str) -> Release:
    try:
        return RELEASES[version]
    except KeyError:
        raise BadInput(f"unknown NeuroomNet version {version!r} (modelled: {', '.join(RELEASES)})") from None


def release_for_schema(schema: int) -> Release | None:
    name = SCHEMA_RELEASE.get(schema)
    return RELEASES[name] if name else None


def first_release_reading(fmt: int) -> Release | None:
    return next((r for r in RELEASES.values() if fmt in r.reads_formats), None)


@dataclass(frozen=True)
class Verdict:
    """What a server does with a restore point: ``as_is``, ``migrate`` (with ``path``) or ``refuse``."""

    verdict: str
    path: tuple[int, ...] = ()
    code: str | None = None
    message: str | None = None
    details: dict[str, int | str] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return self.verdict == REFUSE

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"verdict": self.verdict, "path": list(self.path), "message": self.message}
        if self.code:
            out["code"] = self.code
        return out


def migration_path(schema: int, server: Release) -> tuple[int, ...]:
    """The released schemas a migration passes, as the API shows them (``[17, 18, 20]``)."""
    released = sorted(SCHEMA_RELEASE)
    return (schema, *(s for s in released if schema < s <= server.config_schema))


def migration_steps(schema: int, target: int) -> list[tuple[int, int]]:
    """Every single step of the schema history from ``schema`` to ``target`` (19 and 21 included)."""
    if schema not in SCHEMA_HISTORY or target not in SCHEMA_HISTORY or schema > target:
        raise BadInput(f"no migration from configuration schema {schema} to {target}")
    i, j = SCHEMA_HISTORY.index(schema), SCHEMA_HISTORY.index(target)
    return [(SCHEMA_HISTORY[k], SCHEMA_HISTORY[k + 1]) for k in range(i, j)]


def _source_name(schema: int, version: str | None) -> str:
    return version or SCHEMA_RELEASE.get(schema, f"schema {schema}")


def _too_old(rp_id: str, schema: int, version: str | None, server: Release, *, what: str) -> Verdict:
    src = _source_name(schema, version)
    carriers = [r for r in RELEASES.values() if r.min_config_schema <= schema <= r.config_schema]
    via = f"a {carriers[-1].short.split('.')[0]}.x server" if carriers else "an older server"
    return Verdict(REFUSE, code=TOO_OLD, details={"restore_point_schema": schema,
                                                  "min_config_schema": server.min_config_schema},
                   message=(f"Restore point {rp_id} is from NeuroomNet {src} (schema {schema}). NeuroomNet "
                            f"{server.version} can migrate configurations from schema "
                            f"{server.min_config_schema} on. Apply it on {via}, create a new restore point "
                            f"there, and import that one. Nothing was {what}."))


def import_verdict(rp_id: str, fmt: int, schema: int, server: Release, *, version: str | None = None
                   ) -> Verdict:
    """May ``server`` import a local copy of this restore point? ``as_is`` means yes (apply decides later)."""
    if fmt not in server.reads_formats:
        if fmt == 1 and schema < server.min_config_schema:
            return _too_old(rp_id, schema, version, server, what="imported")  # 5.0.0's special case
        first = first_release_reading(fmt)
        needs = f"NeuroomNet {first.short} or later" if first else "a NeuroomNet release that does not exist"
        return Verdict(REFUSE, code=FORMAT_UNSUPPORTED, details={"format": fmt},
                       message=(f"Restore point format {fmt} requires {needs}. This server runs "
                                f"{server.version}. Nothing was imported."))
    if schema < server.min_config_schema:
        return _too_old(rp_id, schema, version, server, what="imported")
    return Verdict(AS_IS)


def apply_verdict(rp_id: str, schema: int, server: Release, *, version: str | None = None) -> Verdict:
    """What applying an (imported) restore point of ``schema`` on ``server`` does."""
    if schema > server.config_schema:
        src = _source_name(schema, version)
        newer = release_for_schema(schema)
        update_to = newer.short if newer else src
        return Verdict(REFUSE, code=TOO_NEW, details={"restore_point_schema": schema,
                                                      "server_schema": server.config_schema},
                       message=(f"Restore point {rp_id} was created with NeuroomNet {src} (configuration "
                                f"schema {schema}). This server runs {server.version} (schema "
                                f"{server.config_schema}) and cannot apply newer configurations. Update this "
                                f"server to {update_to} or later first. Nothing was changed."))
    if schema < server.min_config_schema:
        return _too_old(rp_id, schema, version, server, what="changed")
    if schema == server.config_schema:
        return Verdict(AS_IS, path=(schema,))
    return Verdict(MIGRATE, path=migration_path(schema, server))


def restore_verdict(rp_id: str, fmt: int, schema: int, server: Release, *, version: str | None = None
                    ) -> Verdict:
    """Import then apply, as the harness's restore does: the first refusal wins."""
    first = import_verdict(rp_id, fmt, schema, server, version=version)
    if first.refused:
        return first
    return apply_verdict(rp_id, schema, server, version=version)


def rule(src_version: str, dst_version: str) -> Verdict:
    """The matrix cell: a restore point written by ``src_version`` restored on ``dst_version``."""
    src, dst = release(src_version), release(dst_version)
    return restore_verdict("rp-(matrix)", src.writes_format, src.config_schema, dst, version=src.version)


def update_refusal(installed: Release, schema: int, new: Release) -> str | None:
    """Why a server running ``installed`` (its database at ``schema``) cannot be updated in place to ``new``;
    None when it can.

    [modelled] The spec says only that an update "runs the same steps in place" (§5). Updates go forward
    (nothing turns a newer database back into an older one), and the new release migrates the live database
    with its own steps, so it must be able to migrate from the database's schema, as for a restore point:
    5.0.0 dropped the migrations from schema 17, so a 3.9.4 server goes through a 4.x release first.
    """
    if semver_key(new.version) < semver_key(installed.version) or new.config_schema < schema:
        return (f"NeuroomNet cannot be downgraded from {installed.version} to {new.version} (its database is "
                f"schema {schema})")
    if schema < new.min_config_schema:
        via = release_for_schema(new.min_config_schema)
        return (f"NeuroomNet {new.version} can migrate configurations from schema {new.min_config_schema} on; "
                f"this server runs {installed.version} (schema {schema}). Update it to "
                f"{via.short if via else 'an older release'} first.")
    return None


def can_update(src_version: str, dst_version: str) -> bool:
    """Whether a server running ``src_version`` can be updated in place to ``dst_version`` (the same version:
    a reinstall)."""
    src, dst = release(src_version), release(dst_version)
    return update_refusal(src, src.config_schema, dst) is None
