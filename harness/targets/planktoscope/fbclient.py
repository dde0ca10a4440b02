"""Client of one filebrowser instance of a PlanktoScope (``/admin/fs`` or ``/ps/data/browse``) over the
shared HTTP transport (targets/planktoscope.md §8.2, §14.1).

- Log in once per instance (noauth: any body gets a token), send the token in ``X-Auth`` only: never as
  ``?auth=`` (filebrowser v2.44.2 answers 401 to it), re-login on a 401, renew on ``X-Renew-Token: true``.
- The token is opaque: its expiry is not decoded.
- An HTML answer where JSON or a file was expected means the surface is not there (v2026 passes
  ``/admin/fs/api/*`` to its Express app, which answers ``index.html`` with 200).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.errors import DeviceError
from harness.transports.http import ApiError, BearerAuth, Grant, HttpTransport

log = logging.getLogger(__name__)

TOKEN_HORIZON_S = 365 * 24 * 3600.0  # the token is opaque: it is renewed on X-Renew-Token or a 401


class Unavailable(DeviceError):
    """The instance is not served at this address (HTML instead of its API)."""


class FileBrowserAuth(BearerAuth):
    """filebrowser's token in the ``X-Auth`` header (never ``Authorization``, never ``?auth=``)."""

    def __init__(self, username: str | None, password: str | None) -> None:
        self._username = username or ""
        self._password = password or ""
        super().__init__(login=self._do_login, refresh=self._do_renew, margin_s=0.0)

    def _do_login(self, transport: HttpTransport) -> Grant:
        # noauth ignores the body; a unit with password auth checks it. recaptcha as the SPA sends it.
        response = transport.request("POST", "/api/login", auth=False, idempotent=True,
                                     json={"username": self._username, "password": self._password,
                                           "recaptcha": ""})
        return Grant(_token(transport, response), time.monotonic() + TOKEN_HORIZON_S)

    def _do_renew(self, transport: HttpTransport, grant: Grant) -> Grant:
        response = transport.request("POST", "/api/renew", auth=False, idempotent=True,
                                     headers={"X-Auth": grant.token})
        return Grant(_token(transport, response), time.monotonic() + TOKEN_HORIZON_S)

    def headers(self, transport: HttpTransport) -> dict[str, str]:
        grant = self.grant or self.login(transport)
        return {"X-Auth": grant.token}


def _token(transport: HttpTransport, response: httpx.Response) -> str:
    text = response.text.strip()
    kind = response.headers.get("content-type", "")
    if "html" in kind or text.count(".") != 2 or any(c.isspace() for c in text):
        raise Unavailable(f"{transport.base_url}: no file browser here (the login answer is not a token)")
    return text


@dataclass(frozen=True)
class Item:
    path: str  # inside the instance root, leading /
    name: str
    is_dir: bool
    size: int


class FileBrowserClient:
    def __init__(self, base_url: str, *, username: str | None = None, password: str | None = None,
                 verify: bool | str | Path = True, timeout: float = 30.0) -> None:
        self.auth = FileBrowserAuth(username, password)
        self.transport = HttpTransport(base_url, verify=verify, timeout=timeout, auth=self.auth)
        self.renewals = 0

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    def close(self) -> None:
        self.transport.close()

    @staticmethod
    def _quote(path: str) -> str:
        return urllib.parse.quote("/" + path.lstrip("/"))

    def _after(self, response: httpx.Response) -> httpx.Response:
        if response.headers.get("x-renew-token", "").lower() == "true" and self.auth.grant is not None:
            self.auth.refresh(self.transport)
            self.renewals += 1
        return response

    def _json(self, response: httpx.Response, what: str) -> Any:
        kind = response.headers.get("content-type", "")
        if "json" not in kind:
            raise Unavailable(f"{self.base_url}: {what} answered {kind or 'no content type'}, not JSON: the file "
                              f"browser is not served here")
        try:
            return response.json()
        except ValueError:
            raise DeviceError(f"{self.base_url}: {what}: the answer is not valid JSON") from None

    def resource(self, path: str, *, checksum: str | None = None) -> dict[str, Any] | None:
        """GET /api/resources/<path>: a stat or a listing; None if it does not exist."""
        params = {"checksum": checksum} if checksum else None
        try:
            response = self._after(self.transport.request("GET", "/api/resources" + self._quote(path),
                                                          params=params))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return self._json(response, f"GET {path}")

    def listdir(self, path: str) -> list[Item] | None:
        info = self.resource(path.rstrip("/") + "/")
        if info is None:
            return None
        if not info.get("isDir"):
            raise DeviceError(f"{self.base_url}: {path} is not a directory")
        items = []
        for it in info.get("items") or []:
            items.append(Item(str(it.get("path", "")), str(it.get("name", "")), bool(it.get("isDir")),
                              int(it.get("size") or 0)))
        return items

    def checksum(self, path: str, algo: str) -> str | None:
        info = self.resource(path, checksum=algo)
        if info is None:
            return None
        value = (info.get("checksums") or {}).get(algo)
        if not isinstance(value, str):
            raise DeviceError(f"{self.base_url}: no {algo} checksum for {path}")
        return value

    def read(self, path: str) -> bytes | None:
        """GET /api/raw/<path>, byte-exact; None if it does not exist."""
        try:
            response = self._after(self.transport.request("GET", "/api/raw" + self._quote(path)))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        if "text/html" in response.headers.get("content-type", "") and not path.endswith((".html", ".htm")):
            raise Unavailable(f"{self.base_url}: GET {path} answered an HTML page: the file browser is not "
                              f"served here")
        return response.content

    def download(self, path: str, dest: Path) -> int:
        result = self.transport.download("/api/raw" + self._quote(path), dest, message=f"downloading {path}")
        return result.size

    def upload(self, path: str, data: bytes, *, override: bool) -> bool:
        """POST the bytes; True if written, False on 409 (exists and ``override`` is false)."""
        try:
            response = self.transport.request(
                "POST", "/api/resources" + self._quote(path),
                params={"override": "true" if override else "false"}, content=data,
                headers={"Content-Type": "application/octet-stream"}, idempotent=False)
        except ApiError as exc:
            if exc.status == 409 and not override:
                return False
            if exc.status in (404, 405) and "html" in exc.headers.get("content-type", ""):
                raise Unavailable(f"{self.base_url}: uploads are not served here (HTTP {exc.status}, HTML)") \
                    from None
            raise
        self._after(response)
        return True

    def delete(self, path: str) -> bool:
        try:
            self.transport.request("DELETE", "/api/resources" + self._quote(path), idempotent=True)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True
