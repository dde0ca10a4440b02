"""The control plane: route logic, the stdlib loopback server, the starlette adapter, and SimControl."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.errors import BadInput, DeviceError, LinkError
from harness.simctl import SimControl
from simulators.core.control import ControlError, ControlPlane, ControlServer, starlette_routes
from simulators.core.options import SimOptions
from simulators.core.runner import Simulator


class RecordingSimulator(Simulator):
    """A unit with no link at all: the standard routes act on plain attributes."""

    target = "recording"

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        self.on = True
        self.firmware = "1.0"
        self.profile: str | None = None
        self.resets = 0
        self.fault_events = 0

    def start(self) -> dict[str, Any]:
        return {"address": "nowhere", "device_id": "01", "firmware": self.firmware}

    def stop(self) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"on": self.on, "firmware": self.firmware, "profile": self.profile, "resets": self.resets,
                "faults": self.faults.describe()}

    def power(self, on: bool) -> dict[str, Any]:
        self.on = on
        return self.state()

    def reset(self) -> dict[str, Any]:
        self.resets += 1
        return self.state()

    def set_firmware(self, firmware: str, profile: str | None = None) -> dict[str, Any]:
        if firmware == "9.99":
            raise BadInput("no firmware 9.99")
        self.firmware, self.profile = firmware, profile
        return self.state()

    def faults_changed(self) -> None:
        self.fault_events += 1


@pytest.fixture
def sim(tmp_path) -> RecordingSimulator:
    return RecordingSimulator(SimOptions(target="recording", state=tmp_path))


@pytest.fixture
def plane(sim: RecordingSimulator) -> ControlPlane:
    p = ControlPlane()
    sim.register_routes(p)
    return p


@pytest.fixture
def server(plane: ControlPlane) -> Iterator[ControlServer]:
    with ControlServer(plane) as s:
        yield s


# -- route logic, no HTTP ---------------------------------------------------------------------------


def test_standard_routes_are_registered(plane: ControlPlane) -> None:
    assert set(plane.routes()) >= {
        ("GET", "/_sim/state"), ("GET", "/_sim/faults"), ("POST", "/_sim/faults"), ("DELETE", "/_sim/faults"),
        ("POST", "/_sim/power"), ("POST", "/_sim/reset"), ("POST", "/_sim/firmware")}
    with pytest.raises(ValueError):
        plane.add("GET", "/state", lambda body: {})


def test_dispatch_statuses() -> None:
    p = ControlPlane()

    @p.route("POST", "/echo")
    def echo(body: dict[str, Any]) -> dict[str, Any]:
        return {"got": body}

    def fail(exc: Exception):
        def handler(body: dict[str, Any]) -> dict[str, Any]:
            raise exc
        return handler

    p.add("POST", "/refuse", fail(ControlError("not now", 409)))
    p.add("POST", "/bad", fail(ValueError("bad value")))
    p.add("POST", "/input", fail(BadInput("bad input")))
    p.add("POST", "/device", fail(DeviceError("unit busy")))
    p.add("POST", "/crash", fail(RuntimeError("boom")))
    assert p.dispatch("POST", "/_sim/echo", {"a": 1}) == (200, {"got": {"a": 1}})
    assert p.dispatch("POST", "/_sim/echo?x=1", None) == (200, {"got": {}})
    assert p.dispatch("GET", "/_sim/echo")[0] == 405
    assert p.dispatch("GET", "/_sim/nothing") == (404, {"error": "no control route /_sim/nothing"})
    assert p.dispatch("POST", "/_sim/echo", [1, 2])[0] == 400
    assert p.dispatch("POST", "/_sim/refuse") == (409, {"error": "not now"})
    assert p.dispatch("POST", "/_sim/bad") == (400, {"error": "bad value"})
    assert p.dispatch("POST", "/_sim/input") == (400, {"error": "bad input"})
    assert p.dispatch("POST", "/_sim/device") == (503, {"error": "unit busy"})
    assert p.dispatch("POST", "/_sim/crash") == (500, {"error": "RuntimeError: boom"})
    assert p.handle_raw("POST", "/_sim/echo", b"{not json")[0] == 400


# -- the stdlib server on loopback, through httpx and SimControl --------------------------------------


def test_server_serves_json_on_loopback(server: ControlServer) -> None:
    assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/_sim")
    with httpx.Client(trust_env=False) as client:
        r = client.get(server.url + "/state")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json()["on"] is True
        r = client.post(server.url + "/power", content=b"{oops")
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        r = client.post(server.url + "/power", json={"on": "yes"})
        assert r.status_code == 400 and r.json() == {"error": "field 'on' must be bool, got 'yes'"}
        r = client.get(server.url + "/nope")
        assert r.status_code == 404 and "error" in r.json()


def test_simcontrol_drives_the_standard_routes(server: ControlServer, sim: RecordingSimulator) -> None:
    with SimControl(server.url) as ctl:
        assert ctl.state()["firmware"] == "1.0"
        assert ctl.set_fault("corrupt", offset=40, count=1000) == {
            "corrupt": {"offset": 40, "count": 1000, "xor": 1}}
        ctl.set_fault("throttle", baud=9600)
        assert set(ctl.faults()) == {"corrupt", "throttle"}
        ctl.clear_faults("corrupt")
        assert set(ctl.faults()) == {"throttle"}
        ctl.clear_faults()
        assert ctl.faults() == {}
        assert sim.fault_events == 4
        assert ctl.power(False)["on"] is False
        assert ctl.power(True)["on"] is True
        assert ctl.reset()["resets"] == 1
        assert ctl.set_firmware("1.11")["firmware"] == "1.11"
        assert ctl.set_firmware("1.05", "B")["profile"] == "B"
        with pytest.raises(LinkError, match=r"HTTP 400: no firmware 9\.99"):
            ctl.set_firmware("9.99")
        with pytest.raises(LinkError, match="unknown fault kind 'meltdown'"):
            ctl.set_fault("meltdown")
        with pytest.raises(LinkError, match="HTTP 404"):
            ctl.request("GET", "/missing")


def test_simcontrol_errors_are_one_line_link_errors() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with SimControl(f"http://127.0.0.1:{port}/_sim") as ctl:
        with pytest.raises(LinkError, match="connection refused") as info:
            ctl.state()
    assert "\n" not in str(info.value)
    with pytest.raises(LinkError, match="no control plane"):
        SimControl("")


def test_slow_handlers_do_not_block_other_requests(plane: ControlPlane) -> None:
    release = threading.Event()
    plane.add("POST", "/slow", lambda body: {"released": release.wait(5)})
    with ControlServer(plane) as server:
        result: list[dict[str, Any]] = []
        t = threading.Thread(target=lambda: result.append(SimControl(server.url).request("POST", "/slow")))
        t.start()
        time.sleep(0.05)
        assert SimControl(server.url).state()["on"] is True  # answered while /slow waits
        release.set()
        t.join(5)
    assert result == [{"released": True}]


# -- the starlette adapter, served by uvicorn on loopback ---------------------------------------------


def test_starlette_routes_serve_the_same_plane(plane: ControlPlane) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("unit")), *starlette_routes(plane)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 5
        while not server.started and time.monotonic() < end:
            time.sleep(0.01)
        assert server.started
        with SimControl(f"http://127.0.0.1:{port}/_sim") as ctl:
            assert ctl.power(False)["on"] is False
            ctl.set_fault("busy")
            assert ctl.state()["faults"] == {"busy": {"seconds": None}}
            with pytest.raises(LinkError, match="HTTP 404"):
                ctl.request("GET", "/nothing")
        assert httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).text == "unit"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()
