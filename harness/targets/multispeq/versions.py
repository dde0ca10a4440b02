"""MultispeQ compatibility rules as data (DESIGN rule 7, targets/multispeq.md §2.10, §8.5).

A backup carries printed field values, named; the EEPROM image has no version field, so a backup made under
one layout family is restored onto another by field NAME, never by offset. For every (source family,
destination family) pair the table says:

- ``restore``: same printed field set and setter semantics; restore as is.
- ``migrate``: map by name; ``dropped`` fields of the backup are skipped, ``added`` fields of the unit are
  left untouched. Needs the cross-family permission (``allow_cross_family=True``). The harness grants it
  for firmware-update and compatibility runs; a plain restore must ask for it explicitly.
- ``refuse``: with the reason. Layout F (1.19/1.20 dev builds) prints malformed memory, so a backup of it
  cannot be taken and a restore onto it cannot be verified by read-back.

B and C50 print the same fields and take the same setters (only the unprinted ``sleep`` differs), and the
console cannot tell them apart, so B <-> C50 is ``restore``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.targets.multispeq.protocol import printed_keys
from harness.targets.multispeq.schema import FAMILIES, Family, family_for_firmware

RESTORE = "restore"
MIGRATE = "migrate"
REFUSE = "refuse"


@dataclass(frozen=True)
class Rule:
    kind: str  # restore | migrate | refuse
    reason: str
    dropped: tuple[str, ...] = ()  # printed fields of the backup the destination lacks (skipped)
    added: tuple[str, ...] = ()  # printed fields of the destination the backup lacks (left untouched)

    @property
    def needs_permission(self) -> bool:
        return self.kind == MIGRATE


@dataclass(frozen=True)
class DeclaredVersion:
    """One firmware per layout family / ID-print style that the harness claims to support and tests."""

    firmware: str
    family: str
    profile: str | None = None
    note: str = ""


DECLARED_VERSIONS: tuple[DeclaredVersion, ...] = (
    DeclaredVersion("1.05", "A", note="tagged v1.05 release; numeric setters, d4:f5 unpadded IDs"),
    DeclaredVersion("1.06", "C50", note="numeric setters, 50 userdefs, sleep added"),
    DeclaredVersion("1.10", "C75", note="named setters, 3-value set_led_par, 75 userdefs"),
    DeclaredVersion("1.11", "D", note="par slopes 3/4 inserted, 115 userdefs"),
    DeclaredVersion("1.15", "E", note="135 userdefs, pre-1.16 d4:f5 ID print"),
    DeclaredVersion("1.17", "E", note="public release, hh:hh:hh:hh IDs"),
)
# Known and deliberately refused: declared so a compatibility matrix can show the refusal.
REFUSED_VERSIONS: tuple[DeclaredVersion, ...] = (
    DeclaredVersion("1.19", "F", note="dev branches; malformed print_memory"),
)

_FAMILY_ORDER = ("A", "B", "C50", "C75", "D", "E", "F")


def _fields(family: Family) -> list[str]:
    # device_id is never part of the version question (it is governed by restore_device_id).
    return [k for k in printed_keys(family) if k != "device_id"]


def _make_rule(src: Family, dst: Family) -> Rule:
    if src.name == "F":
        return Rule(REFUSE, "backups of layout F (firmware 1.19/1.20) are not supported: its print_memory "
                            "output is malformed")
    if dst.name == "F":
        return Rule(REFUSE, "cannot restore onto layout F (firmware 1.19/1.20): its print_memory output is "
                            "malformed, so the restore cannot be verified by read-back")
    a, b = _fields(src), _fields(dst)
    dropped = tuple(k for k in a if k not in b)
    added = tuple(k for k in b if k not in a)
    if src.name == dst.name or not (dropped or added):
        why = "same layout" if src.name == dst.name else (
            f"layouts {src.name} and {dst.name} print the same fields and take the same setters")
        return Rule(RESTORE, why)
    parts = []
    if dropped:
        parts.append(f"skips {_summary(dropped)}")
    if added:
        parts.append(f"leaves {_summary(added)} untouched")
    return Rule(MIGRATE, f"layout {src.name} -> {dst.name} by field name: {', '.join(parts)}", dropped, added)


def _summary(names: tuple[str, ...]) -> str:
    """``thickness_d, userdef50..userdef134``: runs of userdefs collapsed for one-line messages."""
    plain = [n for n in names if not n.startswith("userdef")]
    userdefs = sorted(int(n[7:]) for n in names if n.startswith("userdef"))
    if userdefs:
        first, last = userdefs[0], userdefs[-1]
        plain.append(f"userdef{first}" if first == last else f"userdef{first}..userdef{last}")
    return ", ".join(plain)


RULES: dict[tuple[str, str], Rule] = {
    (s, d): _make_rule(FAMILIES[s], FAMILIES[d]) for s in _FAMILY_ORDER for d in _FAMILY_ORDER
}


def rule_for_families(src_family: str, dst_family: str) -> Rule:
    """The rule for a backup of layout ``src_family`` onto a unit of layout ``dst_family``."""
    return RULES[(src_family, dst_family)]


def rule(src_firmware: str, dst_firmware: str, *, src_profile: str | None = None,
         dst_profile: str | None = None) -> Rule:
    """The rule for a backup made under ``src_firmware`` onto a unit running ``dst_firmware``.

    Ambiguous strings (1.05: A or B, 1.06: B or C50) take their released layout unless a profile says.
    """
    src = family_for_firmware(src_firmware, src_profile)
    dst = family_for_firmware(dst_firmware, dst_profile)
    return rule_for_families(src.name, dst.name)


def summary(names: tuple[str, ...] | list[str]) -> str:
    return _summary(tuple(names))
