"""Size profiles of the simulated BactoBox storage (targets/bactobox.md §4.1) and the timing model (§2.10).

A profile fixes the disk size and the partition sizes of layout L2: a 1 MiB head (MBR), then boot, system0,
system1, and data to the end of the disk rounded down to 1 MiB. ``micro``/``tiny``/``small`` are for tests,
``bench-*`` for benchmarks; every one is a sparse file, so an 8 GiB disk costs what is written to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import BadInput
from harness.targets.bactobox.schema import MIB, SECTOR

GIB = 1 << 30


@dataclass(frozen=True)
class Profile:
    name: str
    disk_bytes: int
    boot_bytes: int
    system_bytes: int
    measurements: int  # records a fresh unit holds
    payload_bytes: int = 4096  # measurement payload size
    # Layout L1 (software 1.x, §4.2): the gap from each EBR to its logical partition, and p5 config's size.
    # 1 MiB each as in the spec's tiny example; ``micro`` packs them so that L1 fits its 6 MiB too.
    l1_ebr_gap_bytes: int = MIB
    l1_config_bytes: int = MIB

    @property
    def regions(self) -> list[tuple[str, int, int]]:
        """(part name, start LBA, size in bytes) of head, boot, system0, system1, data."""
        head = MIB
        boot_at = head
        s0_at = boot_at + self.boot_bytes
        s1_at = s0_at + self.system_bytes
        data_at = s1_at + self.system_bytes
        data_size = (self.disk_bytes // MIB) * MIB - data_at
        if data_size < 2 * MIB:
            raise BadInput(f"profile {self.name}: no room for the data partition")
        return [("head", 0, head), ("boot", boot_at // SECTOR, self.boot_bytes),
                ("system0", s0_at // SECTOR, self.system_bytes), ("system1", s1_at // SECTOR, self.system_bytes),
                ("data", data_at // SECTOR, data_size)]


PROFILES: dict[str, Profile] = {
    p.name: p for p in (
        # [modelled, not in the spec's table] The smallest disk layout L2 allows (1 MiB alignment: head,
        # boot, two slots of 1 MiB, 2 MiB of data): the compatibility matrix and the committed goldens.
        # Under L1 its 2 MiB extended partition holds EBRs 64 KiB before p5 config (256 KiB) and p6 data.
        Profile("micro", 6 * MIB, 1 * MIB, 1 * MIB, 20, l1_ebr_gap_bytes=64 * 1024, l1_config_bytes=256 * 1024),
        Profile("tiny", 32 * MIB, 2 * MIB, 6 * MIB, 50),
        Profile("small", 256 * MIB, 8 * MIB, 48 * MIB, 200),
        Profile("bench-1g", 1 * GIB, 32 * MIB, 192 * MIB, 1000, 64 * 1024),
        Profile("bench-2g", 2 * GIB, 32 * MIB, 192 * MIB, 1000, 256 * 1024),
        Profile("bench-4g", 4608 * MIB, 64 * MIB, 768 * MIB, 1000, 1 * MIB),
        # 1000 records of 320 KiB: ~5 % of the data partition used, as the spec's B8 check has it (a format-3
        # GMI of it is then under 2 GiB).
        Profile("bench-8g", 8 * GIB, 64 * MIB, 768 * MIB, 1000, 320 * 1024),
    )
}
DEFAULT_PROFILE = "tiny"


def get_profile(name: str | None) -> Profile:
    try:
        return PROFILES[name or DEFAULT_PROFILE]
    except KeyError:
        raise BadInput(f"unknown BactoBox profile {name!r} (known: {', '.join(PROFILES)})") from None


# -- timing model (§2.10, §2.7) [modelled] ---------------------------------------------------------------
# Realistic figures are those of the real unit, whose disk is 8 GiB. A smaller profile is a scale model of
# it: its rates are scaled down with its size, so a backup in realtime mode takes the documented 30-60
# minutes whatever the profile (times the --time-scale factor). Fast mode (no time scale) is unthrottled.
NOMINAL_DISK_BYTES = 8 * GIB
USB_BYTES_S = 5_000_000
DISK_READ_BYTES_S = 60_000_000
DISK_WRITE_BYTES_S = 20_000_000
SHUTDOWN_S = 5.0
BOOT_ATTEMPT_S = 20.0
SERVICES_START_S = 25.0
# Fast-mode wall-clock durations of the restart phases (§2.7): short, but long enough to be seen.
FAST_SHUTDOWN_S = 0.05
FAST_BOOT_ATTEMPT_S = 0.1
FAST_SERVICES_START_S = 0.1
DOWNLOAD_START_TIMEOUT_S = 300.0
UPLOAD_DEADLINE_S = 600.0
# Programs (§2.2, F16): realistic durations; fast mode runs them at 1/100 of that so a test can still see
# one running (a Measure with a one-hour sampling time runs 36 s, until stopped).
MEASURE_OVERHEAD_S = 60.0
CLEAN_S = 180.0
EMPTY_S = 60.0
FAST_PROGRAM_FACTOR = 0.01
