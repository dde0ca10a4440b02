"""Synthetic acquisition folders (targets/planktoscope.md §11.3): deterministic bytes for a seed.

An acquisition is ``img/<object_date>/<sample_id>/<acq_id>/`` under the datasets root, with
``metadata.json`` (4-space indent), N small JPEGs named per release (§11.1), ``integrity.check`` (§11.2) and
optionally ``done.txt``. The JPEG is a valid 1x1 baseline-arithmetic image with a comment segment of seeded
random bytes, so every image differs and none compresses.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass

from harness.targets.planktoscope import integrity
from harness.targets.planktoscope.releases import V2026, release_info

# The smallest valid JPEG (1x1, arithmetic coding), split after SOI so a COM segment can go in.
_JPEG_SOI = bytes.fromhex("ffd8")
_JPEG_REST = bytes.fromhex(
    "ffe000104a46494600010101004800480000"
    "ffdb004300030202020202030202020303030304060404040404080606050609080a0a090809090a0c0f0c0a0b0e0b0909"
    "0d110d0e0f101011100a0c12131210130f101010"
    "ffc9000b080001000101011100"
    "ffcc000600101005"
    "ffda0008010100003f00d2cf20"
    "ffd9")


def jpeg(rng: random.Random, size: int) -> bytes:
    """A valid JPEG of about ``size`` bytes (a comment segment carries the bulk)."""
    payload = max(0, min(size, 65533))
    comment = bytes(rng.getrandbits(8) for _ in range(payload))
    return _JPEG_SOI + b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + comment + _JPEG_REST


@dataclass(frozen=True)
class Acquisition:
    object_date: str
    sample_id: str
    acq_id: str

    @property
    def rel_path(self) -> str:
        return f"img/{self.object_date}/{self.sample_id}/{self.acq_id}"


def image_name(release: str, when: dt.datetime) -> str:
    if release_info(release).image_naming == "utc":
        return when.astimezone(dt.UTC).strftime("%Y-%m-%d_%H-%M-%S-%f") + ".jpg"
    return when.strftime("%H_%M_%S_%f") + ".jpg"


def metadata(release: str, acq: Acquisition, instrument: str | None, when: dt.datetime, count: int) -> bytes:
    info = release_info(release)
    software = ("PlanktoScope OS " if info.name == V2026 else "PlanktoScope ") + info.version
    doc = {
        "sample_project": "Harness demo", "sample_id": acq.sample_id, "sample_ship": "RV Simulator",
        "sample_operator": "QA", "sample_sampling_gear": "net", "sample_gear_net_opening": 40,
        "acq_id": acq.acq_id, "acq_instrument": instrument or "PlanktoScope", "acq_software": software,
        "acq_celltype": 300, "acq_minimum_mesh": 10, "acq_maximum_mesh": 200, "acq_volume": 1,
        "acq_imaged_volume": 0.01 * count, "acq_fnumber_objective": 12, "acq_camera": "HQ Camera",
        "object_date": acq.object_date, "object_time": when.strftime("%H%M%S"),
        "object_lat": 43.6836, "object_lon": 7.3164, "object_depth_min": 1, "object_depth_max": 2,
        "process_pixel": 0.75, "process_id": 1, "nb_frame": count,
    }
    return (json.dumps(doc, indent=4) + "\n").encode()


def generate(release: str, acq: Acquisition, *, images: int = 3, seed: int = 0, image_size: int = 4096,
             instrument: str | None = None, done: bool = False) -> dict[str, bytes]:
    """``{relative path: bytes}`` of one acquisition folder (paths relative to the datasets root)."""
    rng = random.Random(f"{seed}:{acq.rel_path}")
    start = dt.datetime(2024, 5, 1, 9, 30, 0, tzinfo=dt.UTC) + dt.timedelta(days=rng.randrange(300))
    meta = metadata(release, acq, instrument, start, images)
    files: list[tuple[str, bytes]] = [("metadata.json", meta)]
    for i in range(images):
        when = start + dt.timedelta(seconds=i, microseconds=rng.randrange(1_000_000))
        files.append((image_name(release, when), jpeg(rng, image_size + rng.randrange(512))))
    out = {f"{acq.rel_path}/{name}": data for name, data in files}
    out[f"{acq.rel_path}/{integrity.NAME}"] = integrity.build(files)
    if done:
        out[f"{acq.rel_path}/done.txt"] = b""
    return out


SEED_ACQUISITIONS = (
    Acquisition("2024-05-01", "sample_a", "acq_1"),
    Acquisition("2024-05-01", "sample_a", "acq_2"),
)
