"""Bearer tokens for HTTP simulators: login sessions with expiry, renewal and refresh-token rotation.

One ``Sessions`` per simulated unit, kept in memory (a real server's sessions do not survive a restart
either: call ``reboot()`` at every boot, which also rotates the signing key, so a token from before the reboot
is *invalid*, not merely expired)::

    sessions = Sessions(ttl=600, jwt=True)          # MobiusFlow: JWTs that live 10 min
    s = sessions.issue("admin", role="admin")       # s.token, s.expires_in()
    refresh = sessions.issue_refresh(s)             # rotating refresh token (8 h)
    sessions.check(s.token)                         # -> Session, or raises TokenRejected(reason)
    s2 = sessions.renew(s.token)                    # a new token for the same session (validate-session)
    s3, refresh2 = sessions.refresh(refresh)        # rotation; reusing a spent refresh token revokes the family
    sessions.ttl = 5                                # tests: tokens issued from now on live 5 s

``TokenRejected.reason`` is one of ``expired``, ``invalid`` (unknown, forged, logged out, or from before a
reboot), ``idle``, ``max_age`` or ``reused``; each target maps it to its own error code and message.
Tokens never appear in logs: log ``Session.id`` (a short, non-secret handle) instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class TokenRejected(Exception):  # noqa: N818 - a verdict, carried to the target's 401 answer
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Session:
    token: str
    id: str  # non-secret handle, safe to log
    user: str
    role: str
    family: str  # a login and every token renewed/refreshed from it
    issued: float
    expires: float
    started: float
    last_used: float
    now: Callable[[], float] = field(repr=False, default=time.time)

    def expires_in(self) -> int:
        return max(0, int(round(self.expires - self.now())))

    def __repr__(self) -> str:  # never the token
        return f"Session(id={self.id!r}, user={self.user!r}, expires_in={self.expires_in()})"


@dataclass
class _Refresh:
    family: str
    user: str
    role: str
    expires: float
    spent: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Sessions:
    def __init__(self, *, ttl: float = 600.0, refresh_ttl: float = 8 * 3600.0, jwt: bool = False,
                 sliding: bool = False, max_age: float | None = None, idle: float | None = None,
                 issuer: str = "simulator", now: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl
        self.jwt = jwt
        self.sliding = sliding  # every accepted use pushes the expiry to now + ttl
        self.max_age = max_age  # a session family ends this long after the login, renewed or not
        self.idle = idle  # ... or after this long unused
        self.issuer = issuer
        self.now = now
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}
        self._refresh: dict[str, _Refresh] = {}

    # -- issuing ----------------------------------------------------------------------------------------

    def _new_token(self, user: str, role: str, family: str, issued: float, expires: float) -> str:
        if not self.jwt:
            return secrets.token_urlsafe(32)
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64(json.dumps({"sub": user, "role": role, "iss": self.issuer, "sid": family,
                                   "iat": int(issued), "exp": int(expires), "jti": secrets.token_hex(8)},
                                  separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"

    def _signed_by_us(self, token: str) -> bool:
        parts = token.split(".")
        if len(parts) != 3:
            return False
        expected = _b64(hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        return hmac.compare_digest(expected, parts[2])

    def _make(self, user: str, role: str, family: str, started: float) -> Session:
        now = self.now()
        expires = now + self.ttl
        token = self._new_token(user, role, family, now, expires)
        session = Session(token=token, id=hashlib.sha256(token.encode()).hexdigest()[:8], user=user, role=role,
                          family=family, issued=now, expires=expires, started=started, last_used=now,
                          now=self.now)
        self._sessions[token] = session
        return session

    def issue(self, user: str, role: str = "admin") -> Session:
        """A new login."""
        with self._lock:
            return self._make(user, role, secrets.token_hex(6), self.now())

    def issue_refresh(self, session: Session) -> str:
        with self._lock:
            token = secrets.token_urlsafe(32)
            self._refresh[token] = _Refresh(session.family, session.user, session.role,
                                            self.now() + self.refresh_ttl)
            return token

    # -- checking ---------------------------------------------------------------------------------------

    def check(self, token: str | None) -> Session:
        """The session of a bearer token, or TokenRejected. A token is checked when a request starts."""
        with self._lock:
            return self._check_locked(token)

    def _check_locked(self, token: str | None) -> Session:
        if not token:
            raise TokenRejected("invalid")
        if self.jwt and not self._signed_by_us(token):
            raise TokenRejected("invalid")
        session = self._sessions.get(token)
        if session is None:
            raise TokenRejected("invalid")
        now = self.now()
        if self.max_age is not None and now - session.started >= self.max_age:
            del self._sessions[token]
            raise TokenRejected("max_age")
        if self.idle is not None and now - session.last_used >= self.idle:
            del self._sessions[token]
            raise TokenRejected("idle")
        if now >= session.expires:
            del self._sessions[token]
            raise TokenRejected("expired")
        session.last_used = now
        if self.sliding:
            session.expires = now + self.ttl
        return session

    def renew(self, token: str | None) -> Session:
        """A fresh token for a valid session (the old one stops working); same family and start time."""
        with self._lock:
            old = self._check_locked(token)
            del self._sessions[old.token]
            return self._make(old.user, old.role, old.family, old.started)

    def refresh(self, refresh_token: str | None) -> tuple[Session, str]:
        """Rotate: a new access token and a new refresh token. A spent refresh token revokes its family."""
        with self._lock:
            entry = self._refresh.get(refresh_token or "")
            if entry is None:
                raise TokenRejected("invalid")
            if entry.spent:
                self._revoke_family(entry.family)
                raise TokenRejected("reused")
            if self.now() >= entry.expires:
                del self._refresh[refresh_token or ""]
                raise TokenRejected("expired")
            entry.spent = True
            session = self._make(entry.user, entry.role, entry.family, self.now())
            new_refresh = secrets.token_urlsafe(32)
            self._refresh[new_refresh] = _Refresh(entry.family, entry.user, entry.role,
                                                  self.now() + self.refresh_ttl)
            return session, new_refresh

    # -- ending -----------------------------------------------------------------------------------------

    def revoke(self, token: str | None) -> bool:
        """Logout: that token's whole family ends. True if it was a live token."""
        with self._lock:
            session = self._sessions.get(token or "")
            if session is None:
                return False
            self._revoke_family(session.family)
            return True

    def _revoke_family(self, family: str) -> None:
        for token in [t for t, s in self._sessions.items() if s.family == family]:
            del self._sessions[token]
        for token in [t for t, r in self._refresh.items() if r.family == family]:
            del self._refresh[token]

    def reboot(self) -> None:
        """Every session and refresh token ends, and the signing key changes (tokens from before: invalid)."""
        with self._lock:
            self._sessions.clear()
            self._refresh.clear()
            self._key = secrets.token_bytes(32)

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
