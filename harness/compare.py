"""Field-level comparison of two backups, by field name, never by offset.

Each target supplies CompareRules: fields to ignore (glob patterns over flattened names, e.g. boot counters
that every boot rewrites) and how floats compare. Floats that went through float32 and a fixed-decimal
print can differ by the print's rounding, so a target may say "equal within N printed decimals"; NaN equals
NaN whatever the sign spelling (``nan`` / ``-nan``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CompareRules:
    ignore: tuple[str, ...] = ()
    # None: exact compare (strings as printed). An int: numbers compare equal within half a unit of that
    # many decimals, the resolution of the device's own printing.
    float_decimals: int | None = None
    nan_equal: bool = True


@dataclass(frozen=True)
class Difference:
    field: str
    kind: str  # "changed" | "only_in_a" | "only_in_b"
    a: Any = None
    b: Any = None

    def __str__(self) -> str:
        if self.kind == "only_in_a":
            return f"{self.field}: only in A ({self.a!r})"
        if self.kind == "only_in_b":
            return f"{self.field}: only in B ({self.b!r})"
        return f"{self.field}: {self.a!r} -> {self.b!r}"


@dataclass
class DiffResult:
    differences: list[Difference] = field(default_factory=list)
    compared: int = 0
    ignored: int = 0

    @property
    def equal(self) -> bool:
        return not self.differences


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested dicts and lists -> ``name.sub[0][1]`` paths, so every difference names one field."""
    if prefix and isinstance(value, Mapping | list | tuple) and not value:
        yield prefix, value  # an empty container is still a field: {"a": []} differs from {}
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            yield from flatten(sub, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            yield from flatten(sub, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # accepts "nan", "-nan", "inf", "-0.000000"
        except ValueError:
            return None
    return None


def values_equal(a: Any, b: Any, rules: CompareRules) -> bool:
    fa, fb = _as_float(a), _as_float(b)
    if fa is not None and fb is not None:
        if math.isnan(fa) or math.isnan(fb):
            return rules.nan_equal and math.isnan(fa) and math.isnan(fb)
        if rules.float_decimals is None:
            if isinstance(a, str) and isinstance(b, str):
                return a == b  # printed text is idempotent once restored (multispeq.md §8.3)
            return fa == fb
        if math.isinf(fa) or math.isinf(fb):
            return fa == fb
        return abs(fa - fb) <= 0.5 * 10 ** (-rules.float_decimals) + 1e-12 * max(abs(fa), abs(fb))
    return a == b


def diff(a: Mapping[str, Any], b: Mapping[str, Any], rules: CompareRules = CompareRules()) -> DiffResult:
    """Compare two field views; fields present on one side only are differences too."""
    fa, fb = dict(flatten(a)), dict(flatten(b))
    result = DiffResult()
    for name in list(fa) + [n for n in fb if n not in fa]:
        if any(fnmatch.fnmatchcase(name, pat) for pat in rules.ignore):
            result.ignored += 1
            continue
        result.compared += 1
        if name not in fb:
            result.differences.append(Difference(name, "only_in_a", a=fa[name]))
        elif name not in fa:
            result.differences.append(Difference(name, "only_in_b", b=fb[name]))
        elif not values_equal(fa[name], fb[name], rules):
            result.differences.append(Difference(name, "changed", fa[name], fb[name]))
    return result
