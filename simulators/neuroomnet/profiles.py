"""Seed configurations of a fresh simulated NeuroomNet server (§2.9 profiles), always written at schema 17 and
migrated up to the server's schema, so every fresh server has been through the same migrations a customer's
has.

- ``tiny``: 20 components, no assets (the default);
- ``small``: 500 components, 5 MiB of assets;
- ``bench``: 20,000 components, 1 GiB of assets (streaming and chunked BLOBs).

Everything is derived from a seed (the server id), so two servers started alike hold the same configuration.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BadInput


@dataclass(frozen=True)
class Profile:
    name: str
    components: int
    asset_files: int
    asset_bytes: int


PROFILES = {
    "tiny": Profile("tiny", 20, 0, 0),
    "small": Profile("small", 500, 5, 5 << 20),
    "bench": Profile("bench", 20_000, 16, 1 << 30),
}
DEFAULT_PROFILE = "tiny"

MODULES = ("Setup", "Schedules", "Shows", "Users", "System")
KINDS = (("projector", "pjlink"), ("pc", "wol"), ("media_player", "tcp"), ("light", "artnet"),
         ("audio", "osc"), ("sensor", "tcp"))
PBKDF2_ITERATIONS = 1000  # a simulator: cheap hashing; the format is what matters


def profile(name: str | None) -> Profile:
    try:
        return PROFILES[name or DEFAULT_PROFILE]
    except KeyError:
        raise BadInput(f"unknown NeuroomNet profile {name!r} (known: {', '.join(PROFILES)})") from None


def hash_password(password: str, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), PBKDF2_ITERATIONS).hex()
    return f"pbkdf2-sha256${PBKDF2_ITERATIONS}${salt}${digest}"


def check_password(password: str, stored: str) -> bool:
    import hmac

    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2-sha256":
        return False
    mine = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iterations)).hex()
    return hmac.compare_digest(mine, digest)


def seed_schema17(conn: sqlite3.Connection, prof: Profile, seed: str, now: str, *, admin: str,
                  admin_password: str) -> None:
    """Rows of a schema-17 configuration (the tables exist already)."""
    rng = random.Random(seed)
    for name in MODULES:
        settings = {"poll_interval_s": rng.choice((5, 10, 30)), "log_level": "info"}
        conn.execute("INSERT INTO module VALUES (?, 1, ?, ?)", (name, json.dumps(settings), now))
    for i in range(1, prof.components + 1):
        kind, protocol = KINDS[i % len(KINDS)]
        props = {"input": f"hdmi{i % 3 + 1}", "port": str(4352 if protocol == "pjlink" else 7000 + i % 100)}
        conn.execute("INSERT INTO component VALUES (?, 'Setup', ?, ?, ?, ?, 1, ?, ?)",
                     (i, f"{kind.replace('_', ' ').title()} {i:03d}", kind,
                      f"10.0.{i // 250}.{i % 250 + 1}", protocol, json.dumps(props, sort_keys=True), now))
    for i, (name, cron) in enumerate((("Opening", "0 9 * * 1-6"), ("Closing", "0 18 * * 1-6"),
                                      ("Sunday open", "0 10 * * 0"), ("Sunday close", "0 17 * * 0"),
                                      ("Night check", "30 2 * * *"), ("Lamp saver", "0 13 * * 1")), start=1):
        action = {"command": "power_on" if "open" in name.lower() else "power_off", "group": "All"}
        conn.execute("INSERT INTO schedule VALUES (?, ?, ?, ?, 1)", (i, name, cron, json.dumps(action)))
    for i in range(1, 5):
        cues = [{"at_s": round(k * 2.5, 1), "component": (k % max(prof.components, 1)) + 1,
                 "command": rng.choice(("on", "off", "play", "stop"))} for k in range(3 + i)]
        conn.execute("INSERT INTO show VALUES (?, ?, ?)", (i, f"Show {i}", json.dumps(cues)))
    users = [(admin, "administrator", admin_password), ("operator", "operator", secrets.token_hex(8)),
             ("guide", "operator", secrets.token_hex(8)), ("viewer", "viewer", secrets.token_hex(8)),
             ("service", "administrator", secrets.token_hex(8))]
    seen = set()
    for uid, (name, role, password) in enumerate(users, start=1):
        if name in seen:
            continue
        seen.add(name)
        conn.execute("INSERT INTO app_user VALUES (?, ?, ?, ?, 0)", (uid, name, role, hash_password(password)))
    settings = {"language": "en", "ntp_server": "pool.ntp.org", "mail_host": "mail.museum.local",
                "mail_from": "neuroomnet@museum.local", "mail_port": "25", "ui_theme": "light",
                "session_timeout_min": "480", "backup_reminder_days": "7", "site_name": "Museum",
                "power_on_delay_s": "2", "log_retention_days": "30"}
    conn.executemany("INSERT INTO system_setting VALUES (?, ?)", sorted(settings.items()))


def write_assets(root: Path, prof: Profile, seed: str) -> None:
    """Floor plans and icons: deterministic bytes, ``assets/<module>/<file>``."""
    if not prof.asset_files:
        return
    per_file = prof.asset_bytes // prof.asset_files
    block = hashlib.sha256(seed.encode()).digest() * 2048  # 64 KiB of deterministic bytes
    for i in range(prof.asset_files):
        module = "setup" if i % 2 == 0 else "shows"
        path = root / module / (f"floorplan-level{i + 1}.png" if module == "setup" else f"icon-{i + 1}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            left = per_file
            while left > 0:
                piece = block[: min(len(block), left)]
                f.write(piece)
                left -= len(piece)
