"""HTTP transport for HTTP targets (httpx): JSON calls, bearer-token auth with refresh, streamed download and
upload with progress, bounded retries for requests safe to repeat, and waiting out a reboot.

::

    auth = BearerAuth(login=my_login, refresh=my_refresh, margin_s=60)
    with HttpTransport("https://127.0.0.1:8443", verify="/path/cert.pem", timeout=30, auth=auth) as t:
        info = t.json("GET", "/api/v1/mobius/node/info")
        result = t.download("/api/v1/mobius/node/backup", Path("out.zip"), params={"name": "x"},
                            progress=progress)          # -> Download(path, size, sha256, headers, filename)
        answer = t.upload("/api/v1/mobius/node/restore/upload", Path("out.zip"), content_type="application/zip")
        t.wait_for_reboot(probe, deadline_s=600)          # probe() -> value when up again, None while not

Errors are one line and never carry a token or a password:

- ``LinkError``: no connection, connection refused, TLS failure, timeout, a connection dropped mid-body, a
  reboot that did not end by its deadline;
- ``ApiError`` (a ``DeviceError``): the unit answered with an error status. ``.status``, ``.code`` and
  ``.message`` come from its JSON error body when it has one (an HTML page from a proxy is never parsed);
  drivers turn the codes that mean "refused" or "bad input" into ``Refused``/``BadInput``.

Retries (``retries`` attempts after the first, exponential back-off from ``backoff_s``, ``Retry-After`` honoured
up to ``max_backoff_s``) happen only for requests safe to repeat: GET/HEAD/OPTIONS, or a call marked
``idempotent=True``. They cover connection errors, timeouts and 502/503/504. A 401 with an auth hook is
different: the unit did nothing, so any request is sent once more after the hook refreshed or logged in again.

TLS: ``verify`` is True (system CAs, or the file named by ``SSL_CERT_FILE``), False, or the path of a PEM
certificate to pin (a simulator's ``cert`` from its JSON line, a real unit's self-signed certificate).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from harness.durable import DurableFile
from harness.errors import BadInput, DeviceError, LinkError

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None, str], None]
T = TypeVar("T")

CHUNK = 1 << 20  # 1 MiB: downloads and uploads stream in pieces of this size, whatever the file size
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_STATUS = frozenset({502, 503, 504})
NOT_UP_STATUS = frozenset({502, 503, 504})


def _widen_reads() -> None:
    """httpcore reads an HTTP/1.1 body 64 KiB per socket call, each through h11's parser: on a multi-GiB
    download that Python work per call cost more client CPU than the bytes themselves. Socket reads of up to
    CHUNK return whatever the kernel holds (never more), so small responses are unaffected."""
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # a future httpcore without it: keep its own default
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", CHUNK) < CHUNK:
        HTTP11Connection.READ_NUM_BYTES = CHUNK


_widen_reads()


def _hand_over_whole_buffer() -> None:
    """h11 hands a body piece out of its receive buffer by slicing it twice (two copies of every byte) even
    when the piece is the whole buffer, which with CHUNK-sized reads it nearly always is. Handing over the
    buffer itself and starting a new one is the same result without the copies (measured: ~0.3 s less
    client CPU on a 2 GiB GMI download)."""
    try:
        from h11._receivebuffer import ReceiveBuffer
    except ImportError:
        return
    original = ReceiveBuffer.maybe_extract_at_most
    if getattr(original, "_whole_buffer", False):
        return

    def maybe_extract_at_most(self, count: int):  # type: ignore[no-untyped-def]
        data = self._data
        if data and len(data) <= count and hasattr(self, "_next_line_search"):
            self._data = bytearray()
            self._next_line_search = 0
            self._multiple_lines_search = 0
            return data
        return original(self, count)

    maybe_extract_at_most._whole_buffer = True  # type: ignore[attr-defined]
    ReceiveBuffer.maybe_extract_at_most = maybe_extract_at_most


_hand_over_whole_buffer()


class _ChunkWorker:
    """Calls ``fn(chunk)`` for every chunk of a download, in order, on a thread of its own: the whole-file
    sha256 and the caller's own check (a GMI's part hashes) run beside the socket reads instead of after each
    one (hashlib releases the GIL; on a 2 GiB GMI this took ~1.5 s off the main thread). Chunks are the
    immutable bytes the client returned. The queue is bounded, so memory stays at a few chunks whatever the
    size. An exception from ``fn`` stops the calls and is raised by ``finish()``."""

    def __init__(self, fn: Callable[[bytes], object], name: str) -> None:
        import queue
        import threading

        self._fn = fn
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._dropping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None and not self._dropping:
                try:
                    self._fn(chunk)
                except BaseException as exc:  # raised in the caller's thread by finish()
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def finish(self) -> None:
        """Wait until every chunk has been handled; raise what ``fn`` raised."""
        self.close()
        if self._error is not None:
            raise self._error

    def close(self, *, drop: bool = False) -> None:
        """Stop the thread (``drop``: without handling what is still queued, e.g. an abandoned attempt)."""
        self._dropping = self._dropping or drop
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _no_progress(done: int, total: int | None, message: str) -> None:
    """Default progress sink."""


class ApiError(DeviceError):
    """The unit answered with an error status."""

    def __init__(self, message: str, *, status: int, code: str = "", detail: str = "",
                 body: Any = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail  # the unit's own message
        self.body = body
        self.headers = dict(headers or {})


@dataclass
class Download:
    path: Path
    size: int
    sha256: str | None  # None when the caller asked for no whole-file hash (it hashes the body itself)
    headers: dict[str, str] = field(default_factory=dict)
    filename: str | None = None  # from Content-Disposition, when the server named the file


# -- auth -----------------------------------------------------------------------------------------------


@dataclass
class Grant:
    """A bearer token and when it ends (``time.monotonic()`` seconds), plus an optional refresh token."""

    token: str
    expires_at: float
    refresh_token: str | None = None

    def __repr__(self) -> str:  # never the tokens
        return f"Grant(expires_in={self.expires_at - time.monotonic():.0f}s)"


class BearerAuth:
    """A token manager: log in when needed, refresh ``margin_s`` before expiry, recover from a 401.

    ``login(transport) -> Grant`` and ``refresh(transport, grant) -> Grant`` talk to the unit with
    ``transport.request(..., auth=False)``. On a 401 during a flow: refresh once, then log in again once, then
    fail (the unit's rule in the MobiusFlow spec, sensible everywhere).
    """

    def __init__(self, login: Callable[[HttpTransport], Grant],
                 refresh: Callable[[HttpTransport, Grant], Grant] | None = None, *,
                 margin_s: float = 60.0) -> None:
        self._login = login
        self._refresh = refresh
        self.margin_s = margin_s
        self.grant: Grant | None = None
        self.logins = 0
        self.refreshes = 0

    def invalidate(self) -> None:
        """Forget the token (after a reboot every token is invalid)."""
        self.grant = None

    def login(self, transport: HttpTransport) -> Grant:
        self.grant = self._login(transport)
        self.logins += 1
        return self.grant

    def refresh(self, transport: HttpTransport) -> Grant:
        """Refresh, falling back to a fresh login when there is no refresh or it is refused."""
        if self.grant is not None and self._refresh is not None:
            try:
                self.grant = self._refresh(transport, self.grant)
                self.refreshes += 1
                return self.grant
            except ApiError as exc:
                if exc.status not in (400, 401, 403):
                    raise
                log.info("token refresh refused (%s); logging in again", exc.code or exc.status)
        return self.login(transport)

    def headers(self, transport: HttpTransport) -> dict[str, str]:
        grant = self.grant
        if grant is None:
            grant = self.login(transport)
        elif grant.expires_at - time.monotonic() <= self.margin_s:
            grant = self.refresh(transport)
        return {"Authorization": f"Bearer {grant.token}"}

    def on_unauthorized(self, transport: HttpTransport, attempt: int) -> bool:
        """After a 401: attempt 0 refreshes, attempt 1 logs in again; then give up (False)."""
        if attempt == 0:
            self.refresh(transport)
            return True
        if attempt == 1:
            self.login(transport)
            return True
        return False


# -- the transport -----------------------------------------------------------------------------------------


def ssl_verify(verify: bool | str | Path) -> bool | ssl.SSLContext:
    """httpx's ``verify`` for a bool or a pinned certificate path (``SSL_CERT_FILE`` honoured for True)."""
    if verify is False:
        return False
    if verify is True:
        cafile = os.environ.get("SSL_CERT_FILE")
        return ssl.create_default_context(cafile=cafile) if cafile else True
    path = Path(verify)
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise BadInput(f"cannot use TLS certificate {path}: {getattr(exc, 'strerror', None) or exc}") from None


class HttpTransport:
    def __init__(self, base_url: str, *, verify: bool | str | Path = True,
                 timeout: float | httpx.Timeout = 30.0, auth: BearerAuth | None = None, retries: int = 3,
                 backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                 headers: Mapping[str, str] | None = None) -> None:
        if not base_url.lower().startswith(("http://", "https://")):
            raise BadInput(f"{base_url}: an HTTP target needs an http:// or https:// address")
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=min(float(timeout), 10.0))
        self.timeout = timeout
        # trust_env=False: loopback simulators and bench units are never reached through a proxy.
        self._verify = ssl_verify(verify)
        self._headers = dict(headers or {})
        self._client = self._new_client()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self._verify, timeout=self.timeout,
                            trust_env=False, headers=self._headers)

    @property
    def client(self) -> httpx.Client:
        # A closed transport reopens on next use: a driver closed before a firmware update (which talks to
        # the unit through its own control channel) is used again afterwards.
        if self._client.is_closed:
            self._client = self._new_client()
        return self._client

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset_connections(self) -> None:
        """Drop pooled keep-alive connections (after a reboot they are dead anyway)."""
        old, self._client = self._client, self._new_client()
        old.close()

    # -- requests ---------------------------------------------------------------------------------------

    def _where(self, method: str, path: str) -> str:
        return f"{method} {self.base_url}{path}"

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, content: bytes | None = None,
                idempotent: bool | None = None, auth: bool = True, expect: tuple[int, ...] | None = None,
                timeout: float | httpx.Timeout | None = None, retry: bool = True) -> httpx.Response:
        """One call, with auth, 401 recovery and (safe requests only) retries. The body is read.

        ``expect``: the statuses that are success (default: any 2xx); anything else raises ApiError.
        ``retry=False``: no retries even when safe (a probe that has its own loop).
        """
        method = method.upper()
        safe = (method in SAFE_METHODS if idempotent is None else idempotent) and retry

        def send() -> httpx.Response:
            all_headers = dict(headers or {})
            if auth and self.auth is not None:
                all_headers.update(self.auth.headers(self))
            return self.client.request(method, path, json=json, params=params, headers=all_headers,
                                        content=content,
                                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)

        response = self._with_retries(method, path, send, safe, use_auth=auth)
        return self._check(method, path, response, expect)

    def _with_retries(self, method: str, path: str, send: Callable[[], httpx.Response],
                      safe: bool, *, use_auth: bool = True) -> httpx.Response:
        unauthorized = 0
        attempt = 0
        while True:
            try:
                response = send()
            except httpx.TransportError as exc:
                if safe and attempt < self.retries:
                    self._sleep_backoff(attempt, None, f"{self._where(method, path)}: {_reason(exc)}")
                    attempt += 1
                    continue
                raise LinkError(f"{self._where(method, path)}: {_reason(exc)}") from None
            # A 401 on a call made without auth (login, refresh) is that call's answer, not a cue to log in.
            if response.status_code == 401 and use_auth and self.auth is not None \
                    and self.auth.on_unauthorized(self, unauthorized):
                unauthorized += 1
                continue
            if response.status_code in RETRY_STATUS and safe and attempt < self.retries:
                self._sleep_backoff(attempt, response.headers.get("Retry-After"),
                                    f"{self._where(method, path)}: HTTP {response.status_code}")
                attempt += 1
                continue
            return response

    def _sleep_backoff(self, attempt: int, retry_after: str | None, why: str) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        if retry_after and retry_after.strip().isdigit():
            delay = min(self.max_backoff_s, max(delay, float(retry_after)))
        log.info("%s; retrying in %.2f s", why, delay)
        time.sleep(delay)

    def _check(self, method: str, path: str, response: httpx.Response,
               expect: tuple[int, ...] | None) -> httpx.Response:
        ok = response.status_code in expect if expect is not None else response.is_success
        if ok:
            return response
        raise api_error(self._where(method, path), response)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` and decode its JSON body (None for an empty body, e.g. 204)."""
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise DeviceError(f"{self._where(method, path)}: the answer is not JSON "
                              f"({response.headers.get('content-type', 'no content type')})") from None

    # -- streaming --------------------------------------------------------------------------------------

    def download(self, path: str, dest: Path, *, params: Mapping[str, Any] | None = None,
                 progress: ProgressFn = _no_progress, timeout: float | httpx.Timeout | None = None,
                 message: str = "downloading", on_chunk: Callable[[bytes], None] | None = None,
                 sha256: bool = True, on_attempt: Callable[[], None] | None = None) -> Download:
        """Stream a GET body to ``dest`` (via ``dest.part``, fsynced, renamed), hashing as it arrives.

        Constant memory whatever the size. A body shorter than its ``Content-Length`` (a dropped connection)
        is a LinkError and leaves no file; the download is retried from the start while retries last.
        ``on_chunk`` sees every piece of the body as it is written (a caller that checks the content itself
        hashes it there, in the same pass), on a worker thread, in order; every call has returned before
        ``download`` returns or the next attempt begins, and an exception from it fails the download (not
        retried). ``on_attempt`` is called before each attempt, so such a caller can start over when a retry
        restarts the body. ``sha256=False`` skips the whole-file hash
        (``Download.sha256`` is then None): one hash pass less for callers that verify the body anyway.
        """
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        attempt = 0
        unauthorized = 0
        while True:
            if on_attempt is not None:
                on_attempt()
            try:
                result = self._download_once(path, dest, part, params, progress, timeout, message, on_chunk,
                                             sha256)
            except _Unauthorized:
                if self.auth is not None and self.auth.on_unauthorized(self, unauthorized):
                    unauthorized += 1
                    continue
                raise LinkError(f"{self._where('GET', path)}: still unauthorized after logging in again") \
                    from None
            except (httpx.TransportError, _Retryable) as exc:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                reason = _reason(exc) if isinstance(exc, httpx.TransportError) else str(exc)
                if attempt < self.retries:
                    self._sleep_backoff(attempt, getattr(exc, "retry_after", None),
                                        f"{self._where('GET', path)}: {reason}")
                    attempt += 1
                    continue
                raise LinkError(f"{self._where('GET', path)}: {reason}") from None
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                raise
            return result

    def _download_once(self, path: str, dest: Path, part: Path, params: Mapping[str, Any] | None,
                       progress: ProgressFn, timeout: float | httpx.Timeout | None, message: str,
                       on_chunk: Callable[[bytes], None] | None = None, sha256: bool = True) -> Download:
        headers = self.auth.headers(self) if self.auth is not None else {}
        with self.client.stream("GET", path, params=params, headers=headers,
                                 timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT) as response:
            if response.status_code == 401 and self.auth is not None:
                raise _Unauthorized()
            if response.status_code in RETRY_STATUS:
                raise _Retryable(f"HTTP {response.status_code}", response.headers.get("Retry-After"))
            if not response.is_success:
                response.read()
                raise api_error(self._where("GET", path), response)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            digest = hashlib.sha256() if sha256 else None
            workers = [_ChunkWorker(fn, name) for fn, name in ((digest and digest.update, "download sha256"),
                                                                (on_chunk, "download check")) if fn]
            done = 0
            progress(0, total, message)
            try:
                # iter_raw() without a size hands over what the socket read gave (re-chunking to a fixed size
                # copied every byte once more and cost ~40% of the client's CPU on multi-GiB bodies).
                # Durable when closed, written while the body arrives (harness/durable.py: O_DIRECT for big
                # bodies, so a multi-GiB GMI is on disk at the disk's speed, not the page cache's writeback).
                with DurableFile(part, total) as f:
                    for chunk in response.iter_raw():
                        f.write(chunk)
                        for worker in workers:
                            worker.put(chunk)
                        done += len(chunk)
                        progress(done, total, "")
                    if total is not None and done != total:
                        raise _Retryable(f"body ended after {done} of {total} bytes")
                    for worker in workers:
                        worker.finish()
                sha = digest.hexdigest() if digest is not None else None
            finally:
                for worker in workers:
                    worker.close(drop=True)
            os.replace(part, dest)
            headers_out = dict(response.headers)
        return Download(dest, done, sha, headers_out,
                        content_disposition_filename(headers_out.get("content-disposition")))

    def upload(self, path: str, source: Path, *, content_type: str = "application/octet-stream",
               progress: ProgressFn = _no_progress, method: str = "POST",
               headers: Mapping[str, str] | None = None, expect: tuple[int, ...] | None = None,
               timeout: float | httpx.Timeout | None = None, message: str = "uploading") -> httpx.Response:
        """Stream a file as the raw request body, with progress. Not retried (an upload is not idempotent),
        except once more after a 401 (the unit took nothing)."""
        source = Path(source)
        try:
            total = source.stat().st_size
        except OSError as exc:
            raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None

        def body() -> Iterator[bytes]:
            done = 0
            progress(0, total, message)
            with open(source, "rb") as f:
                while chunk := f.read(CHUNK):
                    done += len(chunk)
                    yield chunk
                    progress(done, total, "")

        def send() -> httpx.Response:
            all_headers = {"Content-Type": content_type, "Content-Length": str(total), **(headers or {})}
            if self.auth is not None:
                all_headers.update(self.auth.headers(self))
            return self.client.request(method.upper(), path, content=body(), headers=all_headers,
                                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)

        response = self._with_retries(method.upper(), path, send, safe=False)
        return self._check(method.upper(), path, response, expect)

    # -- reboots ----------------------------------------------------------------------------------------

    def wait_for_reboot(self, probe: Callable[[], T | None], *, deadline_s: float, poll_s: float = 0.2,
                        what: str = "the unit", probe_timeout_s: float = 5.0) -> T:
        """Wait for the API to go away and come back: ``probe()`` returns a value once the unit is up again
        (e.g. a new boot ID and state running), None while it is still the old boot or not ready.

        Connection errors, timeouts, and 502/503/504 (whatever the body: a proxy's HTML page is not parsed)
        count as "not up yet". LinkError with the last reason at the deadline.
        """
        self.reset_connections()  # pooled connections to the old boot are dead
        # Probes get a short timeout: one that lands on the old server while it shuts down can otherwise
        # hang until the full read timeout although the new boot is already answering.
        limit = min(probe_timeout_s, deadline_s)
        self.client.timeout = httpx.Timeout(limit, connect=min(2.0, limit))
        try:
            return self._poll_until_up(probe, deadline_s=deadline_s, poll_s=poll_s, what=what)
        finally:
            self.client.timeout = self.timeout

    def _poll_until_up(self, probe: Callable[[], T | None], *, deadline_s: float, poll_s: float,
                       what: str) -> T:
        end = time.monotonic() + deadline_s
        last = "no answer yet"
        seen_down = False
        interval = 0.02
        while True:
            try:
                result = probe()
            except LinkError as exc:
                last, seen_down = str(exc), True
            except ApiError as exc:
                if exc.status not in NOT_UP_STATUS:
                    raise
                last, seen_down = f"HTTP {exc.status} {exc.code}".strip(), True
            else:
                if result is not None:
                    log.info("%s is back%s", what, " after being down" if seen_down else "")
                    return result
                last = "still the old boot, or not ready"
            if time.monotonic() >= end:
                raise LinkError(f"{what} at {self.base_url} did not come back within {deadline_s:g} s "
                                f"(last: {last})")
            # Quick at first (a simulator is back in a fraction of a second), then every poll_s (a real
            # unit takes tens of seconds: no need to knock a thousand times).
            time.sleep(min(poll_s, interval))
            interval *= 1.5


class _Unauthorized(Exception):
    pass


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def api_error(where: str, response: httpx.Response) -> ApiError:
    """An ApiError from an error answer: the unit's JSON ``code``/``message`` when the body is JSON."""
    status = response.status_code
    code = detail = ""
    body: Any = None
    content_type = response.headers.get("content-type", "")
    if "json" in content_type:
        with contextlib.suppress(ValueError):
            body = response.json()
        if isinstance(body, dict):
            code = str(body.get("code") or body.get("error") or "")
            detail = str(body.get("message") or body.get("detail") or "")
    text = f"{where}: HTTP {status}"
    if code:
        text += f" {code}"
    if detail:
        text += f": {detail}"
    return ApiError(text, status=status, code=code, detail=detail, body=body, headers=response.headers)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    cause: BaseException | None = exc
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause or exc) or type(exc).__name__
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate not trusted (pin the unit's certificate)"
    if isinstance(cause, ConnectionRefusedError) or "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection broke ({text})"
    return text


_FILENAME_STAR = re.compile(r"filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)")
_FILENAME = re.compile(r'filename\s*=\s*"?([^";]+)"?')


def content_disposition_filename(value: str | None) -> str | None:
    """The bare file name of a ``Content-Disposition`` header (any directory part is dropped)."""
    if not value:
        return None
    import urllib.parse

    match = _FILENAME_STAR.search(value)
    name = urllib.parse.unquote(match.group(1)) if match else None
    if name is None:
        match = _FILENAME.search(value)
        name = match.group(1).strip() if match else None
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name if name not in ("", ".", "..") else None


__all__ = ["ApiError", "BearerAuth", "Download", "Grant", "HttpTransport", "api_error",
           "content_disposition_filename", "ssl_verify"]
