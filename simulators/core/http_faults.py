"""HTTP faults: the kinds an HTTP simulator accepts, their registry, and the ASGI middleware that applies them.

The kinds and parameters are listed in ``simulators.core.http`` (module docstring). Faults act on the
device's requests only: the control plane under ``/_sim`` is never delayed, dropped or refused by a fault, so a
test can always clear what it set (except ``refuse``/``reboot``/power windows, which close the one port).

A dropped body is done the way a real connection dies mid-transfer: the first ``after`` bytes are sent, then
the server closes the connection. A client reading a ``Content-Length`` body sees it end early.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from simulators.core.faults import FaultError, Faults, Param

if TYPE_CHECKING:
    from simulators.core.http import HttpSimulator

log = logging.getLogger(__name__)

_PATH = Param(str, None, nullable=True)

HTTP_FAULT_KINDS: dict[str, dict[str, Param]] = {
    "http_error": {"status": Param(int, 500), "count": Param(int, 1), "code": Param(str, "injected_fault"),
                   "path": _PATH},
    "drop_body": {"after": Param(int, 0), "count": Param(int, 1), "path": _PATH},
    "slow_body": {"rate": Param(float), "path": _PATH},
    "delay": {"seconds": Param(float), "count": Param(int, 1), "path": _PATH},
    "busy": {"status": Param(int, 503), "seconds": Param(float, None, nullable=True), "retry_after": Param(int, 5),
             "code": Param(str, "busy")},
    "refuse": {"seconds": Param(float, 1.0)},
    "reboot": {"down": Param(float, None, nullable=True)},
}

# Window kinds act once on the server (HttpSimulator.faults_changed takes them); they are not per request.
WINDOW_KINDS = ("refuse", "reboot")


class InjectedDrop(Exception):  # noqa: N818 - not an error of the app: the fault it was asked for
    """Raised inside the app's ``send`` to make the server close the connection mid-body."""


class HttpFaults(Faults):
    """The fault registry with per-request consumption (``count``) and a URL-path filter."""

    def __init__(self, kinds: Mapping[str, Mapping[str, Param]] | None = None) -> None:
        super().__init__(kinds=kinds if kinds is not None else HTTP_FAULT_KINDS)

    @staticmethod
    def _check(kind: str, values: dict[str, Any]) -> None:
        Faults._check(kind, values)
        status = values.get("status")
        if status is not None and not 400 <= status <= 599:
            raise FaultError(f"fault {kind!r}: status must be an HTTP error, 400..599")
        if kind == "slow_body" and not values["rate"] > 0:
            raise FaultError("fault 'slow_body': rate must be > 0 bytes/s")
        if values.get("retry_after", 0) < 0:
            raise FaultError(f"fault {kind!r}: retry_after must be >= 0")
        path = values.get("path")
        if path is not None and not path.startswith("/"):
            raise FaultError(f"fault {kind!r}: path must start with '/'")

    def peek(self, kind: str, path: str | None = None) -> dict[str, Any] | None:
        """The fault's parameters if it is active (and its ``path`` matches), without consuming it."""
        values = self.get(kind)
        if values is None:
            return None
        prefix = values.get("path")
        if prefix is not None and path is not None and not path.startswith(prefix):
            return None
        return values

    def consume(self, kind: str, path: str | None = None) -> dict[str, Any] | None:
        """Like ``peek``, and count one use: a fault with ``count`` N ends after N uses (0: never)."""
        values = self.peek(kind, path)
        if values is not None:
            self.fired(kind)
        return values

    def fired(self, kind: str) -> None:
        with self._lock:
            values = self._active.get(kind)
            if values is None:
                return
            state = self._state[kind]
            state["done"] += 1
            if values.get("count") and state["done"] >= values["count"]:
                self.clear_locked(kind)

    def take(self, kind: str) -> dict[str, Any] | None:
        """Remove a one-shot fault and return its parameters (window kinds)."""
        with self._lock:
            values = self._active.get(kind)
            if values is not None:
                self.clear_locked(kind)
            return values


class _DropFilter(logging.Filter):
    """uvicorn logs an app exception with a traceback; an injected drop is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, InjectedDrop):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


logging.getLogger("uvicorn.error").addFilter(_DropFilter())


class FaultMiddleware:
    """ASGI middleware in front of the whole app: availability gate, busy, delay, errors, drop, slow body."""

    def __init__(self, app: Any, sim: HttpSimulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/_sim" or scope["path"].startswith("/_sim/"):
            await self.app(scope, receive, send)
            return
        sim, faults, path = self.sim, self.sim.faults, scope["path"]
        gate = sim.unavailable
        if gate is not None:
            sim.count_unavailable(gate.status_code)
            await gate(scope, receive, send)
            return
        busy = faults.peek("busy")
        if busy is not None:
            response = sim.error_response(busy["status"], busy["code"], "The unit is busy. Try again later.",
                                          {"Retry-After": str(busy["retry_after"])})
            await response(scope, receive, send)
            return
        delay = faults.consume("delay", path)
        if delay is not None:
            await asyncio.sleep(delay["seconds"])
        error = faults.consume("http_error", path)
        if error is not None:
            response = sim.error_response(error["status"], error["code"],
                                          f"Injected fault: HTTP {error['status']}.")
            await response(scope, receive, send)
            return
        drop = faults.peek("drop_body", path)
        slow = faults.peek("slow_body", path)
        if drop is not None or slow is not None:
            send = _ShapedSend(send, faults, drop, slow)
        await self.app(scope, receive, send)


class _ShapedSend:
    """Wraps ASGI ``send``: cuts the body after N bytes (drop) and paces it (slow)."""

    def __init__(self, send: Any, faults: HttpFaults, drop: dict[str, Any] | None,
                 slow: dict[str, Any] | None) -> None:
        self._send = send
        self._faults = faults
        self._drop_after = drop["after"] if drop is not None else None
        self._rate = slow["rate"] if slow is not None else None
        self._sent = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self._drop_after is not None and self._sent + len(body) >= self._drop_after \
                and (body or not more):
            keep = self._drop_after - self._sent
            if keep > 0:
                await self._paced(body[:keep], True)
            self._faults.fired("drop_body")
            raise InjectedDrop(f"connection dropped after {self._drop_after} body bytes")
        await self._paced(body, more)

    async def _paced(self, body: bytes, more: bool) -> None:
        if self._rate is None or not body:
            self._sent += len(body)
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
            return
        piece = max(1, int(self._rate / 20))  # about 20 writes a second: smooth enough for a progress bar
        for start in range(0, len(body), piece):
            chunk = body[start:start + piece]
            last = start + piece >= len(body)
            await self._send({"type": "http.response.body", "body": chunk, "more_body": more or not last})
            self._sent += len(chunk)
            await asyncio.sleep(len(chunk) / self._rate)
