"""``integrity.check`` of an acquisition folder (targets/planktoscope.md §11.2). Pure.

Format (identical in v2.3, device-backend v2024.0.0 and HEAD)::

    # planktoscope integrity file, see https://www.planktoscope.org
    # filename,size,sha1
    metadata.json,<size>,<sha1>
    <image>,<size>,<sha1>

The sha1 is over the file's basename (UTF-8), one NUL byte, then the content: it is *not* the plain content
hash. The project's checker needs the first two lines to start with ``#`` and every row to split on ``,``
into exactly three fields, and compares both size and hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harness.errors import BadInput

NAME = "integrity.check"
HEADER = ("# planktoscope integrity file, see https://www.planktoscope.org\n"
          "# filename,size,sha1\n")


@dataclass(frozen=True)
class Row:
    name: str
    size: int
    sha1: str


def file_hash(name: str, content: bytes) -> str:
    """The project's per-file hash: sha1(basename UTF-8 + NUL + content)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(name.encode("utf-8") + b"\0")
    digest.update(content)
    return digest.hexdigest()


def build(files: Iterable[tuple[str, bytes]]) -> bytes:
    """The integrity file for ``(basename, content)`` pairs in the given order (metadata.json first)."""
    lines = [HEADER]
    for name, content in files:
        if "," in name or "\n" in name or "/" in name:
            raise ValueError(f"{name!r} cannot be listed in integrity.check")
        lines.append(f"{name},{len(content)},{file_hash(name, content)}\n")
    return "".join(lines).encode("utf-8")


def parse(data: bytes) -> list[Row]:
    """The rows of an integrity file, checked as the project's checker does; BadInput if malformed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("integrity.check is not UTF-8 text") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or not lines[0].startswith("#") or not lines[1].startswith("#"):
        raise BadInput("integrity.check does not start with its two '#' header lines")
    rows: list[Row] = []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split(",")
        if len(parts) != 3:
            raise BadInput(f"integrity.check line {number} does not have exactly three fields")
        name, size, sha1 = parts
        if not size.isdigit() or len(sha1) != 40 or any(c not in "0123456789abcdef" for c in sha1.lower()):
            raise BadInput(f"integrity.check line {number} has a bad size or sha1")
        rows.append(Row(name, int(size), sha1.lower()))
    return rows


def verify(data: bytes, files: Mapping[str, bytes]) -> list[str]:
    """Mismatches between an integrity file and the folder's ``{basename: content}``; [] when all agree.

    Files in the folder that the integrity file does not list (``done.txt``, ``integrity.check`` itself)
    are not mismatches: the project's checker only walks the listed rows.
    """
    return verify_hashes(data, {name: (len(c), file_hash(name, c)) for name, c in files.items()})


def verify_hashes(data: bytes, files: Mapping[str, tuple[int, str]]) -> list[str]:
    """``verify`` for files already hashed while streaming: ``{basename: (size, file_hash)}``."""
    problems: list[str] = []
    for row in parse(data):
        found = files.get(row.name)
        if found is None:
            problems.append(f"{row.name}: listed but missing")
        elif found[0] != row.size:
            problems.append(f"{row.name}: {found[0]} bytes, integrity.check says {row.size}")
        elif found[1] != row.sha1:
            problems.append(f"{row.name}: sha1 does not match integrity.check")
    return problems


class StreamHash:
    """The project's per-file hash computed chunk by chunk (for multi-MB images)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.size = 0
        self._digest = hashlib.sha1(usedforsecurity=False)
        self._digest.update(name.encode("utf-8") + b"\0")

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._digest.update(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
