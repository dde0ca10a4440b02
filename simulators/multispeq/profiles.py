"""Firmware profiles of the simulated MultispeQ v1 (targets/multispeq.md §10 item 6, §3.5, §4.4, §5.1).

A profile is everything about a firmware build that is not in the EEPROM: the layout family, the command
table, how the device ID is printed, which keys ``device_info`` has, and how ``set_device_info`` asks for
its arguments. Pure data: no I/O.

Command tables map the token a host types (a name, or a decimal code) to an *action* that the console
implements. Names are hashed by the console (§3.2 step 6), so collisions behave like the firmware's switch.
Where the spec leaves a detail open [U] the choice made here is noted next to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from harness.errors import BadInput
from harness.targets.multispeq import schema
from harness.targets.multispeq.schema import Family


class IdStyle(StrEnum):
    """How a build prints the device ID (§6)."""

    COLON4 = "colon4"  # 1.16+: "52:00:13:1f"
    D4F5_PADDED = "d4f5_padded"  # device_info before 1.16: "d4:f5:52:00:13:1f"
    D4F5_UNPADDED = "d4f5_unpadded"  # print_memory before 1.16, device_info in v1.04: "d4:f5:52:0:13:1f"


class ManufactureStyle(StrEnum):
    """How ``device_info`` shows ``device_manufacture`` (A and early B only, §5.1)."""

    NONE = "none"
    INT = "int"
    STRING = "string"  # v1.04 (0.54) quotes it


def _table(*groups: Mapping[str, str]) -> Mapping[str, str]:
    merged: dict[str, str] = {}
    for group in groups:
        merged.update(group)
    return MappingProxyType(merged)


# Commands every v1 build answers. Which of the read-only helpers existed in the 0.5x era is not known [U];
# they are harmless, so every profile has them.
_COMMON = {
    "hello": "hello", "1000": "hello",
    "device_info": "device_info", "1007": "device_info",
    "print_all": "print_all", "1029": "print_all",
    "battery": "battery",
    "compiled": "compiled",
    "print_date": "print_date",
    "print_magnetometer_bias": "print_mag_bias", "1051": "print_mag_bias",
    "print_magnetometer": "print_mag", "1052": "print_mag",
}

# The setters that keep their numeric codes in every family (§3.5).
_MATRIX_CODES = {
    "1030": "set_mag_bias", "1031": "set_mag", "1032": "set_accel_bias", "1033": "set_accel",
}

# A/B/C50: numeric setters only, memory read with 1006 (§3.5). In v1.04 (0.54) 1034..1038 take one PAR
# value each; from the v1.05 release on 1034 takes all five. Whether 1035..1038 survived is not known [U]:
# they are kept (a host never needs them there).
_NUMERIC = {
    "1006": "print_memory",
    **_MATRIX_CODES,
    "1034": "set_par",
    "1035": "set_par_yint", "1036": "set_par_r", "1037": "set_par_g", "1038": "set_par_b",
    "1039": "set_thickness",
    "1040": "set_detector1", "1041": "set_detector2", "1042": "set_detector3", "1043": "set_detector4",
    "1044": "set_led_par", "1045": "ir_baseline",
    "1046": "set_colorcal1", "1047": "set_colorcal2", "1048": "set_colorcal3",
    "1049": "set_colorcal_blanks", "1050": "set_user_defined",
    # ≤1.06: 1027 reboots and is also reachable by name [U: the names are assumed present].
    "1027": "reset", "reset": "reset", "reboot": "reset",
}
_NUMERIC_V104 = {**_NUMERIC, "1034": "set_par_all"}

# C75 and later: named setters (§3.4); 1034..1050 and 1006 are gone, 1030..1033 stay.
_NAMED = {
    "print_memory": "print_memory",
    **_MATRIX_CODES,
    "set_magnetometer_bias": "set_mag_bias", "set_magnetometer": "set_mag",
    "set_accelerometer_bias": "set_accel_bias", "set_accelerometer": "set_accel",
    "set_par": "set_par",
    "set_thickness": "set_thickness", "set_thickness_quick": "set_thickness_quick",
    "set_detector1_offset": "set_detector1", "set_detector2_offset": "set_detector2",
    "set_detector3_offset": "set_detector3", "set_detector4_offset": "set_detector4",
    "set_led_par": "set_led_par", "ir_baseline": "ir_baseline",
    "set_colorcal1": "set_colorcal1", "set_colorcal2": "set_colorcal2", "set_colorcal3": "set_colorcal3",
    "set_colorcal_blanks": "set_colorcal_blanks", "set_user_defined": "set_user_defined",
    "reset": "reset", "1027": "reset", "reboot": "reboot",
}
_SET_DEVICE_INFO = {"set_device_info": "set_device_info", "1008": "set_device_info"}
# v1.04 sets the ID only through 1001, which also re-addresses the DACs (not modelled) and prompts twice.
_V104_ID = {"1001": "set_device_info"}

_NUMERIC_COMMANDS = _table(_COMMON, _NUMERIC, _SET_DEVICE_INFO)
_NAMED_COMMANDS = _table(_COMMON, _NAMED, _SET_DEVICE_INFO)
_V104_COMMANDS = _table(_COMMON, _NUMERIC_V104, _V104_ID)


@dataclass(frozen=True)
class Profile:
    """One firmware build as the simulator presents it."""

    name: str  # unique key, e.g. "1.17", "1.05-B-early"
    firmware: str  # what device_info reports
    family: Family
    commands: Mapping[str, str]  # token (name or decimal code) -> action
    memory_id_style: IdStyle
    info_id_style: IdStyle
    info_battery: bool = True
    info_configuration: bool = False
    info_manufacture: ManufactureStyle = ManufactureStyle.NONE
    memory_manufacture: bool = False  # print_memory has a "device_manufacture" line (A, early B)
    memory_duplicate_slope_all: bool = False  # v1.04 prints light_slope_all twice
    set_device_info_prompts: bool = False  # reads ID and manufacture date after two prompt lines
    compiled: str = "Mar 10 2017 12:00:00"  # C __DATE__ __TIME__; invented per build [U]
    nan_text: str = "nan"  # "nan" (old newlib, default) or "-nan" (§4.3)

    @property
    def read_command(self) -> str:
        """The token that prints the memory: ``1006`` up to C50, ``print_memory`` from C75 on."""
        return "1006" if "1006" in self.commands else "print_memory"

    @property
    def numeric_setters(self) -> bool:
        return "1044" in self.commands

    @property
    def led_par_values(self) -> int:
        """Values after the LED index in one set_led_par entry: slopes 1..n, then yint."""
        return self.family.par_slopes + 1


def _numeric(name: str, firmware: str, family: str, compiled: str, **kw: object) -> Profile:
    return Profile(name=name, firmware=firmware, family=schema.FAMILIES[family], commands=_NUMERIC_COMMANDS,
                   memory_id_style=IdStyle.D4F5_UNPADDED, info_id_style=IdStyle.D4F5_PADDED,
                   compiled=compiled, **kw)  # type: ignore[arg-type]


def _named(firmware: str, family: str, compiled: str, *, new_id: bool, configuration: bool) -> Profile:
    return Profile(name=firmware, firmware=firmware, family=schema.FAMILIES[family], commands=_NAMED_COMMANDS,
                   memory_id_style=IdStyle.COLON4 if new_id else IdStyle.D4F5_UNPADDED,
                   info_id_style=IdStyle.COLON4 if new_id else IdStyle.D4F5_PADDED,
                   info_configuration=configuration, compiled=compiled)


_EARLY = {"info_manufacture": ManufactureStyle.INT, "memory_manufacture": True, "set_device_info_prompts": True}

PROFILES: Mapping[str, Profile] = MappingProxyType({p.name: p for p in (
    # v1.04 tagged release: numeric only, 1001 sets the ID, no battery, unpadded ID and quoted manufacture
    # date in device_info, a duplicate light_slope_all line in print_memory.
    Profile(name="0.54", firmware="0.54", family=schema.FAMILIES["A"], commands=_V104_COMMANDS,
            memory_id_style=IdStyle.D4F5_UNPADDED, info_id_style=IdStyle.D4F5_UNPADDED, info_battery=False,
            info_manufacture=ManufactureStyle.STRING, memory_manufacture=True, memory_duplicate_slope_all=True,
            set_device_info_prompts=True, compiled="May 16 2016 12:00:00"),
    # 0.55/0.56 sit between v1.04 and the v1.05 release; they are modelled like the release [U].
    _numeric("0.55", "0.55", "A", "May 20 2016 12:00:00", **_EARLY),
    _numeric("0.56", "0.56", "A", "May 25 2016 12:00:00", **_EARLY),
    _numeric("1.05-A", "1.05", "A", "May 30 2016 12:00:00", **_EARLY),
    _numeric("1.05-B-early", "1.05", "B", "Jun 15 2016 12:00:00", **_EARLY),
    _numeric("1.05-B-late", "1.05", "B", "Jun 17 2016 12:00:00"),
    _numeric("1.06-B", "1.06", "B", "Jun 21 2016 12:00:00"),
    _numeric("1.06-C50", "1.06", "C50", "Jul  1 2016 12:00:00"),
    _named("1.10", "C75", "Oct 27 2016 12:00:00", new_id=False, configuration=False),
    _named("1.11", "D", "Nov  2 2016 12:00:00", new_id=False, configuration=False),
    _named("1.13", "E", "Dec 16 2016 12:00:00", new_id=False, configuration=False),
    _named("1.132", "E", "Jan  5 2017 12:00:00", new_id=False, configuration=False),
    # configuration appears in late 1.14 builds (2017-01-30); the 1.14 profile is the early build [U].
    _named("1.14", "E", "Jan 20 2017 12:00:00", new_id=False, configuration=False),
    _named("1.15", "E", "Feb  1 2017 12:00:00", new_id=False, configuration=True),
    _named("1.16", "E", "Feb 17 2017 12:00:00", new_id=True, configuration=True),
    _named("1.17", "E", "Mar 10 2017 12:00:00", new_id=True, configuration=True),
    _named("1.18", "E", "Apr 10 2017 12:00:00", new_id=True, configuration=True),
    _named("1.19", "F", "Jun 27 2017 12:00:00", new_id=True, configuration=True),
    _named("1.20", "F", "Jul 10 2017 12:00:00", new_id=True, configuration=True),
)})

SUPPORTED_FIRMWARE: tuple[str, ...] = tuple(dict.fromkeys(p.firmware for p in PROFILES.values()))
DEFAULT_FIRMWARE = "1.17"

# --profile values for the ambiguous strings. "B" means the late B build (one-value set_device_info, no
# device_manufacture line), which is the only B build that reports 1.06; "B-early" picks the 1.05 build
# from before 2016-06-16.
_AMBIGUOUS = {
    ("1.05", None): "1.05-A", ("1.05", "A"): "1.05-A",
    ("1.05", "B"): "1.05-B-late", ("1.05", "B-late"): "1.05-B-late", ("1.05", "B-early"): "1.05-B-early",
    ("1.06", None): "1.06-C50", ("1.06", "C50"): "1.06-C50",
    ("1.06", "B"): "1.06-B", ("1.06", "B-late"): "1.06-B",
}
PROFILE_CHOICES = ("A", "B", "B-early", "B-late", "C50")


def profile_for(firmware: str, profile: str | None = None) -> Profile:
    """The profile of ``firmware``; ``profile`` (A|B|B-early|B-late|C50) settles 1.05 and 1.06 (§2.1).

    For an unambiguous firmware ``profile`` may be omitted or name the firmware's own family.
    Raises BadInput with the accepted values otherwise.
    """
    family_choice = "B" if profile in ("B-early", "B-late") else profile
    family = schema.family_for_firmware(firmware, family_choice)  # validates firmware and family choice
    if (firmware, profile) in _AMBIGUOUS:
        return PROFILES[_AMBIGUOUS[(firmware, profile)]]
    if firmware in ("1.05", "1.06"):
        raise BadInput(f"profile {profile!r} does not exist for firmware {firmware} "
                       f"(choose one of {', '.join(p for f, p in _AMBIGUOUS if f == firmware and p)})")
    if profile in ("B-early", "B-late"):
        raise BadInput(f"profile {profile!r} applies to firmware 1.05/1.06 only, not {firmware}")
    found = PROFILES.get(firmware)
    if found is None or found.family is not family:  # pragma: no cover - tables out of sync
        raise BadInput(f"no simulator profile for MultispeQ firmware {firmware!r}")
    return found
