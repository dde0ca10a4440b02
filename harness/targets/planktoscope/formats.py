"""How each PlanktoScope writer formats hardware.json / config.json (targets/planktoscope.md §5).

Who wrote a file last decides its bytes: shipped presets (2-space, one LF, ``1.0`` kept), the v2.3 root files
(no final newline), Node-RED saves (4-space, one LF, JavaScript numbers: ``1.0`` becomes ``1``), the v2026
Python and JS writers (2-space, no LF). The simulator writes with these functions, and a migration re-writes
a file in the style it came in, so a migrated file still looks like its writer made it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import BadInput


@dataclass(frozen=True)
class Style:
    indent: int
    trailing_lf: bool
    js_numbers: bool  # JavaScript prints integral floats without ".0"

    def dump(self, doc: Mapping[str, Any]) -> bytes:
        return dump(doc, self)


PRESET = Style(2, True, False)  # shipped hardware presets v2023.9.0 -> v2026, v2026 config presets
CONFIG_PRESET = Style(4, True, False)  # shipped config presets v2.3 -> v2025.0.0
NODE_RED = Style(4, True, True)  # dashboard saves, v2.3 -> v2025.0.0 (W2, W3, W4)
PYTHON = Style(2, False, False)  # v2026 controller update_hardware_config (W5)
JS = Style(2, False, True)  # v2026 updateConfig (W6)


def _js(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, Mapping):
        return {k: _js(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js(v) for v in value]
    return value


def dump(doc: Mapping[str, Any], style: Style) -> bytes:
    """The bytes a writer of ``style`` produces for ``doc`` (key order kept)."""
    data = _js(doc) if style.js_numbers else dict(doc)
    # Python's json with an indent uses ", " -> "," and ": ", like JSON.stringify(obj, null, n).
    text = json.dumps(data, indent=style.indent, ensure_ascii=False, allow_nan=False)
    return (text + ("\n" if style.trailing_lf else "")).encode("utf-8")


def parse_object(data: bytes, what: str) -> dict[str, Any]:
    """A settings file as an ordered dict; BadInput if it is not a UTF-8 JSON object or repeats a key."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what} is not UTF-8 text") from exc

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise BadInput(f"{what} repeats the key {key!r}")
            out[key] = value
        return out

    def no_constant(name: str) -> Any:
        raise BadInput(f"{what} holds {name}, which is not JSON")

    try:
        doc = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except ValueError as exc:
        raise BadInput(f"{what} is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise BadInput(f"{what} is JSON but not an object")
    return doc


def detect_style(data: bytes) -> Style:
    """The writer style a file's bytes show (indent of the first key line, final LF, ``1.0`` spelling)."""
    text = data.decode("utf-8", errors="replace")
    indent = 2
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" ")
        if stripped:
            indent = len(line) - len(stripped) or 2
            break
    js = not _has_integral_float(text)
    return Style(indent, text.endswith("\n"), js)


def _has_integral_float(text: str) -> bool:
    import re

    return re.search(r":\s*-?\d+\.0+\s*[,\n}]", text) is not None


def evidence(data: bytes) -> list[str]:
    """Formatting evidence of §12.1, as readable lines."""
    text = data.decode("utf-8", errors="replace")
    style = detect_style(data)
    found: list[str] = []
    if not text.endswith("\n") and text.rstrip().endswith("}") and style.indent == 4:
        found.append("ends in '}' with no newline and 4-space indent: the v2.3 root config file")
    elif not text.endswith("\n") and style.indent == 2 and _has_integral_float(text):
        found.append("2-space indent, '1.0' kept, no final newline: the v2.3 root hardware file or the "
                     "v2026 Python writer")
    elif not text.endswith("\n") and style.indent == 2:
        found.append("2-space indent without a final newline: a v2026 JS or Python writer")
    elif style.indent == 4 and text.endswith("\n") and not _has_integral_float(text) and '"' in text:
        found.append("4-space indent with a final LF: a shipped config preset or a Node-RED save")
    elif style.indent == 2 and text.endswith("\n"):
        found.append("2-space indent with a final LF: a shipped preset")
    else:
        found.append(f"{style.indent}-space indent, final newline {'present' if style.trailing_lf else 'absent'}")
    return found
