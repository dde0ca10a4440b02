"""What a NeuroomNet backup's field view should become on a newer server, stated from the spec alone.

The compatibility matrix restores a restore point made at one release onto a newer one and reads the unit
back. This module says what the read-back must then hold, from ``targets/neuroomnet.md`` §3.2, §3.4 and §5,
without running (or importing) the simulator's own migration code: the harness is the judge of the
simulator, not its echo.

What the spec fixes, by the schema a column or row appears in ("since" in the §3.4 table):

- **18** (``component_group``, ``component_property``, ``component.group_id``): the 17 -> 18 step
  "splits component properties": the schema-17 JSON column ``component.properties`` becomes one
  ``component_property`` row per key, and "adds the default component group All" that every component
  belongs to.
- **20** (``schedule.time_zone``, ``app_user.password_scheme``): the step adds the *server's* time zone to
  every schedule and a scheme to every user ("old hashes kept and upgraded at next login"). Neither value
  follows from the backup (the destination's zone; the spec names no scheme values), so they are declared
  added and not predicted; the password hashes themselves are kept, and are compared.
- **22** (cue ``at_ms`` INTEGER): every show cue's ``at_s`` (REAL seconds) becomes ``at_ms`` (integer ms).
- A restore point the destination writes records the destination's software version, its configuration
  schema and the format it writes (§3.2, §5 "Restore point format written"), whatever it was restored from.

The field view is the one of ``artifact.artifact_fields``: ``config.<table>.<key>.<column>`` with JSON
columns parsed, composite keys joined by ``/``.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from harness.targets.neuroomnet.versions import Release

DEFAULT_GROUP_ID = 1  # the first row of the new INTEGER PRIMARY KEY table (the spec names the group, not its id)
DEFAULT_GROUP_NAME = "All"

# Metadata every restore point the destination writes carries about itself (§3.2): never the source's.
RECORDED = ("restore_point.format", "source.software_version", "source.config_schema")

# schema -> (fields whose name or value the step converts, fields it adds), as field-name globs.
CHANGES: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    18: (("config.component.*.properties",),  # -> config.component_property.<id>/<key>.value
         ("config.component_property.*", "config.component_group.*", "config.component.*.group_id")),
    20: ((), ("config.schedule.*.time_zone", "config.app_user.*.password_scheme")),
    22: (("config.show.*.cues",), ()),  # each cue's at_s (seconds) -> at_ms (milliseconds)
}

_PROPERTIES = re.compile(r"^config\.component\.([^.]+)\.properties$")
_COMPONENT = re.compile(r"^config\.component\.([^.]+)\.")
_CUES = re.compile(r"^config\.show\.[^.]+\.cues$")


def declared_changes(src_schema: int, dst_schema: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(converted, added) field globs of a migration from ``src_schema`` to ``dst_schema``."""
    converted: list[str] = list(RECORDED)
    added: list[str] = []
    for since, (conv, add) in sorted(CHANGES.items()):
        if src_schema < since <= dst_schema:
            converted += conv
            added += add
    return tuple(converted), tuple(added)


def _property_text(value: Any) -> str:
    """A schema-17 JSON property value as the TEXT of its ``component_property`` row.

    The §3.5 summary, which every migration preserves, reads a schema-17 property as text the same way
    (``config.summary``: ``str(v)``), so the row must hold exactly that text for the summary to survive.
    """
    return str(value)


def _split_properties(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    components: set[str] = set()
    for key, value in fields.items():
        m = _PROPERTIES.match(key)
        if m:
            # An unparsable JSON cell (shown as text by the field view) carries no properties: the summary
            # reads it as {} too, so nothing is split out of it.
            if isinstance(value, dict):
                for prop, v in value.items():
                    out[f"config.component_property.{m.group(1)}/{prop}.value"] = _property_text(v)
            continue
        out[key] = value
        c = _COMPONENT.match(key)
        if c:
            components.add(c.group(1))
    for cid in components:
        out[f"config.component.{cid}.group_id"] = DEFAULT_GROUP_ID
    out[f"config.component_group.{DEFAULT_GROUP_ID}.name"] = DEFAULT_GROUP_NAME
    return out


def seconds_to_ms(at_s: Any) -> Any:
    """``at_s`` REAL seconds -> ``at_ms`` INTEGER: exact for the decimal the JSON holds, ties to even.

    A value that is not a number is returned unchanged (the destination cannot convert it either; the
    matrix then shows the difference).
    """
    if isinstance(at_s, bool) or not isinstance(at_s, int | float):
        return at_s
    try:
        return int((Decimal(repr(at_s)) * 1000).to_integral_value(rounding=ROUND_HALF_EVEN))
    except (InvalidOperation, ValueError, OverflowError):  # nan, inf
        return at_s


def _cues_in_ms(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    for key, cues in fields.items():
        if not (_CUES.match(key) and isinstance(cues, list)):
            continue
        converted = []
        for cue in cues:
            if isinstance(cue, dict) and "at_s" in cue:
                cue = {("at_ms" if k == "at_s" else k): (seconds_to_ms(v) if k == "at_s" else v)
                       for k, v in cue.items()}
            converted.append(cue)
        out[key] = converted
    return out


def migrate_fields(fields: dict[str, Any], source: Release, destination: Release) -> dict[str, Any]:
    """The field view a backup made at ``source`` should read back as after a restore on ``destination``.

    The backup's own recorded schema wins over the release's, so a restore point that was itself migrated
    (a format-1 point converted on import) is judged by what it holds. Fields the spec gives no value for
    (see the module docstring) are not invented: the matrix compares only the fields both sides have.
    """
    src_schema = int(fields.get("source.config_schema", source.config_schema))
    if src_schema > destination.config_schema:
        raise ValueError(f"no migration from configuration schema {src_schema} down to "
                         f"{destination.config_schema}")
    out = dict(fields)
    if src_schema < 18 <= destination.config_schema:
        out = _split_properties(out)
    if src_schema < 22 <= destination.config_schema:
        out = _cues_in_ms(out)
    out["restore_point.format"] = destination.writes_format
    out["source.software_version"] = destination.version
    out["source.config_schema"] = destination.config_schema
    return out
