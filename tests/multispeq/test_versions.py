"""Compatibility rules as data (DESIGN rule 7, multispeq.md §8.5)."""

from __future__ import annotations

import pytest

from harness.errors import BadInput
from harness.targets.multispeq.schema import FAMILIES, family_for_firmware
from harness.targets.multispeq.versions import (
    DECLARED_VERSIONS,
    MIGRATE,
    REFUSE,
    RESTORE,
    RULES,
    rule,
    rule_for_families,
)


def test_every_pair_has_a_rule():
    assert set(RULES) == {(a, b) for a in FAMILIES for b in FAMILIES}
    for (src, dst), r in RULES.items():
        assert r.kind in (RESTORE, MIGRATE, REFUSE) and r.reason and "\n" not in r.reason
        if src == dst and src != "F":
            assert r.kind == RESTORE and not r.dropped and not r.added


def test_declared_versions_cover_each_profile():
    assert [(v.firmware, v.family) for v in DECLARED_VERSIONS] == [
        ("1.05", "A"), ("1.06", "C50"), ("1.10", "C75"), ("1.11", "D"), ("1.15", "E"), ("1.17", "E")]
    for v in DECLARED_VERSIONS:
        assert family_for_firmware(v.firmware, v.profile).name == v.family
    for a in DECLARED_VERSIONS:
        for b in DECLARED_VERSIONS:
            assert rule(a.firmware, b.firmware).kind != REFUSE


def test_f_is_refused_both_ways():
    assert rule("1.19", "1.17").kind == REFUSE and "not supported" in rule("1.19", "1.17").reason
    assert rule("1.17", "1.20").kind == REFUSE and "read-back" in rule("1.17", "1.20").reason
    assert rule("1.19", "1.19").kind == REFUSE


def test_same_family_different_id_print_is_a_plain_restore():
    assert rule("1.15", "1.17").kind == RESTORE
    assert rule("1.13", "1.18").kind == RESTORE


def test_b_and_c50_print_the_same_fields():
    assert rule_for_families("B", "C50").kind == RESTORE
    assert rule("1.05", "1.06", src_profile="B").kind == RESTORE


def test_a_to_e_migration_lists_fields_by_name():
    r = rule("1.05", "1.17")
    assert r.kind == MIGRATE and r.needs_permission
    assert "thickness_d" in r.dropped and "device_manufacture" in r.dropped
    assert {"thickness_c", "thickness_min", "thickness_max", "par_to_dac_slope3", "par_to_dac_slope4"} <= set(r.added)
    assert "userdef50" in r.added and "userdef134" in r.added and "userdef49" not in r.added
    assert "thickness_d" not in r.added and "thickness_c" not in r.dropped  # never mapped onto each other
    assert "thickness_d" in r.reason and "userdef50..userdef134" in r.reason


def test_downgrade_e_to_c75_drops_fields():
    r = rule("1.17", "1.10")
    assert r.kind == MIGRATE
    assert {"par_to_dac_slope3", "par_to_dac_slope4", "userdef75", "userdef134"} <= set(r.dropped)
    assert r.added == ()


def test_d_to_e_only_adds_userdefs():
    r = rule("1.11", "1.17")
    assert r.kind == MIGRATE and r.dropped == ()
    assert r.added == tuple(f"userdef{i}" for i in range(115, 135))


def test_unknown_firmware_is_bad_input():
    with pytest.raises(BadInput):
        rule("0.50", "1.17")
