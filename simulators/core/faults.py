"""A thread-safe registry of injected faults, and how they shape a byte-stream link.

The control plane sets faults (``set(kind, **params)``) from its own thread; the link adapter (the
pty) asks the registry, in its serving thread, how to send each reply (``shape``) and whether the unit
is busy. Byte-stream kinds (JSON parameters in brackets, defaults after ``=``):

- ``drop``     [after=0, down=0.5, reboot=true]  the link goes away after ``after`` more bytes out, as
               if the USB cable were pulled; the port comes back ``down`` seconds later (null: only on
               power on). A USB-powered unit reboots when unplugged, so by default it sends its boot
               banner again. One shot.
- ``corrupt``  [offset=0, xor=1, count=1]  XOR the byte at ``offset`` of each of the next ``count``
               replies (0: every reply until cleared) with ``xor``. Replies shorter than that pass
               unharmed and do not count.
- ``throttle`` [baud]  limit output to ``baud`` bits/s of real time (10 bits per byte, 8N1).
- ``stall``    [after=0, seconds=null]  after ``after`` more bytes out, stop sending: for ``seconds``,
               then go on; or (null) forever: the rest of the reply and every later reply are lost
               until the fault is cleared. One shot when timed.
- ``busy``     [seconds=null]  the unit ignores its input (it is busy measuring), for ``seconds`` or
               until cleared.

Targets add their own kinds (HTTP errors, power cut at a phase) with ``Faults(kinds={...})``; the
registry validates and stores them, and the target interprets them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class FaultError(ValueError):
    """An unknown fault kind or a bad parameter (the control plane answers 400)."""


_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    kind: type  # int, float, bool or str
    default: Any = _REQUIRED
    nullable: bool = False

    def coerce(self, name: str, value: Any) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise FaultError(f"parameter {name!r} must not be null")
        # JSON has no int/bool distinction worth trusting: true is not a byte offset.
        if self.kind is bool:
            if isinstance(value, bool):
                return value
        elif self.kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif self.kind is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        elif isinstance(value, self.kind):
            return value
        raise FaultError(f"parameter {name!r} must be {self.kind.__name__}, got {value!r}")


BYTE_STREAM_KINDS: dict[str, dict[str, Param]] = {
    "drop": {"after": Param(int, 0), "down": Param(float, 0.5, nullable=True), "reboot": Param(bool, True)},
    "corrupt": {"offset": Param(int, 0), "xor": Param(int, 0x01), "count": Param(int, 1)},
    "throttle": {"baud": Param(int)},
    "stall": {"after": Param(int, 0), "seconds": Param(float, None, nullable=True)},
    "busy": {"seconds": Param(float, None, nullable=True)},
}


# Steps of sending one reply, in order (see Faults.shape).
@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Hold:
    """Stop sending: the rest of this reply is lost (stall forever)."""


@dataclass(frozen=True)
class Drop:
    down: float | None
    reboot: bool


Step = Send | Pause | Hold | Drop


class Faults:
    def __init__(
        self,
        kinds: Mapping[str, Mapping[str, Param]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kinds = dict(BYTE_STREAM_KINDS if kinds is None else kinds)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._active: dict[str, dict[str, Any]] = {}
        self._state: dict[str, dict[str, Any]] = {}  # progress, kept apart from the parameters
        self._bytes_out = 0  # total bytes sent since start: "after N more bytes" counts from here

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    # -- registry ---------------------------------------------------------------------------------

    def set(self, kind: str, **params: Any) -> dict[str, Any]:
        """Activate (or replace) a fault; return its description. Raise FaultError if invalid."""
        spec = self._kinds.get(kind)
        if spec is None:
            raise FaultError(f"unknown fault kind {kind!r}; known: {', '.join(self.kinds)}")
        unknown = sorted(set(params) - set(spec))
        if unknown:
            raise FaultError(f"fault {kind!r} has no parameter {', '.join(map(repr, unknown))}; "
                             f"parameters: {', '.join(spec) or 'none'}")
        values: dict[str, Any] = {}
        for name, param in spec.items():
            if name in params:
                values[name] = param.coerce(name, params[name])
            elif param.default is _REQUIRED:
                raise FaultError(f"fault {kind!r} needs parameter {name!r}")
            else:
                values[name] = param.default
        self._check(kind, values)
        with self._lock:
            self._active[kind] = values
            self._state[kind] = {"set_at": self._monotonic(), "base": self._bytes_out, "done": 0}
            return dict(values)

    @staticmethod
    def _check(kind: str, values: dict[str, Any]) -> None:
        for name in ("after", "offset", "count"):
            if name in values and values[name] < 0:
                raise FaultError(f"fault {kind!r}: {name} must be >= 0")
        for name in ("seconds", "down"):
            if values.get(name) is not None and values[name] < 0:
                raise FaultError(f"fault {kind!r}: {name} must be >= 0")
        if kind == "throttle" and values["baud"] <= 0:
            raise FaultError("fault 'throttle': baud must be > 0")
        if kind == "corrupt" and not 1 <= values["xor"] <= 0xFF:
            raise FaultError("fault 'corrupt': xor must be 1..255 (it must change the byte)")

    def clear(self, kind: str | None = None) -> None:
        with self._lock:
            if kind is None:
                self._active.clear()
                self._state.clear()
            else:
                self._active.pop(kind, None)
                self._state.pop(kind, None)

    def get(self, kind: str) -> dict[str, Any] | None:
        with self._lock:
            self._expire()
            values = self._active.get(kind)
            return None if values is None else dict(values)

    def describe(self) -> dict[str, dict[str, Any]]:
        """The active faults as JSON: ``{kind: {parameters...}}``."""
        with self._lock:
            self._expire()
            return {kind: dict(values) for kind, values in sorted(self._active.items())}

    def _expire(self) -> None:
        # Timed faults that only gate (busy) end by themselves; caller holds the lock.
        busy = self._active.get("busy")
        if busy is not None and busy["seconds"] is not None:
            if self._monotonic() - self._state["busy"]["set_at"] >= busy["seconds"]:
                del self._active["busy"], self._state["busy"]

    # -- applying them to a byte stream -----------------------------------------------------------

    def busy(self) -> bool:
        with self._lock:
            self._expire()
            return "busy" in self._active

    def throttle_rate(self) -> float | None:
        """Real bytes per second allowed by a throttle fault, or None."""
        with self._lock:
            throttle = self._active.get("throttle")
            return None if throttle is None else throttle["baud"] / 10

    def shape(self, reply: bytes) -> list[Step]:
        """How to send ``reply``: corrupted bytes, pauses, a hold or a drop, in order.

        Counts what it plans to send as sent: the adapter carries the plan out (a client that is not
        listening does not make a drop fire later, just as a pulled cable does not wait for a reader).
        """
        if not reply:
            return []
        with self._lock:
            data = bytearray(reply)
            corrupt = self._active.get("corrupt")
            if corrupt is not None and len(data) > corrupt["offset"]:
                data[corrupt["offset"]] ^= corrupt["xor"]
                state = self._state["corrupt"]
                state["done"] += 1
                if corrupt["count"] and state["done"] >= corrupt["count"]:
                    self.clear_locked("corrupt")
            steps: list[Step] = []
            pos = 0
            while True:
                cut, kind = self._next_cut(pos, len(data))
                if cut > pos:
                    steps.append(Send(bytes(data[pos:cut])))
                    self._bytes_out += cut - pos
                    pos = cut
                if kind is None:
                    break
                values = self._active[kind]
                if kind == "drop":
                    self.clear_locked("drop")
                    steps.append(Drop(values["down"], values["reboot"]))
                    break
                if values["seconds"] is None:  # stall forever: stays active, swallows everything
                    steps.append(Hold())
                    break
                self.clear_locked("stall")
                steps.append(Pause(values["seconds"]))
            return steps

    def due_drop(self) -> Drop | None:
        """A drop whose byte count is already reached (``after=0``): fire it now, without a reply."""
        with self._lock:
            values = self._active.get("drop")
            if values is None or self._state["drop"]["base"] + values["after"] > self._bytes_out:
                return None
            self.clear_locked("drop")
            return Drop(values["down"], values["reboot"])

    def _next_cut(self, pos: int, end: int) -> tuple[int, str | None]:
        """The earliest drop/stall trigger in the current reply, whose ``data[pos]`` is the next byte.

        A drop may fire right after the reply's last byte ("after N more bytes"); a stall there
        would stall nothing, so it waits for the next reply.
        """
        best: tuple[int, str | None] = (end, None)
        for kind in ("stall", "drop"):  # a stall and a drop at the same byte: the stall first
            values = self._active.get(kind)
            if values is None:
                continue
            trigger = self._state[kind]["base"] + values["after"]  # global index of the byte
            cut = max(pos, pos + trigger - self._bytes_out)
            limit_ok = cut <= end if kind == "drop" else cut < end
            if limit_ok and (best[1] is None or cut < best[0]):
                best = (cut, kind)
        return best

    def clear_locked(self, kind: str) -> None:
        self._active.pop(kind, None)
        self._state.pop(kind, None)
