"""features/compatibility.feature has one row per declared version of every target that declares some."""

from __future__ import annotations

import re
from pathlib import Path

from harness.targets import available_targets, get_target

FEATURE = Path(__file__).resolve().parents[1] / "features" / "compatibility.feature"


def test_the_feature_rows_are_the_declared_versions() -> None:
    rows = re.findall(r"^\s*\|\s*([a-z]+)\s*\|\s*([^|]+?)\s*\|\s*$", FEATURE.read_text(), re.M)
    in_feature = {(t, s) for t, s in rows if t != "target"}
    declared = set()
    for name in available_targets():
        try:
            declared |= {(name, v.name) for v in get_target(name).compat_versions()}
        except NotImplementedError:
            continue
    assert in_feature == declared, (sorted(declared - in_feature), sorted(in_feature - declared))
