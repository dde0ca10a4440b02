"""``/usr/share/planktoscope/installer-versioning.yml`` and ``installer-config.yml`` (targets/planktoscope.md
§10), and the git checkout that tells v2.3 and v2026 apart where no YAML exists. Pure.

Both YAML files are written by ``ci-record-version.sh``: the comment ``# This file was auto-generated!``,
then ``key: "value"`` lines, always double-quoted, in a fixed order. The parser accepts exactly that shape
(and tolerates extra keys), because a file of another shape did not come from the installer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import BadInput

HEADER = "# This file was auto-generated!"
VERSIONING_KEYS = ("repo", "commit", "tag", "version")
CONFIG_KEYS = ("repo", "version-query", "query-type", "hardware", "tag-prefix", "setup-entrypoint")
_LINE = re.compile(r'^(?P<key>[A-Za-z][A-Za-z0-9_-]*): "(?P<value>[^"\\]*)"$')
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class InstallerVersioning:
    repo: str
    commit: str
    tag: str
    version: str

    def build(self) -> bytes:
        return _build(HEADER, [(k, getattr(self, k)) for k in VERSIONING_KEYS])

    def as_json(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in VERSIONING_KEYS}


def _build(header: str, pairs: list[tuple[str, str]]) -> bytes:
    return ("\n".join([header, *(f'{k}: "{v}"' for k, v in pairs)]) + "\n").encode("utf-8")


def _parse_pairs(data: bytes, what: str) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what} is not UTF-8 text") from exc
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("#"):
        raise BadInput(f"{what} does not start with the installer's comment line")
    pairs: dict[str, str] = {}
    for line in lines[1:]:
        if line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise BadInput(f"{what}: line {line[:40]!r} is not 'key: \"value\"'")
        pairs[match["key"]] = match["value"]
    return pairs


def parse_versioning(data: bytes) -> InstallerVersioning:
    pairs = _parse_pairs(data, "installer-versioning.yml")
    missing = [k for k in VERSIONING_KEYS if k not in pairs]
    if missing:
        raise BadInput(f"installer-versioning.yml lacks {', '.join(missing)}")
    if not _COMMIT.match(pairs["commit"]):
        raise BadInput("installer-versioning.yml: commit is not 40 hex digits")
    return InstallerVersioning(**{k: pairs[k] for k in VERSIONING_KEYS})


def build_installer_config(*, repo: str, version_query: str, query_type: str, hardware: str) -> bytes:
    return _build(HEADER, [("repo", repo), ("version-query", version_query), ("query-type", query_type),
                           ("hardware", hardware), ("tag-prefix", "software/"),
                           ("setup-entrypoint", "software/distro/setup/setup.sh")])


def parse_installer_config(data: bytes) -> dict[str, str]:
    pairs = _parse_pairs(data, "installer-config.yml")
    missing = [k for k in ("repo", "hardware") if k not in pairs]
    if missing:
        raise BadInput(f"installer-config.yml lacks {', '.join(missing)}")
    return pairs


# -- the git checkout (v2.3 and v2026 have no version file) ------------------------------------------------


def git_version(head: bytes, packed_refs: bytes) -> str | None:
    """The tag of a detached HEAD, from ``.git/HEAD`` and ``.git/packed-refs``, as ``git describe`` would
    name an exactly tagged commit with the ``software/`` prefix removed (§10); None if not tagged."""
    commit = head.decode("ascii", errors="replace").strip()
    if commit.startswith("ref:") or not _COMMIT.match(commit):
        return None
    for line in packed_refs.decode("utf-8", errors="replace").splitlines():
        if line.startswith(("#", "^")):
            continue
        parts = line.split()
        if len(parts) == 2 and parts[0] == commit and parts[1].startswith("refs/tags/"):
            return parts[1][len("refs/tags/"):].removeprefix("software/")
    return None


def build_packed_refs(commit: str, tag: str) -> bytes:
    return (f"# pack-refs with: peeled fully-peeled sorted \n{commit} refs/tags/{tag}\n").encode("ascii")
