"""HTTP simulator core: a real starlette app under uvicorn on loopback, with TLS, credentials, the control
plane on the same server, HTTP faults, and power/reboot windows that really refuse connections.

API for target simulators (keep it small; NeuroomNet, BactoBox, PlanktoScope and MobiusFlow build on it)
--------------------------------------------------------------------------------------------------------

Subclass ``HttpSimulator`` in ``simulators/<t>/interface.py`` and return it from ``create(options)``::

    class MySimulator(HttpSimulator):
        target = "mytarget"
        default_username = "admin"          # used when --username/--password-file are not given
        default_password = "admin"          # (document both in docs/targets/<t>.md)
        tls_default = False                 # options.tls (or HARNESS_SIM_TLS=1) overrides it
        extra_fault_kinds = {"flush_slow": {"seconds": Param(float)}}   # your own kinds, optional

        def routes(self) -> list[BaseRoute]:        # REQUIRED: the device API (starlette Routes)
        def identity(self) -> dict[str, Any]:       # REQUIRED: {"device_id": …, "firmware": …, extra JSON-line keys}
        def state(self) -> dict[str, Any]:          # REQUIRED (Simulator): GET /_sim/state
        def set_firmware(self, firmware, profile):  # REQUIRED (Simulator)
        def on_boot(self) -> None:                  # hook: every power-on (first start too), listener already open;
                                                    # set self.unavailable while you "start" (502/503 phases)
        def on_shutdown(self) -> None:              # hook: power-off/stop/reboot, after the listener closed
        def error_response(self, status, code, message, headers=None) -> Response:  # hook: your error body shape
        def register_routes(self, plane):           # add /_sim routes: call super().register_routes(plane) first

What the base gives you:

- ``self.clock`` (``Clock(options.time_scale)``), ``self.faults`` (``HttpFaults``: the HTTP kinds below plus
  yours), ``self.credentials`` (``.username``, ``.password``: from ``--username``/``--password-file``, else the
  class defaults), ``self.state_dir``.
- ``start()`` binds 127.0.0.1 on an OS-chosen port and returns the JSON-line fields: ``address`` (base URL,
  ``http://127.0.0.1:PORT`` or ``https://…``), ``control`` (``<address>/_sim``, or null with ``--no-control``:
  then there are no /_sim routes at all), ``user`` (the username, never the password), ``cert`` (the PEM path
  when TLS is on, so a driver can pin it: ``verify=<cert>``), plus ``identity()``.
- ``self.base_url``, ``self.port`` (stable across reboots: the port is re-bound, never changed), ``self.cert_path``.
- ``self.unavailable``: a starlette ``Response`` (or None) answered to every device request (not /_sim) while
  set; use ``unavailable_html(502)`` / ``self.error_response(503, "starting", …)`` during boot phases.
  ``self.unavailable_served`` counts those answers by status (put it in ``state()``: proof a client waited).
- ``reboot(down=None)``: listener closed and every connection aborted (in-flight requests dropped), connections
  refused for ``down`` seconds (default ``self.reboot_down()``: the scaled ``reboot_down_s``, never under
  ``MIN_DOWN``), then ``on_boot()`` and back on the SAME port. ``reboot_later(delay, down)`` does it from a
  background thread, e.g. after a "202, the node will reboot" answer has gone out.
- ``power(on)``: off closes the listener (connection refused; the control plane goes down with it, like a
  real unit) and comes back by itself after ``POST /_sim/power {"on": false, "seconds": S}`` (default
  ``power_off_s``); a power cut for good is killing the process (SimProcess.kill), then restarting it on the
  same state directory. ``reset()`` = ``reboot()``. Both answer the control request before going down.
- ``self.session_store``-style auth lives in ``simulators.core.auth`` (``Sessions``: bearer tokens with expiry,
  sliding renewal, refresh-token rotation with reuse detection, all invalid after a reboot).

HTTP fault kinds (``POST /_sim/faults {"kind": …, params}``, ``DELETE /_sim/faults``), applied by an ASGI
middleware to device requests only (never to /_sim); ``path`` (optional) limits a fault to URL paths that start
with it. See ``simulators.core.http_faults`` for the details:

- ``http_error`` [status=500, count=1, code="injected_fault", path=null]  the next ``count`` requests (0 = all
  until cleared) answer ``status`` with ``error_response``.
- ``drop_body``  [after=0, count=1, path=null]  the connection is closed after ``after`` bytes of the response
  body (the client sees a truncated body).
- ``slow_body``  [rate, path=null]  response bodies at ``rate`` bytes/s of real time, until cleared.
- ``delay``      [seconds, count=1, path=null]  the next ``count`` requests wait ``seconds`` before the app runs
  (a stall before the headers).
- ``busy``       [status=503, seconds=null, retry_after=5, code="busy"]  every request answers ``status`` with
  ``Retry-After`` for ``seconds`` or until cleared.
- ``refuse``     [seconds=1.0]  the listener is closed: connections refused for ``seconds``, then back on the same
  port (nothing else changes: no reboot hooks).
- ``reboot``     [down=null]  a full reboot now: ``reboot(down)`` (tokens invalid, ``on_boot`` runs again).

TLS: ``simulators.core.tls.ensure_self_signed(<state>/tls)`` makes ``cert.pem``/``key.pem`` at the first start
(EC P-256, SAN ``127.0.0.1`` and ``localhost``) and keeps them across restarts, like a unit's own certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from harness.errors import BadInput, DeviceError
from simulators.core.clock import Clock
from simulators.core.control import ControlPlane, require, starlette_routes
from simulators.core.faults import Param
from simulators.core.http_faults import HTTP_FAULT_KINDS, FaultMiddleware, HttpFaults
from simulators.core.options import SimOptions
from simulators.core.runner import Simulator
from simulators.core.tls import TlsFiles, ensure_self_signed

log = logging.getLogger(__name__)
# uvicorn's start/stop lines at every reboot are noise in a simulator's log; its warnings still show.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

HOST = "127.0.0.1"
MIN_DOWN = 0.05  # wall-clock floor of a reboot window: even in fast mode a client must be able to see it
TLS_ENV = "HARNESS_SIM_TLS"  # "1": TLS on for every HTTP simulator started from this environment


@dataclass(frozen=True)
class Credentials:
    """The account the simulated unit accepts. ``repr`` hides the password (it ends up in logs otherwise)."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"

    def matches(self, username: Any, password: Any) -> bool:
        import hmac

        if not isinstance(username, str) or not isinstance(password, str):
            return False
        # Constant-time on the password, as a real server would do it.
        return username == self.username and hmac.compare_digest(password.encode(), self.password.encode())


def load_credentials(options: SimOptions, default_username: str, default_password: str) -> Credentials:
    """``--username`` + ``--password-file`` (the file's final newline is not part of the password), or the
    target's defaults. One without the other is refused."""
    if (options.username is None) != (options.password_file is None):
        raise BadInput("--username and --password-file go together")
    if options.username is None or options.password_file is None:
        return Credentials(default_username, default_password)
    try:
        password = Path(options.password_file).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise BadInput(f"cannot read password file {options.password_file}: {exc.strerror or exc}") from None
    if not password:
        raise BadInput(f"password file {options.password_file} is empty")
    return Credentials(options.username, password)


def unavailable_html(status: int = 502) -> Response:
    """What nginx answers while the app behind it is down: an HTML page, not JSON."""
    titles = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable", 504: "504 Gateway Time-out"}
    title = titles.get(status, f"{status} Error")
    body = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n" \
           f"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    return Response(body, status_code=status, media_type="text/html")


# -- the server ---------------------------------------------------------------------------------------


class HttpServer:
    """uvicorn serving one ASGI app on 127.0.0.1 in a background thread, with its own event loop.

    ``close()`` stops listening and aborts every connection (a client sees connection refused, and in-flight
    requests die); ``open()`` binds the same port again. The port is chosen by the OS at the first ``open``.
    """

    def __init__(self, app: Any, *, port: int = 0, tls: TlsFiles | None = None, name: str = "http") -> None:
        self.app = app
        self.port = port
        self.tls = tls
        self.name = name
        self._thread: threading.Thread | None = None
        self._server: Any = None  # uvicorn.Server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _bind(self) -> socket.socket:
        # Re-binding the same port right after close: SO_REUSEADDR lets TIME_WAIT leftovers not block it.
        # Another process could grab the port in the gap; retry briefly, then say so.
        deadline = time.monotonic() + 2.0
        while True:
            # IPPROTO_TCP spelled out: asyncio turns Nagle off only on sockets whose proto says TCP, and with
            # proto 0 every keep-alive response body waited ~40 ms for the client's delayed ACK of its headers.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind((HOST, self.port))
            except OSError as exc:
                sock.close()
                if self.port == 0 or time.monotonic() > deadline:
                    raise DeviceError(f"cannot listen on {HOST}:{self.port}: {exc.strerror or exc}") from None
                time.sleep(0.02)
                continue
            self.port = sock.getsockname()[1]
            return sock

    def open(self) -> None:
        import uvicorn

        with self._lock:
            if self.listening:
                return
            sock = self._bind()
            config = uvicorn.Config(
                self.app, log_config=None, access_log=False, lifespan="off",
                ssl_certfile=str(self.tls.cert) if self.tls else None,
                ssl_keyfile=str(self.tls.key) if self.tls else None,
                timeout_graceful_shutdown=1, timeout_keep_alive=5,
                # A device API answers small JSON; long downloads stream. Limit concurrent connections
                # modestly so a runaway client cannot exhaust the shared machine.
                limit_concurrency=64,
            )
            server = uvicorn.Server(config)
            ready = threading.Event()
            failure: list[BaseException] = []

            def run() -> None:
                loop = asyncio.new_event_loop()
                self._loop = loop
                asyncio.set_event_loop(loop)
                try:
                    task = loop.create_task(server.serve(sockets=[sock]))

                    def started() -> None:
                        if server.started or task.done():
                            ready.set()
                        else:
                            loop.call_later(0.005, started)

                    loop.call_soon(started)
                    loop.run_until_complete(task)
                except BaseException as exc:  # noqa: BLE001 - reported to the opener
                    failure.append(exc)
                    ready.set()
                finally:
                    _cancel_all(loop)
                    loop.close()
                    with contextlib.suppress(OSError):
                        sock.close()

            self._server = server
            self._thread = threading.Thread(target=run, name=f"{self.name} :{self.port}", daemon=True)
            self._thread.start()
            if not ready.wait(10) or failure or not server.started:
                reason = failure[0] if failure else "did not start in time"
                raise DeviceError(f"HTTP server on {HOST}:{self.port} failed to start: {reason}")
            log.debug("%s listening on %s", self.name, self.base_url)

    def close(self) -> None:
        """Stop listening and abort every connection now; return once the port is closed."""
        with self._lock:
            thread, server, loop = self._thread, self._server, self._loop
            if thread is None or server is None or loop is None:
                return

            async def halt() -> None:
                for srv in getattr(server, "servers", []):
                    srv.close()  # stop accepting first, so nothing new slips in while we abort
                for conn in list(server.server_state.connections):
                    transport = getattr(conn, "transport", None)
                    if transport is not None:
                        transport.abort()
                server.force_exit = True
                server.should_exit = True

            if thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                    asyncio.run_coroutine_threadsafe(halt(), loop).result(timeout=5)
                thread.join(timeout=10)
            self._thread = self._server = self._loop = None
            log.debug("%s closed (port %s)", self.name, self.port)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.wait(tasks, timeout=5))
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_asyncgens())


# -- the simulator base -------------------------------------------------------------------------------


class HttpSimulator(Simulator):
    """Base class of every HTTP simulator (see the module docstring for the API)."""

    default_username: ClassVar[str] = "admin"
    default_password: ClassVar[str] = "admin"
    tls_default: ClassVar[bool] = False
    extra_fault_kinds: ClassVar[Mapping[str, Mapping[str, Param]]] = {}
    reboot_down_s: ClassVar[float] = 10.0  # real-unit seconds the port is closed during a reboot
    power_off_s: ClassVar[float] = 2.0  # wall-clock seconds a control-plane power off lasts by default

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        self.state_dir = Path(options.state)
        self.clock = Clock(options.time_scale)
        self.faults: HttpFaults = HttpFaults({**HTTP_FAULT_KINDS, **self.extra_fault_kinds})
        self.credentials = load_credentials(options, self.default_username, self.default_password)
        self.unavailable: Response | None = None
        self.control_enabled = bool(options.control)
        self.plane: ControlPlane | None = None
        tls = getattr(options, "tls", None)
        if tls is None:
            tls = self.tls_default or os.environ.get(TLS_ENV, "") == "1"
        self.tls_files: TlsFiles | None = ensure_self_signed(self.state_dir / "tls") if tls else None
        self.server: HttpServer | None = None
        # How many requests got each "not up" answer (502/503 while booting): evidence a client waited.
        self.unavailable_served: dict[int, int] = {}
        self._power_lock = threading.RLock()

    # -- to implement ---------------------------------------------------------------------------------

    @abstractmethod
    def routes(self) -> list[BaseRoute]:
        """The device's own API routes."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-line fields of the unit: ``device_id``, ``firmware`` and any extra keys."""

    def on_boot(self) -> None:  # noqa: B027 - optional hook
        """Every power-on (the first start too). The listener is open; set ``self.unavailable`` meanwhile."""

    def on_shutdown(self) -> None:  # noqa: B027 - optional hook
        """Power off, reboot, stop: the listener is already closed. Flush what the unit would keep."""

    def error_response(self, status: int, code: str, message: str,
                       headers: Mapping[str, str] | None = None) -> Response:
        """The unit's JSON error shape; targets override it to match their spec."""
        return JSONResponse({"statusCode": status, "code": code, "message": message}, status_code=status,
                            headers=dict(headers or {}))

    def count_unavailable(self, status: int) -> None:
        self.unavailable_served[status] = self.unavailable_served.get(status, 0) + 1

    # -- properties -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else 0

    @property
    def base_url(self) -> str:
        if self.server is None:
            raise RuntimeError("the simulator is not started")
        return self.server.base_url

    @property
    def control_url(self) -> str | None:
        return f"{self.base_url}/_sim" if self.control_enabled else None

    @property
    def cert_path(self) -> Path | None:
        return self.tls_files.cert if self.tls_files is not None else None

    # -- Simulator --------------------------------------------------------------------------------------

    def build_app(self) -> Any:
        routes: list[BaseRoute] = []
        if self.control_enabled:
            self.plane = ControlPlane()
            self.register_routes(self.plane)
            routes += starlette_routes(self.plane)
        routes += self.routes()
        return FaultMiddleware(Starlette(routes=routes), self)

    def start(self) -> dict[str, Any]:
        self.server = HttpServer(self.build_app(), tls=self.tls_files, name=f"{self.target} sim")
        self.server.open()
        self._boot()
        fields: dict[str, Any] = {"address": self.base_url, "control": self.control_url,
                                  "user": self.credentials.username}
        if self.cert_path is not None:
            fields["cert"] = str(self.cert_path)
        fields.update(self.identity())
        return fields

    def stop(self) -> None:
        with self._power_lock:
            if self.server is not None:
                self.server.close()
            self.on_shutdown()

    def _boot(self) -> None:
        self.on_boot()

    def reboot_down(self) -> float:
        return max(MIN_DOWN, self.clock.real(self.reboot_down_s))

    def reboot(self, down: float | None = None) -> None:
        """Close, wait ``down`` seconds (connections refused), boot on the same port."""
        assert self.server is not None
        with self._power_lock:
            self.server.close()
            self.on_shutdown()
            time.sleep(self.reboot_down() if down is None else max(0.0, down))
            self.server.open()
            self._boot()

    def reboot_later(self, delay: float = 0.05, down: float | None = None) -> threading.Thread:
        """Reboot from a background thread after ``delay`` seconds (let the current answer go out first)."""

        def run() -> None:
            time.sleep(delay)
            try:
                self.reboot(down)
            except Exception:  # noqa: BLE001 - a thread has nobody to raise to
                log.exception("%s: reboot failed", self.target)

        thread = threading.Thread(target=run, name=f"{self.target} reboot", daemon=True)
        thread.start()
        return thread

    def refuse_for(self, seconds: float) -> None:
        """Listener closed for ``seconds`` (connections refused), then open again; no reboot hooks."""
        assert self.server is not None
        with self._power_lock:
            self.server.close()
            time.sleep(max(0.0, seconds))
            self.server.open()

    def power(self, on: bool, seconds: float | None = None) -> dict[str, Any]:
        if on:
            return {"power": "on", "address": self.base_url}
        off_for = self.power_off_s if seconds is None else seconds

        def cycle() -> None:
            time.sleep(0.05)  # the control answer goes out before the port closes
            try:
                self.reboot(off_for)
            except Exception:  # noqa: BLE001
                log.exception("%s: power cycle failed", self.target)

        threading.Thread(target=cycle, name=f"{self.target} power", daemon=True).start()
        return {"power": "off", "back_in_s": off_for}

    def reset(self) -> dict[str, Any]:
        down = self.reboot_down()
        self.reboot_later(0.05, down)
        return {"rebooting": True, "down_s": down}

    def faults_changed(self) -> None:
        # Window faults act on the server, not per request: carry them out now, from a thread, so the
        # control answer that set them still goes out.
        refuse = self.faults.take("refuse")
        if refuse is not None:
            threading.Thread(target=self._later, args=(self.refuse_for, refuse["seconds"]), daemon=True).start()
        reboot = self.faults.take("reboot")
        if reboot is not None:
            self.reboot_later(0.05, reboot["down"])

    @staticmethod
    def _later(func: Any, *args: Any) -> None:
        time.sleep(0.05)
        try:
            func(*args)
        except Exception:  # noqa: BLE001
            log.exception("fault action failed")

    def register_routes(self, plane: ControlPlane) -> None:
        plane.add("GET", "/state", lambda body: self.state())
        plane.add("GET", "/faults", lambda body: {"faults": self.faults.describe(), "kinds": self.faults.kinds})
        plane.add("POST", "/faults", self._set_fault)
        plane.add("DELETE", "/faults", self._clear_faults)
        plane.add("POST", "/power", self._power_route)
        plane.add("POST", "/reset", lambda body: self.reset())
        plane.add("POST", "/firmware", self._set_firmware)

    def _power_route(self, body: dict[str, Any]) -> dict[str, Any]:
        on = require(body, "on", bool)
        seconds = body.get("seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                                    or seconds < 0):
            raise ValueError("field 'seconds' must be a number >= 0")
        return self.power(on, None if seconds is None else float(seconds))


__all__ = ["Credentials", "HttpServer", "HttpSimulator", "MIN_DOWN", "TLS_ENV", "load_credentials",
           "unavailable_html"]
