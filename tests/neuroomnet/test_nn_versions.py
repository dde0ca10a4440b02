"""The §5 compatibility table, cell by cell, and the refusal messages."""

from __future__ import annotations

import pytest

from harness.compat import row_pairs
from harness.targets.base import CompatVersion
from harness.targets.neuroomnet import TARGET
from harness.targets.neuroomnet.versions import (
    AS_IS,
    FORMAT_UNSUPPORTED,
    MIGRATE,
    RELEASES,
    TOO_NEW,
    TOO_OLD,
    apply_verdict,
    can_update,
    import_verdict,
    release,
    rule,
    update_refusal,
)

pytestmark = pytest.mark.target_neuroomnet

# (restore point from, applied on) -> (verdict, path or refusal code): §5 "Compatibility rule".
TABLE = {
    ("3.9.4", "3.9.4"): (AS_IS, (17,)),
    ("4.0.2", "3.9.4"): ("refuse", FORMAT_UNSUPPORTED),
    ("4.2.0", "3.9.4"): ("refuse", FORMAT_UNSUPPORTED),
    ("5.0.0", "3.9.4"): ("refuse", FORMAT_UNSUPPORTED),
    ("3.9.4", "4.0.2"): (MIGRATE, (17, 18)),
    ("4.0.2", "4.0.2"): (AS_IS, (18,)),
    ("4.2.0", "4.0.2"): ("refuse", TOO_NEW),
    ("5.0.0", "4.0.2"): ("refuse", TOO_NEW),
    ("3.9.4", "4.2.0"): (MIGRATE, (17, 18, 20)),
    ("4.0.2", "4.2.0"): (MIGRATE, (18, 20)),
    ("4.2.0", "4.2.0"): (AS_IS, (20,)),
    ("5.0.0", "4.2.0"): ("refuse", TOO_NEW),
    ("3.9.4", "5.0.0"): ("refuse", TOO_OLD),
    ("4.0.2", "5.0.0"): (MIGRATE, (18, 20, 22)),
    ("4.2.0", "5.0.0"): (MIGRATE, (20, 22)),
    ("5.0.0", "5.0.0"): (AS_IS, (22,)),
}


@pytest.mark.parametrize(("src", "dst"), list(TABLE))
def test_every_cell_of_the_table(src, dst):
    verdict, what = TABLE[(src, dst)]
    got = rule(src, dst)
    assert got.verdict == verdict
    if verdict == "refuse":
        assert got.code == what and got.message and "\n" not in got.message
    else:
        assert got.path == what
    declared = TARGET.compat_rule(CompatVersion(src), CompatVersion(dst))
    assert declared.kind == {"as_is": "restore", "migrate": "migrate", "refuse": "refuse"}[verdict]


def test_import_allowed_but_apply_refused_for_newer_schemas():
    server = release("4.2.0")
    assert import_verdict("rp-x", 2, 22, server).verdict == AS_IS  # carried to a newer server later
    refused = apply_verdict("rp-20260109-101502-3f9a", 22, server, version="5.0.0")
    assert refused.code == TOO_NEW
    assert refused.message == (
        "Restore point rp-20260109-101502-3f9a was created with NeuroomNet 5.0.0 (configuration schema 22). This "
        "server runs 4.2.0 (schema 20) and cannot apply newer configurations. Update this server to 5.0 or later "
        "first. Nothing was changed.")


def test_spec_messages_for_old_formats():
    assert import_verdict("rp-x", 2, 18, release("3.9.4")).message == (
        "Restore point format 2 requires NeuroomNet 4.0 or later. This server runs 3.9.4. Nothing was imported.")
    assert import_verdict("rp-20250101-010101-abcd", 1, 17, release("5.0.0")).message == (
        "Restore point rp-20250101-010101-abcd is from NeuroomNet 3.9.4 (schema 17). NeuroomNet 5.0.0 can migrate "
        "configurations from schema 18 on. Apply it on a 4.x server, create a new restore point there, and import "
        "that one. Nothing was imported.")


def test_updates_go_forward_from_a_schema_the_new_release_can_migrate():
    updatable = {(s, d) for s in RELEASES for d in RELEASES if can_update(s, d)}
    assert updatable == {("3.9.4", "3.9.4"), ("3.9.4", "4.0.2"), ("3.9.4", "4.2.0"), ("4.0.2", "4.0.2"),
                         ("4.0.2", "4.2.0"), ("4.0.2", "5.0.0"), ("4.2.0", "4.2.0"), ("4.2.0", "5.0.0"),
                         ("5.0.0", "5.0.0")}
    assert update_refusal(release("4.2.0"), 20, release("4.0.2")) == (
        "NeuroomNet cannot be downgraded from 4.2.0 to 4.0.2 (its database is schema 20)")
    assert update_refusal(release("3.9.4"), 17, release("5.0.0")) == (
        "NeuroomNet 5.0.0 can migrate configurations from schema 18 on; this server runs 3.9.4 (schema 17). "
        "Update it to 4.0 first.")


def test_the_matrix_runs_the_update_path_on_forward_pairs_only():
    versions = TARGET.compat_versions()
    by_name = {v.name: v for v in versions}
    row = [(d.name, path) for d, path in row_pairs(TARGET, by_name["4.0.2"], versions)]
    assert row == [("3.9.4", "fresh"), ("4.0.2", "fresh"), ("4.0.2", "update"), ("4.2.0", "fresh"),
                   ("4.2.0", "update"), ("5.0.0", "fresh"), ("5.0.0", "update")]
    assert ("5.0.0", "update") not in [(d.name, p) for d, p in row_pairs(TARGET, by_name["3.9.4"], versions)]
    assert sum(p == "update" for s in versions for _, p in row_pairs(TARGET, s, versions)) == 9
