"""The control plane: JSON over HTTP on loopback, the same routes for every simulator.

Route logic is framework-agnostic: a ``ControlPlane`` maps ``(method, path)`` to a handler
``(body: dict) -> dict``. Serial simulators serve it on a port of their own with the stdlib
``ControlServer``; HTTP simulators mount it into their starlette app with ``starlette_routes``.

Errors are JSON ``{"error": "..."}``: 404 for an unknown route, 405 for a known path with another
method, 400 for a bad body or a refused request (``ControlError``, ``ValueError``, ``BadInput``), 503
for a ``DeviceError``, 500 otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.errors import DeviceError, HarnessError

log = logging.getLogger(__name__)

PREFIX = "/_sim"
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """A request the simulator refuses; ``status`` is the HTTP status of the answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ControlPlane:
    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix.rstrip("/")
        self._routes: dict[tuple[str, str], Handler] = {}
        self._lock = threading.Lock()

    def _full(self, path: str) -> str:
        path = "/" + path.strip("/")
        return path if path.startswith(self.prefix + "/") else self.prefix + path

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Register ``handler``; ``path`` is relative to the prefix (``/state``) or absolute."""
        key = (method.upper(), self._full(path))
        with self._lock:
            if key in self._routes:
                raise ValueError(f"route {key[0]} {key[1]} is already registered")
            self._routes[key] = handler

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        """Decorator form of ``add``."""

        def register(handler: Handler) -> Handler:
            self.add(method, path, handler)
            return handler

        return register

    def routes(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._routes, key=lambda key: (key[1], key[0]))

    def dispatch(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        """Run the handler for ``method path``; return (HTTP status, JSON-able answer)."""
        path = "/" + path.split("?", 1)[0].strip("/")
        with self._lock:
            handler = self._routes.get((method.upper(), path))
            known_path = any(p == path for _, p in self._routes)
        if handler is None:
            if known_path:
                return 405, {"error": f"{method.upper()} not allowed on {path}"}
            return 404, {"error": f"no control route {path}"}
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return 400, {"error": "the request body must be a JSON object"}
        try:
            result = handler(body)
        except ControlError as exc:
            return exc.status, {"error": str(exc)}
        except HarnessError as exc:
            # BadInput/Refused (a bad firmware name…) are the caller's to fix; a DeviceError is the unit's.
            return (503 if isinstance(exc, DeviceError) else 400), {"error": str(exc)}
        except (ValueError, TypeError, KeyError) as exc:
            # Bad parameters (fault kinds, firmware names, hex images): the caller's to fix.
            message = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
            return 400, {"error": message or type(exc).__name__}
        except Exception as exc:
            log.exception("control route %s %s failed", method, path)
            return 500, {"error": f"{type(exc).__name__}: {exc}"}
        return 200, result if result is not None else {}

    def handle_raw(self, method: str, path: str, raw: bytes) -> tuple[int, bytes]:
        """Decode a raw JSON body, dispatch, encode the answer (used by both servers)."""
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return 400, _encode({"error": f"the request body is not JSON: {exc}"})
        status, answer = self.dispatch(method, path, body)
        return status, _encode(answer)


def _encode(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, sort_keys=True).encode()


def require(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """A body field of the given JSON type, or ControlError 400 naming it."""
    if name not in body:
        raise ControlError(f"missing field {name!r}")
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise ControlError(f"field {name!r} must be {names}, got {value!r}")
    return value


# -- stdlib server for serial simulators ---------------------------------------------------------


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds 40 ms each.
    disable_nagle_algorithm = True

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        status, payload = self.server.plane.handle_raw(self.command, self.path, raw)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("control %s: " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    plane: ControlPlane


class ControlServer:
    """Serve a ControlPlane on 127.0.0.1 (``port=0``: the OS picks a free port)."""

    def __init__(self, plane: ControlPlane, port: int = 0) -> None:
        self.plane = plane
        self._server = _Server(("127.0.0.1", port), _RequestHandler)
        self._server.plane = plane
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL of the control routes, e.g. ``http://127.0.0.1:PORT/_sim``."""
        return f"http://127.0.0.1:{self.port}{self.plane.prefix}"

    def start(self) -> ControlServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"control :{self.port}", daemon=True)
        self._thread.start()
        log.info("control plane on %s", self.url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- starlette adapter for HTTP simulators -------------------------------------------------------


def starlette_routes(plane: ControlPlane) -> list[Any]:
    """Starlette routes that serve ``plane`` under its prefix inside an HTTP simulator's app."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        # Handlers block (they wait for the unit); keep them off the event loop.
        status, payload = await run_in_threadpool(plane.handle_raw, request.method, request.url.path, raw)
        return Response(payload, status_code=status, media_type="application/json")

    methods = ["GET", "POST", "PUT", "DELETE"]
    return [Route(plane.prefix + "/{rest:path}", endpoint, methods=methods)]


__all__ = ["ControlError", "ControlPlane", "ControlServer", "PREFIX", "require", "starlette_routes"]
