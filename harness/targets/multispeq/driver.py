"""MultispeQ v1 driver: backup (§7), restore with read-back (§8), reset, over any byte-stream transport.

The same code talks to a real unit and to the simulator (DESIGN rule 1). Rules the console imposes:
commands end in ``+`` and never in CR/LF (§3.2); setters never answer, so every group is followed by
``hello+`` and its ``Ready`` line; a unit that does not answer ``hello+`` may be waiting inside a setter,
and anything more we send would be stored as a value, so we stop and ask for a power cycle.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness.compare import CompareRules, Difference, diff, flatten
from harness.errors import BadInput, CheckFailed, DeviceError, LinkError, Refused
from harness.targets.base import Artifact, Backup, DeviceInfo, Driver, RestoreReport
from harness.targets.multispeq.artifact import (
    UNSET_ID,
    BackupDocument,
    build_document,
    parse_document,
)
from harness.targets.multispeq.protocol import (
    F_REFUSAL,
    FieldMapping,
    Group,
    bad_command_end,
    crc_ok,
    device_info_end,
    family_f_end,
    group_for_keys,
    hello_end,
    is_printed_number,
    map_fields,
    parse_device_info,
    parse_print_memory,
    print_memory_end,
    printed_keys,
    restore_groups,
    strip_banners,
    uses_numeric_setters,
)
from harness.targets.multispeq.schema import (
    AMBIGUOUS_FIRMWARE,
    EEPROM_SIZE,
    FAMILIES,
    Family,
    canonical_device_id,
    f32,
    family_for_firmware,
    family_from_keys,
)
from harness.targets.multispeq.versions import MIGRATE, REFUSE, Rule, rule_for_families, summary
from harness.transports.base import Transport

log = logging.getLogger(__name__)

HELLO = b"hello+"
DEVICE_INFO = b"device_info+"
PRINT_MEMORY = b"print_memory+"
READ_1006 = b"1006+"
RESET = b"reset+"

# Base times of a real unit (§3.9, §7.1). Timeouts are stretched by time_scale but never shrunk (they cost
# nothing unless they fire); waits for silence follow the unit's clock exactly.
QUIET_S = 0.55  # more than the device's 500 ms command-name timeout: a partial name in its input expires
HELLO_TIMEOUT_S = 2.0
INFO_TIMEOUT_S = 2.0
MEMORY_TIMEOUT_S = 5.0
MEMORY_IDLE_S = 1.0
GROUP_SYNC_TIMEOUT_S = 5.0  # the largest group (135 userdefs) is ~2.7 KB: 0.25 s even at 115200 baud
REOPEN_TIMEOUT_S = 15.0  # USB re-enumeration delay is undocumented (§3.1) [U]
PORT_DROP_WAIT_S = 3.0
READ_RETRIES = 3  # after a CRC mismatch or a stalled reply (§7.1 step 5)
MAX_RECONNECTS = 2  # port losses tolerated within one restore before giving up (§8.4)

_RULES = CompareRules(float_decimals=None, nan_equal=True)


# A "-0" argument between two "+" separators (index arguments are never negative zero).
NEG_ZERO_ARG = re.compile(rb"(?<=\+)-0(?=\+)")


class _Timeout(DeviceError):
    """A reply did not complete in time (kept apart from LinkError, which means the port is gone)."""


@dataclass
class Snapshot:
    """One reading of a unit: device_info and print_memory, both CRC-verified."""

    info: dict[str, Any]
    info_raw: bytes
    raw: bytes
    memory: dict[str, Any]
    family: Family
    warnings: list[str]
    created: dt.datetime
    read_command: bytes


@dataclass
class RestorePlan:
    """What ``restore`` will do; built by ``check_restore`` without writing anything to the unit."""

    artifact: Artifact
    source: BackupDocument
    unit: Snapshot
    rule: Rule
    mapping: FieldMapping
    groups: list[Group]
    force: bool = False
    allow_cross_family: bool = False
    restore_device_id: bool = False
    notes: list[str] = field(default_factory=list)
    not_carried: list[str] = field(default_factory=list)
    # Filled by restore(), also when it fails, so a caller can always file the before-restore backup.
    backups: list[Backup] = field(default_factory=list)

    @property
    def commands(self) -> list[str]:
        """The exact text of every group, for a dry run."""
        return [g.data.decode("ascii") for g in self.groups]

    @property
    def before_restore(self) -> Backup | None:
        return next((b for b in self.backups if b.reason == "before-restore"), None)


@dataclass
class MultispeqRestoreReport(RestoreReport):
    resent: list[str] = field(default_factory=list)  # groups sent a second time after a read-back diff
    backups: list[Backup] = field(default_factory=list)  # before-restore and after-restore, for the store

    @property
    def before_restore(self) -> Backup | None:
        return next((b for b in self.backups if b.reason == "before-restore"), None)

    @property
    def after_restore(self) -> Backup | None:
        return next((b for b in self.backups if b.reason == "after-restore"), None)


class MultispeqDriver(Driver):
    """PhotosynQ MultispeQ v1 over its USB (or Bluetooth) serial console."""

    target = "multispeq"

    def __init__(self, address: str, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self._transport: Transport | None = None
        # True while the last operation on this open link ended with the unit idle and in step, so the
        # next one need not wait out the device's 500 ms command timeout again (§7.1 step 1).
        self._in_sync = False

    # --- link ---------------------------------------------------------------------------------------------

    def _link(self) -> Transport:
        if self._transport is None:
            from harness.transports import open_transport  # imported late: pure users need no pyserial

            self._transport = open_transport(self.address)
        return self._transport

    def close(self) -> None:
        self._in_sync = False
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def _timeout(self, seconds: float) -> float:
        return seconds * max(1.0, self.time_scale)

    def _quiet(self) -> float:
        return QUIET_S * self.time_scale

    def _drain(self, *, quick: bool = False) -> None:
        """Discard unsolicited input (boot banners, the tail of an aborted reply) until the line is quiet.

        The full wait outlasts the device's 500 ms name timeout, so a partial command in its input expires;
        ``quick`` only collects what is already there, for a link whose last exchange ended in step.
        """
        quiet = 0.02 if quick else self._quiet()
        junk = self._link().drain(quiet, max_time=self._timeout(5.0))
        if junk:
            log.debug("%s: discarded %d bytes of unsolicited input: %r", self.address, len(junk), junk[:80])

    def _read(self, end: Callable[[bytes], int | None], what: str, timeout: float,
              idle: float | None = None) -> bytes:
        """Read until ``end(buffer)`` gives the end of a frame; _Timeout on silence, LinkError if gone."""
        transport = self._link()
        buf = bytearray()
        start = last = time.monotonic()
        while True:
            stop = end(bytes(buf))
            if stop is not None:
                if stop < len(buf):
                    log.debug("%s: %d bytes after the %s ignored: %r", self.address, len(buf) - stop, what,
                              bytes(buf[stop:stop + 80]))
                return bytes(buf[:stop])
            now = time.monotonic()
            if now - start >= timeout:
                raise _Timeout(f"{self.address}: no complete {what} within {timeout:g} s "
                               f"({len(buf)} bytes received)")
            if idle is not None and buf and now - last >= idle:
                raise _Timeout(f"{self.address}: {what} stalled after {len(buf)} bytes "
                               f"(silent for {idle:g} s)")
            wait = timeout - (now - start)
            if idle is not None:
                wait = min(wait, idle)
            chunk = transport.read_some(max(0.01, min(wait, 0.1)))
            if chunk:
                buf += chunk
                last = time.monotonic()

    def _hello(self, timeout: float = HELLO_TIMEOUT_S, *, after: str = "") -> None:
        self._link().write(HELLO)
        try:
            self._read(hello_end, "Ready line", self._timeout(timeout))
        except _Timeout as exc:
            where = f" after {after}" if after else ""
            raise DeviceError(f"{self.address}: no 'Ready' answer to hello+{where} within "
                              f"{self._timeout(timeout):g} s; the unit may be waiting inside a setter or "
                              f"asleep: re-plug or power-cycle it, then retry") from exc

    # --- reading the unit ---------------------------------------------------------------------------------

    def _crc_read(self, command: bytes, end: Callable[[bytes], int | None], what: str, timeout: float,
                  idle: float | None = None, *, extra_end: Callable[[bytes], int | None] | None = None
                  ) -> bytes:
        """Send ``command`` and read a CRC'd reply, retrying after a CRC mismatch or a stalled reply."""
        transport = self._link()
        problem = ""
        for attempt in range(1 + READ_RETRIES):
            if attempt:
                log.warning("%s: %s; retrying (%d of %d)", self.address, problem, attempt, READ_RETRIES)
                self._drain()
            transport.write(command)

            def done(buf: bytes) -> int | None:
                stop = end(buf)
                if stop is None and extra_end is not None:
                    stop = extra_end(buf)
                return stop

            try:
                raw = self._read(done, what, self._timeout(timeout),
                                 None if idle is None else self._timeout(idle))
            except _Timeout as exc:
                problem = str(exc)
                continue
            if extra_end is not None and end(raw) is None:
                return raw  # a different, expected reply (bad command, layout F): the caller decides
            if crc_ok(strip_banners(raw)):
                return raw
            problem = f"{what} failed its CRC check"
        raise DeviceError(f"{self.address}: {problem} ({1 + READ_RETRIES} attempts); no backup taken: check "
                          f"the cable or link and retry")

    def _device_info(self) -> tuple[dict[str, Any], bytes]:
        raw = self._crc_read(DEVICE_INFO, device_info_end, "device_info reply", INFO_TIMEOUT_S)
        info = parse_device_info(raw)
        if info["device_id"] == UNSET_ID:
            log.warning("%s: device ID is unset (%s): blank EEPROM?", self.address, UNSET_ID)
        return info, raw

    def _read_memory(self, info: Mapping[str, Any]) -> tuple[bytes, dict[str, Any], list[str], Family, bytes]:
        """print_memory (or 1006 on A/B/C50), verified and parsed; the family from its keys (§7.1 4-7)."""
        firmware = info["firmware"]
        if info.get("firmware_v2"):
            raise Refused(f"firmware {firmware} is MultispeQ v2: its memory print is not the v1 layout and "
                          f"console backup/restore supports v1 firmware only")
        try:
            by_firmware: Family | None = family_for_firmware(firmware)
        except BadInput:
            by_firmware = None
            log.warning("%s: firmware %r is not in the known list; deciding the layout from print_memory",
                        self.address, firmware)
        if by_firmware is not None and by_firmware.name == "F":
            raise Refused(F_REFUSAL)
        if by_firmware is not None and uses_numeric_setters(by_firmware):
            commands = [READ_1006]
        else:
            commands = [PRINT_MEMORY] + ([READ_1006] if by_firmware is None else [])

        def other(buf: bytes) -> int | None:
            return bad_command_end(buf) or family_f_end(buf)

        raw = b""
        for i, command in enumerate(commands):
            raw = self._crc_read(command, print_memory_end, "print_memory reply", MEMORY_TIMEOUT_S,
                                 MEMORY_IDLE_S, extra_end=other)
            if print_memory_end(raw) is not None:
                break
            if family_f_end(raw) is not None:
                raise Refused(F_REFUSAL)
            if i + 1 < len(commands):
                log.info("%s: %s answered 'bad command'; trying %s", self.address, command.decode(),
                         commands[i + 1].decode())
                continue
            raise DeviceError(f"{self.address}: the unit rejects {command.decode()} ('bad command'): "
                              f"not a MultispeQ v1 console?")
        raw = strip_banners(raw)
        memory, warnings = parse_print_memory(raw, firmware)
        family = family_from_keys(memory, firmware)
        if by_firmware is not None:
            family = self._cross_check(firmware, by_firmware, family, warnings)
        return raw, memory, warnings, family, command

    def _cross_check(self, firmware: str, by_firmware: Family, by_keys: Family, warnings: list[str]) -> Family:
        """Warn when firmware and key set disagree, and trust the keys (§7.1 step 7)."""
        allowed = set(AMBIGUOUS_FIRMWARE.get(firmware, (by_firmware.name,)))
        if by_keys.name == "C50" and "B" in allowed and "C50" not in allowed:
            return FAMILIES["B"]  # late B prints what C50 prints; the firmware string says which
        if by_keys.name in allowed or {by_keys.name, *allowed} <= {"B", "C50"}:
            return by_keys
        text = (f"firmware {firmware} has layout {'/'.join(sorted(allowed))} but print_memory's keys say "
                f"layout {by_keys.name}; trusting the keys")
        log.warning("%s: %s", self.address, text)
        warnings.append(text)
        return by_keys

    @contextmanager
    def _exchange(self) -> Iterator[None]:
        """One operation: drain, ``hello+`` sync (§7.1 steps 1-2), and in step again only on success."""
        quick = self._in_sync
        self._in_sync = False
        self._drain(quick=quick)
        self._hello()
        yield
        self._in_sync = True

    def _snapshot(self) -> Snapshot:
        """The backup procedure of §7.1 steps 3-6, on a link that has just answered ``hello+``."""
        info, info_raw = self._device_info()
        raw, memory, warnings, family, command = self._read_memory(info)
        if info["device_id"] == UNSET_ID:
            warnings.append(f"device ID is unset ({UNSET_ID}): blank EEPROM?")
        created = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return Snapshot(info, info_raw, raw, memory, family, warnings, created, command)

    def _as_backup(self, snap: Snapshot, reason: str) -> Backup:
        content = build_document(created=snap.created, reason=reason, info=snap.info, family=snap.family,
                                 raw=snap.raw, memory=snap.memory, warnings=snap.warnings)
        parse_document(content)  # never hand over a file that would not load back
        return Backup(device=self._device(snap.info, snap.family), created=snap.created, content=content,
                      reason=reason, source_address=self.address)

    def _device(self, info: Mapping[str, Any], family: Family | None) -> DeviceInfo:
        details = {k: info[k] for k in ("device_id_u32", "device_id_printed", "device_battery",
                                        "device_manufacture") if k in info}
        if family is not None:
            details["layout_family"] = family.name
        details["id_unset"] = info["device_id"] == UNSET_ID
        model = f"{info.get('device_name', 'MultispeQ')} v{info.get('device_version', '1')}"
        return DeviceInfo(target=self.target, device_id=info["device_id"], firmware=info["firmware"],
                          model=model, details=details)

    # --- the Driver interface -----------------------------------------------------------------------------

    def identify(self) -> DeviceInfo:
        with self._exchange():
            info, _ = self._device_info()
        try:
            family: Family | None = family_for_firmware(info["firmware"])
        except BadInput:
            family = None
        return self._device(info, family)

    def backup(self, *, reason: str = "manual") -> Backup:
        with self._exchange():
            snap = self._snapshot()
        log.info("%s: backed up unit %s (firmware %s, layout %s)", self.address, snap.info["device_id"],
                 snap.info["firmware"], snap.family.name)
        return self._as_backup(snap, reason)

    def check_restore(self, artifact: Artifact, *, force: bool = False, allow_cross_family: bool = False,
                      restore_device_id: bool = False) -> RestorePlan:
        """Read the unit (nothing is written) and plan the restore: ID, version rule, groups.

        ``force`` overrides an ID mismatch and an edited backup file (never a refused version).
        ``allow_cross_family`` permits a migration by field name to another layout family (§8.5).
        ``restore_device_id`` also writes the backup's ID (cloning a unit, e.g. onto a replacement board).
        """
        source = artifact.data
        if artifact.target != self.target or not isinstance(source, BackupDocument):
            raise BadInput(f"{artifact.path} is not a MultispeQ backup")
        notes: list[str] = []
        if source.edits:
            if not force:
                raise Refused(f"{artifact.path.name} was edited after the backup ({source.edits[0]}); "
                              f"nothing was sent; force restores its memory values anyway")
            notes.append(f"restoring an edited backup file ({'; '.join(source.edits)})")
        with self._exchange():
            unit = self._snapshot()
        unit_id = unit.info["device_id"]
        if unit_id != artifact.device_id:
            if not force:
                raise Refused(f"backup is of unit {artifact.device_id} but the connected unit is {unit_id}; "
                              f"nothing was sent (force restores it anyway and keeps the unit's ID)")
            notes.append(f"ID mismatch overridden: backup of {artifact.device_id} restored onto {unit_id}"
                         + ("" if restore_device_id else f"; the unit keeps its ID {unit_id}"))
        rule = rule_for_families(source.family.name, unit.family.name)
        if rule.kind == REFUSE:
            raise Refused(rule.reason)
        if rule.kind == MIGRATE:
            if not allow_cross_family:
                raise Refused(f"backup is layout {source.family.name} (firmware {artifact.firmware}) but the "
                              f"unit is layout {unit.family.name} (firmware {unit.info['firmware']}): "
                              f"{rule.reason}; nothing was sent; allow a cross-family restore to proceed")
            notes.append(rule.reason)
        mapping = map_fields(source.memory, unit.memory, include_device_id=restore_device_id)
        groups = restore_groups(source.memory, unit.family, include_device_id=restore_device_id,
                                current=unit.memory, firmware=unit.info["firmware"])
        if "device_manufacture" in mapping.skipped and "device_manufacture" in unit.memory:
            notes.append("device_manufacture is restored only together with the device ID")
        filled = sorted({k for g in groups for k in g.filled})
        if filled:
            notes.append(f"rewritten with the unit's own printed values (their setters also write restored "
                         f"fields): {summary(filled)}")
        return RestorePlan(artifact=artifact, source=source, unit=unit, rule=rule, mapping=mapping,
                           groups=groups, force=force, allow_cross_family=allow_cross_family,
                           restore_device_id=restore_device_id, notes=notes,
                           not_carried=not_carried(unit.family,
                                                   manufacture_printed="device_manufacture" in unit.memory))

    def restore(self, plan: RestorePlan) -> MultispeqRestoreReport:
        """Back up, send every group with a hello+ sync, read back, re-send differing groups once (§8)."""
        mapping = plan.mapping
        report = MultispeqRestoreReport(restored=list(mapping.restored), skipped=list(mapping.skipped),
                                        untouched=list(mapping.untouched), not_carried=list(plan.not_carried),
                                        notes=list(plan.notes))
        report.backups = plan.backups
        with self._exchange():
            before = self._snapshot()
            if (before.info["device_id"], before.family.name) != (plan.unit.info["device_id"],
                                                                   plan.unit.family.name):
                raise Refused(f"the unit changed since the restore was checked (now {before.info['device_id']}, "
                              f"layout {before.family.name}); nothing was sent: check the restore again")
            plan.backups.append(self._as_backup(before, "before-restore"))
            # Rebuilt on the fresh reading, so fields kept from the unit carry its values of this moment.
            groups = restore_groups(plan.source.memory, before.family, include_device_id=plan.restore_device_id,
                                    current=before.memory, firmware=before.info["firmware"])
            self._send_all(groups, report)
            # Read back (§8.3): the last group's hello+ was answered, so the link is idle and in step.
            after = self._snapshot()
            differences = self._verify(plan, groups, before, after, report)
            if differences:
                resend = group_for_keys(groups, [d.field for d in differences])
                report.resent = [g.name for g in resend]
                log.warning("%s: read-back differs in %d fields; re-sending %s", self.address,
                            len(differences), ", ".join(report.resent))
                report.notes.append(f"read-back differed in {len(differences)} fields; re-sent "
                                    f"{', '.join(report.resent)} once")
                self._send_all(resend, report)
                after = self._snapshot()
                differences = self._verify(plan, groups, before, after, report)
                if differences:
                    shown = "; ".join(str(d) for d in differences[:5])
                    more = f" (and {len(differences) - 5} more)" if len(differences) > 5 else ""
                    raise CheckFailed(f"read-back after restore differs in {len(differences)} fields: "
                                      f"{shown}{more}")
            plan.backups.append(self._as_backup(after, "after-restore"))
        log.info("%s: restored %d fields onto %s", self.address, len(report.restored), after.info["device_id"])
        return report

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Write fields (the ``fields`` view: printed strings or numbers) with the restore's setters.

        No backup and no read-back: this is the calibration tool's job, used to give a unit a state.
        """
        with self._exchange():
            snap = self._snapshot()
            unknown = [k for k in values if k not in snap.memory]
            if unknown:
                raise BadInput(f"layout {snap.family.name} has no field {', '.join(unknown)}")
            memory = {k: _printed(k, v) for k, v in values.items()}
            groups = restore_groups(memory, snap.family, include_device_id="device_id" in values,
                                    current=snap.memory, firmware=snap.info["firmware"])
            self._send_all(groups, None)

    def reset(self) -> None:
        """Reboot the unit (``reset+``) and wait for its port to come back at the same address."""
        transport = self._link()
        self._in_sync = False
        transport.write(RESET)
        end = time.monotonic() + self._timeout(PORT_DROP_WAIT_S)
        while time.monotonic() < end:
            try:
                transport.read_some(0.1)
            except LinkError:
                break  # the port went away, as a re-enumerating USB device's does
        else:
            log.info("%s: the port stayed up after reset+; reopening it anyway", self.address)
        transport.reopen(self._timeout(REOPEN_TIMEOUT_S))
        with self._exchange():
            pass  # the full drain swallows the boot banner; hello+ proves the unit is back

    # --- restore internals --------------------------------------------------------------------------------

    def _send_group(self, group: Group) -> None:
        transport = self._link()
        if NEG_ZERO_ARG.search(group.data) and group.reply is None:
            # The firmware writes a value only if it compares unequal to the stored one, and -0 == +0:
            # -0 over +0 would never be written. Send the group with 1 in those places first.
            transport.write(NEG_ZERO_ARG.sub(b"1", group.data))
            self._hello(GROUP_SYNC_TIMEOUT_S, after=group.name)
        transport.write(group.data)  # ONE write: never half a group (§8.4)
        if group.reply == "device_info":
            try:
                raw = self._read(device_info_end, "set_device_info reply", self._timeout(INFO_TIMEOUT_S))
            except _Timeout as exc:
                raise DeviceError(f"{self.address}: no device_info reply to set_device_info: {exc}") from exc
            if not crc_ok(strip_banners(raw)):
                raise DeviceError(f"{self.address}: the set_device_info reply failed its CRC check")
            log.info("%s: device ID now %s", self.address, parse_device_info(raw)["device_id"])
        self._hello(GROUP_SYNC_TIMEOUT_S, after=group.name)

    def _send_all(self, groups: list[Group], report: MultispeqRestoreReport | None) -> None:
        """Every group, each followed by a hello+ sync; after a port loss reconnect and rerun them all."""
        reconnects = 0
        while True:
            try:
                for i, group in enumerate(groups, start=1):
                    self._send_group(group)
                    self.progress(i, len(groups), f"{group.name} ({summary(list(group.fields))})")
                return
            except LinkError as exc:
                if reconnects >= MAX_RECONNECTS:
                    raise LinkError(f"{self.address}: the port was lost {reconnects + 1} times during the "
                                    f"restore; the unit may be partly written: restore again ({exc})") from exc
                reconnects += 1
                log.warning("%s: port lost during the restore (%s); reconnecting and re-sending every group",
                            self.address, exc)
                self._reconnect()
                if report is not None:
                    report.notes.append("the port was lost during the restore; reconnected and re-sent "
                                        "every group")

    def _reconnect(self) -> None:
        if self._transport is None:
            self._link()
        else:
            self._transport.reopen(self._timeout(REOPEN_TIMEOUT_S))
        self._drain()  # full: the unit rebooted, its banner may still be on its way
        self._hello()

    def _verify(self, plan: RestorePlan, groups: list[Group], before: Snapshot, after: Snapshot,
                report: MultispeqRestoreReport) -> list[Difference]:
        """Printed strings compared (§8.3): restored fields against the backup, the rest against before."""
        source = plan.source.memory
        expected: dict[str, Any] = {key: source[key] for key in plan.mapping.restored}
        for key in list(plan.mapping.untouched) + [k for g in groups for k in g.filled]:
            if key in before.memory:
                expected[key] = before.memory[key]
        if "device_id" in plan.mapping.restored:
            expected["device_id"] = canonical_device_id(source["device_id"])
        else:
            expected["device_id"] = before.info["device_id"]
        found = {k: after.memory.get(k) for k in expected}
        found["device_id"] = canonical_device_id(after.memory["device_id"])
        result = diff(expected, found, _RULES)
        spelled = _nan_spellings(expected, found)
        if spelled and not any("NaN" in n for n in report.notes):
            report.notes.append(f"NaN printed as both 'nan' and '-nan' ({spelled}); compared as both NaN")
        return result.differences


def _printed(key: str, value: Any) -> Any:
    """A field value as the console would print it; numbers become exact decimal text."""
    if isinstance(value, list):
        return [_printed(key, v) for v in value]
    if isinstance(value, bool):
        raise BadInput(f"{key}: {value!r} is not a number")
    if isinstance(value, int | float):
        return repr(float(value))
    if key == "device_id":
        return canonical_device_id(str(value))
    if key == "device_manufacture" or is_printed_number(value):
        return value
    raise BadInput(f"{key}: {value!r} is not a number")


def _nan_spellings(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    a, b = dict(flatten(expected)), dict(flatten(found))
    odd = [k for k, v in a.items()
           if isinstance(v, str) and isinstance(b.get(k), str) and v != b[k]
           and v.lstrip("-").lower() == "nan" and b[k].lstrip("-").lower() == "nan"]
    return summary(odd[:3]) + (" ..." if len(odd) > 3 else "") if odd else ""


def not_carried(destination: Family, *, manufacture_printed: bool) -> list[str]:
    """What a console backup can never carry onto this unit (§9)."""
    out = []
    if not manufacture_printed:
        out.append("device_manufacture (neither printed nor settable on this firmware)")
    if destination.has_sleep:
        out.append("sleep")
    out.append(f"userdef{destination.printed_userdefs} (the hidden last userdef, never printed)")
    if destination.auto_arrays:
        out.append("auto_* arrays")
    out.append(f"padding and the unused tail ({EEPROM_SIZE - destination.sizeof} bytes)")
    out.append("NaN payloads and signs")
    out.append("float32 bits finer than the 6 printed decimals (|x| < 16)")
    return out


def distinctive_settings(device: DeviceInfo, seed: int) -> dict[str, Any]:
    """Non-default values, different for every seed, as printed strings of float32 values.

    Print-exact by construction ('%f' of a float32), so a restore's read-back can compare strings. The
    matrices are not symmetric (a missing transpose shows), and one userdef holds a value >= 1e24.
    """
    rng = random.Random(seed)
    family = FAMILIES.get(device.details.get("layout_family", ""))
    if family is None:
        try:
            family = family_for_firmware(device.firmware)
        except BadInput:
            family = FAMILIES["E"]

    def v(scale: float = 10.0) -> str:
        return f"{f32(rng.uniform(-scale, scale)):f}"

    out: dict[str, Any] = {
        "mag_bias": [v(100) for _ in range(3)],
        "mag_cal": [[v(2) for _ in range(3)] for _ in range(3)],
        "accel_bias": [v(100) for _ in range(3)],
        "accel_cal": [[v(2) for _ in range(3)] for _ in range(3)],
        "light_slope_all": v(), "light_slope_r": v(), "light_slope_g": v(), "light_slope_b": v(),
        "light_yint": v(),
        "detector_offset_slope": [v() for _ in range(4)],
        "detector_offset_yint": [v() for _ in range(4)],
    }
    # 1.05 is A or B (§2.1), which the firmware string cannot tell: only the thickness fields both have.
    candidates = [FAMILIES[n] for n in AMBIGUOUS_FIRMWARE.get(device.firmware, (family.name,))]
    for key in family.thickness:
        if all(key in c.thickness for c in candidates):
            out[key] = v(5)
    out["par_to_dac_slope1"] = [v(1000) for _ in range(11)]
    out["ir_baseline_yint"] = [v(50) for _ in range(11)]
    out["colorcal_blank2"] = [v(1) for _ in range(11)]
    out["userdef0"] = f"{f32(rng.uniform(1e24, 1e30)):f}"
    out["userdef1"] = "-0.000000"
    out[f"userdef{family.printed_userdefs - 1}"] = v(1e6)
    keys = set(printed_keys(family))
    return {k: val for k, val in out.items() if k in keys}
