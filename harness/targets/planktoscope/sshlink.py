"""SSH/SFTP link to a PlanktoScope (user ``pi``), synchronous over asyncssh.

PlanktoScope OS runs an SSH server; over SFTP the settings files of every release are reachable, also where
HTTP cannot reach them (v2.3 has no file browser, v2026's ``/admin/fs`` is Cockpit). ``sudo reboot`` reboots
the unit. Host keys are not pinned by default (a bench re-flashes units, and each flash makes new keys);
pass ``known_hosts`` to pin them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import stat
import threading
import urllib.parse
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import BadInput, LinkError

log = logging.getLogger(__name__)
T = TypeVar("T")
CHUNK = 1 << 20


@dataclass(frozen=True)
class SshAddress:
    host: str
    port: int
    username: str | None

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"ssh://{user}{self.host}:{self.port}"


def parse_ssh_url(url: str) -> SshAddress:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise BadInput(f"{url!r} is not an ssh://[user@]host[:port] address")
    if parts.password:
        raise BadInput("put the SSH password in a --password-file, not in the address")
    try:
        port = parts.port or 22
    except ValueError as exc:
        raise BadInput(f"{url!r}: bad port") from exc
    return SshAddress(parts.hostname, port, parts.username)


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int


class SshLink:
    """One SSH connection with an SFTP session, driven from a private event loop thread."""

    def __init__(self, url: str, *, username: str | None, password: str | None, timeout: float = 30.0,
                 known_hosts: str | None = None) -> None:
        self.address = parse_ssh_url(url)
        self.username = self.address.username or username or "pi"
        self._password = password
        self.timeout = timeout
        self.known_hosts = known_hosts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._sftp: Any = None

    def __repr__(self) -> str:
        return f"SshLink({self.address})"

    # -- the loop --------------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        import asyncssh

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="ssh link", daemon=True)
            self._thread.start()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout + 5)
        except TimeoutError:
            future.cancel()
            self._drop()
            raise LinkError(f"{self.address}: {what}: no answer in time") from None
        except asyncssh.PermissionDenied:
            raise LinkError(f"{self.address}: SSH login as {self.username} refused: check the password file")\
                from None
        except asyncssh.SFTPNoSuchFile:
            raise
        except asyncssh.SFTPError as exc:
            self._drop()  # e.g. the connection was lost in a reboot: the next call connects afresh
            raise LinkError(f"{self.address}: {what}: {exc.reason}") from None
        except (asyncssh.Error, OSError) as exc:
            self._drop()
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) \
                or type(exc).__name__
            raise LinkError(f"{self.address}: {what}: {reason}") from None

    def _drop(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.abort()

    async def _connect(self) -> Any:
        import asyncssh

        if self._conn is None:
            self._conn = await asyncio.wait_for(asyncssh.connect(
                self.address.host, self.address.port, username=self.username, password=self._password,
                known_hosts=self.known_hosts, client_keys=None, agent_path=None, preferred_auth="password",
                connect_timeout=self.timeout, keepalive_interval=0), self.timeout)
            self._sftp = await self._conn.start_sftp_client()
        return self._sftp

    def connect(self) -> None:
        self._run(self._connect(), "connect")

    def close(self) -> None:
        if self._loop is not None:
            async def shut() -> None:
                if self._conn is not None:
                    self._conn.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._conn.wait_closed(), 2)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop.close()
        self._loop = self._thread = self._conn = self._sftp = None

    # -- files -----------------------------------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        """A whole file, or None if it does not exist."""
        import asyncssh

        async def go() -> bytes | None:
            sftp = await self._connect()
            try:
                async with sftp.open(path, "rb") as f:
                    return await f.read()
            except asyncssh.SFTPNoSuchFile:
                return None

        return self._run(go(), f"read {path}")

    def download(self, path: str, dest: Path) -> None:
        async def go() -> None:
            sftp = await self._connect()
            async with sftp.open(path, "rb") as f:
                with open(dest, "wb") as out:
                    while chunk := await f.read(CHUNK):
                        out.write(chunk)

        self._run(go(), f"read {path}")

    def write(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Write a whole file in place (truncating the existing inode: owner and mode are kept).

        ``exclusive``: do not touch an existing file; returns False in that case.
        """
        import asyncssh

        async def go() -> bool:
            sftp = await self._connect()
            await sftp.makedirs(posixpath.dirname(path) or "/", exist_ok=True)
            try:
                async with sftp.open(path, "xb" if exclusive else "wb") as f:
                    for i in range(0, len(data), CHUNK):
                        await f.write(data[i:i + CHUNK])
                    if not data:
                        await f.write(b"")
            except asyncssh.SFTPFailure as exc:
                if exclusive and await sftp.exists(path):
                    return False
                raise LinkError(f"{self.address}: write {path}: {exc.reason}") from None
            return True

        return self._run(go(), f"write {path}")

    def listdir(self, path: str) -> list[Entry] | None:
        """Entries of a directory (no . and ..), or None if it does not exist."""
        import asyncssh

        async def go() -> list[Entry] | None:
            sftp = await self._connect()
            try:
                names = await sftp.readdir(path)
            except asyncssh.SFTPNoSuchFile:
                return None
            out = []
            for n in names:
                if n.filename in (".", ".."):
                    continue
                mode = n.attrs.permissions or 0
                out.append(Entry(n.filename, stat.S_ISDIR(mode), n.attrs.size or 0))
            return out

        return self._run(go(), f"list {path}")

    def run(self, command: str, *, expect_drop: bool = False) -> int:
        """Run a shell command; its exit status. ``expect_drop``: the session may die (a reboot)."""

        async def go() -> int:
            await self._connect()
            result = await self._conn.run(command, check=False)
            return result.exit_status if result.exit_status is not None else -1

        try:
            return self._run(go(), command)
        except LinkError:
            if expect_drop:
                return 0
            raise
        finally:
            if expect_drop:
                self._drop()
