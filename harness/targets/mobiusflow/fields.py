"""The field view of a MobiusFlow backup for ``harness diff``: configuration and persisted values by name.

Names: ``format``, ``kind``, ``source.version``, ``source.hubId``, ``node.<key>``, ``services.<SID>.<key>``,
``objects.<SID>/<PID>/<INS>.<key>``, ``flows[i]…``, ``profiles.<PID>…``, ``profileFiles.<path>`` (sha256),
``tags…``, ``values.<SID>.<PID>/<INS>/<RID>`` (the value; ``{value, priority: {n: v}}`` with priority slots).
Not fields: the backup's name, file name and creation time, and each value file's flush time — they change at
every backup without the node changing.
"""

from __future__ import annotations

import hashlib
from typing import Any

from harness.compare import flatten
from harness.targets.mobiusflow.archive import BackupArchive


def nested_view(archive: BackupArchive) -> dict[str, Any]:
    m, c = archive.manifest, archive.content
    view: dict[str, Any] = {
        "format": m.format,
        "kind": m.kind,
        "source": {"version": m.version, "hubId": m.hub_id},
        "node": c.node,
        "services": {s["sid"]: {k: v for k, v in s.items() if k != "sid"} for s in c.services},
        "objects": {f"{sid}/{o['pid']}/{o['ins']}": {k: v for k, v in o.items() if k not in ("pid", "ins")}
                    for sid, objs in c.objects.items() for o in objs},
    }
    if c.flows is not None:
        view["flows"] = c.flows
    if c.profiles is not None:
        view["profiles"] = c.profiles
        view["profileFiles"] = {p: hashlib.sha256(b).hexdigest() for p, b in sorted(c.profile_files.items())}
    if c.tags is not None:
        view["tags"] = c.tags
    if c.values:
        view["values"] = {
            sid: {r.uri: (r.value if not r.slots else {"value": r.value, "priority": {str(k): v for k, v in
                                                                                   sorted(r.slots.items())}})
                  for r in mpv.records}
            for sid, mpv in sorted(c.values.items())}
    return view


def artifact_fields(archive: BackupArchive) -> dict[str, Any]:
    return dict(flatten(nested_view(archive)))
