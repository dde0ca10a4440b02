"""Client of a simulator's control plane (JSON over HTTP on loopback).

Used by feature steps (``@sim_only``) and ``harness firmware-update``. A real unit has no control
plane; every failure here is a ``LinkError`` with one line saying which URL and why.
"""

from __future__ import annotations

from typing import Any

import httpx

from harness.errors import LinkError

# Short: the control plane is on loopback. Power, reset and firmware wait for the port to come back,
# which in realtime mode takes a few seconds, so they get the longer read timeout.
_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
_SLOW_TIMEOUT = httpx.Timeout(30.0, connect=2.0)


class SimControl:
    def __init__(self, base_url: str, *, timeout: httpx.Timeout | float = _TIMEOUT) -> None:
        if not base_url:
            raise LinkError("this unit has no control plane (a real unit, or a simulator run with --no-control)")
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(timeout=timeout, trust_env=False)  # loopback: never a proxy

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SimControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- routes ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return self.request("GET", "/state")

    def faults(self) -> dict[str, Any]:
        return self.request("GET", "/faults")["faults"]

    def set_fault(self, kind: str, **params: Any) -> dict[str, Any]:
        """Inject a fault (``drop``, ``corrupt``, ``throttle``, ``stall``, ``busy``, target kinds)."""
        return self.request("POST", "/faults", {"kind": kind, **params})["faults"]

    def clear_faults(self, kind: str | None = None) -> None:
        self.request("DELETE", "/faults", {"kind": kind} if kind is not None else None)

    def power(self, on: bool) -> dict[str, Any]:
        return self.request("POST", "/power", {"on": on}, slow=True)

    def reset(self) -> dict[str, Any]:
        return self.request("POST", "/reset", {}, slow=True)

    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/firmware", {"firmware": firmware, "profile": profile}, slow=True)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                slow: bool = False) -> dict[str, Any]:
        """Any control route (targets add their own, e.g. ``GET /eeprom``)."""
        url = self.base_url + "/" + path.lstrip("/")
        try:
            response = self._client.request(method, url, json=body,
                                            timeout=_SLOW_TIMEOUT if slow else httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException:
            raise LinkError(f"control plane {url}: no answer in time") from None
        except httpx.HTTPError as exc:
            raise LinkError(f"control plane {url}: {_reason(exc)}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200:
            detail = answer.get("error") if isinstance(answer, dict) else None
            raise LinkError(f"control plane {method} {url}: HTTP {response.status_code}"
                            + (f": {detail}" if detail else ""))
        if not isinstance(answer, dict):
            raise LinkError(f"control plane {method} {url}: the answer is not a JSON object")
        return answer


def _reason(exc: httpx.HTTPError) -> str:
    cause: BaseException | None = exc
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause or exc) or type(exc).__name__
    if isinstance(cause, ConnectionRefusedError) or "refused" in text.lower():
        return "connection refused (is the simulator running?)"
    return text
