"""BactoBox software versions and the GMI compatibility rule (targets/bactobox.md §5). Pure data.

The software running on the unit *at restore time* reads the GMI; after the restart the unit runs the
software *inside* the GMI. So the rule looks at the GMI's format and the unit's current version only.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import BadInput, Refused
from harness.targets.base import semver_key


@dataclass(frozen=True)
class Version:
    name: str
    released: str
    layout: str  # "L1" | "L2"
    env_format: int  # boot environment v1 (single copy) or v2 (redundant pair)
    store_version: int
    writes_format: int
    reads_formats: tuple[int, ...]


VERSIONS: dict[str, Version] = {
    "1.8.4": Version("1.8.4", "2023-05", "L1", 1, 1, 1, (1,)),
    "2.2.0": Version("2.2.0", "2024-03", "L2", 1, 2, 2, (1, 2)),
    "2.6.3": Version("2.6.3", "2025-02", "L2", 2, 2, 2, (1, 2)),
    "3.1.0": Version("3.1.0", "2026-01", "L2", 2, 2, 3, (2, 3)),
}
# The first release that reads each format: the update-first advice of gmi_format_too_new.
FIRST_READER = {1: "1.8.4", 2: "2.0.0", 3: "3.0.0"}

AS_IS = "as_is"
MIGRATE = "migrate"


version_key = semver_key  # plain semantic versioning (§5): ``2.10.0`` sorts after ``2.9.1``


def get_version(name: str) -> Version:
    try:
        return VERSIONS[name]
    except KeyError:
        raise BadInput(f"unknown BactoBox software version {name!r} (known: {', '.join(VERSIONS)})") from None


def formats_text(formats: tuple[int, ...]) -> str:
    if len(formats) == 1:
        return f"format {formats[0]} only"
    return "formats " + " and ".join(str(f) for f in formats) + " only"


def restore_verdict(gmi_format: int, gmi_software: str, unit_reads: tuple[int, ...], unit_software: str) -> str:
    """``as_is`` or ``migrate``; Refused with the unit's own message (§5) when the unit cannot read the GMI.

    ``unit_reads`` is what the unit reports (``gmi.reads_formats`` of ``GET /device``), so a real unit's
    answer wins over this table; the table only adds the wording.
    """
    if gmi_format in unit_reads:
        # A format-1 GMI on a unit that writes format 2 goes through the legacy reader (§5 "migrate").
        return MIGRATE if gmi_format == 1 and max(unit_reads) >= 2 else AS_IS
    if gmi_format > max(unit_reads, default=0):
        first = FIRST_READER.get(gmi_format, "a newer release")
        raise Refused(f"gmi_format_too_new: This GMI file has format {gmi_format} (made with BactoBox software "
                      f"{gmi_software}). The software on this BactoBox ({unit_software}) can restore "
                      f"{formats_text(unit_reads)}. Update the BactoBox software to {first} or later, then "
                      f"restore again. The restore will then roll the software back to the version in the "
                      f"GMI file.")
    raise Refused(f"gmi_format_unsupported: This GMI file has format {gmi_format} (made with BactoBox software "
                  f"{gmi_software}). Software {unit_software} can no longer restore it. First restore a GMI "
                  f"file made with software 2.x, then restore this one, or contact SBT support.")
