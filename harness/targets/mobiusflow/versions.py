"""Versions and the compatibility rule (§5): which backup formats a node restores, as is, by migration, or not.

Compatibility is data: ``VERSIONS`` lists the modelled releases; ``verdict()`` gives as is / migrate / refuse
for a backup on a node, with the spec's refusal codes and messages; ``migrate()`` converts content, by field
name, to the node's format (used by the simulated node; the driver uses ``verdict`` to refuse early).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from harness.targets.mobiusflow.schema import (
    Content,
    MpvFile,
    mpv_v1_to_v2,
    rewrite_hub,
)


@dataclass(frozen=True)
class Version:
    version: str
    generation: int
    writes: str  # backup format written
    restores: tuple[str, ...]  # backup formats restored

    @property
    def key(self) -> tuple[int, ...]:
        return version_key(self.version)


VERSIONS: dict[str, Version] = {v.version: v for v in (
    Version("1.16.4", 1, "1.0", ("1.0",)),
    Version("1.19.1", 1, "1.1", ("1.0", "1.1")),
    Version("3004", 3, "3.0", ("1.0", "1.1", "3.0")),
    Version("3021", 3, "3.1", ("1.0", "1.1", "3.0", "3.1")),
)}
DEFAULT_VERSION = "3021"
# The first release that writes (and so restores) each format; 3.1 first appeared in 3015 (not modelled).
FIRST_WITH_FORMAT = {"1.0": "1.16.4", "1.1": "1.19.1", "3.0": "3004", "3.1": "3015"}

# Object profile templates of the v3 nodes (the v2 profiles, M-F12). PIDs outside this set cannot be
# created on a 3.x node from a 1.x backup (profile_template_missing).
TEMPLATES: dict[str, dict[str, Any]] = {
    "0028": {"pid": "0028", "name": "Temperature sensor", "resources": [{"rid": "01", "name": "temperature"}]},
    "002B": {"pid": "002B", "name": "Humidity sensor", "resources": [{"rid": "01", "name": "humidity"}]},
    "003A": {"pid": "003A", "name": "Relay", "resources": [{"rid": "01", "name": "state"},
                                                          {"rid": "02", "name": "mode"}]},
    "0041": {"pid": "0041", "name": "Energy meter", "resources": [{"rid": "01", "name": "energy"}]},
    "0050": {"pid": "0050", "name": "Setpoint", "resources": [{"rid": "01", "name": "setpoint"}]},
}


def version_key(version: str) -> tuple[int, ...]:
    """1.x compare as semantic versions; 3000+ as integers; every 3000+ is newer than every 1.x."""
    if re.fullmatch(r"\d{4,}", version):
        return (3, int(version))
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"not a MobiusFlow version: {version!r}")
    return (1, *map(int, match.groups()))


def generation_of(version: str) -> int:
    return version_key(version)[0]


def get_version(version: str) -> Version:
    try:
        return VERSIONS[version]
    except KeyError:
        raise ValueError(f"MobiusFlow {version} is not modelled (modelled: {', '.join(VERSIONS)})") from None


@dataclass
class Verdict:
    kind: str  # "as is" | "migrate" | "refuse"
    code: str | None = None
    message: str | None = None
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing_templates: list[str] = field(default_factory=list)

    @property
    def restorable(self) -> bool:
        return self.kind != "refuse"

    @property
    def wire(self) -> str:
        """The node's spelling in the upload answer."""
        return {"as is": "as_is"}.get(self.kind, self.kind)


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verdict(*, backup_format: str, backup_version: str, backup_hub: str, backup_kind: str, pids: set[str],
            node_version: str, node_hub: str, persisted_values: bool = False, has_routers: bool = False,
            node: Version | None = None) -> Verdict:
    """The rule of §5 for one backup on one node. ``node``: the node's own description (from its info:
    generation, format written, formats restored) for a release this table does not model."""
    node = node or get_version(node_version)
    backup_gen = 1 if backup_format.startswith("1.") else 3
    if node.generation == 1 and backup_gen == 3:
        return Verdict("refuse", "backup_generation_unsupported",
                       f"This backup is from MobiusFlow version 3 ({backup_version}, format {backup_format}). "
                       f"Version 3 backups cannot be restored on MobiusFlow 1.x nodes. Nothing was changed.")
    if backup_format not in node.restores:
        return Verdict("refuse", "backup_too_new",
                       f"This backup was made with MobiusFlow {backup_version} (backup format {backup_format}). "
                       f"This node runs {node.version}, which restores backup formats {_list(list(node.restores))}. "
                       f"Update this node to {FIRST_WITH_FORMAT[backup_format]} or later, then restore again. "
                       f"Nothing was changed.")
    changes: list[str] = []
    warnings = ["Users, licence, pre-shared keys, network settings and historian data are not part of the "
                "backup and stay as they are on this node"]
    if backup_gen == 1 and node.generation == 3:
        missing = sorted(p for p in pids if p not in TEMPLATES)
        if missing:
            return Verdict("refuse", "profile_template_missing",
                           f"This backup uses object profiles that have no template in MobiusFlow {node.version}: "
                           f"{', '.join(missing)}. Create these profiles on this node first, or restore on a node "
                           f"that has them. Nothing was changed.", missing_templates=missing)
        if pids:
            changes.append(f"Object profiles {', '.join(sorted(pids))} will be created from templates")
    kind = "as is" if backup_format == node.writes else "migrate"
    if kind == "migrate":
        changes.insert(0, f"Backup format {backup_format} will be converted to {node.writes}")
    if backup_hub.upper() != node_hub.upper():
        kind = "migrate"
        changes.append(f"Hub ID {backup_hub.upper()} will be rewritten to {node_hub.upper()}")
    if node.generation == 3 and not persisted_values:
        warnings.insert(0, "This backup contains no persisted values; after the restore all services start "
                           "with default values")
    if has_routers:
        warnings.append("This backup contains router services: their peers need new pre-shared keys")
    return Verdict(kind, changes=changes, warnings=warnings)


# -- migration (by field name) ------------------------------------------------------------------------------


def migrate(content: Content, *, backup_format: str, backup_kind: str, backup_hub: str, node_version: str,
            node_hub: str) -> tuple[Content, list[str]]:
    """Content of a backup converted to the node's format and hub ID. Returns (content, log lines)."""
    node = get_version(node_version)
    out = copy.deepcopy(content)
    log: list[str] = []
    target = node.writes
    # 1.0 -> 1.1 and up: services gain runAtStart (default true); 1.0 has no flows.
    if backup_format == "1.0" and target != "1.0":
        for s in out.services:
            s.setdefault("runAtStart", True)
        out.flows = out.flows or []
    # 1.x -> 3.x: profiles from templates, persistence settings, tags; values stay at defaults.
    if backup_format.startswith("1.") and target.startswith("3."):
        pids = sorted(out.pids())
        out.profiles = {pid: copy.deepcopy(TEMPLATES[pid]) for pid in pids}
        out.profile_files = {}
        out.tags = []
        for s in out.services:
            s.setdefault("persistence", {"enabled": True, "intervalMin": 5})
        for objs in out.objects.values():
            for o in objs:
                o.setdefault("tags", [])
        out.values = {}
        if pids:
            log.append(f"Creating object profiles from templates: {', '.join(pids)}")
    # 3.0 -> 3.1: value files layout 1 -> 2.
    if backup_format == "3.0" and target == "3.1" and out.values:
        out.values = {sid: mpv_v1_to_v2(mpv) for sid, mpv in out.values.items()}
        log.append(f"Converting persisted values format 1 -> 2 ({len(out.values)} services)")
    if target.startswith("3.") and backup_kind == "config":
        out.values = {}
    # A different hub: every HID in services, objects, flow topics and value-file headers.
    if backup_hub.upper() != node_hub.upper():
        out.node = rewrite_hub(out.node, backup_hub, node_hub)
        out.services = rewrite_hub(out.services, backup_hub, node_hub)
        out.objects = rewrite_hub(out.objects, backup_hub, node_hub)
        if out.flows is not None:
            out.flows = rewrite_hub(out.flows, backup_hub, node_hub)
        out.values = {sid: MpvFile(m.layout_version, node_hub.upper(), m.sid, m.flags, m.persisted_at_unix_ms,
                                   m.records) for sid, m in out.values.items()}
        log.append(f"Rewriting hub ID {backup_hub.upper()} -> {node_hub.upper()} in {len(out.services)} services, "
                   f"{out.object_count()} objects, {len(out.flows or [])} flows, {len(out.values)} value files")
    out.node["hubId"] = node_hub.upper()
    return out, log
