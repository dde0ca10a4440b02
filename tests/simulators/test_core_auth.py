"""Bearer sessions of the HTTP simulators: expiry, renewal, refresh rotation and reuse, reboots."""

from __future__ import annotations

import base64
import json

import pytest

from simulators.core.auth import Sessions, TokenRejected, bearer


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _reason(sessions: Sessions, token: str) -> str:
    with pytest.raises(TokenRejected) as err:
        sessions.check(token)
    return err.value.reason


def test_expiry_and_ttl_change() -> None:
    clock = Clock()
    sessions = Sessions(ttl=600, now=clock)
    s = sessions.issue("admin")
    assert s.expires_in() == 600 and sessions.check(s.token).user == "admin"
    clock.t += 600
    assert _reason(sessions, s.token) == "expired"
    sessions.ttl = 5
    short = sessions.issue("admin")
    clock.t += 5
    assert _reason(sessions, short.token) == "expired"


def test_jwt_shape_and_key_rotation_on_reboot() -> None:
    sessions = Sessions(jwt=True)
    s = sessions.issue("admin", role="admin")
    header, payload, _sig = s.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == "admin" and claims["exp"] - claims["iat"] == 600
    sessions.reboot()
    assert _reason(sessions, s.token) == "invalid"
    forged = f"{header}.{payload}.AAAA"
    assert _reason(sessions, forged) == "invalid"
    assert "token" not in repr(s) or s.token not in repr(s)


def test_renew_replaces_the_token_and_keeps_max_age() -> None:
    clock = Clock()
    sessions = Sessions(ttl=600, max_age=1000, now=clock)
    s = sessions.issue("admin")
    clock.t += 500
    s2 = sessions.renew(s.token)
    assert s2.token != s.token and _reason(sessions, s.token) == "invalid"
    clock.t += 500
    assert _reason(sessions, s2.token) == "max_age"


def test_idle_timeout_and_sliding() -> None:
    clock = Clock()
    idle = Sessions(ttl=600, idle=60, now=clock)
    s = idle.issue("u")
    clock.t += 61
    assert _reason(idle, s.token) == "idle"
    sliding = Sessions(ttl=100, sliding=True, now=clock)
    s = sliding.issue("u")
    for _ in range(5):
        clock.t += 90
        sliding.check(s.token)  # each use pushes the expiry
    clock.t += 101
    assert _reason(sliding, s.token) == "expired"


def test_refresh_rotation_and_reuse_revokes_the_family() -> None:
    sessions = Sessions()
    s = sessions.issue("admin")
    r1 = sessions.issue_refresh(s)
    s2, r2 = sessions.refresh(r1)
    assert r2 != r1 and sessions.check(s2.token)
    with pytest.raises(TokenRejected) as err:
        sessions.refresh(r1)  # spent
    assert err.value.reason == "reused"
    assert _reason(sessions, s2.token) == "invalid" and _reason(sessions, s.token) == "invalid"
    with pytest.raises(TokenRejected):
        sessions.refresh(r2)  # the family is gone


def test_logout_ends_the_family() -> None:
    sessions = Sessions()
    s = sessions.issue("admin")
    s2 = sessions.renew(s.token)
    assert sessions.revoke(s2.token) is True
    assert _reason(sessions, s2.token) == "invalid" and sessions.count() == 0


@pytest.mark.parametrize("header,token", [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None),
                                          ("Bearer ", None), (None, None)])
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert bearer(header) == token
