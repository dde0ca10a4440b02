"""The restore of the simulated BactoBox (bactobox.md §2.5): preflight, streamed upload, read-back.

A mixin of ``BactoBox`` (device.py) and the ``RestoreSink`` that consumes the upload. Nothing touches the disk
before the uploaded manifest matches the preflight; from the first image byte on, the SPI flash records an
incomplete restore, so a power cut from there boots into recovery.

GMI formats 1, 2 and 3 are restored (which of them a unit reads is its version's rule, §5). Format 1's one
deflated ``disk.img`` is inflated as it arrives (``GmiStreamReader``) and written from LBA 0; on a 2.x unit
that is the legacy reader (verdict ``migrate``), and the result also lists per-partition digests derived from
the restored MBR/EBR chain. A format-3 sparse
part is expanded as it arrives (``SparseExpander``): raw chunks are written where they belong, zero chunks
punch holes, and the expanded bytes are hashed on the way and checked against the manifest's (expanded)
sha256 at the end of the part.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import signal
import threading
import time
from typing import Any

from harness.errors import BadInput, Refused
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.gmi import GmiStreamError, GmiStreamReader, SparseExpander, fill_pieces
from harness.targets.bactobox.versions import restore_verdict
from simulators.bactobox import disk as D
from simulators.bactobox import profiles as P
from simulators.bactobox.backup import human_size
from simulators.bactobox.operations import ApiRefusal, Operation, OperationFailed, Pacer, iso

log = logging.getLogger(__name__)


class RestoreMixin:
    # -- restore -----------------------------------------------------------------------------------------

    def preflight(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._check_mutating("restore")
            self._check_program("restore")
            settings = self._settings_safe()
            if settings.get("liquid_in_flow_paths") == "1":
                raise ApiRefusal(409, "liquid_in_flow_paths",
                                 "Liquid is in the flow paths. Run the Empty program before you restore: the "
                                 "restore rolls back the device's record of the liquid state.")
            if body.get("confirm") is not True:
                raise ApiRefusal(428, "confirmation_required", "A restore replaces all software and data on this "
                                                               "BactoBox. Send confirm: true to proceed.")
            try:
                manifest = S.Manifest.from_dict(body.get("manifest"))
            except BadInput as exc:
                raise ApiRefusal(422, "manifest_invalid", str(exc)) from None
            size = body.get("file_size_bytes")
            announced = body.get("manifest_sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise ApiRefusal(422, "manifest_invalid", "manifest.json is invalid: /file_size_bytes is not a "
                                                          "positive integer.")
            if not isinstance(announced, str) or len(announced) != 64:
                raise ApiRefusal(422, "manifest_invalid", "manifest.json is invalid: /manifest_sha256 is not a "
                                                          "sha256.")
            if manifest.device_id != self.device_id:
                raise ApiRefusal(422, "device_mismatch",
                                 f"This GMI file was made on {manifest.device_id}. A GMI file can only be restored "
                                 f"on the BactoBox it was made on (this is {self.device_id}).",
                                 details={"gmi_device_id": manifest.device_id, "device_id": self.device_id})
            reads = tuple(self.reads_formats())
            software = self.software_version or self.flash["last_software"] or "?"
            try:
                verdict = restore_verdict(manifest.format, manifest.software_version, reads, software)
            except Refused as exc:
                code, _, message = str(exc).partition(": ")
                raise ApiRefusal(422, code, message, details={"format": manifest.format,
                                                              "reads_formats": list(reads)}) from None
            disk_size = self.disk.size
            smaller = self.faults.get("disk_smaller") if self.faults else None
            if smaller:
                disk_size = smaller["bytes"]
            if manifest.disk_size_bytes > disk_size:
                raise ApiRefusal(422, "disk_too_small",
                                 f"The GMI file holds a {human_size(manifest.disk_size_bytes)} disk, but this "
                                 f"BactoBox has {human_size(disk_size)} of storage. Restore refused.")
            op = Operation("restore", now=self.now)
            deadline_s = self.timing.get("upload_deadline_s", P.UPLOAD_DEADLINE_S)
            deadline = self.now() + dt.timedelta(seconds=deadline_s)
            op.state = "awaiting_upload"
            op.progress["phase"] = "awaiting_upload"
            op.cancellable = True
            op.extra.update(manifest=manifest, manifest_sha256=announced, file_size=size,
                            file_name=str(body.get("file_name", "")), deadline=deadline, verdict=verdict,
                            deadline_mono=time.monotonic() + deadline_s, reads=list(reads), software=software)
            self.operation = op
            op.log(f"Restore for {self.device_id} prepared: GMI format {manifest.format}, software "
                   f"{manifest.software_version}, created {manifest.created}")
            op.log(f"Verdict: {'as is' if verdict == 'as_is' else verdict}")
            op.log(f"Waiting for upload (deadline {iso(deadline)})")
            timer = threading.Timer(deadline_s, self._expire, args=(op,))
            timer.daemon = True
            timer.start()
            where = f"active slot {manifest.boot.get('active_slot')}" if manifest.format != 1 else \
                "whole disk image, layout L1"  # format 1 names no slots (§3.3)
            changes = [f"Software {self.software_version} -> {manifest.software_version} ({where})"]
            try:
                now_count = self._store().superblock()["record_count"] if self.regions else None
            except BadInput:
                now_count = None
            changes.append(f"Measurements {now_count} -> {manifest.data.get('record_count', 'as in the GMI')}")
            changes.append(f"Settings as of {manifest.created}")
            notes = [] if self.clock_valid else ["The BactoBox clock is not set."]
            return {"operation": {"id": op.id, "kind": "restore", "state": op.state, "cancellable": True},
                    "upload_url": f"/api/v1/restores/{op.id}/gmi", "upload_deadline": iso(deadline),
                    "verdict": verdict, "changes": changes, "notes": notes}

    def _expire(self, op: Operation) -> None:
        with self.lock:
            if op.state == "awaiting_upload":
                op.log(f"Upload deadline {iso(op.extra['deadline'])} passed; nothing was changed")
                op.end("expired")
                self._retire(op)

    def begin_upload(self, op_id: str, *, content_type: str, length: str | None, chunked: bool) -> RestoreSink:
        with self.lock:
            op = self.get_operation(op_id)
            if op.kind != "restore":
                raise ApiRefusal(404, "not_found", f"Operation {op_id} is not a restore.")
            if op.state == "expired" or (op.state == "awaiting_upload" and time.monotonic() > op.extra["deadline_mono"]):
                raise ApiRefusal(410, "operation_expired", f"The restore reservation expired at "
                                                           f"{iso(op.extra['deadline'])}. Start the restore again.")
            if op.state != "awaiting_upload":
                raise ApiRefusal(409, "invalid_state", f"Operation {op.id} is {op.state}; this request needs "
                                                       f"awaiting_upload.")
            if content_type.split(";")[0].strip().lower() != S.MEDIA_TYPE:
                raise ApiRefusal(415, "unsupported_media_type", "Upload the GMI as application/vnd.sbt.gmi+zip.")
            if chunked or length is None or not length.isdigit():
                raise ApiRefusal(411, "length_required", "Send the GMI with a Content-Length header.")
            if int(length) != op.extra["file_size"]:
                raise ApiRefusal(400, "size_mismatch", f"The upload is {length} bytes, but the preflight "
                                                       f"announced {op.extra['file_size']} bytes.")
            op.set_state("receiving")
            op.log(f"Receiving GMI ({human_size(int(length))})")
            return RestoreSink(self, op)

    def restart(self) -> dict[str, Any]:
        with self.lock:
            op = self.active_operation()
            if op is not None and op.state != "awaiting_upload":
                raise ApiRefusal(409, "operation_in_progress", f"A {op.kind} is in progress ({op.id}). Wait for "
                                                               f"it to complete.", retryable=True)
            expected = P.SHUTDOWN_S + P.BOOT_ATTEMPT_S + P.SERVICES_START_S
            return {"expected_downtime_s": int(expected), "boot_id": self.boot_id}

    def last_restore(self) -> dict[str, Any]:
        record = self.flash["last_restore"]
        if not record:
            raise ApiRefusal(404, "no_restore_recorded", "No restore has been recorded on this BactoBox.")
        return record


class RestoreSink:
    """The receiving side of ``PUT /restores/{id}/gmi``: fed the body in order, writes parts as they come.

    Nothing touches the disk before the manifest entry has arrived and matched the preflight; from the first
    image byte on, the SPI flash records an incomplete restore, so a power cut from there boots into recovery.
    """

    def __init__(self, device: Any, op: Operation) -> None:
        self.device = device
        self.op = op
        self.manifest: S.Manifest = op.extra["manifest"]
        self.total = op.extra["file_size"]
        self.pacer = Pacer(device.rate(P.USB_BYTES_S, "usb_mb_s"))
        self.parts = {p.file: p for p in self.manifest.parts}
        self.index = {p.file: i for i, p in enumerate(self.manifest.parts, start=1)}
        self.current: tuple[str, int, Any] | None = None  # (file, written, sha)
        self.expander: SparseExpander | None = None  # the sparse part being expanded
        self.touched = False
        power = device.faults.get("power_loss_at") if device.faults else None
        self.power_cut_at = int(power["fraction"] * self.total) if power and power["phase"] == "receiving" else None
        self.reader = GmiStreamReader(on_manifest=self._manifest, on_part_data=self._data,
                                      on_part_end=self._part_end)

    def _manifest(self, raw: bytes) -> S.Manifest:
        if hashlib.sha256(raw).hexdigest() != self.op.extra["manifest_sha256"]:
            raise GmiStreamError("manifest_mismatch", "The uploaded GMI's manifest differs from the one checked in "
                                                      "the preflight. Nothing was changed.")
        self.op.log("mimetype ok")
        self.op.log("manifest ok (matches the announced manifest)")
        if self.manifest.format == 1:
            self.op.log("Converting GMI format 1 (single disk image) with the legacy reader")
        self.op.set_state("receiving", cancellable=False)
        self.op.log("Stopping measurement services")
        self.op.log("Unmounting data partition")
        return self.manifest

    def _data(self, file: str, view: memoryview) -> None:
        part = self.parts[file]
        if self.current is None or self.current[0] != file:
            self.op.log(f"Writing {part.name} ({self.index[file]} of {len(self.parts)}, {human_size(part.size_bytes)})")
            self.current = (file, 0, hashlib.sha256())
            self.expander = None
            if part.encoding == "sparse":
                self.expander = SparseExpander(part.name, part.size_bytes, on_raw=self._write_expanded,
                                               on_fill=self._fill_expanded)
        if not self.touched:
            # The first destructive write: from here a cut leaves the disk half old, half new.
            self.device.flash["recovery"] = {"reads_formats": self.op.extra["reads"],
                                             "software": self.op.extra["software"], "operation": self.op.id}
            self.device.flash.save()
            self.touched = True
        if self.expander is not None:
            try:
                self.expander.feed(view)
            except BadInput as exc:
                raise self._malformed(part, exc) from None
            return
        self._write_expanded(self.current[1], view)

    def _write_expanded(self, offset: int, view: memoryview) -> None:
        """Bytes of the current part's image at ``offset`` (raw data, or a sparse part's raw chunk)."""
        assert self.current is not None
        file, written, sha = self.current
        self.device.disk.write(self.parts[file].start_lba * S.SECTOR + offset, view)
        sha.update(view)
        self.current = (file, written + len(view), sha)

    def _fill_expanded(self, offset: int, size: int, pattern: bytes) -> None:
        """A sparse part's zero or fill chunk: zeros become a hole in the disk image (no bytes written)."""
        assert self.current is not None
        file, written, sha = self.current
        at = self.parts[file].start_lba * S.SECTOR + offset
        if pattern == bytes(4):
            D.zero_tail(self.device.disk, at, size)
        for piece in fill_pieces(size, pattern):
            if pattern != bytes(4):
                self.device.disk.write(at, piece)
                at += len(piece)
            sha.update(piece)
        self.current = (file, written + size, sha)

    def _malformed(self, part: S.ManifestPart, exc: Exception) -> GmiStreamError:
        return GmiStreamError("part_hash_mismatch", f"{part.name}: the sparse image is malformed ({exc}). The "
                                                    f"device is in recovery mode. Restore a valid GMI file to "
                                                    f"continue.")

    def _part_end(self, file: str) -> None:
        assert self.current is not None
        part = self.parts[file]
        if self.expander is not None:
            try:
                self.expander.finish()
            except BadInput as exc:
                raise self._malformed(part, exc) from None
            self.expander = None
        got = self.current[2].hexdigest()
        self.current = None
        if got != part.sha256:
            raise GmiStreamError("part_hash_mismatch",
                                 f"{part.name}: sha256 {got} does not match the manifest ({part.sha256}). The device "
                                 f"is in recovery mode. Restore a valid GMI file to continue.")

    def _partition_digests(self) -> list[dict[str, Any]]:
        """Format 1 (migrate, §5): per-partition digests derived from the restored MBR/EBR chain, for the
        result report (the GMI states only the whole disk's)."""
        disk = self.device.disk
        out = []
        try:
            regions = D.read_regions(disk)
        except (BadInput, OSError) as exc:
            self.op.log(f"No partition digests: {exc}", "WARN")
            return out
        for r in regions:
            sha, _ = disk.digest(r.offset, r.size)
            out.append({"name": r.name, "start_lba": r.start_lba, "size_bytes": r.size, "sha256": sha})
        return out

    def feed(self, data: bytes | memoryview) -> None:
        """Take the next piece of the body (called from a worker thread, in order)."""
        self.reader.feed(data)
        received = self.reader.received
        if self.power_cut_at is not None and received >= self.power_cut_at:
            log.warning("fault power_loss_at: cutting power at %d of %d bytes", received, self.total)
            os.kill(os.getpid(), signal.SIGKILL)
        self.pacer.advance(len(data))
        self.op.set_progress(90.0 * received / self.total, done=received, total=self.total, step=1, steps=2)

    def fail(self, code: str, message: str) -> None:
        """The upload ended badly: a device that was written to stays in recovery mode."""
        device = self.device
        with device.lock:
            if self.touched:
                device.mode = "recovery"
                device.software_version = None
            self.op.fail(code, message, line_prefix="Restore failed")
            device._retire(self.op)

    def finish(self) -> dict[str, Any]:
        """The whole body arrived: check the tail, answer 202 ``verifying``, verify in the background."""
        self.reader.finish()
        self.op.set_state("verifying")
        self.op.set_progress(90.0, step=2)
        threading.Thread(target=self._verify, name=f"verify {self.op.id}", daemon=True).start()
        return self.op.to_json()

    def _verify(self) -> None:
        device, op = self.device, self.op
        parts = []
        pacer = Pacer(device.rate(P.DISK_READ_BYTES_S, "disk_read_mb_s"))
        total = sum(p.size_bytes for p in self.manifest.parts)
        done = 0
        try:
            device.disk.sync()
            for i, part in enumerate(self.manifest.parts, start=1):
                op.log(f"Verifying {part.name} ({i} of {len(self.manifest.parts)})")
                sha = hashlib.sha256()
                for chunk in device.disk.chunks(part.start_lba * S.SECTOR, part.size_bytes):
                    sha.update(chunk)
                    done += len(chunk)
                    pacer.advance(len(chunk))
                    op.set_progress(90.0 + 10.0 * done / total)
                    if op.extra.get("powered_off"):
                        return
                ok = sha.hexdigest() == part.sha256
                parts.append({"name": part.name, "sha256": sha.hexdigest(), "ok": ok})
                if not ok:
                    raise OperationFailed("verify_failed", f"{part.name}: read back sha256 does not match the "
                                                           f"manifest.")
                op.log(f"{part.name}: sha256 ok")
            tail = device.disk.size - self.manifest.disk_size_bytes
            result = {"verdict": op.extra["verdict"], "parts": parts, "restart_required": True,
                      "unallocated_tail_bytes": tail, "software_version": self.manifest.software_version}
            if self.manifest.format == 1:
                result["partitions"] = self._partition_digests()
            with device.lock:
                device.flash["recovery"] = None
                device.flash["last_restore"] = {
                    "operation": op.id, "finished": iso(device.now()), "state": "succeeded",
                    "gmi": {"file_name": op.extra["file_name"], "format": self.manifest.format,
                            "software_version": self.manifest.software_version, "created": self.manifest.created},
                    "result": result,
                    "log": [line.text_line() for line in op.log_after(0)]
                    + [f"{iso(device.now(), ms=True)} INFO Restore successful. Restart your BactoBox before "
                       f"further use."]}
                device.flash.save()
                device.mode = "restart_required"
                op.succeed(result, "Restore successful. Restart your BactoBox before further use.")
                device._retire(op)
        except OperationFailed as exc:
            self.fail(exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001
            log.exception("restore verification failed")
            self.fail("write_error", f"The device could not read back its storage ({exc}).")
