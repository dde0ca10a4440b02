"""The compatibility rule of spec §5, cell by cell, and the migrations by field name."""

from __future__ import annotations

import pytest

from harness.targets.mobiusflow.versions import TEMPLATES, migrate, verdict, version_key
from simulators.mobiusflow.profiles import seed_content

FORMATS = {"1.16.4": "1.0", "1.19.1": "1.1", "3004": "3.0", "3021": "3.1"}
# rows: where restored; columns: where the backup was made (spec §5 table)
TABLE = {
    "1.16.4": {"1.16.4": "as is", "1.19.1": "backup_too_new", "3004": "backup_generation_unsupported",
               "3021": "backup_generation_unsupported"},
    "1.19.1": {"1.16.4": "migrate", "1.19.1": "as is", "3004": "backup_generation_unsupported",
               "3021": "backup_generation_unsupported"},
    "3004": {"1.16.4": "migrate", "1.19.1": "migrate", "3004": "as is", "3021": "backup_too_new"},
    "3021": {"1.16.4": "migrate", "1.19.1": "migrate", "3004": "migrate", "3021": "as is"},
}


def _verdict(source: str, node: str, *, hub: str = "00A1F3", pids: set[str] | None = None):
    return verdict(backup_format=FORMATS[source], backup_version=source, backup_hub=hub, backup_kind="full",
                   pids=pids if pids is not None else {"0028"}, node_version=node, node_hub="00A1F3")


@pytest.mark.parametrize("node", TABLE)
@pytest.mark.parametrize("source", FORMATS)
def test_table(source: str, node: str) -> None:
    want = TABLE[node][source]
    got = _verdict(source, node)
    assert (got.kind if got.restorable else got.code) == want
    if not got.restorable:
        assert got.message.endswith("Nothing was changed.")


def test_messages_name_what_to_do() -> None:
    too_new = _verdict("3021", "3004")
    assert "Update this node to 3015 or later" in too_new.message
    assert "restores backup formats 1.0, 1.1 and 3.0" in too_new.message
    gen = _verdict("3021", "1.19.1")
    assert "cannot be restored on MobiusFlow 1.x nodes" in gen.message


def test_foreign_hub_turns_as_is_into_migrate() -> None:
    v = _verdict("3021", "3021", hub="000001")
    assert v.kind == "migrate" and any("000001 will be rewritten to 00A1F3" in c for c in v.changes)


def test_missing_templates_refuse_1x_to_3x() -> None:
    v = _verdict("1.19.1", "3021", pids={"0028", "00F1", "0102"})
    assert v.code == "profile_template_missing" and "00F1, 0102" in v.message
    assert _verdict("1.19.1", "1.19.1", pids={"00F1"}).kind == "as is"  # 1.x nodes need no templates


def test_version_order() -> None:
    assert version_key("1.9.0") < version_key("1.16.4") < version_key("1.19.1") < version_key("3004") \
        < version_key("3021")
    with pytest.raises(ValueError):
        version_key("2.x")


@pytest.mark.parametrize("source,node", [("1.16.4", "1.19.1"), ("1.19.1", "3021"), ("1.16.4", "3004"),
                                         ("3004", "3021")])
def test_migration_keeps_the_summary(source: str, node: str) -> None:
    content = seed_content(source, "00A1F3", "tiny")
    moved, log = migrate(content, backup_format=FORMATS[source], backup_kind="full", backup_hub="00A1F3",
                         node_version=node, node_hub="00A1F3")
    assert moved.summary_digest("00A1F3") == content.summary_digest("00A1F3")
    assert all("runAtStart" in s for s in moved.services)
    if node.startswith("3") and not source.startswith("3"):
        assert set(moved.profiles) == content.pids() <= set(TEMPLATES)
        assert moved.values == {} and any("templates" in line for line in log)
    if source == "3004":
        assert all(m.layout_version == 2 for m in moved.values.values())
