"""The HTTP simulator core: a real uvicorn server on loopback, faults, windows that really refuse
connections and come back on the same port, TLS with a pinned self-signed certificate, credentials."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from harness.errors import BadInput
from simulators.core.http import HttpSimulator, load_credentials
from simulators.core.options import SimOptions


class Demo(HttpSimulator):
    target = "demo"
    reboot_down_s = 0.2

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        self.boots = 0

    def routes(self) -> list[Any]:
        async def hello(request: Request) -> Response:
            return JSONResponse({"hi": True, "boots": self.boots})

        async def big(request: Request) -> Response:
            return Response(b"x" * 200_000, media_type="application/octet-stream")

        return [Route("/hello", hello), Route("/big", big)]

    def identity(self) -> dict[str, Any]:
        return {"device_id": "demo-1", "firmware": "1.0"}

    def on_boot(self) -> None:
        self.boots += 1

    def state(self) -> dict[str, Any]:
        return {"boots": self.boots}

    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        return {}


@pytest.fixture
def demo(tmp_path: Path):
    sims: list[Demo] = []

    def make(**options: Any) -> tuple[Demo, dict[str, Any]]:
        sim = Demo(SimOptions(target="demo", state=tmp_path / f"d{len(sims)}", time_scale=1.0, **options))
        fields = sim.start()
        sims.append(sim)
        return sim, fields

    yield make
    for sim in sims:
        sim.stop()


def _client(fields: dict[str, Any]) -> httpx.Client:
    from harness.transports.http import ssl_verify

    return httpx.Client(verify=ssl_verify(fields.get("cert", True)), trust_env=False, timeout=5)


def test_json_line_and_control(demo) -> None:
    sim, fields = demo()
    assert fields["address"].startswith("http://127.0.0.1:") and fields["control"] == fields["address"] + "/_sim"
    assert fields["user"] == "admin" and "password" not in json.dumps(fields)
    with _client(fields) as c:
        assert c.get(fields["address"] + "/hello").json()["hi"] is True
        assert c.get(fields["control"] + "/state").json() == {"boots": 1}


def test_no_control(demo) -> None:
    _sim, fields = demo(control=False)
    assert fields["control"] is None
    with _client(fields) as c:
        assert c.get(fields["address"] + "/_sim/state").status_code == 404


def test_http_error_for_the_next_n_requests(demo) -> None:
    _sim, fields = demo()
    with _client(fields) as c:
        c.post(fields["control"] + "/faults", json={"kind": "http_error", "status": 503, "count": 2})
        assert [c.get(fields["address"] + "/hello").status_code for _ in range(3)] == [503, 503, 200]
        # the control plane itself is never faulted
        c.post(fields["control"] + "/faults", json={"kind": "http_error", "status": 500, "count": 0})
        assert c.get(fields["control"] + "/state").status_code == 200
        c.post(fields["control"] + "/faults", json={"kind": "http_error", "status": 200})
        assert "must be an HTTP error" in c.post(fields["control"] + "/faults",
                                                 json={"kind": "http_error", "status": 200}).json()["error"]


def test_path_filter(demo) -> None:
    _sim, fields = demo()
    with _client(fields) as c:
        c.post(fields["control"] + "/faults", json={"kind": "http_error", "status": 500, "count": 0, "path": "/big"})
        assert c.get(fields["address"] + "/hello").status_code == 200
        assert c.get(fields["address"] + "/big").status_code == 500


def test_drop_body_after_n_bytes(demo) -> None:
    _sim, fields = demo()
    with _client(fields) as c:
        c.post(fields["control"] + "/faults", json={"kind": "drop_body", "after": 1000})
        with pytest.raises(httpx.RemoteProtocolError, match="received 1000 bytes"):
            c.get(fields["address"] + "/big")
        assert len(c.get(fields["address"] + "/big").content) == 200_000  # one shot


def test_slow_body(demo) -> None:
    _sim, fields = demo()
    with _client(fields) as c:
        c.post(fields["control"] + "/faults", json={"kind": "slow_body", "rate": 400_000})
        start = time.monotonic()
        assert len(c.get(fields["address"] + "/big").content) == 200_000
        assert time.monotonic() - start >= 0.45


def test_busy_answers_with_retry_after(demo) -> None:
    _sim, fields = demo()
    with _client(fields) as c:
        c.post(fields["control"] + "/faults", json={"kind": "busy", "status": 409, "seconds": 0.3, "retry_after": 2})
        r = c.get(fields["address"] + "/hello")
        assert r.status_code == 409 and r.headers["retry-after"] == "2"
        time.sleep(0.35)
        assert c.get(fields["address"] + "/hello").status_code == 200


def test_delay_before_headers(demo) -> None:
    _sim, fields = demo()
    with _client(fields) as c:
        c.post(fields["control"] + "/faults", json={"kind": "delay", "seconds": 0.3})
        with pytest.raises(httpx.ReadTimeout):
            c.get(fields["address"] + "/hello", timeout=0.1)


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_refuse_window_comes_back_on_the_same_port(demo) -> None:
    sim, fields = demo()
    port = sim.port
    with _client(fields) as c:
        c.post(fields["control"] + "/faults", json={"kind": "refuse", "seconds": 0.4})
    assert _wait(lambda: _refused(port)), "the port never closed"
    assert _wait(lambda: not _refused(port)), "the port never came back"
    assert sim.port == port and sim.boots == 1  # a refuse window is not a reboot
    with _client(fields) as c:
        assert c.get(fields["address"] + "/hello").status_code == 200


def test_reset_reboots_and_drops_in_flight(demo) -> None:
    sim, fields = demo()
    port = sim.port
    with _client(fields) as c:
        c.post(fields["control"] + "/faults", json={"kind": "slow_body", "rate": 50_000})
        errors: list[BaseException] = []

        def slow_read() -> None:
            try:
                httpx.get(fields["address"] + "/big", timeout=10, trust_env=False)
            except httpx.HTTPError as exc:
                errors.append(exc)

        reader = threading.Thread(target=slow_read)
        reader.start()
        time.sleep(0.3)
        assert c.post(fields["control"] + "/reset").json()["rebooting"] is True
        reader.join(10)
    assert errors and isinstance(errors[0], httpx.RemoteProtocolError | httpx.ReadError)
    assert _wait(lambda: sim.boots == 2)
    assert sim.port == port
    with _client(fields) as c:
        assert c.get(fields["address"] + "/hello").json()["boots"] == 2


def test_unavailable_gate_is_counted(demo) -> None:
    from simulators.core.http import unavailable_html

    sim, fields = demo()
    sim.unavailable = unavailable_html(502)
    with _client(fields) as c:
        r = c.get(fields["address"] + "/hello")
        assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
        assert c.get(fields["control"] + "/state").status_code == 200  # control plane not gated
    sim.unavailable = None
    assert sim.unavailable_served == {502: 1}


def test_tls_with_a_pinned_certificate(demo, tmp_path: Path) -> None:
    sim, fields = demo(tls=True)
    assert fields["address"].startswith("https://") and Path(fields["cert"]).is_file()
    key = Path(fields["cert"]).with_name("key.pem")
    assert key.stat().st_mode & 0o077 == 0
    with _client(fields) as c:
        assert c.get(fields["address"] + "/hello").status_code == 200
    with httpx.Client(trust_env=False) as unpinned, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        unpinned.get(fields["address"] + "/hello")
    # the certificate survives a restart on the same state directory (a pinned client keeps working)
    cert = Path(fields["cert"]).read_bytes()
    sim.stop()
    again = Demo(SimOptions(target="demo", state=sim.state_dir, tls=True))
    try:
        again.start()
        assert again.cert_path.read_bytes() == cert
    finally:
        again.stop()


def test_credentials(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    creds = load_credentials(SimOptions(target="x", state=tmp_path, username="u", password_file=pw), "a", "b")
    assert creds.username == "u" and creds.matches("u", "s3cret") and not creds.matches("u", "s3cret\n")
    assert "s3cret" not in repr(creds)
    assert load_credentials(SimOptions(target="x", state=tmp_path), "a", "b").matches("a", "b")
    with pytest.raises(BadInput, match="go together"):
        load_credentials(SimOptions(target="x", state=tmp_path, username="u"), "a", "b")
    with pytest.raises(BadInput, match="cannot read"):
        load_credentials(SimOptions(target="x", state=tmp_path, username="u", password_file=tmp_path / "no"), "a", "b")


def test_serve_json_line_has_control_on_the_same_server(tmp_path: Path, monkeypatch) -> None:
    """Through the runner: one JSON line, control under /_sim of the unit's own address, no second server."""
    from simulators.core import runner

    monkeypatch.setattr(runner, "create_simulator", lambda options: Demo(options))
    out = io.StringIO()
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(target=runner.serve, args=(SimOptions(target="demo", state=tmp_path / "s"),),
                              kwargs={"stdout": out, "stop_event": stop, "on_ready": lambda info: ready.set()})
    thread.start()
    try:
        assert ready.wait(10)
        info = json.loads(out.getvalue().splitlines()[0])
        assert info["control"] == info["address"] + "/_sim" and info["user"] == "admin"
        assert httpx.get(info["control"] + "/state", trust_env=False).json() == {"boots": 1}
    finally:
        stop.set()
        thread.join(10)
