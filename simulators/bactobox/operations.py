"""Long-running operations of the simulated BactoBox (bactobox.md §2.6): state, progress, text log, events.

An ``Operation`` is shared between the device thread that runs it and the HTTP handlers that poll it or
follow it as server-sent events, so every change goes through one lock and bumps ``version``. Log lines
and state changes are stored as numbered events (replayed after ``Last-Event-ID``); progress is kept as
one current value that the SSE stream coalesces. Also here: ``ApiRefusal`` (an error answer of §2.8) and
``Pacer`` (throughput limits of the timing model).
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

FINAL_STATES = frozenset({"succeeded", "failed", "expired", "withdrawn"})


def iso(t: dt.datetime | None, *, ms: bool = False) -> str | None:
    if t is None:
        return None
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds" if ms else "seconds").replace("+00:00", "Z")


class ApiRefusal(Exception):
    """An error answer of the device API: ``{"error": {code, message, details, retryable}}``."""

    def __init__(self, status: int, code: str, message: str, *, details: dict[str, Any] | None = None,
                 retryable: bool = False, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.retryable = retryable
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details,
                          "retryable": self.retryable}}


class OperationFailed(Exception):
    """Ends an operation in ``failed`` with the error ``code`` and ``message`` of §6."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass
class LogLine:
    number: int
    ts: dt.datetime
    level: str
    text: str

    def text_line(self) -> str:
        return f"{iso(self.ts, ms=True)} {self.level} {self.text}"


@dataclass
class Operation:
    kind: str  # backup | restore | digest
    now: Any  # () -> datetime: the device clock
    id: str = field(default_factory=lambda: "op-" + secrets.token_hex(4))
    state: str = "preparing"
    cancellable: bool = False
    created: dt.datetime | None = None
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific (file name, deadline, …)

    def __post_init__(self) -> None:
        self.lock = threading.Condition()
        self.created = self.started = self.now()
        self.lines: list[LogLine] = []
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (id, type, data): log, state, artifact, end
        self.version = 0  # bumped on every change, progress included
        self.progress: dict[str, Any] = {"phase": self.state, "step": 0, "steps": 0, "percent": 0.0,
                                         "done_bytes": 0, "total_bytes": None, "eta_s": None}
        self._t0 = time.monotonic()

    # -- changes --------------------------------------------------------------------------------------

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        # caller holds the lock
        self.events.append((len(self.events) + 1, kind, data))
        self.version += 1
        self.lock.notify_all()

    def log(self, text: str, level: str = "INFO") -> None:
        with self.lock:
            line = LogLine(len(self.lines) + 1, self.now(), level, text)
            self.lines.append(line)
            self._event("log", {"line": line.number, "ts": iso(line.ts, ms=True), "level": level, "text": text})

    def set_state(self, state: str, *, cancellable: bool | None = None) -> None:
        with self.lock:
            self.state = state
            if cancellable is not None:
                self.cancellable = cancellable
            self.progress["phase"] = state
            self._event("state", {"state": state})

    def set_progress(self, percent: float, *, done: int | None = None, total: int | None = None,
                     step: int | None = None, steps: int | None = None) -> None:
        with self.lock:
            p = self.progress
            p["percent"] = round(max(p["percent"], min(100.0, percent)), 2)
            if done is not None:
                p["done_bytes"] = done
            if total is not None:
                p["total_bytes"] = total
            if step is not None:
                p["step"] = step
            if steps is not None:
                p["steps"] = steps
            elapsed = time.monotonic() - self._t0
            p["eta_s"] = int(elapsed * (100 - p["percent"]) / p["percent"]) if p["percent"] > 0 else None
            self.version += 1
            self.lock.notify_all()

    def announce(self, kind: str, data: dict[str, Any]) -> None:
        with self.lock:
            self._event(kind, data)

    def succeed(self, result: dict[str, Any], final_line: str) -> None:
        self.log(final_line)
        with self.lock:
            self.result = result
            self.finished = self.now()
            self.progress["percent"] = 100.0
            self.progress["eta_s"] = 0
        self._finish("succeeded")

    def fail(self, code: str, message: str, details: dict[str, Any] | None = None, *, line_prefix: str) -> None:
        if self.final:
            return
        self.log(f"{line_prefix}: {message}", "ERROR")
        with self.lock:
            self.error = {"code": code, "message": message, "details": details or {}, "retryable": False}
            self.finished = self.now()
        self._finish("failed")

    def end(self, state: str) -> None:
        """An end without success or failure: ``expired`` or ``withdrawn``."""
        with self.lock:
            self.finished = self.now()
        self._finish(state)

    def _finish(self, state: str) -> None:
        with self.lock:
            self.state = state
            self.cancellable = False
            self.progress["phase"] = state
            self._event("state", {"state": state})
            self._event("end", self.to_json(locked=True))

    # -- views ----------------------------------------------------------------------------------------

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self, *, locked: bool = False) -> dict[str, Any]:
        if not locked:
            with self.lock:
                return self.to_json(locked=True)
        return {"id": self.id, "kind": self.kind, "state": self.state, "cancellable": self.cancellable,
                "created": iso(self.created), "started": iso(self.started), "finished": iso(self.finished),
                "progress": dict(self.progress), "log_lines": len(self.lines), "result": self.result,
                "error": self.error}

    def log_after(self, after: int) -> list[LogLine]:
        with self.lock:
            return list(self.lines[max(0, after):])

    def events_after(self, after: int) -> tuple[list[tuple[int, str, dict[str, Any]]], int]:
        """Stored events with id > ``after``, and the current version (for coalesced progress)."""
        with self.lock:
            return list(self.events[max(0, after):]), self.version

    def wait_change(self, version: int, timeout: float) -> int:
        with self.lock:
            if self.version == version:
                self.lock.wait(timeout)
            return self.version


class Pacer:
    """Holds a byte stream to ``rate`` bytes/s of wall-clock time (None: unthrottled)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.t0 = time.monotonic()
        self.done = 0

    def advance(self, n: int, stop: threading.Event | None = None) -> None:
        self.done += n
        if not self.rate:
            return
        wait = self.t0 + self.done / self.rate - time.monotonic()
        if wait > 0:
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
