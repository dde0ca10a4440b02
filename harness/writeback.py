"""Write-behind for big streamed files: start the disk writes while the stream is still arriving.

A downloaded artifact is fsynced before anyone keeps it (a factory never loses a record). Left to itself, Linux
holds a multi-GiB download in dirty page cache (writeback starts only at ``dirty_background_ratio`` of RAM)
and the final ``fsync`` then writes all of it at disk speed while the user waits: on a 240 MB/s disk that is
~9 s for a 2 GiB GMI, after the transfer. ``Writeback`` asks the kernel to write each window as soon as it is
complete (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not block) and waits for the window before it
(which is normally written by then), so the disk works while the network does, the dirty memory stays at two
windows, and the final ``fsync`` has only the tail left to write.

Where ``sync_file_range`` does not exist (not Linux), it does nothing and the final ``fsync`` does it all.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

WINDOW = 32 * 1024 * 1024

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


def _load_sync_file_range():  # type: ignore[no-untyped-def]
    if not hasattr(os, "posix_fadvise"):  # not Linux-like
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


class Writeback:
    """Call ``advance(total_written)`` after writes to ``fd``; it starts writeback window by window."""

    def __init__(self, fd: int, window: int = WINDOW) -> None:
        self.fd = fd
        self.window = window
        self._started = 0  # bytes whose writeback has been started
        self.enabled = _sync_file_range is not None

    def advance(self, written: int) -> None:
        if not self.enabled:
            return
        while written - self._started >= self.window:
            start = self._started
            self._call(start, self.window, _WRITE)
            if start >= self.window:  # the window before: written by now, normally; wait so dirty pages stay few
                self._call(start - self.window, self.window, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
            self._started += self.window

    def _call(self, offset: int, size: int, flags: int) -> None:
        assert _sync_file_range is not None
        if _sync_file_range(self.fd, offset, size, flags) != 0:
            # A filesystem that refuses it (EINVAL, ESPIPE…): stop trying; the final fsync still makes it durable.
            self.enabled = False
