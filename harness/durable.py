"""Durable writing of big streamed files: on disk by the time the stream ends, at the disk's own speed.

A downloaded artifact is fsynced before anyone keeps it (DESIGN rule 6: artifacts are sacred). Written through
the page cache, a multi-GiB download piles up as dirty pages and the final ``fsync`` then pushes them through
the kernel's writeback, which on the virtual disks of CI machines reaches a quarter of what the disk can do
(measured here: 262 MB/s buffered + fsync, 1.1 GB/s with O_DIRECT and 4 MiB writes). So ``DurableFile``:

- for files of ``DIRECT_MIN`` bytes and more, writes with ``O_DIRECT`` from two page-aligned buffers: the
  stream fills one while a thread of its own writes the other (``os.write`` releases the GIL), so the disk
  works while the network does; the tail is written padded to the block size and the file truncated to its
  true size;
- otherwise (small files, or a filesystem without O_DIRECT such as tmpfs), writes through the page cache and
  starts the writeback of each completed window as it goes (``sync_file_range``), so the final ``fsync`` only
  has the tail left.

Either way ``close()`` fsyncs, and an error of the writer thread (a full disk) surfaces as OSError on the next
``write`` or on ``close``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import queue
import threading
from pathlib import Path

DIRECT_MIN = 64 * 1024 * 1024  # below this, the page cache is as fast and simpler
DIRECT_BUFFER = 4 * 1024 * 1024
ALIGN = 4096  # O_DIRECT offsets, sizes and buffer addresses: a multiple of the logical block size
WRITEBACK_WINDOW = 32 * 1024 * 1024

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


def _load_sync_file_range():  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


class DurableFile:
    """A write-only file that is durable when ``close()`` returns. ``expected_size``: the size announced
    (Content-Length), which picks the strategy; None means small/unknown (the page cache)."""

    def __init__(self, path: Path, expected_size: int | None = None) -> None:
        self.path = Path(path)
        self.size = 0
        self._closed = False
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        direct = getattr(os, "O_DIRECT", 0) if (expected_size or 0) >= DIRECT_MIN else 0
        self.fd = -1
        if direct:
            try:
                self.fd = os.open(self.path, flags | direct, 0o644)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: this filesystem has no O_DIRECT (tmpfs)
                    raise
        self.direct = self.fd >= 0
        if not self.direct:
            self.fd = os.open(self.path, flags, 0o644)
            self._started = 0  # bytes whose writeback has been started (page-cache mode)
            self._writeback = _sync_file_range is not None
            return
        self._buffers = [mmap.mmap(-1, DIRECT_BUFFER), mmap.mmap(-1, DIRECT_BUFFER)]  # page-aligned
        self._current = 0
        self._fill = 0
        self._error: OSError | None = None
        self._free = [threading.Semaphore(1), threading.Semaphore(1)]
        self._jobs: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()  # (buffer, length); -1 stops
        self._thread = threading.Thread(target=self._writer, name=f"write {self.path.name}", daemon=True)
        self._thread.start()
        self._free[0].acquire()

    # -- writing -------------------------------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        if self._closed:
            raise ValueError("write to a closed DurableFile")
        if not self.direct:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            self.size += len(data)
            self._start_writeback()
            return
        self._raise_writer_error()
        view = memoryview(data)
        while view:
            take = min(len(view), DIRECT_BUFFER - self._fill)
            self._buffers[self._current][self._fill:self._fill + take] = view[:take]
            self._fill += take
            self.size += take
            view = view[take:]
            if self._fill == DIRECT_BUFFER:
                self._hand_over(DIRECT_BUFFER)

    def _hand_over(self, length: int) -> None:
        """Give the current buffer to the writer thread and take the other one (waiting until it is free)."""
        self._jobs.put((self._current, length))
        self._current ^= 1
        self._fill = 0
        self._free[self._current].acquire()
        self._raise_writer_error()

    def _writer(self) -> None:
        while True:
            index, length = self._jobs.get()
            if index < 0:
                return
            try:
                if self._error is None:
                    view = memoryview(self._buffers[index])[:length]
                    while view:
                        view = view[os.write(self.fd, view):]
                    view.release()
            except OSError as exc:
                self._error = exc
            finally:
                self._free[index].release()

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _start_writeback(self) -> None:
        """Page-cache mode: start writing each completed window; wait for the one before so dirty pages stay
        at two windows (it is normally written by then)."""
        while self._writeback and self.size - self._started >= WRITEBACK_WINDOW:
            start = self._started
            ok = _sync_file_range(self.fd, start, WRITEBACK_WINDOW, _WRITE) == 0
            if ok and start >= WRITEBACK_WINDOW:
                ok = _sync_file_range(self.fd, start - WRITEBACK_WINDOW, WRITEBACK_WINDOW,
                                      _WAIT_BEFORE | _WRITE | _WAIT_AFTER) == 0
            if not ok:  # a filesystem that refuses it: the final fsync still makes the file durable
                self._writeback = False
            self._started += WRITEBACK_WINDOW

    # -- closing -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is left, fsync, close. Raises OSError if anything could not be written."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.direct:
                tail = self._fill
                padded = -(-tail // ALIGN) * ALIGN
                if padded:
                    self._buffers[self._current][tail:padded] = bytes(padded - tail)
                    self._hand_over(padded)
                self._stop_writer()
                self._raise_writer_error()
                os.ftruncate(self.fd, self.size)  # drop the padding of the last block
            os.fsync(self.fd)
        finally:
            self._release()

    def abandon(self) -> None:
        """Stop without making anything durable (the caller deletes the file)."""
        if not self._closed:
            self._closed = True
            self._release()

    def _stop_writer(self) -> None:
        if self.direct and self._thread.is_alive():
            self._jobs.put((-1, 0))  # after the writes handed over before it
            self._thread.join()

    def _release(self) -> None:
        try:
            if self.direct:
                self._stop_writer()
                for buf in self._buffers:
                    buf.close()
        finally:
            os.close(self.fd)

    def fileno(self) -> int:
        return self.fd

    def __enter__(self) -> DurableFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is None:
            self.close()
        else:
            self.abandon()
