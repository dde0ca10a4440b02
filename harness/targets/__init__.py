"""Registry of targets. Each target lives in harness/targets/<name>/ and exposes TARGET (a Target)."""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache

from harness.errors import BadInput
from harness.targets.base import Target

ALL_TARGETS = ("multispeq", "bactobox", "planktoscope", "neuroomnet", "mobiusflow")


@cache
def available_targets() -> tuple[str, ...]:
    """Targets whose package is present (found, not imported: a command imports only the target it uses)."""
    return tuple(name for name in ALL_TARGETS if importlib.util.find_spec(f"harness.targets.{name}") is not None)


def get_target(name: str) -> Target:
    if name not in available_targets():
        raise BadInput(f"unknown target {name!r} (known: {', '.join(available_targets())})")
    target = getattr(importlib.import_module(f"harness.targets.{name}"), "TARGET", None)
    if target is None:
        raise BadInput(f"target {name!r} is not ready: harness/targets/{name} defines no TARGET")
    return target
