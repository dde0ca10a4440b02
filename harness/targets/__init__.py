"""Registry of targets. Each target lives in harness/targets/<name>/ and exposes TARGET (a Target)."""

from __future__ import annotations

import importlib

from harness.errors import BadInput
from harness.targets.base import Target

TARGET_NAMES = ("multispeq",)


def get_target(name: str) -> Target:
    if name not in TARGET_NAMES:
        raise BadInput(f"unknown target {name!r} (known: {', '.join(TARGET_NAMES)})")
    module = importlib.import_module(f"harness.targets.{name}")
    return module.TARGET
