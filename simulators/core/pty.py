"""A simulated USB serial port: a real pty pair behind a stable symlink.

The follower side of the pty is what a host opens; it is published as a symlink in the state
directory (``<state>/tty``), the way udev publishes ``/dev/serial/by-id/…`` for a real unit, so
pyserial (``serial_for_url(path)``) and pyvisa (``ASRL<path>::INSTR``) open it like ``/dev/ttyUSB0``.
A reset closes the pty (a connected client gets EOF/EIO, as when USB disappears), and a new pty comes
up behind the same symlink, repointed atomically.

One serving thread owns the file descriptors and the console object. It reads host bytes from the
controller side, feeds them to the console with their arrival time, and writes the replies through
the fault hooks and an optional baud-rate throttle. Other threads (the control plane) act on the port
only through ``call()``, which runs a function inside the serving thread, so the console never sees
two threads at once.

Presence of a client is read from the controller side: Linux reports POLLHUP there while nobody has
the follower open. We do not hold the follower open ourselves, so we can see when a host opens the
port, and hold the boot banner until then (pyserial flushes its input buffer while opening, so a
banner written earlier would always be lost; a real unit's is "often lost" only).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import queue
import select
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, TypeVar

from simulators.core.clock import Clock
from simulators.core.faults import Drop, Faults, Hold, Pause, Send

log = logging.getLogger(__name__)

T = TypeVar("T")

_ABSENT_POLL = 0.02  # s between presence checks while no client has the port open
_READ_SIZE = 4096
_PACE_SLICE = 0.01  # s of output per throttled write


class ByteConsole(Protocol):
    """The byte interface of a serial unit (e.g. simulators.multispeq.console.Console)."""

    reset_requested: bool

    def feed(self, data: bytes, now: float) -> bytes: ...

    def poll(self, now: float) -> bytes: ...

    def next_deadline(self) -> float | None: ...

    def boot(self) -> bytes: ...


class PtyPort:
    """Serve ``console`` on a pty published at ``link``.

    ``baud``: the line rate reproduced in realtime mode (ignored in fast mode).
    ``reset_delay``: wall-clock seconds the port stays gone when the console asks for a reset.
    ``banner_settle``: seconds after a client opened the port before the boot banner is sent (the
    host's open sequence must finish first, and a real unit finishes booting after it enumerates).
    ``hold_banner``: deliver the boot banner to the next client instead of losing it.
    ``write_timeout``: a client that has the port open but reads nothing loses output after this long
    (the unit's USB stack drops data nobody collects), so the serving thread never hangs.
    """

    def __init__(
        self,
        console: ByteConsole,
        link: Path,
        *,
        clock: Clock | None = None,
        faults: Faults | None = None,
        baud: int | None = 115200,
        reset_delay: float = 0.2,
        banner_settle: float = 0.1,
        write_timeout: float = 5.0,
        hold_banner: bool = False,
    ) -> None:
        self.console = console
        self.link = Path(link).absolute()
        self.clock = clock or Clock()
        self.faults = faults or Faults()
        self.baud = baud
        self.reset_delay = reset_delay
        self.banner_settle = banner_settle
        self.write_timeout = write_timeout
        # A real unit prints its banner at the end of boot, before a host has the port open, so a host
        # usually misses it (pyserial flushes input on open). hold_banner=True delivers it to the next
        # client instead, to exercise a driver's handling of an unsolicited "Ready" line.
        self.hold_banner = hold_banner

        self._master: int | None = None
        self._device: str | None = None  # /dev/pts/N behind the link
        self._powered = True
        self._down_until: float | None = None  # when a gone port comes back (None: on power on)
        self._reboot_on_up = True
        self._banner: bytes | None = None  # boot banner waiting for a client
        self._client_since: float | None = None
        self._generation = 0  # ptys opened so far (1 + resets/drops/power cycles)
        self.bytes_in = 0  # bytes the host sent, and bytes the unit put on the wire (link statistics)
        self.bytes_out = 0

        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._interrupt = threading.Event()  # abandon the reply being written (stop, power, reset)
        self._stopping = threading.Event()
        self._up = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public API (any thread) ------------------------------------------------------------------

    @property
    def address(self) -> str:
        return str(self.link)

    @property
    def visa_address(self) -> str:
        return f"ASRL{self.link}::INSTR"

    def start(self) -> None:
        """Power on: open the pty, publish the link, boot the console, serve in a thread."""
        if self._thread is not None:
            raise RuntimeError("PtyPort already started")
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self._open(reboot=True)
        self._thread = threading.Thread(target=self._serve, name=f"pty {self.link}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the pty and remove the link (the unit is unplugged for good)."""
        self._stopping.set()
        self._interrupt.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("pty serving thread did not stop within 10 s")
            self._thread = None
        self._close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def call(self, fn: Callable[[], T], *, timeout: float = 30.0, interrupt: bool = False) -> T:
        """Run ``fn`` in the serving thread (between replies) and return its result.

        ``interrupt`` abandons a reply being written first (power off, reset: the unit stops talking).
        """
        if threading.current_thread() is self._thread or self._thread is None:
            return fn()
        if not self._thread.is_alive():
            raise RuntimeError(f"{self.link}: the serving thread is dead (see the log)")
        future: Future[T] = Future()
        self._commands.put((fn, future))
        if interrupt:
            self._interrupt.set()
        self._wake()
        return future.result(timeout=timeout)

    def port_gone(self, delay: float | None, *, reboot: bool = True, wait: bool = True,
                  timeout: float = 30.0) -> None:
        """Close the pty (clients get EOF/EIO); a new one comes up after ``delay`` s (None: never).

        With ``reboot`` the console boots again and its banner is sent to the next client. With
        ``wait`` return once the new port is up (immediately when ``delay`` is None).
        """
        self.call(lambda: self._go_down(delay, reboot), interrupt=True)
        if wait and delay is not None:
            self.wait_up(timeout)

    def power(self, on: bool, *, console: ByteConsole | None = None, wait: bool = True,
              timeout: float = 30.0) -> None:
        """Power off (port gone until power on) or on (a fresh boot, optionally of a new console)."""

        def switch() -> None:
            if not on:
                self._powered = False
                self._go_down(None, reboot=True)
                return
            if console is not None:
                self.console = console
            if self._powered and self._master is not None:
                return  # already on
            self._powered = True
            self._go_down(0.0, reboot=True)

        self.call(switch, interrupt=not on)
        if on and wait:
            self.wait_up(timeout)

    def wait_up(self, timeout: float = 30.0) -> None:
        if not self._up.wait(timeout):
            raise TimeoutError(f"{self.link}: port did not come back within {timeout:g} s")

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def describe(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "device": self._device,
            "up": self.up,
            "powered": self._powered,
            "client": self._client_since is not None,
            "generation": self._generation,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    # -- pty lifetime (serving thread, or before it starts) ----------------------------------------

    def _open(self, *, reboot: bool) -> None:
        master, follower = os.openpty()
        # Raw on the follower: no echo, no CR/LF translation; it persists for later opens.
        tty.setraw(follower)
        device = os.ttyname(follower)
        # Close our follower fd: only then does POLLHUP on the controller side tell us whether a
        # client has the port open.
        os.close(follower)
        os.set_blocking(master, False)
        self._master, self._device = master, device
        self._generation += 1
        self._client_since = None
        self._down_until = None
        if reboot:
            self.console.reset_requested = False
            banner = self.console.boot()
            self._banner = (banner or None) if self.hold_banner else None
        self._publish(device)
        self._up.set()
        log.info("port up: %s -> %s", self.link, device)

    def _publish(self, device: str) -> None:
        # Symlink under a temporary name, then rename over the link: a client never sees a
        # half-made link, and the path stays the same across resets.
        tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        os.symlink(device, tmp)
        os.replace(tmp, self.link)

    def _unpublish(self) -> None:
        # Remove the link at once, as udev does on unplug: a dangling link could otherwise lead a
        # client to a recycled /dev/pts/N that belongs to someone else.
        try:
            if self._device is not None and os.readlink(self.link) == self._device:
                self.link.unlink()
        except OSError:
            pass

    def _close(self) -> None:
        self._up.clear()
        self._unpublish()
        if self._master is not None:
            try:
                os.close(self._master)
            except OSError:
                pass
        self._master = None
        self._client_since = None
        self._banner = None

    def _go_down(self, delay: float | None, reboot: bool, *, drain: bool = False) -> None:
        if drain:
            self._drain()
        if self._master is not None:
            log.info("port gone: %s (back %s)", self.link,
                     "on power on" if delay is None else f"in {delay:g} s")
        self._close()
        self._reboot_on_up = reboot
        self._down_until = None if delay is None or not self._powered else self.clock.now() + delay

    def _drain(self, timeout: float = 1.0) -> None:
        """Wait until the client has read what was sent (a hang-up discards unread input).

        A drop fault means "N bytes reached the host, then the cable went": the bytes must arrive.
        The follower's input queue is read through a second, non-controlling descriptor.
        """
        if self._master is None or self._device is None or self._client_since is None:
            return
        try:
            fd = os.open(self._device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            # The kernel moves written bytes to the follower's queue asynchronously: first wait (briefly)
            # to see them land, unless the client already took them; then until the queue is empty.
            start = self.clock.now()
            seen = False
            while self.clock.now() - start < timeout:
                (pending,) = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))
                seen = seen or pending > 0
                if pending == 0 and (seen or self.clock.now() - start > 0.05):
                    break
                time.sleep(0.002)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- serving thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                self._step()
        except Exception as exc:  # the unit is dead; say why, loudly, once
            log.exception("pty serving thread crashed")
            self._close()
            while not self._commands.empty():
                _, future = self._commands.get_nowait()
                future.set_exception(RuntimeError(f"{self.link}: the serving thread crashed: {exc}"))
            raise

    def _step(self) -> None:
        now = self.clock.now()
        if self._master is None and self._down_until is not None and now >= self._down_until:
            self._open(reboot=self._reboot_on_up)

        present = self._check_client(now)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if present:
            poller.register(self._master, select.POLLIN)
        events = poller.poll(self._timeout(now, present))

        self._run_commands()
        if self._stopping.is_set():
            return
        now = self.clock.now()
        if self._master is not None and any(fd == self._master for fd, _ in events):
            self._read_input(now)
        if self._master is not None:
            self._tick(now)

    def _timeout(self, now: float, present: bool) -> int:
        deadlines: list[float] = []
        if self._master is None:
            if self._down_until is not None:
                deadlines.append(self._down_until)
        else:
            deadline = self.console.next_deadline()
            if deadline is not None:
                deadlines.append(deadline)
            if self._banner is not None and self._client_since is not None:
                deadlines.append(self._client_since + self.banner_settle)
            if not present:
                deadlines.append(now + _ABSENT_POLL)
            if self.faults.get("busy") is not None:
                deadlines.append(now + 0.1)  # a timed busy fault expires by itself
        if not deadlines:
            return -1
        return max(0, int((min(deadlines) - now) * 1000) + 1)

    def _check_client(self, now: float) -> bool:
        if self._master is None:
            return False
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        hung_up = any(ev & select.POLLHUP for _, ev in poller.poll(0))
        if hung_up:
            if self._client_since is not None:
                log.debug("client closed %s", self.link)
            self._client_since = None
            return False
        if self._client_since is None:
            log.debug("client opened %s", self.link)
            self._client_since = now
        return True

    def _run_commands(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                break
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)
        self._interrupt.clear()

    def _read_input(self, now: float) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, _READ_SIZE)
            self.bytes_in += len(data)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # the client closed the port just now
                self._client_since = None
                return
            raise
        if not data:
            return
        if self.faults.busy():
            log.debug("busy: ignored %d bytes", len(data))
            return
        if self._banner is not None:
            # The unit finished booting before the host could talk to it.
            self._send_banner()
        self._emit(self.console.feed(data, now))
        self._after_reply()

    def _tick(self, now: float) -> None:
        drop = self.faults.due_drop()
        if drop is not None:
            self._go_down(drop.down, drop.reboot, drain=True)
            return
        if (self._banner is not None and self._client_since is not None
                and now >= self._client_since + self.banner_settle):
            self._send_banner()
        deadline = self.console.next_deadline()
        if deadline is not None and now >= deadline:
            self._emit(self.console.poll(now))
            self._after_reply()

    def _send_banner(self) -> None:
        banner, self._banner = self._banner, None
        if banner:
            self._emit(banner)

    def _after_reply(self) -> None:
        if self._master is not None and getattr(self.console, "reset_requested", False):
            log.info("console asked for a reset")
            self._go_down(self.reset_delay, reboot=True)

    # -- output -----------------------------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
        """Send one reply through the fault hooks."""
        for step in self.faults.shape(data):
            if self._master is None or self._interrupt.is_set():
                return
            if isinstance(step, Send):
                self._write(step.data)
            elif isinstance(step, Pause):
                log.debug("stall: %g s", step.seconds)
                if self._interrupt.wait(step.seconds):
                    return
            elif isinstance(step, Hold):
                log.debug("stall: holding output")
                return
            elif isinstance(step, Drop):
                log.info("fault: dropping the link")
                self._go_down(step.down, step.reboot, drain=True)
                return

    def _rate(self) -> float | None:
        rates = [r for r in (self.clock.byte_rate(self.baud) if self.baud else None,
                             self.faults.throttle_rate()) if r is not None]
        return min(rates) if rates else None

    def _write(self, data: bytes) -> None:
        rate = self._rate()
        if rate is None:
            self._write_all(data)
            return
        # Pace by the clock, not by sleeping a fixed time per chunk, so scheduling jitter does not
        # add up: byte k leaves no earlier than start + k / rate.
        chunk = max(1, int(rate * _PACE_SLICE))
        start = self.clock.now()
        sent = 0
        while sent < len(data):
            wait = start + sent / rate - self.clock.now()
            if wait > 0 and self._interrupt.wait(wait):
                return
            piece = data[sent:sent + chunk]
            if not self._write_all(piece):
                return
            sent += len(piece)

    def _write_all(self, data: bytes) -> bool:
        """Write to the controller side; False if the output was abandoned (no client, interrupt)."""
        view = memoryview(data)
        last_progress = self.clock.now()
        while view:
            if self._master is None or self._interrupt.is_set():
                return False
            if self._client_since is None:
                return False  # nobody is listening: the bytes are lost, as on a real unit
            try:
                n = os.write(self._master, view)
                self.bytes_out += n
                view = view[n:]
                last_progress = self.clock.now()
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EIO:
                    self._client_since = None
                    return False
                raise
            if self.clock.now() - last_progress > self.write_timeout:
                log.warning("client does not read; dropped %d bytes of output", len(view))
                return False
            poller = select.poll()
            poller.register(self._master, select.POLLOUT)
            for _, ev in poller.poll(50):
                if ev & select.POLLHUP:
                    self._client_since = None
                    return False
        return True

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake, or closed during stop
