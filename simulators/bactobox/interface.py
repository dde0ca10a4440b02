"""The simulated BactoBox's HTTP API (bactobox.md §2) on the shared HTTP simulator core.

``create(options)`` is what ``harness sim run bactobox`` calls. The device API is served under ``/api/v1``
on ``http://127.0.0.1:PORT`` (no TLS: the real unit sits behind a USB network link); with ``--username``
and ``--password-file`` every API request needs ``Authorization: Bearer <the file's token>``. Every answer
carries ``X-Boot-Id`` and ``X-Device-Id``; errors have the shape of §2.8.

Streaming: the backup GMI is produced on the fly from the sparse disk image in 4 MiB reads (each read and
hash runs on a worker thread, so hashing overlaps sending) with an exact ``Content-Length``; the restore
upload is consumed as it arrives, in pieces of at least 1 MiB handed to a worker thread that writes them to
the disk. Neither side ever holds an image in memory.

Control routes beyond the core's (``/_sim/state``, ``/faults``, ``/power``, ``/reset`` = reboot, ``/firmware``
= software update): ``POST /_sim/factory-reset {profile, device_id, version, seed}``, ``/upgrade {version}``,
``/measurements {count}``, ``/buttons/{measure|stop|empty|clean}``, ``/liquid {present}``,
``/clock {now, valid}``, ``/power-cycle {seconds}``, ``/timing {usb_mb_s, disk_read_mb_s, …}``, and
``GET /_sim/digest`` (per-part sha256 and the parsed boot environment, for white-box checks).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from harness.errors import BadInput
from harness.targets.bactobox.gmi import GmiStreamError
from simulators.bactobox import disk as D
from simulators.bactobox import profiles as P
from simulators.bactobox.device import BactoBox
from simulators.bactobox.operations import ApiRefusal, Operation
from simulators.core.control import ControlError, ControlPlane, require
from simulators.core.faults import Param
from simulators.core.http import HttpSimulator
from simulators.core.options import SimOptions

log = logging.getLogger(__name__)

API = "/api/v1"
UPLOAD_PIECE = 1 << 20  # hand the upload to the device thread in pieces of at least this size
SSE_POLL_S = 0.05
SSE_PROGRESS_S = 0.5  # at most 2 progress events per second (§2.6)
SSE_KEEPALIVE_S = 15.0

BACTOBOX_FAULTS: dict[str, dict[str, Param]] = {
    "disconnect_at": {"fraction": Param(float)},  # BB-F02
    "source_changed_at": {"part": Param(str)},  # BB-F04
    "flip_bit": {"offset": Param(int), "bit": Param(int, 0)},  # BB-F05
    "power_loss_at": {"phase": Param(str, "receiving"), "fraction": Param(float, 0.5)},  # BB-F12 (restore)
    "slot_unbootable": {"slot": Param(str)},  # BB-F13
    "slow_boot": {"factor": Param(float)},  # BB-F14
    "disk_smaller": {"bytes": Param(int)},  # BB-F18
    "force_zip64": {},  # BB-F19
    "restart_required_pending": {},  # BB-F22
    "sse_drop_every": {"n": Param(int)},  # BB-F17
}


class BactoBoxSimulator(HttpSimulator):
    target = "bactobox"
    default_username = "access"
    default_password = "usb-link"  # unused unless --username/--password-file: the USB link has no auth
    tls_default = False
    extra_fault_kinds = BACTOBOX_FAULTS
    reboot_down_s = P.SHUTDOWN_S + P.BOOT_ATTEMPT_S

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        self.auth_required = options.username is not None
        self.device = BactoBox(self.state_dir, version=options.firmware, profile=options.profile,
                               device_id=options.device_id, clock=self.clock, faults=self.faults)
        self._boot_gen = 0
        self.unavailable: Response | None = self._starting()  # from the moment the listener opens until services are up

    # -- HttpSimulator ----------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        dev = self.device
        return {"device_id": dev.device_id, "firmware": dev.software_version or dev.flash["last_software"],
                "profile": dev.flash["profile"]}

    def error_response(self, status: int, code: str, message: str,
                       headers: dict[str, str] | None = None) -> Response:
        body = {"error": {"code": code, "message": message, "details": {},
                          "retryable": status in (429, 502, 503, 504)}}
        return JSONResponse(body, status_code=status, headers=dict(headers or {}))

    def _starting(self, seconds: int | None = None) -> Response:
        if seconds is None:
            seconds = max(0, round(self.device.real(P.SERVICES_START_S, P.FAST_SERVICES_START_S)))
        return self.error_response(503, "starting", f"The BactoBox is starting. Try again in {max(1, seconds)} "
                                                    f"seconds.", {"Retry-After": str(seconds)})

    def on_boot(self) -> None:
        # The gate was closed before the listener opened (on_shutdown, __init__): 503 until services are up.
        self.unavailable = self._starting()
        slot = self.faults.get("slot_unbootable")
        attempts = self.device.boot(unbootable=slot["slot"] if slot else None)
        slow = self.faults.get("slow_boot")
        factor = slow["factor"] if slow else 1.0
        # Extra boot attempts (A/B fallback) are spent answering 503 rather than refusing connections: the
        # listener is already open when this hook runs [modelled].
        starting = factor * self.device.real(P.SERVICES_START_S + (attempts - 1) * P.BOOT_ATTEMPT_S,
                                             P.FAST_SERVICES_START_S + (attempts - 1) * P.FAST_BOOT_ATTEMPT_S)
        self._boot_gen += 1
        gen = self._boot_gen
        if starting <= 0:
            self.device.confirm_boot()
            self.unavailable = None
            return
        self.unavailable = self._starting(max(0, round(starting)))

        def services_up() -> None:
            time.sleep(starting)
            if gen == self._boot_gen:
                self.device.confirm_boot()
                self.unavailable = None

        threading.Thread(target=services_up, name="bactobox services", daemon=True).start()

    def on_shutdown(self) -> None:
        # The listener is closed now; when it opens again the unit is booting, not serving (no window in
        # which the old boot's state could answer).
        self._boot_gen += 1
        self.unavailable = self._starting()
        self.device.shutdown()

    def stop(self) -> None:
        super().stop()
        self.device.disk.close()

    def state(self) -> dict[str, Any]:
        dev = self.device
        out = dev.device_json()
        out.update(profile=dev.flash["profile"], disk_path=str(dev.disk.path), storage_sha256=dev.storage_sha256(),
                   recovery_marker=dev.flash["recovery"], button_log=list(dev.button_log),
                   timing=dict(dev.timing), operations=dev.operations_json())
        return out

    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        """A normal software update (keeps data), then the unit restarts. ``profile`` cannot change a disk."""
        result = self.device.upgrade(firmware)
        # The updated unit restarts: from here its services are down ([modelled] 503 starting, then the
        # restart's phases), so no request can reach the old boot once the update is in.
        self._boot_gen += 1
        self.unavailable = self._starting()
        self.reboot_later(0.05)
        return {**result, "rebooting": True}

    def faults_changed(self) -> None:
        super().faults_changed()
        if self.faults.take("restart_required_pending") is not None:
            with self.device.lock:
                self.device.mode = "restart_required"

    def register_routes(self, plane: ControlPlane) -> None:
        super().register_routes(plane)
        plane.add("POST", "/factory-reset", self._factory_reset)
        plane.add("POST", "/upgrade", lambda body: self.set_firmware(require(body, "version", str)))
        plane.add("POST", "/measurements", self._add_measurements)
        for name in ("measure", "stop", "empty", "clean"):
            plane.add("POST", f"/buttons/{name}", lambda body, n=name: self.device.press_button(n))
        plane.add("POST", "/liquid", self._liquid)
        plane.add("POST", "/clock", self._clock)
        plane.add("POST", "/power-cycle", lambda body: self.power(False, float(body.get("seconds") or 0.2)))
        plane.add("POST", "/timing", self._timing)
        plane.add("GET", "/digest", lambda body: self._digest())

    # -- control routes ---------------------------------------------------------------------------------

    def _factory_reset(self, body: dict[str, Any]) -> dict[str, Any]:
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ControlError("field 'seed' must be an integer")
        self.device.factory_reset(profile=body.get("profile"), device_id=body.get("device_id"),
                                  version=body.get("version"), seed=seed)
        self.reboot_later(0.05)
        return {"rebooting": True, **self.identity()}

    def _add_measurements(self, body: dict[str, Any]) -> dict[str, Any]:
        count = require(body, "count", int)
        size = body.get("payload_bytes", 4096)
        if not 0 < count <= 100_000 or not isinstance(size, int) or not 0 <= size <= 1 << 20:
            raise ControlError("count must be 1..100000 and payload_bytes 0..1048576")
        dev = self.device
        with dev.lock:
            if dev.active_operation() is not None or dev.mode != "normal":
                raise ControlError(f"the unit is {dev.current_mode()}", 409)
            store = dev._store()
            now_ms = int(dev.now().timestamp() * 1000)
            for _ in range(count):
                rid = store.superblock()["next_record_id"]
                store.append(program=1, flags=1, started_ms=now_ms, duration_ms=90_000, sampling_time_s=30,
                             dilution=1.0, label=f"sim {rid}",
                             payload=D.measurement_payload(dev.flash["seed"], rid, size))
            return {"record_count": store.superblock()["record_count"]}

    def _liquid(self, body: dict[str, Any]) -> dict[str, Any]:
        present = require(body, "present", bool)
        dev = self.device
        with dev.lock:
            store = dev._store()
            settings = store.settings()
            settings["liquid_in_flow_paths"] = "1" if present else "0"
            store.write_settings(settings)
        return {"liquid_in_flow_paths": present}

    def _clock(self, body: dict[str, Any]) -> dict[str, Any]:
        valid = body.get("valid", True)
        now = body.get("now")
        if not isinstance(valid, bool) or (now is not None and not isinstance(now, str)):
            raise ControlError("fields: now (RFC 3339 string or null), valid (bool)")
        self.device.set_clock(now, valid)
        return {"now": self.device.now().isoformat(), "valid": valid}

    def _timing(self, body: dict[str, Any]) -> dict[str, Any]:
        knobs = ("usb_mb_s", "disk_read_mb_s", "disk_write_mb_s", "download_start_timeout_s", "upload_deadline_s")
        for key, value in body.items():
            if key == "time_scale":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                    raise ControlError("time_scale must be a number > 0 or null")
                self.clock.time_scale = None if value is None else float(value)
            elif key in knobs:
                if value is None:
                    self.device.timing.pop(key, None)
                elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise ControlError(f"{key} must be a number > 0 or null")
                else:
                    self.device.timing[key] = float(value)
            else:
                raise ControlError(f"unknown timing knob {key!r} (known: time_scale, {', '.join(knobs)})")
        return {"time_scale": self.clock.time_scale, **self.device.timing}

    def _digest(self) -> dict[str, Any]:
        dev = self.device
        with dev.lock:
            try:
                regions = D.read_regions(dev.disk)
            except BadInput as exc:
                return {"parts": [], "env": None, "problem": str(exc)}
            parts = [{"name": r.name, "start_lba": r.start_lba, "size_bytes": r.size,
                      "sha256": dev.disk.digest(r.offset, r.size)[0]} for r in regions]
            env = D.read_env(dev.disk, D.region(regions, "boot"))
            return {"parts": parts, "env": None if env is None else {
                "format": env.current.format, "copy": env.current and env.copy, "flags": env.current.flags,
                "values": env.current.values}}

    # -- the device API ---------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        r = self._route
        return [
            r("GET", "/device", self.get_device, restart_ok=True, recovery_ok=True),
            r("GET", "/programs", self.get_programs),
            r("POST", "/programs/{name}", self.post_program),
            r("GET", "/settings", self.get_settings),
            r("PUT", "/settings", self.put_settings),
            r("GET", "/measurements", self.get_measurements, restart_ok=True),
            r("GET", "/backup/estimate", self.get_estimate),
            r("POST", "/backups", self.post_backup),
            r("GET", "/operations", self.get_operations, restart_ok=True, recovery_ok=True),
            r("GET", "/operations/last-restore", self.get_last_restore, restart_ok=True, recovery_ok=True),
            r("GET", "/operations/{op}", self.get_operation, restart_ok=True, recovery_ok=True),
            r("DELETE", "/operations/{op}", self.delete_operation, restart_ok=True, recovery_ok=True),
            r("GET", "/operations/{op}/log", self.get_log, restart_ok=True, recovery_ok=True),
            r("GET", "/operations/{op}/events", self.get_events, restart_ok=True, recovery_ok=True),
            r("GET", "/operations/{op}/artifact", self.get_artifact, restart_ok=True),
            r("POST", "/restores", self.post_restore, recovery_ok=True),
            r("PUT", "/restores/{op}/gmi", self.put_gmi, recovery_ok=True),
            r("POST", "/storage/digest", self.post_digest),
            r("POST", "/system/restart", self.post_restart, restart_ok=True, recovery_ok=True),
        ]

    def _route(self, method: str, path: str, handler: Callable[[Request], Awaitable[Response]], *,
               restart_ok: bool = False, recovery_ok: bool = False) -> Route:
        async def endpoint(request: Request) -> Response:
            refusal = self._gate(request, restart_ok=restart_ok, recovery_ok=recovery_ok)
            try:
                if refusal is not None:
                    raise refusal
                response = await handler(request)
            except ApiRefusal as exc:
                response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
            response.headers["X-Boot-Id"] = self.device.boot_id
            response.headers["X-Device-Id"] = self.device.device_id
            return response

        return Route(API + path, endpoint, methods=[method])

    def _gate(self, request: Request, *, restart_ok: bool, recovery_ok: bool) -> ApiRefusal | None:
        if self.auth_required:
            given = request.headers.get("authorization", "")
            want = f"Bearer {self.credentials.password}"
            if not hmac.compare_digest(given.encode(), want.encode()):
                return ApiRefusal(401, "unauthenticated", "Authentication required.",
                                  headers={"WWW-Authenticate": "Bearer"})
        mode = self.device.mode
        if mode == "restart_required" and not restart_ok:
            return ApiRefusal(409, "restart_required", "A restore has completed. Restart your BactoBox before "
                                                       "further use.")
        if mode == "recovery" and not recovery_ok:
            return ApiRefusal(409, "recovery_mode", "The BactoBox is in recovery mode after an incomplete restore. "
                                                   "Restore a GMI file to continue.")
        return None

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(data, status_code=status, headers=headers,
                            media_type="application/json; charset=utf-8")

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiRefusal(400, "invalid_json", "The request body is not JSON.") from None
        if not isinstance(body, dict):
            raise ApiRefusal(400, "invalid_json", "The request body must be a JSON object.")
        return body

    async def get_device(self, request: Request) -> Response:
        return self._json(await run_in_threadpool(self.device.device_json))

    async def get_programs(self, request: Request) -> Response:
        return self._json(self.device.program_json())

    async def post_program(self, request: Request) -> Response:
        body = await self._body(request)
        result = await run_in_threadpool(self.device.start_program, request.path_params["name"], body)
        return self._json(result, 202)

    async def get_settings(self, request: Request) -> Response:
        return self._json(await run_in_threadpool(self.device.settings))

    async def put_settings(self, request: Request) -> Response:
        body = await self._body(request)
        return self._json(await run_in_threadpool(self.device.change_settings, body))

    async def get_measurements(self, request: Request) -> Response:
        try:
            after = int(request.query_params.get("after_id", 0))
            limit = min(int(request.query_params.get("limit", 1000)), 10_000)
        except ValueError:
            raise ApiRefusal(400, "invalid_parameter", "after_id and limit must be integers.") from None
        items = await run_in_threadpool(self.device.measurements, after, limit)
        return self._json({"measurements": items, "count": len(items)})

    async def get_estimate(self, request: Request) -> Response:
        return self._json(self.device.estimate())

    async def post_backup(self, request: Request) -> Response:
        op, name = await run_in_threadpool(self.device.start_backup)
        location = f"{API}/operations/{op.id}"
        return self._json({"operation": op.to_json(), "file_name": name}, 202, {"Location": location})

    async def get_operations(self, request: Request) -> Response:
        return self._json(self.device.operations_json())

    async def get_last_restore(self, request: Request) -> Response:
        return self._json(self.device.last_restore())

    def _op(self, request: Request) -> Operation:
        return self.device.get_operation(request.path_params["op"])

    async def get_operation(self, request: Request) -> Response:
        return self._json(self._op(request).to_json())

    async def delete_operation(self, request: Request) -> Response:
        await run_in_threadpool(self.device.delete_operation, request.path_params["op"])
        return Response(status_code=204)

    async def get_log(self, request: Request) -> Response:
        op = self._op(request)
        try:
            after = int(request.query_params.get("after", 0))
        except ValueError:
            raise ApiRefusal(400, "invalid_parameter", "after must be an integer.") from None
        lines = op.log_after(after)
        text = "".join(line.text_line() + "\n" for line in lines)
        return PlainTextResponse(text, headers={"X-Log-Lines": str(len(op.lines))})

    async def get_events(self, request: Request) -> Response:
        op = self._op(request)
        try:
            last = int(request.headers.get("last-event-id") or 0)
        except ValueError:
            last = 0
        drop = self.faults.get("sse_drop_every")
        return StreamingResponse(self._sse(request, op, last, drop["n"] if drop else None),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _sse(self, request: Request, op: Operation, last: int, drop_every: int | None):
        sent_id = last
        progress_at = 0.0
        progress_version = -1
        alive_at = time.monotonic()
        count = 0
        while True:
            events, version = op.events_after(sent_id)
            for event_id, kind, data in events:
                if last and kind == "artifact" and event_id <= last:
                    continue
                yield _sse_event(event_id, kind, data)
                sent_id = event_id
                count += 1
                if kind == "end":
                    return
                if drop_every and count >= drop_every:
                    return  # BB-F17: the stream closes; the client reconnects with Last-Event-ID
            now = time.monotonic()
            if version != progress_version and now - progress_at >= SSE_PROGRESS_S:
                with op.lock:
                    progress = dict(op.progress)
                yield _sse_event(sent_id, "progress", progress)
                progress_at, progress_version = now, version
            if now - alive_at >= SSE_KEEPALIVE_S:
                yield ": keep-alive\n\n"
                alive_at = now
            await asyncio.sleep(SSE_POLL_S)
            if await request.is_disconnected():
                return

    async def get_artifact(self, request: Request) -> Response:
        # A Range header is ignored: the GMI is produced on the fly and can be sent once, whole (§2.4).
        op, headers, stream = await run_in_threadpool(self.device.open_artifact, request.path_params["op"])
        return StreamingResponse(_in_threads(stream), status_code=200, headers=headers)

    async def post_restore(self, request: Request) -> Response:
        body = await self._body(request)
        result = await run_in_threadpool(self.device.preflight, body)
        return self._json(result, 201, {"Location": f"{API}/operations/{result['operation']['id']}"})

    async def put_gmi(self, request: Request) -> Response:
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        sink = await run_in_threadpool(self.device.begin_upload, request.path_params["op"],
                                       content_type=request.headers.get("content-type", ""),
                                       length=request.headers.get("content-length"), chunked=chunked)
        pending = bytearray()
        stream = request.stream()
        try:
            async for chunk in stream:
                pending += chunk
                if len(pending) >= UPLOAD_PIECE:
                    piece, pending = pending, bytearray()
                    await run_in_threadpool(sink.feed, piece)
            if pending:
                await run_in_threadpool(sink.feed, pending)
            result = await run_in_threadpool(sink.finish)
        except ClientDisconnect:
            sink.fail("transfer_interrupted", "The upload was interrupted before the whole GMI arrived.")
            return Response(status_code=400)  # nobody is listening any more
        except GmiStreamError as exc:
            sink.fail(exc.code, str(exc))
            async for _ in stream:  # read the rest so the client gets this answer, not a broken pipe
                pass
            status = 400 if exc.code == "transfer_interrupted" else 422
            return self._json(ApiRefusal(status, exc.code, str(exc)).body(), status)
        return self._json({"operation": result}, 202)

    async def post_digest(self, request: Request) -> Response:
        op = await run_in_threadpool(self.device.start_digest)
        return self._json({"operation": op.to_json()}, 202, {"Location": f"{API}/operations/{op.id}"})

    async def post_restart(self, request: Request) -> Response:
        result = await run_in_threadpool(self.device.restart)
        # The unit closes its connections about a second after answering (§2.7), then shuts down.
        self.reboot_later(self.device.real(1.0, 0.05), self.reboot_down())
        return self._json(result, 202)


def _sse_event(event_id: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _in_threads(stream: Iterator[bytes]):
    """Each read-and-hash step of the GMI stream on a worker thread; the generator is always closed here,
    on a disconnect too, so the device learns at once that the transfer was interrupted."""
    done = False
    try:
        while True:
            chunk = await run_in_threadpool(next, stream, None)
            if chunk is None:
                done = True
                return
            yield chunk
    finally:
        if not done:
            stream.close()


def create(options: SimOptions) -> BactoBoxSimulator:
    return BactoBoxSimulator(options)
