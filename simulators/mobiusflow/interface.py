"""The simulated MobiusFlow node as an HTTP server: the Engine API of both version lines (spec §2).

``create(options)`` is what ``harness sim run mobiusflow`` calls. ``--firmware`` is the MobiusFlow version
(1.16.4, 1.19.1, 3004, 3021; default 3021), ``--device-id`` the hub ID (default 00A1F3), ``--profile`` the seed
(tiny, small). Default credentials: ``admin`` / ``mobiusflow`` (``--username``/``--password-file`` override).

Paths: 1.x under ``/api/v1`` (``/api/v1/mobius/node/…``), 3000+ under ``/api/v3`` (the spec's modelled v3 prefix).
A node answers only its own generation's paths (the other's get 404 ``not_found``).

Control routes beyond the standard ones (simulators/core/http.py):

- ``GET  /_sim/config``            the whole configuration, with both digests
- ``POST /_sim/reboot``            reboot now (as ``/_sim/reset``)
- ``POST /_sim/upgrade {version}`` in-place upgrade (as ``/_sim/firmware``)
- ``POST /_sim/factory-reset {version?, hubId?, profile?, seed?}``  a fresh node (the spec's ``/_sim/reset``;
  renamed because ``/_sim/reset`` is the harness-wide reboot)
- ``POST /_sim/clock {offset_s}`` or ``{now: "RFC 3339"}``  the node clock
- ``POST /_sim/auth {token_ttl}``  lifetime of tokens issued from now on (also the fault ``token_ttl``)

Fault kinds beyond the HTTP ones: ``token_ttl {seconds, announce=false}``, ``nginx_502_phase {seconds}``, ``slow_boot {factor}``,
``apply_fails {step}``, ``crash_during_apply``, ``flush_slow {seconds}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from harness.targets.mobiusflow.schema import normalise_hub_id
from harness.targets.mobiusflow.versions import get_version
from simulators.core.auth import Session, Sessions, TokenRejected, bearer
from simulators.core.control import ControlError, ControlPlane, require
from simulators.core.faults import Param
from simulators.core.http import HttpSimulator, unavailable_html
from simulators.core.options import SimOptions
from simulators.mobiusflow.device import UPLOAD_LIMIT, ApplyCrash, Node, NodeError

log = logging.getLogger(__name__)

V1 = "/api/v1/mobius/node"
V3 = "/api/v3"
TOKEN_TTL_S = 600.0
MAX_JSON_BODY = 1 << 20
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")

# Reboot phases (§2.7), real-unit seconds: stopping, container down, nginx up (502), engine starting (503).
PHASES = {1: (3.0, 7.0, 10.0, 10.0), 3: (5.0, 10.0, 15.0, 20.0)}
FAST_PHASES = (0.05, 0.05, 0.05, 0.1)
RESTORE_REBOOT_DELAY_S = 2.0

_HEX = {"sid": 3, "pid": 4, "ins": 4, "rid": 2}


@dataclass
class Ctx:
    request: Request
    body: bytes
    params: dict[str, str]
    session: Session | None

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            doc = json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise NodeError(400, "invalid_request", "The request body is not JSON.") from None
        if not isinstance(doc, dict):
            raise NodeError(400, "invalid_request", "The request body must be a JSON object.")
        return doc

    @property
    def query(self) -> Any:
        return self.request.query_params


class MobiusFlowSimulator(HttpSimulator):
    target = "mobiusflow"
    default_username = "admin"
    default_password = "mobiusflow"
    extra_fault_kinds = {
        # MF-F01: tokens really expire after `seconds`; unless `announce`, logins still say 600 s, so a client
        # meets 401 token_expired mid-run instead of refreshing ahead of it.
        "token_ttl": {"seconds": Param(float), "announce": Param(bool, False)},
        "nginx_502_phase": {"seconds": Param(float)},
        "slow_boot": {"factor": Param(float)},
        "apply_fails": {"step": Param(str, "Writing node configuration")},
        "crash_during_apply": {},
        "flush_slow": {"seconds": Param(float)},
    }

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        if options.firmware is not None:
            try:
                get_version(options.firmware)
            except ValueError as exc:
                from harness.errors import BadInput

                raise BadInput(str(exc)) from None
        try:
            self.node = Node(self.state_dir, version=options.firmware, hub_id=options.device_id,
                             profile=options.profile)
        except ValueError as exc:
            from harness.errors import BadInput

            raise BadInput(str(exc)) from None
        self.sessions = Sessions(ttl=TOKEN_TTL_S, jwt=True, max_age=12 * 3600.0, idle=3600.0, issuer="mobiusflow")
        self._first_boot = True
        self.rejections: dict[str, int] = {}  # 401 answers by code, for tests (token expiry mid-run)

    # -- HttpSimulator -----------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        node = self.node
        return {"device_id": node.hub_id, "firmware": node.version, "profile": node.deploy.get("profile"),
                "api": "/api/v1" if node.generation == 1 else V3}

    def error_response(self, status: int, code: str, message: str, headers: Any = None,
                       details: dict[str, Any] | None = None) -> Response:
        body: dict[str, Any] = {"statusCode": status, "error": _phrase(status), "code": code, "message": message}
        if details:
            body["details"] = details
        return JSONResponse(body, status_code=status, headers=dict(headers or {}))

    def _phases(self) -> tuple[float, float, float, float]:
        if self.clock.time_scale is None:
            phases = list(FAST_PHASES)
        else:
            objects = self.node.content.object_count()
            real = list(PHASES[self.node.generation])
            real[3] += objects / 1000.0
            phases = [self.clock.real(p) for p in real]
        slow = self.faults.get("slow_boot")
        if slow is not None:
            phases = [p * max(0.0, slow["factor"]) for p in phases]
        nginx = self.faults.get("nginx_502_phase")
        if nginx is not None:
            phases[2] = nginx["seconds"]
        return phases[0], phases[1], phases[2], phases[3]

    def reboot_down(self) -> float:
        stopping, down, _, _ = self._phases()
        return max(0.05, stopping + down)

    def on_boot(self) -> None:
        _, _, nginx, starting = self._phases()
        if not self._first_boot:
            # nginx is up before the engine: an HTML 502 page, then the engine's own 503 JSON.
            self.unavailable = unavailable_html(502)
            time.sleep(nginx)
        self.unavailable = self.error_response(503, "starting", "MobiusFlow is starting", {"Retry-After": "5"})
        self.node.state = "starting"
        if not self._first_boot:
            time.sleep(starting)
        self.sessions.reboot()  # a new signing key: every old token is invalid
        fail = self.faults.take("apply_fails")
        crash = self.faults.take("crash_during_apply") is not None
        try:
            self.node.boot(secrets.token_hex(4), fail_step=fail["step"] if fail else None, crash=crash)
        except ApplyCrash:
            # The engine died mid-apply; the container restarts it (restart: always) and it recovers.
            log.warning("mobiusflow: engine crashed during the restore apply; restarting")
            self.node.boot(secrets.token_hex(4))
        self._first_boot = False
        self.unavailable = None

    def on_shutdown(self) -> None:
        self.node.shutdown()

    def state(self) -> dict[str, Any]:
        node = self.node
        info = node.info()
        return {**info, "storage_sha256": node.storage_sha256(), "licence": node.deploy.get("licence"),
                "users": [self.credentials.username], "pskGeneration": node.deploy.get("pskGeneration"),
                "faults": self.faults.describe(), "sessions": self.sessions.count(), "tokenTtl": self.sessions.ttl,
                "rejections": dict(self.rejections),
                "unavailableServed": {str(k): v for k, v in self.unavailable_served.items()},
                "time_scale": self.clock.time_scale, "address": self.base_url if self.server else None,
                "device_id": node.hub_id, "firmware": node.version}

    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        # An upgrade is a new container image: modelled as an instant restart on the same data.
        self.node.set_version(firmware)
        self.sessions.reboot()
        self.node.boot(secrets.token_hex(4))
        return self.state()

    def faults_changed(self) -> None:
        super().faults_changed()
        ttl = self.faults.get("token_ttl")
        self.sessions.ttl = ttl["seconds"] if ttl is not None else TOKEN_TTL_S

    def register_routes(self, plane: ControlPlane) -> None:
        super().register_routes(plane)
        plane.add("GET", "/config", lambda body: {**self.node.config_document(), **self._digests()})
        plane.add("POST", "/reboot", lambda body: self.reset())
        plane.add("POST", "/upgrade", lambda body: self.set_firmware(require(body, "version", str)))
        plane.add("POST", "/factory-reset", self._factory_reset)
        plane.add("POST", "/clock", self._set_clock)
        plane.add("POST", "/auth", self._set_auth)

    def _digests(self) -> dict[str, Any]:
        info = self.node.info()
        return {"configDigest": info["configDigest"], "summaryDigest": info["summaryDigest"]}

    def _factory_reset(self, body: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        try:
            node.factory_reset(version=body.get("version") or node.version, hub_id=body.get("hubId") or node.hub_id,
                               profile=body.get("profile") or node.deploy.get("profile"),
                               seed=int(body.get("seed") or 0))
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        self.sessions.reboot()
        node.boot(secrets.token_hex(4))
        return self.state()

    def _set_clock(self, body: dict[str, Any]) -> dict[str, Any]:
        if "now" in body:
            try:
                when = dt.datetime.strptime(require(body, "now", str), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            except ValueError:
                raise ControlError("now must be RFC 3339 UTC, e.g. 2026-01-09T14:03:27Z") from None
            self.node.clock_offset = when - dt.datetime.now(dt.UTC)
        else:
            self.node.clock_offset = dt.timedelta(seconds=float(require(body, "offset_s", (int, float))))
        return {"now": self.node.now().isoformat()}

    def _set_auth(self, body: dict[str, Any]) -> dict[str, Any]:
        ttl = require(body, "token_ttl", (int, float))
        if ttl <= 0:
            raise ControlError("token_ttl must be > 0")
        self.sessions.ttl = float(ttl)
        return {"tokenTtl": self.sessions.ttl}

    # -- the API -------------------------------------------------------------------------------------------

    def _fail(self, exc: NodeError) -> Response:
        return self.error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)

    def _authorise(self, request: Request) -> Session:
        token = bearer(request.headers.get("authorization"))
        try:
            session = self.sessions.check(token)
        except TokenRejected as exc:
            code = {"expired": "token_expired", "invalid": "token_invalid"}.get(exc.reason, "session_expired")
            if token is None:
                code = "token_invalid"
            self.rejections[code] = self.rejections.get(code, 0) + 1
            raise NodeError(401, code, "Your session has expired. Log in again.",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        if session.role != "admin":
            raise NodeError(403, "forbidden", "Backup and restore require the admin role.")
        return session

    def _check_params(self, params: dict[str, str]) -> dict[str, str]:
        out = dict(params)
        if "hid" in out:
            hid = out["hid"]
            try:
                hid = normalise_hub_id(hid)
            except ValueError:
                raise NodeError(400, "invalid_hub_id",
                                "Hub ID must be six hexadecimal characters, for example 000001.") from None
            if hid != self.node.hub_id:
                raise NodeError(404, "hub_not_found",
                                f"This node is hub {self.node.hub_id}. There is no hub {hid} on this node.",
                                {"hubId": self.node.hub_id})
            out["hid"] = hid
        for name, width in _HEX.items():
            if name in out:
                if not re.fullmatch(rf"[0-9A-Fa-f]{{{width}}}", out[name]):
                    raise NodeError(400, "invalid_request", f"{name} must be {width} hexadecimal characters.")
                out[name] = out[name].upper()
        return out

    def _endpoint(self, gen: int, handler: Callable[[Ctx], Any], *, auth: bool = True) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            try:
                if self.node.generation != gen:
                    raise NodeError(404, "not_found", f"Cannot {request.method} {request.url.path}.")
                body = b""
                async for chunk in request.stream():  # a GET may carry a body (the vendor's collection does)
                    body += chunk
                    if len(body) > MAX_JSON_BODY:
                        raise NodeError(413, "payload_too_large", "The request body is too large.")
                session = self._authorise(request) if auth else None
                ctx = Ctx(request, body, self._check_params(dict(request.path_params)), session)
                result = await run_in_threadpool(handler, ctx)
            except NodeError as exc:
                return self._fail(exc)
            if isinstance(result, Response):
                return result
            if result is None:
                return Response(status_code=204)
            status, doc = result if isinstance(result, tuple) else (200, result)
            return JSONResponse(doc, status_code=status)

        return endpoint

    def routes(self) -> list[BaseRoute]:
        e = self._endpoint
        upload = self._upload_endpoint
        return [
            # 1.x
            Route("/api/v1/auth/login", e(1, self.login_v1, auth=False), methods=["POST"]),
            Route("/api/v1/auth/refresh", e(1, self.refresh_v1, auth=False), methods=["POST"]),
            Route(f"{V1}/info", e(1, self.info), methods=["GET"]),
            Route(f"{V1}/healthcheck/{{hid}}", e(1, self.health), methods=["GET"]),
            Route(f"{V1}/config/{{hid}}", e(1, self.config_get), methods=["GET"]),
            Route(f"{V1}/config/{{hid}}", e(1, self.config_patch), methods=["PATCH"]),
            Route(f"{V1}/backup", e(1, self.backup_now), methods=["GET"]),
            Route(f"{V1}/backup", e(1, self.backup_job), methods=["POST"]),
            Route(f"{V1}/backup/{{backupId}}/zip", e(1, self.backup_zip), methods=["GET"]),
            Route(f"{V1}/backup/{{backupId}}", e(1, self.backup_discard), methods=["DELETE"]),
            Route(f"{V1}/restore/upload", upload(1), methods=["POST"]),
            Route(f"{V1}/restore/upload/{{uploadId}}", e(1, self.upload_get), methods=["GET"]),
            Route(f"{V1}/restore/upload/{{uploadId}}", e(1, self.upload_delete), methods=["DELETE"]),
            Route(f"{V1}/restore/{{uploadId}}", e(1, self.restore), methods=["POST"]),
            Route(f"{V1}/jobs/{{jobId}}", e(1, self.job), methods=["GET"]),
            Route(f"{V1}/jobs/{{jobId}}/log", e(1, self.job_log), methods=["GET"]),
            # 3000+
            Route(f"{V3}/auth/login", e(3, self.login_v3, auth=False), methods=["POST"]),
            Route(f"{V3}/auth/validate-session", e(3, self.validate_v3, auth=False), methods=["POST"]),
            Route(f"{V3}/auth/logout", e(3, self.logout_v3), methods=["POST"]),
            Route(f"{V3}/node/info/{{hid}}", e(3, self.info), methods=["GET"]),
            Route(f"{V3}/node/fullhealthcheck/{{hid}}", e(3, self.health), methods=["GET"]),
            Route(f"{V3}/node/config/{{hid}}", e(3, self.config_get), methods=["GET"]),
            Route(f"{V3}/node/config/{{hid}}", e(3, self.config_patch), methods=["PATCH"]),
            Route(f"{V3}/service/config/{{hid}}/{{sid}}", e(3, self.service_config), methods=["GET"]),
            Route(f"{V3}/service/stop/{{hid}}/{{sid}}", e(3, self.service_stop), methods=["POST"]),
            Route(f"{V3}/node/backupfull/{{hid}}", e(3, self.backup_now), methods=["GET"]),
            Route(f"{V3}/node/backup/{{hid}}", e(3, self.backup_config_now), methods=["GET"]),
            Route(f"{V3}/node/backupfull/{{hid}}", e(3, self.backup_job), methods=["POST"]),
            Route(f"{V3}/node/backupfull/{{hid}}/{{backupId}}/zip", e(3, self.backup_zip), methods=["GET"]),
            Route(f"{V3}/node/backupfull/{{hid}}/{{backupId}}", e(3, self.backup_discard), methods=["DELETE"]),
            Route(f"{V3}/node/restore/upload/{{hid}}", upload(3), methods=["POST"]),
            Route(f"{V3}/node/restore/upload/{{hid}}/{{uploadId}}", e(3, self.upload_get), methods=["GET"]),
            Route(f"{V3}/node/restore/upload/{{hid}}/{{uploadId}}", e(3, self.upload_delete), methods=["DELETE"]),
            Route(f"{V3}/node/restore/{{hid}}/{{uploadId}}", e(3, self.restore), methods=["POST"]),
            Route(f"{V3}/node/jobs/{{hid}}/{{jobId}}", e(3, self.job), methods=["GET"]),
            Route(f"{V3}/node/jobs/{{hid}}/{{jobId}}/log", e(3, self.job_log), methods=["GET"]),
            Route(f"{V3}/object/resource/{{hid}}/{{sid}}/{{pid}}/{{ins}}/{{rid}}", e(3, self.resource_get),
                  methods=["GET"]),
            Route(f"{V3}/object/resource/{{hid}}/{{sid}}/{{pid}}/{{ins}}/{{rid}}", e(3, self.resource_patch),
                  methods=["PATCH"]),
        ]

    # -- auth ------------------------------------------------------------------------------------------

    def _login(self, ctx: Ctx) -> Session:
        body = ctx.json()
        if not self.credentials.matches(body.get("username"), body.get("password")):
            raise NodeError(401, "invalid_credentials", "Invalid username or password.")
        return self.sessions.issue(self.credentials.username, role="admin")

    def _expires_in(self, session: Session) -> int:
        ttl = self.faults.get("token_ttl")
        return int(TOKEN_TTL_S) if ttl is not None and not ttl["announce"] else session.expires_in()

    def login_v1(self, ctx: Ctx) -> dict[str, Any]:
        session = self._login(ctx)
        refresh = self.sessions.issue_refresh(session)
        return {"accessToken": session.token, "refreshToken": refresh, "expiresIn": self._expires_in(session),
                "tokenType": "Bearer"}

    def refresh_v1(self, ctx: Ctx) -> dict[str, Any]:
        token = ctx.json().get("refreshToken")
        try:
            session, refresh = self.sessions.refresh(token if isinstance(token, str) else None)
        except TokenRejected as exc:
            if exc.reason == "reused":
                raise NodeError(401, "refresh_token_reused",
                                "This refresh token was already used; every session from it is revoked. "
                                "Log in again.") from None
            raise NodeError(401, "token_invalid", "Your session has expired. Log in again.") from None
        return {"accessToken": session.token, "refreshToken": refresh, "expiresIn": self._expires_in(session),
                "tokenType": "Bearer"}

    def login_v3(self, ctx: Ctx) -> dict[str, Any]:
        session = self._login(ctx)
        return {"sessionToken": session.token, "expiresIn": self._expires_in(session)}

    def validate_v3(self, ctx: Ctx) -> dict[str, Any]:
        token = ctx.json().get("sessionToken")
        try:
            session = self.sessions.renew(token if isinstance(token, str) else None)
        except TokenRejected:
            raise NodeError(401, "session_expired", "Your session has expired. Log in again.") from None
        return {"valid": True, "sessionToken": session.token, "expiresIn": self._expires_in(session)}

    def logout_v3(self, ctx: Ctx) -> None:
        self.sessions.revoke(bearer(ctx.request.headers.get("authorization")))

    # -- node ----------------------------------------------------------------------------------------------

    def info(self, ctx: Ctx) -> dict[str, Any]:
        return self.node.info()

    def health(self, ctx: Ctx) -> dict[str, Any]:
        return {"hubId": self.node.hub_id, "status": "healthy", "services": [
            {"sid": s["sid"], "name": s.get("name"), "running": bool(s.get("enabled", True))
             and s["sid"] not in self.node.stopped_services} for s in self.node.content.services]}

    def config_get(self, ctx: Ctx) -> dict[str, Any]:
        return self.node.config_document()

    def config_patch(self, ctx: Ctx) -> dict[str, Any]:
        with self.node.lock:
            self.node.busy_check("configuration change")
            return self.node.patch_config(ctx.json())

    def service_config(self, ctx: Ctx) -> dict[str, Any]:
        sid = ctx.params["sid"]
        service = self.node._service(sid)
        return {**service, "objects": self.node.content.objects.get(sid, [])}

    def service_stop(self, ctx: Ctx) -> dict[str, Any]:
        sid = ctx.params["sid"]
        self.node._service(sid)
        flushed = self.node.flush([sid], force=True)
        self.node.stopped_services.add(sid)
        return {"sid": sid, "state": "stopped", "persistedValues": flushed[0][1] if flushed else 0}

    def resource_get(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        return self.node.read_resource(p["sid"], p["pid"], p["ins"], p["rid"])

    def resource_patch(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        body = ctx.json()
        if "value" not in body:
            raise NodeError(400, "invalid_request", "value is required.")
        priority = body.get("priority")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                     or not 1 <= priority <= 16):
            raise NodeError(400, "invalid_request", "priority must be 1..16.")
        return self.node.write_resource(p["sid"], p["pid"], p["ins"], p["rid"], body["value"], priority)

    # -- backup --------------------------------------------------------------------------------------------

    def _zip_response(self, data: bytes, file_name: str) -> Response:
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{file_name}"',
            "X-Backup-Sha256": hashlib.sha256(data).hexdigest()})

    def _flush_delay(self) -> None:
        slow = self.faults.get("flush_slow")
        if slow is not None:
            time.sleep(slow["seconds"])  # the headers wait for the flush (MF-F14)

    def backup_now(self, ctx: Ctx) -> Response:
        self._flush_delay()
        data, name, _ = self.node.make_backup(ctx.query.get("name"), "full")
        return self._zip_response(data, name)

    def backup_config_now(self, ctx: Ctx) -> Response:
        data, name, _ = self.node.make_backup(ctx.query.get("name"), "config")
        return self._zip_response(data, name)

    def backup_job(self, ctx: Ctx) -> tuple[int, dict[str, Any]]:
        body = ctx.json()
        name = body.get("name")
        kind = body.get("kind", "full")
        if name is not None and not isinstance(name, str) or not isinstance(kind, str):
            raise NodeError(400, "invalid_request", "name and kind must be strings.")
        self._flush_delay()
        return 202, self.node.prepare_backup(name, kind)

    def backup_zip(self, ctx: Ctx) -> Response:
        path, meta = self.node.prepared(ctx.params["backupId"])
        return self._zip_response(path.read_bytes(), meta["fileName"])

    def backup_discard(self, ctx: Ctx) -> None:
        self.node.discard_prepared(ctx.params["backupId"])

    # -- restore -------------------------------------------------------------------------------------------

    def _upload_endpoint(self, gen: int) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            tmp: Path | None = None
            try:
                if self.node.generation != gen:
                    raise NodeError(404, "not_found", f"Cannot POST {request.url.path}.")
                self._authorise(request)
                self._check_params(dict(request.path_params))
                ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype not in ZIP_TYPES:
                    raise NodeError(415, "unsupported_media_type", "Upload a .zip file."
                                    + (" (multipart uploads are not modelled: send the zip as the body)"
                                       if ctype.startswith("multipart/") else ""))
                length = request.headers.get("content-length")
                if length and length.isdigit() and int(length) > UPLOAD_LIMIT:
                    raise NodeError(413, "upload_too_large", "Backup files larger than 512 MiB cannot be uploaded.")
                folder = self.node.mobius / "uploads.tmp"
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f"{secrets.token_hex(6)}.zip"
                digest, size = hashlib.sha256(), 0
                with open(tmp, "wb") as f:
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > UPLOAD_LIMIT:
                            raise NodeError(413, "upload_too_large",
                                            "Backup files larger than 512 MiB cannot be uploaded.")
                        digest.update(chunk)
                        f.write(chunk)
                name = _upload_name(request)
                info = await run_in_threadpool(self.node.accept_upload, tmp, size, digest.hexdigest(), name)
                tmp = None
                return JSONResponse(info, status_code=201)
            except NodeError as exc:
                return self._fail(exc)
            finally:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)

        return endpoint

    def upload_get(self, ctx: Ctx) -> dict[str, Any]:
        return self.node.upload_info(ctx.params["uploadId"])

    def upload_delete(self, ctx: Ctx) -> None:
        self.node.discard_upload(ctx.params["uploadId"])

    def restore(self, ctx: Ctx) -> tuple[int, dict[str, Any]]:
        job = self.node.stage_restore(ctx.params["uploadId"], ctx.json().get("confirm"))
        # The 202 goes out first; the node reboots about 2 s (scaled) later.
        self.reboot_later(max(0.1, self.clock.real(RESTORE_REBOOT_DELAY_S)))
        expected = sum(PHASES[self.node.generation]) if self.clock.time_scale is not None else 1
        return 202, {"jobId": job["jobId"],
                     "message": "The restoration process has started. MobiusFlow will reboot to complete the restore.",
                     "expectedDowntimeS": int(expected)}

    def job(self, ctx: Ctx) -> dict[str, Any]:
        job = self.node.jobs.get(ctx.params["jobId"])
        if job is None:
            raise NodeError(404, "job_not_found", f"There is no job {ctx.params['jobId']}.")
        return self.node.jobs.public(job)

    def job_log(self, ctx: Ctx) -> Response:
        job = self.node.jobs.get(ctx.params["jobId"])
        if job is None:
            raise NodeError(404, "job_not_found", f"There is no job {ctx.params['jobId']}.")
        after = ctx.query.get("after", "0")
        start = int(after) if after.isdigit() else 0
        lines = job["log"][start:]
        return PlainTextResponse("".join(line + "\n" for line in lines),
                                 headers={"X-Log-Lines": str(len(job["log"]))})


def _upload_name(request: Request) -> str:
    from harness.transports.http import content_disposition_filename

    name = content_disposition_filename(request.headers.get("content-disposition")) \
        or request.headers.get("x-file-name") or "upload.zip"
    return re.sub(r"[^A-Za-z0-9._-]", "", name)[:128] or "upload.zip"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def create(options: SimOptions) -> MobiusFlowSimulator:
    return MobiusFlowSimulator(options)
