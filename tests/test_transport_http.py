"""HttpTransport against a real uvicorn server on loopback: retries only where safe, token refresh and
re-login, streamed download/upload with sha256 and progress, waiting out a reboot, one-line errors."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from harness.errors import DeviceError, LinkError
from harness.transports.http import (
    ApiError,
    BearerAuth,
    Grant,
    HttpTransport,
    content_disposition_filename,
)
from simulators.core.http import HttpServer

SECRET = "SECRET-TOKEN-do-not-leak"
BLOB = bytes(range(256)) * 4096  # 1 MiB


class App:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fail_left: dict[str, int] = {}
        self.valid_tokens = {f"{SECRET}-1"}
        self.uploaded = b""
        self.boot = 1
        self.drop_next = False
        self.hang_next_s = 0.0

    def starlette(self) -> Starlette:
        async def flaky(request: Request) -> Response:
            key = f"{request.method} flaky"
            self.calls[key] += 1
            if self.fail_left.get(key, 0) > 0:
                self.fail_left[key] -= 1
                return JSONResponse({"code": "starting", "message": "starting"}, 503, headers={"Retry-After": "0"})
            return JSONResponse({"ok": True})

        async def private(request: Request) -> Response:
            self.calls["private"] += 1
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if token not in self.valid_tokens:
                return JSONResponse({"code": "token_expired", "message": "Your session has expired."}, 401)
            return JSONResponse({"ok": True})

        async def blob(request: Request) -> Response:
            self.calls["blob"] += 1
            if self.drop_next:
                self.drop_next = False
                return Response(BLOB[:1000], headers={"Content-Length": str(len(BLOB))})  # lies: short body
            return Response(BLOB, media_type="application/zip",
                            headers={"Content-Disposition": 'attachment; filename="../../evil/b_2026.zip"'})

        async def upload(request: Request) -> Response:
            data = b""
            async for chunk in request.stream():
                data += chunk
            self.uploaded = data
            return JSONResponse({"sha256": hashlib.sha256(data).hexdigest()}, 201)

        async def html502(request: Request) -> Response:
            return HTMLResponse("<html><body>502 Bad Gateway</body></html>", 502)

        async def info(request: Request) -> Response:
            if self.hang_next_s:  # an old server that accepted the connection and will never answer in time
                hang, self.hang_next_s = self.hang_next_s, 0.0
                await asyncio.sleep(hang)
            return JSONResponse({"boot": self.boot})

        return Starlette(routes=[Route("/flaky", flaky, methods=["GET", "POST"]), Route("/private", private),
                                 Route("/blob", blob), Route("/upload", upload, methods=["POST"]),
                                 Route("/html502", html502), Route("/info", info)])


@pytest.fixture
def server():
    app = App()
    srv = HttpServer(app.starlette(), name="test")
    srv.open()
    yield app, srv
    srv.close()


def _t(srv: HttpServer, **kwargs: Any) -> HttpTransport:
    kwargs.setdefault("backoff_s", 0.01)
    return HttpTransport(srv.base_url, **kwargs)


def test_get_is_retried_on_503(server) -> None:
    app, srv = server
    app.fail_left["GET flaky"] = 2
    with _t(srv, retries=3) as t:
        assert t.json("GET", "/flaky") == {"ok": True}
    assert app.calls["GET flaky"] == 3


def test_post_is_not_retried_unless_marked_idempotent(server) -> None:
    app, srv = server
    app.fail_left["POST flaky"] = 1
    with _t(srv, retries=3) as t:
        with pytest.raises(ApiError) as err:
            t.json("POST", "/flaky", json={})
        assert err.value.status == 503 and err.value.code == "starting" and app.calls["POST flaky"] == 1
        app.fail_left["POST flaky"] = 1
        assert t.json("POST", "/flaky", json={}, idempotent=True) == {"ok": True}
    assert app.calls["POST flaky"] == 3


def test_retries_are_bounded(server) -> None:
    app, srv = server
    app.fail_left["GET flaky"] = 10
    with _t(srv, retries=2) as t, pytest.raises(ApiError):
        t.json("GET", "/flaky")
    assert app.calls["GET flaky"] == 3


def test_connection_refused_is_a_one_line_link_error(server) -> None:
    _app, srv = server
    srv.close()
    with _t(srv, retries=1) as t, pytest.raises(LinkError) as err:
        t.json("GET", "/flaky")
    assert "connection refused" in str(err.value) and "\n" not in str(err.value)


def test_html_error_pages_are_not_parsed(server) -> None:
    _app, srv = server
    with _t(srv, retries=0) as t, pytest.raises(ApiError) as err:
        t.json("GET", "/html502")
    assert err.value.status == 502 and err.value.code == "" and "<html" not in str(err.value)


def test_401_refreshes_then_logs_in_again_and_never_leaks_tokens(server) -> None:
    app, srv = server
    log: list[str] = []

    def login(t: HttpTransport) -> Grant:
        log.append("login")
        return Grant(f"{SECRET}-{len(log)}", time.monotonic() + 600, "refresh-me")

    def refresh(t: HttpTransport, grant: Grant) -> Grant:
        log.append("refresh")
        raise ApiError("refresh refused", status=401, code="token_invalid")

    auth = BearerAuth(login, refresh)
    with _t(srv, auth=auth) as t:
        assert t.json("GET", "/private") == {"ok": True}  # first login gives token -1, valid
        app.valid_tokens = {f"{SECRET}-3"}  # the node forgot every token (a reboot)
        assert t.json("GET", "/private") == {"ok": True}
        assert log == ["login", "refresh", "login"]
        app.valid_tokens = set()
        with pytest.raises(ApiError) as err:
            t.json("GET", "/private")
    assert SECRET not in str(err.value) and err.value.status == 401
    assert SECRET not in repr(auth.grant)


def test_token_is_refreshed_ahead_of_expiry(server) -> None:
    app, srv = server
    calls: list[str] = []

    def login(t: HttpTransport) -> Grant:
        calls.append("login")
        return Grant(f"{SECRET}-1", time.monotonic() + 30, None)  # inside the 60 s margin

    def refresh(t: HttpTransport, grant: Grant) -> Grant:
        calls.append("refresh")
        return Grant(f"{SECRET}-1", time.monotonic() + 600, None)

    with _t(srv, auth=BearerAuth(login, refresh, margin_s=60)) as t:
        t.json("GET", "/private")
        t.json("GET", "/private")
    assert calls == ["login", "refresh"] and app.calls["private"] == 2


def test_download_streams_hashes_and_names(server, tmp_path: Path) -> None:
    _app, srv = server
    seen: list[tuple[int, int | None]] = []
    with _t(srv) as t:
        got = t.download("/blob", tmp_path / "out.zip", progress=lambda d, n, m: seen.append((d, n)))
    assert got.sha256 == hashlib.sha256(BLOB).hexdigest() and got.size == len(BLOB)
    assert (tmp_path / "out.zip").read_bytes() == BLOB and not (tmp_path / "out.zip.part").exists()
    assert seen[0] == (0, len(BLOB)) and seen[-1] == (len(BLOB), len(BLOB))
    assert got.filename == "b_2026.zip"  # directories in the header are dropped


def test_download_cut_short_leaves_no_file(server, tmp_path: Path) -> None:
    app, srv = server
    app.drop_next = True
    with _t(srv, retries=0) as t, pytest.raises(LinkError):
        t.download("/blob", tmp_path / "out.zip")
    assert list(tmp_path.iterdir()) == []
    app.drop_next = True
    with _t(srv, retries=1) as t:
        assert t.download("/blob", tmp_path / "out.zip").size == len(BLOB)  # retried: GET is safe
    assert app.calls["blob"] == 3


def test_upload_streams_a_file(server, tmp_path: Path) -> None:
    app, srv = server
    src = tmp_path / "in.zip"
    src.write_bytes(BLOB * 3)
    seen: list[int] = []
    with _t(srv) as t:
        answer = t.upload("/upload", src, content_type="application/zip", progress=lambda d, n, m: seen.append(d),
                          expect=(201,)).json()
    assert answer["sha256"] == hashlib.sha256(BLOB * 3).hexdigest() and app.uploaded == BLOB * 3
    assert seen[-1] == 3 * len(BLOB) and len(seen) > 3


def test_wait_for_reboot(server) -> None:
    app, srv = server

    def reboot() -> None:
        time.sleep(0.2)
        srv.close()
        time.sleep(0.3)
        app.boot = 2
        srv.open()

    threading.Thread(target=reboot, daemon=True).start()
    with _t(srv) as t:
        def probe() -> dict[str, Any] | None:
            info = t.json("GET", "/info", retry=False)
            return info if info["boot"] == 2 else None

        assert t.wait_for_reboot(probe, deadline_s=10, poll_s=0.05) == {"boot": 2}


def test_a_hanging_probe_costs_the_probe_timeout_not_the_read_timeout(server) -> None:
    app, srv = server
    app.boot, app.hang_next_s = 2, 2.0
    with _t(srv, timeout=30) as t:
        start = time.monotonic()
        info = t.wait_for_reboot(lambda: t.json("GET", "/info", retry=False), deadline_s=10, probe_timeout_s=0.3)
        assert info == {"boot": 2} and time.monotonic() - start < 1.5
        assert t.client.timeout.read == 30  # the normal timeout is back for the next requests


def test_a_closed_transport_reopens_on_next_use(server) -> None:
    _app, srv = server
    t = _t(srv)
    assert t.json("GET", "/info") == {"boot": 1}
    t.close()
    assert t.json("GET", "/info") == {"boot": 1}
    t.close()


def test_wait_for_reboot_deadline(server) -> None:
    _app, srv = server
    srv.close()
    with _t(srv) as t, pytest.raises(LinkError, match="did not come back within 0.3 s"):
        t.wait_for_reboot(lambda: t.json("GET", "/info", retry=False), deadline_s=0.3, poll_s=0.05)


def test_other_api_errors_end_the_wait(server) -> None:
    _app, srv = server
    with _t(srv) as t, pytest.raises(DeviceError):
        t.wait_for_reboot(lambda: t.json("GET", "/missing", retry=False), deadline_s=5)


@pytest.mark.parametrize("header,name", [('attachment; filename="a_1.zip"', "a_1.zip"),
                                         ("attachment; filename*=UTF-8''x%20y.zip", "x y.zip"),
                                         ('attachment; filename="..\\\\..\\\\w.zip"', "w.zip"),
                                         ('attachment; filename=".."', None), (None, None)])
def test_content_disposition(header: str | None, name: str | None) -> None:
    assert content_disposition_filename(header) == name


def test_download_hook_sees_every_chunk_and_whole_hash_is_optional(server, tmp_path: Path) -> None:
    app, srv = server
    pieces: list[bytes] = []
    attempts: list[int] = []

    def restart() -> None:
        attempts.append(len(pieces))
        pieces.clear()

    app.drop_next = True  # the first attempt breaks off: the hook's owner is told to start over
    with _t(srv, retries=1) as t:
        got = t.download("/blob", tmp_path / "out.zip", on_chunk=pieces.append, on_attempt=restart, sha256=False)
    assert got.sha256 is None and got.size == len(BLOB)
    assert len(attempts) == 2 and b"".join(pieces) == BLOB == (tmp_path / "out.zip").read_bytes()


def test_a_check_that_raises_fails_the_download_and_leaves_no_file(server, tmp_path: Path) -> None:
    _app, srv = server
    seen: list[int] = []

    def check(chunk: bytes) -> None:
        seen.append(len(chunk))
        raise ValueError("part 2 sha256 mismatch")

    with _t(srv) as t, pytest.raises(ValueError, match="mismatch"):
        t.download("/blob", tmp_path / "out.zip", on_chunk=check)
    assert seen and len(seen) == 1  # no further calls after the first failure
    assert list(tmp_path.iterdir()) == []


def test_keep_alive_responses_are_not_held_back_by_nagle(server) -> None:
    """The simulator's server turns Nagle off: with it on, every response body on a reused connection
    waited ~40 ms for the client's delayed ACK of the headers (every JSON call of every scenario)."""
    _app, srv = server
    with _t(srv) as t:
        t.json("GET", "/info")  # the connection is open and reused from here on
        times = []
        for _ in range(9):
            start = time.perf_counter()
            t.json("GET", "/info")
            times.append(time.perf_counter() - start)
    assert sorted(times)[4] < 0.025, times  # the median; with Nagle on every one is >= 0.04 s
