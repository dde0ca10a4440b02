"""Helpers for the BactoBox tests: small GMIs built from scratch, and simulators in threads or processes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.targets.bactobox import schema as S
from harness.targets.bactobox.gmi import SparseLayout, write_gmi
from simulators.core.options import SimOptions

KIB = 1024
# A scale model of the tiny layout: 64 KiB head, parts of a few hundred KiB. Enough for every rule.
LAYOUT = [("head", 0, 64 * KIB), ("boot", 128, 128 * KIB), ("system0", 384, 256 * KIB),
          ("system1", 896, 256 * KIB), ("data", 1408, 320 * KIB)]
DISK = (1408 * 512) + 320 * KIB


def part_bytes(name: str, size: int, seed: int = 0) -> bytes:
    """Deterministic, non-trivial content: a random-looking start and a zero tail, like a real partition."""
    head = hashlib.shake_128(f"{name}:{seed}".encode()).digest(size // 2)
    return head + bytes(size - len(head))


def make_manifest(datas: list[bytes], *, device_id: str = "bb2241039", version: str = "2.6.3",
                  layout: list[tuple[str, int, int]] | None = None, disk: int = DISK, **changes: Any) -> S.Manifest:
    layout = layout or LAYOUT
    parts = [S.ManifestPart(name=n, file=f"parts/{n}.img", start_lba=lba, size_bytes=size,
                            sha256=hashlib.sha256(d).hexdigest(), mbr_index=i or None,
                            type=None if i == 0 else ("0x83" if n == "data" else "0x0c"))
             for i, ((n, lba, size), d) in enumerate(zip(layout, datas, strict=True))]
    fields: dict[str, Any] = dict(
        format=2, device_id=device_id, software_version=version, created="2026-01-09T10:15:02Z",
        producer=f"bactobox-backup {version}", disk={"size_bytes": disk, "sector_size": 512, "layout": "L2"},
        boot={"env_format": 2, "active_slot": "system0", "boot_count": 0,
              "slots": {"system0": version, "system1": "2.2.0"}},
        data={"store_version": 2, "record_count": 0, "last_record_id": 0, "last_record_started": None},
        parts=parts, total_size_bytes=sum(size for _, _, size in layout))
    fields.update(changes)
    return S.Manifest(**fields)


def make_gmi(path: Path, *, seed: int = 0, force_zip64: bool = False, **manifest_changes: Any) -> Path:
    datas = [part_bytes(n, size, seed) for n, _, size in LAYOUT]
    manifest = make_manifest(datas, **manifest_changes)
    return write_gmi(path, manifest, [io.BytesIO(d) for d in datas], force_zip64=force_zip64)


def sparse_bytes(data: bytes) -> tuple[bytes, SparseLayout]:
    """A partition image as the stored bytes of a format-3 sparse part (raw to its last non-zero block)."""
    layout = SparseLayout.used_prefix(len(data.rstrip(b"\0")), len(data))
    return b"".join(layout.stream(lambda at, n: [data[at:at + n]])), layout


def make_sparse_gmi(path: Path, *, seed: int = 0, data: bytes | None = None, **manifest_changes: Any) -> Path:
    """A format-3 GMI (software 3.1.0) of the scale-model layout: ``parts/data.sparse`` (of ``data``)."""
    datas = [part_bytes(n, size, seed) for n, _, size in LAYOUT]
    if data is not None:
        datas[-1] = data
    manifest = make_manifest(datas, format=3, version="3.1.0", **manifest_changes)
    stored, _ = sparse_bytes(datas[-1])
    data = manifest.parts[-1]
    data.file, data.encoding = "parts/data.sparse", "sparse"
    data.stored_size_bytes, data.stored_sha256 = len(stored), hashlib.sha256(stored).hexdigest()
    return write_gmi(path, manifest, [io.BytesIO(d) for d in datas[:-1]] + [stored])


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        value = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([value ^ 0x01]))


@contextlib.contextmanager
def sim_thread(state: Path, **options: Any) -> Iterator[dict[str, Any]]:
    """A BactoBox simulator served from a thread of this process (fast unit tests); yields its JSON line."""
    from simulators.core.runner import serve

    info: dict[str, Any] = {}
    ready = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with open(os.devnull, "w") as out:
                serve(SimOptions(target="bactobox", state=state, **options), stdout=out, stop_event=stop,
                      on_ready=lambda i: (info.update(i), ready.set()))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="bactobox sim", daemon=True)
    thread.start()
    if not ready.wait(30) or errors:
        stop.set()
        raise RuntimeError(f"simulator did not start: {errors[0] if errors else 'timeout'}")
    try:
        yield info
    finally:
        stop.set()
        thread.join(15)
