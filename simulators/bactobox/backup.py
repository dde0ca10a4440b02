"""The backup of the simulated BactoBox (bactobox.md §2.4): preparing pass, the one download, streamed.

A mixin of ``BactoBox`` (device.py): it uses the device's lock, disk, clock and operation bookkeeping. The GMI
is never stored: its layout is planned from the preparing pass (sizes, CRC-32s, manifest), and the bytes are
produced from the disk image chunk by chunk as the client reads them.

Format 3 (software 3.1.0): the data partition goes into the GMI as ``parts/data.sparse`` (§4.6). The
preparing pass hashes the whole partition (the manifest's ``sha256`` is the expanded image's) and finds the
end of its last non-zero block; the sparse image is one raw chunk up to there and one zero chunk for the
rest, and a second read of the raw part gives the stored entry's CRC-32 and sha256. Streaming sends the
raw chunk from the disk; the zeros are never read again.

Format 1 (software 1.8.4): one part, the whole disk. The preparing pass hashes it (sha256 for the manifest,
CRC-32 for the re-check); streaming deflates it (``stream_gmi_v1``) as the client reads, so there is no plan
and no Content-Length: the response is chunked, and progress goes by disk bytes read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

from harness.errors import BadInput
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.gmi import SparseLayout, ZipPlan, gmi_entries, stream_gmi, stream_gmi_v1
from simulators.bactobox import disk as D
from simulators.bactobox import profiles as P
from simulators.bactobox.operations import ApiRefusal, Operation, Pacer, iso
from simulators.core.http_faults import InjectedDrop

log = logging.getLogger(__name__)

SPARSE_PARTS = {3: ("data",)}  # by GMI format: the parts written as sparse images
_ZERO_CHUNK = bytes(D.CHUNK)
_ZERO_BLOCK = bytes(S.SPARSE_BLOCK)


def used_end(chunk: bytes, offset: int, used: int) -> int:
    """The end of the last non-zero block, given one more chunk of a partition at ``offset`` (chunks start
    on a block boundary) and the end found so far. An all-zero chunk costs one memcmp."""
    if chunk == (_ZERO_CHUNK if len(chunk) == len(_ZERO_CHUNK) else bytes(len(chunk))):
        return used
    block = S.SPARSE_BLOCK
    end = -(-len(chunk) // block) * block
    while end > 0:
        piece = chunk[end - block:end]
        if piece != _ZERO_BLOCK[:len(piece)]:
            break
        end -= block
    return max(used, offset + end)


def human_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class BackupMixin:
    # -- backup ------------------------------------------------------------------------------------------

    def file_name(self) -> str:
        return f"backup-of-{self.device_id}-{self.now():%Y-%m-%d}.gmi"

    def estimate(self) -> dict[str, Any]:
        with self.lock:
            if not self.regions:
                raise ApiRefusal(409, "recovery_mode", "The BactoBox is in recovery mode after an incomplete "
                                                       "restore. Restore a GMI file to continue.")
            total = sum(r.size for r in self.regions)
            if self.version_info and self.version_info.writes_format == 1:
                total = self.disk.size  # the whole disk, deflated: at most its size (and the ZIP records)
            if self.version_info and "data" in SPARSE_PARTS.get(self.version_info.writes_format, ()):
                # The sparse data part holds what the store has written (§4.6): estimated from its end.
                try:
                    end = self._store().superblock()["end_offset"]
                except BadInput:
                    end = D.region(self.regions, "data").size
                data = D.region(self.regions, "data")
                total += SparseLayout.used_prefix(end, data.size).stored_size - data.size
            usb = P.USB_BYTES_S * self.disk.size / P.NOMINAL_DISK_BYTES
            read = P.DISK_READ_BYTES_S * self.disk.size / P.NOMINAL_DISK_BYTES
            return {"estimated_size_bytes": total + 64 * 1024, "estimated_duration_s": int(total / read + total / usb),
                    "format": self.version_info.writes_format if self.version_info else None}

    def start_backup(self) -> tuple[Operation, str]:
        with self.lock:
            self._check_mutating("backup")
            self._check_program("backup")
            op = Operation("backup", now=self.now)
            name = self.file_name()
            op.extra.update(file_name=name, consumed=False, download=threading.Event(),
                            created=self.now().replace(microsecond=0))
            self.operation = op
            op.log(f"Backup of {self.device_id} started (software {self.software_version})")
            thread = threading.Thread(target=self._run_backup, args=(op,), name=f"backup {op.id}", daemon=True)
            thread.start()
            return op, name

    def _run_backup(self, op: Operation) -> None:
        try:
            op.log("No program is running")
            op.log("Stopping measurement services")
            op.log("Freezing data partition")
            self.frozen = True
            fmt = self.version_info.writes_format
            layout = D.layout_of(self.regions)
            op.log(f"Partition table: {len(self.regions) - 1} partitions, layout {layout}, disk "
                   f"{human_size(self.disk.size)}")
            # Format 1 images the whole disk, LBA 0 to the end (§3.3): one part, EBRs and gaps included.
            regions = [D.Region("disk", 0, self.disk.size)] if fmt == 1 else self.regions
            total = sum(r.size for r in regions)
            pacer = Pacer(self.rate(P.DISK_READ_BYTES_S, "disk_read_mb_s"))
            sparse = SPARSE_PARTS.get(fmt, ())
            # name -> (sha256 of the partition, CRC-32 of its ZIP entry); sparse parts also get a layout
            # and the sha256 of their stored bytes.
            digests: dict[str, tuple[str, int]] = {}
            layouts: dict[str, tuple[SparseLayout, str]] = {}
            done = 0
            for i, r in enumerate(regions, start=1):
                op.log(f"Hashing {r.name} ({i} of {len(regions)}, {human_size(r.size)})")
                sha = hashlib.sha256()
                crc = 0
                used = 0
                pos = 0
                for chunk in self.disk.chunks(r.offset, r.size):
                    sha.update(chunk)
                    if r.name in sparse:
                        used = used_end(chunk, pos, used)
                    else:
                        crc = zlib.crc32(chunk, crc)
                    pos += len(chunk)
                    done += len(chunk)
                    pacer.advance(len(chunk))
                    op.set_progress(5.0 * done / total, done=done, total=total, step=1, steps=6)
                    if op.extra.get("powered_off"):
                        return
                if r.name in sparse:
                    layout = SparseLayout.used_prefix(used, r.size)
                    stored = hashlib.sha256()
                    for piece in layout.stream(lambda at, n, r=r: self.disk.chunks(r.offset + at, n)):
                        stored.update(piece)
                        crc = zlib.crc32(piece, crc)
                        pacer.advance(len(piece))
                        if op.extra.get("powered_off"):
                            return
                    layouts[r.name] = (layout, stored.hexdigest())
                digests[r.name] = (sha.hexdigest(), crc)
            manifest = self._manifest_v1(op, digests) if fmt == 1 else self._manifest(op, regions, digests, layouts)
            manifest_bytes = manifest.to_json()
            force64 = bool(self.faults and self.faults.get("force_zip64"))
            # Format 1 is deflated while it is sent: no plan, and no size before the end (chunked download).
            plan = None if fmt == 1 else ZipPlan(
                gmi_entries(manifest_bytes, [(p, digests[p.name][1]) for p in manifest.parts]),
                modified=op.extra["created"], force_zip64=force64)
            size = plan.total_size if plan else None
            op.extra.update(plan=plan, manifest_bytes=manifest_bytes, digests=digests, layouts=layouts,
                            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(), regions=regions,
                            format=fmt, force_zip64=force64)
            name = op.extra["file_name"]
            op.log(f"GMI ready: {name} ({human_size(size) if size else 'disk.img deflated while sent'})")
            op.set_state("ready")
            op.set_progress(5.0, done=0, total=size, step=2)
            if size is None:
                with op.lock:  # the hash pass's total was the disk; the file's total is unknown until sent
                    op.progress["total_bytes"] = None
            op.announce("artifact", {"url": f"/api/v1/operations/{op.id}/artifact", "file_name": name,
                                     "size_bytes": size})
            op.log("Waiting for the download to begin")
            timeout = self.timing.get("download_start_timeout_s")
            if timeout is None:
                # A timeout, not a delay: fast mode keeps the real 300 s (nothing waits on it unless it fires).
                timeout = self.clock.real(P.DOWNLOAD_START_TIMEOUT_S) if self.clock.time_scale else \
                    P.DOWNLOAD_START_TIMEOUT_S
            if not op.extra["download"].wait(timeout):
                with op.lock:
                    if op.extra["consumed"]:
                        return
                    op.extra["consumed"] = True
                self._finalize_backup(op)
                op.fail("download_not_started", f"The download did not begin within "
                                                f"{int(P.DOWNLOAD_START_TIMEOUT_S)} s.", line_prefix="Backup failed")
                self._retire(op)
        except Exception as exc:  # noqa: BLE001 - the operation reports it; the thread has nobody to raise to
            log.exception("backup failed")
            self._finalize_backup(op)
            op.fail("write_error", f"The device could not read its storage ({exc}).", line_prefix="Backup failed")
            self._retire(op)

    def _manifest(self, op: Operation, regions: list[D.Region], digests: dict[str, tuple[str, int]],
                  layouts: dict[str, tuple[SparseLayout, str]]) -> S.Manifest:
        env = D.read_env(self.disk, D.region(regions, "boot"))
        values = env.current.values if env else {}
        store = self._store()
        sb = store.superblock()
        last = None
        if sb["record_count"]:
            for rec in store.records(after_id=sb["next_record_id"] - 2, limit=1):
                last = rec
        parts = []
        for r in regions:
            part = S.ManifestPart(
                name=r.name, file=f"parts/{r.name}.img", start_lba=r.start_lba, size_bytes=r.size,
                sha256=digests[r.name][0], mbr_index=r.mbr_index,
                type=f"0x{r.type:02x}" if r.type is not None else None)
            if r.name in layouts:
                # Format 3 (§3.3): size_bytes and sha256 describe the expanded partition, the stored_* the entry.
                layout, stored_sha = layouts[r.name]
                part.file, part.encoding = f"parts/{r.name}.sparse", "sparse"
                part.stored_size_bytes, part.stored_sha256 = layout.stored_size, stored_sha
            parts.append(part)
        signature = int.from_bytes(self.disk.read(440, 4), "little")
        info = self.version_info
        return S.Manifest(
            format=info.writes_format, device_id=self.device_id, software_version=self.software_version or "",
            created=iso(op.extra["created"]) or "", clock_valid=self.clock_valid,
            producer=f"bactobox-backup {self.software_version}",
            disk={"size_bytes": self.disk.size, "sector_size": S.SECTOR, "layout": "L2",
                  "mbr_signature": f"0x{signature:08x}"},
            boot={"env_format": int(values.get("env_format", "1") or 1), "active_slot": values.get("active_slot"),
                  "boot_count": int(values.get("boot_count", "0") or 0),
                  "slots": {s: values.get(f"sw_version_{s}") for s in ("system0", "system1")}},
            data={"store_version": 2, "record_count": sb["record_count"],
                  "last_record_id": sb["next_record_id"] - 1,
                  "last_record_started": iso(dt.datetime.fromtimestamp(last["started_unix_ms"] / 1000, dt.UTC))
                  if last else None},
            parts=parts, total_size_bytes=sum(r.size for r in regions))

    def _manifest_v1(self, op: Operation, digests: dict[str, tuple[str, int]]) -> S.Manifest:
        """Format 1 (§3.3): no media type, boot, data or clock fields; one part, the whole disk."""
        size = self.disk.size
        return S.Manifest(
            format=1, device_id=self.device_id, software_version=self.software_version or "",
            created=iso(op.extra["created"]) or "", disk={"size_bytes": size, "sector_size": S.SECTOR, "layout": "L1"},
            parts=[S.ManifestPart(name="disk", file="disk.img", start_lba=0, size_bytes=size,
                                  sha256=digests["disk"][0])], total_size_bytes=size)

    def open_artifact(self, op_id: str) -> tuple[Operation, dict[str, str], Iterator[bytes]]:
        """The one download of a backup's GMI: headers and the byte stream (§2.4 artifact)."""
        with self.lock:
            op = self.get_operation(op_id)
            if op.kind != "backup":
                raise ApiRefusal(404, "not_found", f"Operation {op_id} has no artifact.")
            with op.lock:
                if op.state == "failed":
                    raise ApiRefusal(410, "operation_failed", f"The backup failed: {op.error['message']}")
                if op.extra.get("consumed"):
                    raise ApiRefusal(410, "artifact_consumed", "This GMI was already downloaded. Start a new "
                                                               "backup to get another copy.")
                if op.state != "ready":
                    raise ApiRefusal(409, "artifact_not_ready", "The GMI is not ready yet.",
                                     headers={"Retry-After": "1"}, retryable=True)
                op.extra["consumed"] = True
            op.extra["download"].set()
            plan: ZipPlan | None = op.extra["plan"]
            headers = {
                "Content-Type": S.MEDIA_TYPE,
                "Content-Disposition": f'attachment; filename="{op.extra["file_name"]}"',
                "X-GMI-Format": str(op.extra["format"]),
                "X-GMI-Manifest-SHA256": op.extra["manifest_sha256"],
            }
            if plan is not None:  # format 1 has no Content-Length: the response is chunked (§2.4)
                headers["Content-Length"] = str(plan.total_size)
            return op, headers, self._stream_backup(op)

    def _stream_backup(self, op: Operation) -> Iterator[bytes]:
        plan: ZipPlan | None = op.extra["plan"]
        regions: list[D.Region] = op.extra["regions"]
        digests = op.extra["digests"]
        layouts: dict[str, tuple[SparseLayout, str]] = op.extra["layouts"]
        # Progress and disconnect_at go by file bytes when the size is known; a format-1 stream's size is
        # known only at its end, so by the disk bytes read.
        measure = plan.total_size if plan else self.disk.size
        pacer = Pacer(self.rate(P.USB_BYTES_S, "usb_mb_s"))
        faults = self.faults
        cut = faults.get("disconnect_at") if faults else None
        cut_at = int(cut["fraction"] * measure) if cut else None
        flip = faults.get("flip_bit") if faults else None
        changed = faults.get("source_changed_at") if faults else None
        t0 = time.monotonic()
        counts = {"sent": 0, "read": 0}

        def source(r: D.Region, index: int, size: int) -> Iterator[bytes]:
            """One part's bytes from the disk, re-checked while sent against the preparing pass (§3.4): with
            the CRC-32 of the preparing pass, which costs a third of a sha256."""
            op.log(f"Sending {r.name} ({index} of {len(regions)}, {human_size(size)})")
            crc = 0
            if r.name in layouts:  # the stored bytes of a sparse part: headers and the raw chunk, no zeros
                chunks = layouts[r.name][0].stream(lambda at, n: self.disk.chunks(r.offset + at, n))
            else:
                chunks = self.disk.chunks(r.offset, r.size)
            for chunk in chunks:
                crc = zlib.crc32(chunk, crc)
                counts["read"] += len(chunk)
                yield chunk
            if crc != digests[r.name][1] or (changed and changed.get("part") == r.name):
                op.extra["source_changed"] = r.name
                raise _SourceChanged(r.name)

        def body() -> Iterator[bytes]:
            if plan is None:
                disk = regions[0]
                yield from stream_gmi_v1(op.extra["manifest_bytes"], source(disk, 1, disk.size),
                                         disk_size=disk.size, modified=op.extra["created"],
                                         force_zip64=op.extra["force_zip64"])
            else:
                yield from stream_gmi(plan, op.extra["manifest_bytes"],
                                      lambda i: source(regions[i - 2], i - 1, plan.entries[i].size))

        def run() -> Iterator[bytes]:
            op.set_state("streaming")
            op.log("Sending manifest")
            for chunk in body():
                start = counts["sent"]
                if flip is not None and start <= flip["offset"] < start + len(chunk):
                    data = bytearray(chunk)
                    data[flip["offset"] - start] ^= 1 << (flip["bit"] % 8)
                    chunk = bytes(data)
                position = start + len(chunk) if plan else counts["read"]
                if cut_at is not None and position >= cut_at:
                    raise InjectedDrop(f"disconnect_at {cut['fraction']}")
                pacer.advance(len(chunk))
                counts["sent"] += len(chunk)
                op.set_progress(5.0 + 94.0 * min(position, measure) / measure, done=counts["sent"],
                                total=plan.total_size if plan else None, step=3)
                yield chunk
                if op.extra.get("powered_off"):
                    raise InjectedDrop("power off")

        try:
            yield from run()
        except _SourceChanged as exc:
            self._finalize_backup(op)
            op.fail("source_changed", f"{exc} changed while it was sent; the stream was cut before the central "
                                      f"directory. Start a new backup.", line_prefix="Backup failed")
            self._retire(op)
            return  # the body ends before the central directory: the client sees an invalid ZIP
        except (GeneratorExit, InjectedDrop):
            self._finalize_backup(op)
            op.fail("transfer_interrupted", "The download was interrupted. Start a new backup.",
                    line_prefix="Backup failed")
            self._retire(op)
            raise
        sent = counts["sent"]
        op.set_state("finalizing")
        op.set_progress(99.0, done=sent)
        took = time.monotonic() - t0
        op.log(f"Download complete ({human_size(sent)} in {took:.1f} s)")
        self._finalize_backup(op)
        op.succeed({"file_name": op.extra["file_name"], "size_bytes": sent,
                    "manifest_sha256": op.extra["manifest_sha256"], "format": op.extra["format"]},
                   "Backup successful")
        self._retire(op)

    def _finalize_backup(self, op: Operation) -> None:
        if self.frozen:
            op.log("Restarting measurement services")
        self.frozen = False


class _SourceChanged(Exception):
    pass
