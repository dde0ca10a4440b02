"""One error family for the whole harness.

Every error carries a message a user can act on and the process exit code of the CLI contract
(DESIGN.md): 1 a check failed, 2 bad input or a refused operation, 3 a device or link error.
The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; no traceback.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = 2

    def __str__(self) -> str:
        # One line, always: a multi-line message would break scripts that read stderr.
        return " ".join(super().__str__().split())


class CheckFailed(HarnessError):
    """A comparison or a check found a difference (diff, read-back, EOL FAIL)."""

    exit_code = 1


class BadInput(HarnessError):
    """An artifact, a bench file or an argument is malformed, truncated, corrupted or foreign."""

    exit_code = 2


class Refused(HarnessError):
    """A valid request that the harness will not carry out (ID mismatch, incompatible version, no --yes)."""

    exit_code = 2


class DeviceError(HarnessError):
    """The device answered wrongly, not at all, or is busy."""

    exit_code = 3


class LinkError(DeviceError):
    """The link to the device could not be opened or broke."""

    exit_code = 3
