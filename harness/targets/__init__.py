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
    """Targets whose package is present and defines TARGET (a target under construction is left out)."""
    names = []
    for name in ALL_TARGETS:
        if importlib.util.find_spec(f"harness.targets.{name}") is None:
            continue
        if getattr(importlib.import_module(f"harness.targets.{name}"), "TARGET", None) is not None:
            names.append(name)
    return tuple(names)


def get_target(name: str) -> Target:
    if name not in available_targets():
        raise BadInput(f"unknown target {name!r} (known: {', '.join(available_targets())})")
    return importlib.import_module(f"harness.targets.{name}").TARGET
