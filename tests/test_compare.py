"""Field-level comparison: flatten, ignore globs, NaN spellings, printed-decimals tolerance, one-sided fields."""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.compare import CompareRules, Difference, diff, flatten, values_equal


def test_flatten_names_every_leaf() -> None:
    value = {"a": {"b": [1, {"c": 2}], "e": (3, 4)}, "d": "x", "m": [[5], [6, 7]]}
    assert list(flatten(value)) == [
        ("a.b[0]", 1), ("a.b[1].c", 2), ("a.e[0]", 3), ("a.e[1]", 4), ("d", "x"),
        ("m[0][0]", 5), ("m[1][0]", 6), ("m[1][1]", 7),
    ]
    assert list(flatten(5)) == [("", 5)]
    assert list(flatten({"k": None})) == [("k", None)]


def test_identical_views_are_equal() -> None:
    view = {"device_id": "52:00:13:1f", "light_slope_all": "1.000000", "cal": [["0.5", "nan"]]}
    result = diff(view, dict(view))
    assert result.equal and result.compared == 4 and result.ignored == 0


def test_changed_and_one_sided_fields() -> None:
    a = {"same": 1, "changed": "1.5", "gone": 7, "nested": {"x": 1}}
    b = {"same": 1, "changed": "1.6", "new": 8, "nested": {"x": 1, "y": 2}}
    result = diff(a, b)
    assert not result.equal
    assert result.differences == [
        Difference("changed", "changed", "1.5", "1.6"),
        Difference("gone", "only_in_a", a=7),
        Difference("new", "only_in_b", b=8),
        Difference("nested.y", "only_in_b", b=2),
    ]
    assert [str(d) for d in result.differences] == [
        "changed: '1.5' -> '1.6'", "gone: only in A (7)", "new: only in B (8)", "nested.y: only in B (2)",
    ]
    assert result.compared == 6


def test_ignore_globs_apply_to_flattened_names() -> None:
    a = {"boot_count": 1, "status": {"uptime": 5, "temp": "20.0"}, "cal": [1, 2]}
    b = {"boot_count": 9, "status": {"uptime": 99, "temp": "20.0"}, "cal": [1, 3], "boot_reason": "wdt"}
    rules = CompareRules(ignore=("boot_*", "status.uptime", "cal[[]1]"))
    result = diff(a, b, rules)
    assert result.equal
    assert result.ignored == 4 and result.compared == 2  # a name on both sides counts once
    assert not diff(a, b, CompareRules(ignore=("boot_*",))).equal


@pytest.mark.parametrize("a, b", [("nan", "-nan"), ("-nan", "nan"), ("nan", float("nan")),
                                  (float("nan"), -float("nan")), ("NaN", "nan")])
def test_nan_equals_nan_whatever_the_spelling(a: object, b: object) -> None:
    assert values_equal(a, b, CompareRules())
    assert values_equal(a, b, CompareRules(float_decimals=6))
    assert not values_equal(a, b, CompareRules(nan_equal=False))


@pytest.mark.parametrize("other", ["0.000000", "1.0", "inf", 0.0])
def test_nan_differs_from_numbers(other: object) -> None:
    assert not values_equal("nan", other, CompareRules())
    assert not values_equal(other, "-nan", CompareRules(float_decimals=2))


def test_float_decimals_tolerance() -> None:
    two = CompareRules(float_decimals=2)
    assert values_equal("1.004", "1.000", two)
    assert values_equal("1.005", "1.000", two)  # exactly half a unit of the last printed decimal
    assert not values_equal("1.006", "1.000", two)
    assert values_equal(0.123456, "0.12", two)
    assert values_equal("-0.000000", "0.000000", CompareRules(float_decimals=6))
    assert values_equal("inf", "inf", two) and not values_equal("inf", "-inf", two)
    assert not values_equal("inf", "1e308", two)
    # float32 through a 6-decimal print: the device's own resolution
    six = CompareRules(float_decimals=6)
    assert values_equal("0.300000", 0.30000001192092896, six)
    assert not values_equal("0.300000", "0.300002", six)


def test_exact_mode_compares_printed_text_and_numbers() -> None:
    exact = CompareRules()
    assert not values_equal("1.0", "1.00", exact)  # printed text is compared as printed
    assert values_equal(1.0, 1, exact)
    assert values_equal("1.0", 1.0, exact)  # a string against a number compares the numbers
    assert not values_equal("abc", "abd", exact)
    assert values_equal("abc", "abc", exact)
    assert values_equal(None, None, exact) and not values_equal(None, 0, exact)


def test_diff_with_tolerance_end_to_end() -> None:
    a = {"light_slope_all": "1.234567", "boot": 3, "cal": ["nan", "0.5"]}
    b = {"light_slope_all": "1.2345674", "boot": 4, "cal": ["-nan", "0.5000001"]}
    assert diff(a, b, CompareRules(ignore=("boot",), float_decimals=6)).equal
    result = diff(a, b, CompareRules(ignore=("boot",)))
    assert [d.field for d in result.differences] == ["light_slope_all", "cal[1]"]


keys = st.text(string.ascii_letters + "_", min_size=1, max_size=6)
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
nested = st.recursive(
    leaves, lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
# Shared 2-core machines: generation speed is not what these tests are about.
relaxed = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def count_leaves(value: object, root: bool = True) -> int:
    """Leaves as flatten names them: scalars, and empty containers below the root."""
    if isinstance(value, dict | list | tuple) and not value:
        return 0 if root else 1
    if isinstance(value, dict):
        return sum(count_leaves(v, False) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(count_leaves(v, False) for v in value)
    return 1


@relaxed
@given(st.dictionaries(keys, nested, max_size=5))
def test_flatten_gives_one_unique_name_per_leaf(value: dict) -> None:
    names = [name for name, _ in flatten(value)]
    assert len(names) == count_leaves(value) == len(set(names))


@relaxed
@given(st.dictionaries(keys, nested, max_size=5))
def test_a_view_equals_itself(value: dict) -> None:
    result = diff(value, value)
    assert result.equal and result.compared == count_leaves(value)


@relaxed
@given(st.dictionaries(keys, nested, max_size=4), st.dictionaries(keys, nested, max_size=4))
def test_diff_is_symmetric(a: dict, b: dict) -> None:
    ab, ba = diff(a, b), diff(b, a)
    assert ab.equal == ba.equal
    assert {d.field for d in ab.differences} == {d.field for d in ba.differences}
    assert {d.field for d in ab.differences if d.kind == "only_in_a"} == {
        d.field for d in ba.differences if d.kind == "only_in_b"}


@given(st.floats(-1e6, 1e6), st.integers(0, 6))
def test_printed_value_is_equal_within_its_own_decimals(x: float, decimals: int) -> None:
    printed = f"{x:.{decimals}f}"
    assert values_equal(printed, x, CompareRules(float_decimals=decimals))
    assert not math.isnan(float(printed))


def test_an_empty_container_is_a_field_of_its_own():
    from harness.compare import diff

    result = diff({"a": []}, {})
    assert [d.kind for d in result.differences] == ["only_in_a"]
    assert not diff({"a": {}}, {"a": {}}).differences
