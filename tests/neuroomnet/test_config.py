"""Configuration tables: migrations keep the schema-independent summary; digests are row-exact."""

from __future__ import annotations

import sqlite3

import pytest

from harness.targets.neuroomnet import config as cfg
from harness.targets.neuroomnet.config import table_columns
from simulators.neuroomnet import profiles
from simulators.neuroomnet.migrate import migrate

pytestmark = pytest.mark.target_neuroomnet


def seeded(schema: int = 17) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    cfg.create_config_tables(conn, 17)
    profiles.seed_schema17(conn, profiles.profile("tiny"), "seed", "2026-01-09T10:00:00+01:00", admin="admin",
                           admin_password="pw")
    conn.execute("PRAGMA user_version = 17")
    migrate(conn, 17, schema, time_zone="Europe/Berlin")
    return conn


def columns(conn: sqlite3.Connection) -> dict[str, str]:
    return {t: ", ".join(r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')) for t in cfg.present_tables(conn)}


@pytest.mark.parametrize("target", [18, 19, 20, 21, 22])
def test_migration_preserves_the_summary_and_matches_a_fresh_layout(target):
    old = seeded(17)
    new = seeded(target)
    assert cfg.summary(new) == cfg.summary(old)
    assert cfg.summary_digest(new) == cfg.summary_digest(old)
    assert cfg.config_digest(new) != cfg.config_digest(old)  # schema-specific
    fresh = sqlite3.connect(":memory:")
    cfg.create_config_tables(fresh, target)
    assert columns(new) == columns(fresh)
    assert set(cfg.present_tables(new)) == set(table_columns(target))
    assert new.execute("PRAGMA user_version").fetchone()[0] == target


def test_migration_log_names_each_released_step():
    lines: list[str] = []
    migrate(seeded(17), 17, 22, time_zone="UTC", log=lines.append)
    assert [line.split(":")[0] for line in lines] == ["Migrating schema 17 -> 18", "Migrating schema 18 -> 20",
                                                      "Migrating schema 20 -> 22"]
    assert "default component group" in lines[0] and "time zones (UTC)" in lines[1]


def test_digest_sees_every_cell_and_the_field_view_hides_hashes():
    conn = seeded(20)
    before = cfg.config_digest(conn)
    conn.execute("UPDATE component SET enabled = 0 WHERE id = 7")
    assert cfg.config_digest(conn) != before
    view = cfg.field_view(conn)
    assert view["component.7.enabled"] == 0
    assert view["system_setting.language.value"] == "en"
    assert view["component_property.1/input.value"] == "hdmi2"
    assert all(str(v).startswith("redacted:") for k, v in view.items() if k.endswith("password_hash"))
    assert isinstance(view["show.1.cues"], list)
