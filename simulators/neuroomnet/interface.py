"""The simulated NeuroomNet server as an HTTP API (targets/neuroomnet.md §2) on the shared HTTP core.

``create(options)`` is what ``harness sim run neuroomnet`` calls. The API is served at ``<address>/api``; the
control plane at ``<address>/_sim``. Sessions are bearer tokens held in memory (8 h, sliding), so they die
with every restart (``401 session_expired``), and every answer carries ``X-Instance-Id``, new at each start.

An apply restarts the server the way §2.7 describes: ``503 restarting`` (Retry-After 5), then the listening
socket is closed (connection refused), then ``503 starting``, then up with a new instance id.

Control routes beyond the standard ones (simulators/core/http.py):

- ``POST /_sim/upgrade {version}``: software update, migrating the configuration in place, then an instant
  restart (also ``/firmware``); forward only;
- ``POST /_sim/config/components {count, module}``: add components; ``POST /_sim/config/mutate {kind}``:
  change the configuration (``setting``, ``component``, ``schedule``), bumping ``config_changed_at``;
- ``POST /_sim/users {name, password, role}``: add a user;
- ``POST /_sim/knobs {log_view_once, session_ttl}``: the "viewed once" knob (§2.6) and the token lifetime;
- ``POST /_sim/power-cycle``: a restart now (the reboot window, sessions lost).

Fault kinds beyond the HTTP ones: ``sessions_invalidated {after=0}`` (every session ends after ``after`` more
authenticated requests: NN-F05 on demand), ``crash_after_point_of_no_return`` (NN-F03, one shot),
``slow_restart {factor}`` (NN-F04).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from harness.errors import BadInput
from harness.ziparchive import write_zip, zip_size
from simulators.core.auth import Session, Sessions, TokenRejected, bearer
from simulators.core.control import ControlError, ControlPlane, require
from simulators.core.faults import Param
from simulators.core.http import MIN_DOWN, HttpSimulator
from simulators.core.options import SimOptions
from simulators.neuroomnet.device import (
    DOWN_S,
    STARTING_S,
    STOPPING_S,
    UPLOAD_LIMIT,
    NeuroomNetServer,
    ServerError,
)

log = logging.getLogger(__name__)

SESSION_TTL_S = 8 * 3600.0
# §2.7 "simulator, default fast mode" column: short but observable phases.
FAST_STOPPING_S, FAST_DOWN_S, FAST_STARTING_S = 0.05, 0.1, 0.1
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")

Handler = Callable[..., Any]


class NeuroomNetSimulator(HttpSimulator):
    target = "neuroomnet"
    default_username = "admin"
    default_password = "admin"
    extra_fault_kinds = {
        "sessions_invalidated": {"after": Param(int, 0)},
        "crash_after_point_of_no_return": {},
        "slow_restart": {"factor": Param(float, 3.0)},
    }
    reboot_down_s = DOWN_S

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        self.device = NeuroomNetServer(options.state, version=options.firmware, profile=options.profile,
                                       server_id=options.device_id, admin=self.credentials.username,
                                       admin_password=self.credentials.password, clock=self.clock)
        self.device.restart_hook = self._restart
        self.device.fault = self._take_fault
        self.sessions = Sessions(ttl=SESSION_TTL_S, sliding=True)
        self._invalidate_after: int | None = None
        self._count_lock = threading.Lock()
        self._booted = False

    # -- HttpSimulator ----------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        system = self.device.system()
        return {"device_id": system["server_id"], "firmware": system["software_version"],
                "profile": self.device.meta("profile")}

    def on_boot(self) -> None:
        self.device.boot()
        self.sessions.reboot()  # sessions are in memory: none survives a start (§2.1)
        if self._booted:
            self.unavailable = self.error_response(503, "starting", "NeuroomNet is starting. Try again in a "
                                                   "few seconds.", {"Retry-After": "5"})
            time.sleep(self._phase(STARTING_S, FAST_STARTING_S))
        self._booted = True
        self.unavailable = None
        self.device.runtime_state = "running"

    def stop(self) -> None:
        super().stop()
        self.device.close()

    def error_response(self, status: int, code: str, message: str,
                       headers: Mapping[str, str] | None = None) -> Response:
        return self._error(ServerError(status, code, message, headers=dict(headers or {})))

    def state(self) -> dict[str, Any]:
        summary = self.device.current_summary()
        return {"system": self.device.system(), "config_digest": summary["config_digest"],
                "summary_digest": summary["summary_digest"],
                # The configuration is what a restore overwrites; restore points and operations are
                # server-local and change with every backup, so they are not part of this digest.
                "storage_sha256": summary["config_digest"], "sessions": self.sessions.count(),
                "faults": self.faults.describe(), "local_copy_root": str(self.device.local_copy_root)}

    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        """A software update in place (``profile`` is ignored: an update keeps the configuration).

        [modelled] The installer stops the server, the new release migrates the database on its first start,
        and the server is up again with a new instance id and no sessions (they live in memory, §2.1). The
        restart is instant here, so whatever a client sends after this answer meets the new server: the
        §2.7 restart window is the apply's to model. Refused (nothing changed) while a backup operation
        runs (409), for a downgrade or a schema the new release cannot migrate from (400).
        """
        with self._power_lock:
            try:
                result = self.device.update_software(firmware)
            except ServerError as exc:
                raise ControlError(exc.message, exc.status) from None
            self.sessions.reboot()
        return {**result, "restarted": True}

    def faults_changed(self) -> None:
        super().faults_changed()
        spec = self.faults.get("sessions_invalidated")
        with self._count_lock:
            self._invalidate_after = None if spec is None else spec["after"]
        if spec is not None and spec["after"] == 0:
            self._invalidate_now()

    def register_routes(self, plane: ControlPlane) -> None:
        super().register_routes(plane)
        plane.add("POST", "/upgrade", lambda body: self.set_firmware(require(body, "version", str)))
        plane.add("POST", "/config/components", self._sim_components)
        plane.add("POST", "/config/mutate", self._sim_mutate)
        plane.add("POST", "/users", self._sim_user)
        plane.add("POST", "/knobs", self._sim_knobs)
        plane.add("POST", "/power-cycle", lambda body: self.reset())

    # -- faults and the restart -------------------------------------------------------------------------

    def _take_fault(self, kind: str) -> dict[str, Any] | None:
        spec = self.faults.get(kind)
        if spec is not None and kind == "crash_after_point_of_no_return":
            self.faults.clear(kind)  # one shot
        return spec

    def _invalidate_now(self) -> None:
        self.sessions.reboot()
        self.faults.clear("sessions_invalidated")
        with self._count_lock:
            self._invalidate_after = None
        log.info("every session invalidated (fault)")

    def _phase(self, device_s: float, fast_s: float) -> float:
        slow = self.faults.get("slow_restart")
        factor = slow["factor"] if slow else 1.0
        base = self.clock.real(device_s) if self.clock.realtime else fast_s
        return max(MIN_DOWN if base else 0.0, base * factor)

    def _restart(self) -> None:
        """§2.7: 503 restarting, connection refused, 503 starting (on_boot), up with a new instance id."""
        self.device.runtime_state = "restarting"
        self.unavailable = self.error_response(503, "restarting", "NeuroomNet is restarting. Try again in a "
                                               "few seconds.", {"Retry-After": "5"})
        time.sleep(self._phase(STOPPING_S, FAST_STOPPING_S))
        self.reboot(self._phase(DOWN_S, FAST_DOWN_S))

    # -- plumbing ---------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"X-Instance-Id": self.device.instance_id}

    def _error(self, exc: ServerError) -> Response:
        body = {"code": exc.code, "message": exc.message, "details": exc.details or None}
        return JSONResponse(body, status_code=exc.status, headers={**self._headers(), **exc.headers})

    def _json(self, body: Any, status: int = 200) -> Response:
        return JSONResponse(body, status_code=status, headers=self._headers())

    def _session(self, request: Request, *, admin: bool = True) -> Session:
        try:
            session = self.sessions.check(bearer(request.headers.get("authorization")))
        except TokenRejected:
            raise ServerError(401, "session_expired", "Your session has expired or is not valid. Log in "
                              "again.") from None
        with self._count_lock:
            if self._invalidate_after is not None:
                self._invalidate_after -= 1
                fire = self._invalidate_after < 0
            else:
                fire = False
        if fire:
            self._invalidate_now()
            raise ServerError(401, "session_expired", "Your session has expired or is not valid. Log in again.")
        if admin and session.role != "administrator":
            raise ServerError(403, "forbidden", "The Backups tab requires the Administrator role.")
        return session

    def _api(self, handler: Handler, *, auth: bool = True) -> Callable[[Request], Any]:
        """Wrap a handler: session check, JSON body, ServerError -> the flat error body. Runs off the loop."""

        async def endpoint(request: Request) -> Response:
            try:
                body: dict[str, Any] = {}
                if request.method in ("POST", "PATCH", "PUT") and \
                        "json" in request.headers.get("content-type", ""):
                    raw = await request.body()
                    if raw.strip():
                        try:
                            body = json.loads(raw)
                        except ValueError:
                            raise ServerError(400, "bad_request", "The request body is not valid JSON.") from None
                        if not isinstance(body, dict):
                            raise ServerError(400, "bad_request", "The request body must be a JSON object.")
                if auth:
                    self._session(request)
                result = await run_in_threadpool(handler, request, body)
            except ServerError as exc:
                return self._error(exc)
            except BadInput as exc:
                return self._error(ServerError(400, "bad_request", str(exc)))
            except Exception as exc:  # noqa: BLE001 - a server answers 500 with its error body, never a bare crash
                log.exception("%s %s failed", request.method, request.url.path)
                return self._error(ServerError(500, "internal_error", f"Internal server error ({type(exc).__name__})."))
            if isinstance(result, Response):
                result.headers.update(self._headers())
                return result
            if result is None:
                return Response(status_code=204, headers=self._headers())
            status, payload = result if isinstance(result, tuple) else (200, result)
            return self._json(payload, status)

        return endpoint

    # -- routes -----------------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        d = self.device
        p = "/api/system-restore"

        def r(path: str, handler: Handler, methods: list[str], *, auth: bool = True) -> Route:
            return Route(path, self._api(handler, auth=auth), methods=methods)

        return [
            r("/api/auth/login", self._login, ["POST"], auth=False),
            r("/api/auth/logout", self._logout, ["POST"], auth=False),
            Route("/api/system", self._api(lambda req, body: d.system(), auth=False), methods=["GET"]),
            r(f"{p}/settings", lambda req, body: d.settings(), ["GET"]),
            r(f"{p}/current-summary", lambda req, body: d.current_summary(), ["GET"]),
            r(f"{p}/restore-points", lambda req, body: {"restore_points": d.restore_points()}, ["GET"]),
            r(f"{p}/restore-points", lambda req, body: (202, {"operation": d.create_restore_point(
                body.get("label"))}), ["POST"]),
            r(f"{p}/restore-points/{{rp_id}}", lambda req, body: d.restore_point(req.path_params["rp_id"]),
              ["GET"]),
            r(f"{p}/restore-points/{{rp_id}}", lambda req, body: d.delete_restore_point(req.path_params["rp_id"]),
              ["DELETE"]),
            r(f"{p}/restore-points/{{rp_id}}/export",
              lambda req, body: (202, {"operation": d.export(req.path_params["rp_id"])}), ["POST"]),
            r(f"{p}/restore-points/{{rp_id}}/apply",
              lambda req, body: (202, d.apply(req.path_params["rp_id"], body)), ["POST"]),
            r(f"{p}/local-copies", lambda req, body: {"local_copies": d.local_copies()}, ["GET"]),
            Route(f"{p}/local-copies", self._upload, methods=["POST"]),
            r(f"{p}/local-copies/{{name}}/download", self._download, ["GET"]),
            r(f"{p}/local-copies/{{name}}/import",
              lambda req, body: (202, {"operation": d.import_copy(req.path_params["name"])}), ["POST"]),
            r(f"{p}/local-copies/{{name}}", lambda req, body: d.delete_local_copy(req.path_params["name"]),
              ["DELETE"]),
            r("/api/operations", lambda req, body: d.operations(), ["GET"]),
            r("/api/operations/{op_id}", lambda req, body: d.operation(req.path_params["op_id"]), ["GET"]),
            r("/api/operations/{op_id}", lambda req, body: d.dismiss(req.path_params["op_id"]), ["DELETE"]),
            r("/api/operations/{op_id}/log", self._log, ["GET"]),
            # [modelled] The administrator's configuration editor; the spec names no such API (§1.3).
            r("/api/config/{table}", lambda req, body: {"rows": d.config_rows(req.path_params["table"])},
              ["GET"]),
            r("/api/config/{table}", lambda req, body: (201, d.config_insert(req.path_params["table"], body)),
              ["POST"]),
            r("/api/config/{table}/{key:path}",
              lambda req, body: d.config_update(req.path_params["table"], req.path_params["key"], body),
              ["PATCH"]),
            r("/api/config/{table}/{key:path}",
              lambda req, body: d.config_delete(req.path_params["table"], req.path_params["key"]), ["DELETE"]),
        ]

    def _login(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        role = self.device.authenticate(body.get("username"), body.get("password"))
        if role is None:
            raise ServerError(401, "invalid_credentials", "The user name or password is wrong.")
        session = self.sessions.issue(body["username"], role=role)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(session.expires))
        log.info("login %s (session %s)", body["username"], session.id)
        return {"token": session.token, "expires_at": expires, "expires_in": session.expires_in(),
                "user": {"name": session.user, "role": role}}

    def _logout(self, request: Request, body: dict[str, Any]) -> None:
        self.sessions.revoke(bearer(request.headers.get("authorization")))

    def _log(self, request: Request, body: dict[str, Any]) -> Response:
        after_text = request.query_params.get("after", "0")
        if not after_text.isdigit():
            raise ServerError(400, "bad_request", "after must be a line number.")
        lines, total = self.device.log_lines(request.path_params["op_id"], int(after_text))
        text = "".join(line + "\n" for line in lines)
        return PlainTextResponse(text, headers={"X-Log-Lines": str(total)})

    def _download(self, request: Request, body: dict[str, Any]) -> Response:
        name = request.path_params["name"]
        members = self.device.download_members(name)
        headers = {"Content-Length": str(zip_size(members)),
                   "Content-Disposition": f'attachment; filename="{name}.zip"'}
        return StreamingResponse(write_zip(members), media_type="application/zip", headers=headers)

    async def _upload(self, request: Request) -> Response:
        try:
            self._session(request)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in ZIP_TYPES:
                raise ServerError(415, "unsupported_media_type", "Upload a ZIP file as the raw request body "
                                  "(Content-Type: application/zip).")
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > UPLOAD_LIMIT:
                raise ServerError(413, "upload_too_large", "The upload is larger than the 4 GiB limit.")
            name = request.query_params.get("name") or None
            path = self.device.new_upload_path()
            size = 0
            try:
                with open(path, "wb") as f:
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > UPLOAD_LIMIT:
                            raise ServerError(413, "upload_too_large", "The upload is larger than the 4 GiB limit.")
                        f.write(chunk)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            item = await run_in_threadpool(self.device.accept_upload, path, name)
        except ServerError as exc:
            return self._error(exc)
        return self._json(item, 201)

    # -- control routes ---------------------------------------------------------------------------------

    def _sim_components(self, body: dict[str, Any]) -> dict[str, Any]:
        count = require(body, "count", int)
        module = body.get("module", "Setup")
        ids = []
        schema = self.device.schema()
        for i in range(count):
            row = {"module": module, "name": f"Added {i + 1:03d}", "kind": "pc", "address": f"10.9.0.{i % 250 + 1}",
                   "protocol": "wol", "enabled": 1}
            if schema == 17:
                row["properties"] = "{}"
            else:
                row["group_id"] = 1
            ids.append(self.device.config_insert("component", row)["id"])
        return {"added": ids}

    def _sim_mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        kind = body.get("kind", "setting")
        stamp = str(int(time.time() * 1000))
        if kind == "setting":
            self.device.config_update("system_setting", "site_name", {"value": f"Mutated {stamp}"})
        elif kind == "component":
            self.device.config_update("component", "1", {"address": f"10.99.{int(stamp) % 250}.1"})
        elif kind == "schedule":
            self.device.config_update("schedule", "1", {"cron": f"{int(stamp) % 60} 9 * * 1-6"})
        else:
            raise ValueError(f"unknown mutation kind {kind!r} (setting, component, schedule)")
        return {"config_changed_at": self.device.meta("config_changed_at")}

    def _sim_user(self, body: dict[str, Any]) -> dict[str, Any]:
        from simulators.neuroomnet.profiles import hash_password

        row: dict[str, Any] = {"name": require(body, "name", str), "role": body.get("role", "administrator"),
                               "disabled": 0}
        password = require(body, "password", str)
        if self.device.schema() >= 20:
            row["password_scheme"] = "pbkdf2-sha256"
        with self.device._tx() as c:  # the password hash is not writable through the admin API
            cols = [*row, "password_hash"]
            values = [*row.values(), hash_password(password)]
            c.execute(f"INSERT INTO app_user ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
            self.device._touch_config(c)
        return {"user": row["name"]}

    def _sim_knobs(self, body: dict[str, Any]) -> dict[str, Any]:
        if "log_view_once" in body:
            self.device.log_view_once = require(body, "log_view_once", bool)
        if "session_ttl" in body:
            self.sessions.ttl = float(require(body, "session_ttl", (int, float)))
        return {"log_view_once": self.device.log_view_once, "session_ttl": self.sessions.ttl}


def create(options: SimOptions) -> NeuroomNetSimulator:
    return NeuroomNetSimulator(options)
