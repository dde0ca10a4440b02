"""What `harness sim run` passes to a simulator (the CLI contract of DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class SimOptions:
    target: str
    state: Path
    firmware: str | None = None  # the firmware or software version, for every target
    profile: str | None = None
    device_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    # None = fast (no artificial delays); 1.0 = realtime; 0.1 = ten times faster than the real unit.
    time_scale: float | None = None
    control: bool = True
    # HTTP simulators: serve HTTPS with a self-signed certificate. None: the target's default, or
    # HARNESS_SIM_TLS=1 in the environment (simulators/core/http.py).
    tls: bool | None = None
