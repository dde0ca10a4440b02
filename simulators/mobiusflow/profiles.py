"""Seed configurations of a simulated MobiusFlow node (§2.9 profiles) shaped for its version line.

- ``tiny``: 3 services, 20 objects (the default);
- ``small``: 10 services, 1,000 objects.

(``bench``, 50 services / 20,000 objects / 100 MiB of values, is not modelled: see docs/targets/mobiusflow.md.)
The seed is deterministic for (profile, hub ID, seed), so two simulators started alike hold the same node.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from harness.targets.mobiusflow.schema import (
    FLAG_PERSISTENCE,
    MPV_LAYOUT_OF_FORMAT,
    Content,
    MpvFile,
    MpvRecord,
)
from harness.targets.mobiusflow.versions import TEMPLATES, get_version

PROFILES: dict[str, tuple[int, int]] = {"tiny": (3, 20), "small": (10, 1000)}
DEFAULT_PROFILE = "tiny"
_PIDS = sorted(TEMPLATES)
SERVICE_KINDS = [("MODBUS", "Modbus gateway"), ("BACNET", "BACnet bridge"), ("LOGIC", "Logic engine"),
                 ("MQTTBR", "MQTT bridge")]


def check_profile(profile: str | None) -> str:
    name = profile or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(f"unknown MobiusFlow profile {name!r} (known: {', '.join(PROFILES)})")
    return name


def default_value(pid: str, rid: str) -> Any:
    """The resource's default (what a service starts with when no value was persisted)."""
    if pid == "003A":
        return False if rid == "01" else "auto"
    return 0.0


def seed_content(version: str, hub_id: str, profile: str | None = None, seed: int = 0,
                 now_ms: int = 0) -> Content:
    n_services, n_objects = PROFILES[check_profile(profile)]
    fmt = get_version(version).writes
    rng = random.Random(f"{profile}/{hub_id}/{seed}")
    services: list[dict[str, Any]] = []
    objects: dict[str, list[dict[str, Any]]] = {}
    for i in range(n_services):
        sid = f"{0x20 + i:03X}"
        spid, label = SERVICE_KINDS[i % len(SERVICE_KINDS)]
        service: dict[str, Any] = {"sid": sid, "spid": spid, "name": f"{label} {i + 1}", "enabled": True,
                                   "config": {"pollIntervalS": 10 * (1 + i % 3), "timeoutMs": 2000,
                                              "endpoint": f"10.0.{i}.10"}}
        if fmt != "1.0":
            service["runAtStart"] = True
        if fmt.startswith("3."):
            service["persistence"] = {"enabled": True, "intervalMin": 5}
        services.append(service)
        count = n_objects // n_services + (1 if i < n_objects % n_services else 0)
        objs = []
        for j in range(count):
            pid = _PIDS[(i + j) % len(_PIDS)]
            obj: dict[str, Any] = {
                "pid": pid, "ins": f"{j + 1:04X}", "name": f"{TEMPLATES[pid]['name']} {sid}-{j + 1}",
                "config": {"address": 100 + j},
                "resources": [{"rid": r["rid"], "default": default_value(pid, r["rid"])}
                              for r in TEMPLATES[pid]["resources"]],
            }
            if fmt.startswith("3."):
                obj["tags"] = ["floor-2"] if j % 2 == 0 else []
            objs.append(obj)
        objects[sid] = objs
    content = Content(
        node={"hubId": hub_id, "nodeName": "plant-room-2", "timeZone": "Europe/London",
              "persistenceDefaults": {"enabled": True, "intervalMin": 5} if fmt.startswith("3.") else {}},
        services=services, objects=objects)
    if fmt != "1.0":
        content.flows = [{"name": f"flow-{k + 1}", "topics": [f"{hub_id}/{services[k % n_services]['sid']}/"
                                                              f"{_PIDS[k % len(_PIDS)]}/0001/01"]}
                         for k in range(3)]
    if fmt.startswith("3."):
        used = sorted({o["pid"] for objs in objects.values() for o in objs})
        content.profiles = {pid: copy.deepcopy(TEMPLATES[pid]) for pid in used}
        content.profile_files = {f"profiles/object/{used[0]}/codec.js":
                                 b"export function decode(bytes) { return bytes[0] / 10; }\n"}
        content.tags = [{"name": "floor-2", "color": "#3a7"}]
        layout = MPV_LAYOUT_OF_FORMAT[fmt]
        for service in services:
            sid = service["sid"]
            records = []
            for obj in objects[sid]:
                for res in obj["resources"]:
                    value: Any = round(rng.uniform(15, 25), 2) if isinstance(res["default"], float) \
                        else res["default"]
                    records.append(MpvRecord(int(obj["pid"], 16), int(obj["ins"], 16), int(res["rid"], 16), value,
                                             now_ms if layout == 2 else None, {}))
            content.values[sid] = MpvFile(layout, hub_id, sid, FLAG_PERSISTENCE, now_ms, records)
    return content
