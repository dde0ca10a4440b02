"""PlanktoScope software releases as data (targets/planktoscope.md §1, §2, §6, §10).

A *release* is one of the simulated release lines; the harness reports it as the unit's firmware. Facts are
tagged in the spec; here they are only collected so the schema, the driver and the simulator agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import BadInput

V2_3 = "v2.3"
V2023 = "v2023.9.0"
V2024 = "v2024.0.0"
V2025 = "v2025.0.0"
V2026 = "v2026"
RELEASES: tuple[str, ...] = (V2_3, V2023, V2024, V2025, V2026)
# Releases that serve the root file browser at /admin/fs (§8.1): the only HTTP path to the settings files.
FILEBROWSER_ERA = (V2023, V2024, V2025)

SETTINGS_DIR = "/home/pi/PlanktoScope"
HARDWARE_PATH = f"{SETTINGS_DIR}/hardware.json"
CONFIG_PATH = f"{SETTINGS_DIR}/config.json"
CALIBRATION_PATH = f"{SETTINGS_DIR}/calibration.json"
GLOBAL_CONTEXT_PATH = f"{SETTINGS_DIR}/node-red/context/global/global.json"
VERSIONING_PATH = "/usr/share/planktoscope/installer-versioning.yml"
INSTALLER_CONFIG_PATH = "/usr/share/planktoscope/installer-config.yml"
HOSTNAME_PATH = "/etc/hostname"
DATA_ROOT = "/home/pi/data"
GIT_DIR = f"{SETTINGS_DIR}/.git"


@dataclass(frozen=True)
class Release:
    name: str
    filebrowser: str | None  # version of the /admin/fs instance; None where there is none
    datasets_filebrowser: str | None  # version of the /ps/data/browse instance
    tag: str  # git tag of the release
    commit: str  # 40 hex: tag commits of §1; [D] synthetic for v2.3 and the v2026 beta
    variants: tuple[str, ...]  # hardware variants (--profile), default first
    hardware_presets_dir: str | None
    config_presets_dir: str | None
    image_naming: str  # "local" HH_MM_SS_ffffff.jpg or "utc" YYYY-MM-DD_HH-MM-SS-ffffff.jpg (§11.1)

    @property
    def default_variant(self) -> str:
        return self.variants[0]

    @property
    def version(self) -> str:
        """The full version string: the tag without its ``software/`` prefix."""
        return self.tag.removeprefix("software/")


RELEASE_INFO: dict[str, Release] = {
    V2_3: Release(V2_3, None, None, "v2.3", "5c1b4e2a7d9f0c3b8a6e1d4f7b2c9e0a3d6f8b1c",
                  ("default",), None, None, "local"),
    V2023: Release(V2023, "v2.24.2", "v2.24.2", "software/v2023.9.0",
                   "3b6d858f27f5b7f9572a2c3e916941e78733aa2a", ("pscopehat", "adafruithat"),
                   "/home/pi/device-backend/default-configs",
                   "/home/pi/PlanktoScope/software/node-red-dashboard/default-configs", "local"),
    V2024: Release(V2024, "v2.27.0", "v2.27.0", "software/v2024.0.0",
                   "4f1c60555be30490c632887eb7e0a16602f46216",
                   ("planktoscopehat", "v2.6", "adafruithat", "fairscope"),
                   "/home/pi/device-backend/default-configs",
                   "/home/pi/PlanktoScope/software/node-red-dashboard/default-configs", "utc"),
    V2025: Release(V2025, "v2.27.0", "v2.27.0", "software/v2025.0.0",
                   "89514aeb330e800ea2f0935272055fcc34c009f6",
                   ("planktoscopehat", "v2.6", "adafruithat", "fairscope"),
                   "/home/pi/PlanktoScope/device-backend/default-configs",
                   "/home/pi/PlanktoScope/software/node-red-dashboard/default-configs", "utc"),
    V2026: Release(V2026, None, "v2.44.2", "software/v2026.0.0-beta.0",
                   "e7a2d41c9b3f5a8e0d6c2b7f4a1e9d3c8b5f2a60", ("v2.6", "v3.0"),
                   "/home/pi/PlanktoScope/default-configs", "/home/pi/PlanktoScope/default-configs", "utc"),
}

_FULL_VERSION = re.compile(r"^v?(?P<line>\d{4})\.(?P<minor>\d+)\.(?P<patch>\d+)(?P<rest>[-+].*)?$")


def canonical_release(text: str) -> str:
    """The release line of a version string: ``2024.0.0`` -> ``v2024.0.0``; ``v2026.0.0-beta.0`` -> ``v2026``.

    Raises BadInput for a version no profile models.
    """
    raw = text.strip()
    name = raw if raw.startswith("v") else "v" + raw
    if name in RELEASES:
        return name
    if name.removeprefix("v") in ("2.3", "2.3.0"):
        return V2_3
    match = _FULL_VERSION.match(name)
    if match:
        if match["line"] == "2026":
            return V2026
        base = f"v{match['line']}.{match['minor']}.{match['patch']}"
        if base in RELEASES:
            return base  # a pseudo-version (v2024.0.0-3-gabcdef0) is its release line
    raise BadInput(f"unknown PlanktoScope release {text!r} (known: {', '.join(RELEASES)})")


def release_info(name: str) -> Release:
    return RELEASE_INFO[canonical_release(name)]


def hardware_version_of(acq_instrument: object) -> str | None:
    """R5: the second word of ``"PlanktoScope vX.Y"`` without the v (``"2.6"``), or None."""
    if not isinstance(acq_instrument, str):
        return None
    parts = acq_instrument.split()
    if len(parts) >= 2 and re.fullmatch(r"v\d+\.\d+", parts[1]):
        return parts[1][1:]
    return None
