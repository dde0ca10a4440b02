"""The unit's SSH server (PlanktoScope OS runs one, user ``pi``): SFTP over the same simulated disk, and a
few shell commands, on 127.0.0.1 (asyncssh, in a thread with its own event loop).

- SFTP is chrooted to the disk folder, so the client sees ``/home/pi/PlanktoScope/hardware.json`` as on a
  real unit. Files written over SFTP are recorded in the audit log as writer ``ssh``.
- ``sudo reboot`` / ``reboot`` / ``sudo systemctl reboot``: the session ends and the unit reboots (the whole
  unit: HTTP and SSH listeners go down and come back on the same ports). ``cat /etc/hostname`` and
  ``hostname`` answer the host name. Anything else exits 127.
- Password authentication only, for the one account; the host key is made at the first start and kept in
  the state directory, like a unit's own ``/etc/ssh`` keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from simulators.planktoscope.device import PlanktoscopeDevice

log = logging.getLogger(__name__)

REBOOT_COMMANDS = ("reboot", "sudo reboot", "sudo systemctl reboot", "sudo shutdown -r now")
_WRITE = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC


class _Sftp(asyncssh.SFTPServer):
    device: PlanktoscopeDevice

    def __init__(self, chan: Any, device: PlanktoscopeDevice) -> None:
        super().__init__(chan, chroot=str(device.root).encode())
        self.device = device
        self._writes: dict[int, str] = {}

    def open(self, path: bytes, pflags: int, attrs: Any) -> Any:
        if pflags & _WRITE and self.device.disk_full:
            raise asyncssh.SFTPFailure("No space left on device")
        file_obj = super().open(path, pflags, attrs)
        if pflags & _WRITE:
            self._writes[id(file_obj)] = _device_path(path)
        return file_obj

    def close(self, file_obj: object) -> Any:
        result = super().close(file_obj)
        device_path = self._writes.pop(id(file_obj), None)
        if device_path is not None:
            with contextlib.suppress(OSError, ValueError):
                size = self.device.host_path(device_path).stat().st_size
                self.device.audit("ssh", "write", device_path, size)
        return result

    def remove(self, path: bytes) -> Any:
        result = super().remove(path)
        self.device.audit("ssh", "delete", _device_path(path), 0)
        return result


def _device_path(path: bytes) -> str:
    import posixpath

    return posixpath.normpath(posixpath.join("/", path.decode("utf-8", errors="replace")))


class SshServer:
    def __init__(self, device: PlanktoscopeDevice, *, username: str, password: str, key_path: Path,
                 on_reboot: Callable[[], None]) -> None:
        self.device = device
        self.username = username
        self._password = password
        self.key_path = key_path
        self.on_reboot = on_reboot
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._key: Any = None
        self._connections: set[Any] = set()

    @property
    def address(self) -> str:
        return f"ssh://{self.username}@127.0.0.1:{self.port}"

    def _host_key(self) -> Any:
        if self._key is None:
            if self.key_path.exists():
                self._key = asyncssh.read_private_key(str(self.key_path))
            else:
                self._key = asyncssh.generate_private_key("ssh-ed25519")
                self.key_path.parent.mkdir(parents=True, exist_ok=True)
                self._key.write_private_key(str(self.key_path))
                self.key_path.chmod(0o600)
        return self._key

    def start(self) -> None:
        """Listen on 127.0.0.1 (the same port after a reboot)."""
        if self._thread is not None:
            return
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(self._listen())
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="planktoscope ssh", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread = None
            raise failure[0]
        log.info("ssh on %s", self.address)

    async def _listen(self) -> Any:
        server = self

        class _Auth(asyncssh.SSHServer):
            def connection_made(self, conn: Any) -> None:
                server._connections.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                pass

            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                return username == server.username and hmac.compare_digest(password.encode(),
                                                                           server._password.encode())

        return await asyncssh.create_server(
            _Auth, "127.0.0.1", self.port, server_host_keys=[self._host_key()], reuse_address=True,
            sftp_factory=lambda chan: _Sftp(chan, self.device), process_factory=self._process,
            allow_scp=False, agent_forwarding=False, x11_forwarding=False)

    async def _process(self, process: Any) -> None:
        command = (process.command or "").strip()
        if command in REBOOT_COMMANDS:
            process.exit(0)
            threading.Thread(target=self.on_reboot, name="ssh reboot", daemon=True).start()
            return
        if command in ("hostname", "cat /etc/hostname"):
            process.stdout.write(self.device.hostname + "\n")
            process.exit(0)
            return
        process.stderr.write(f"bash: {command.split()[0] if command else 'sh'}: command not found\n")
        process.exit(127)

    def stop(self) -> None:
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None:
            return

        async def halt() -> None:
            for conn in list(self._connections):
                conn.abort()  # a reboot drops every session
            self._connections.clear()
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)

        with contextlib.suppress(RuntimeError, TimeoutError, Exception):
            asyncio.run_coroutine_threadsafe(halt(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._loop = self._thread = self._server = None
