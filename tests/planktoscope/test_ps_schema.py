"""Schemas: every real settings file is recognised as its release; presets, validation, writer styles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import BadInput
from harness.targets.planktoscope import presets, schema
from harness.targets.planktoscope.formats import (
    JS,
    NODE_RED,
    PRESET,
    PYTHON,
    detect_style,
    dump,
    parse_object,
)
from harness.targets.planktoscope.releases import (
    RELEASES,
    V2_3,
    V2023,
    V2024,
    V2025,
    V2026,
    canonical_release,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "planktoscope"
ALL_FILES = sorted(FIXTURES.glob("*/*.json"))
# Files whose bytes are identical upstream in two releases can only be narrowed to both.
EXACT = {
    ("v2.3", "hardware.json"): [V2_3], ("v2.3", "config.json"): [V2_3],
    ("v2023.9.0", "v2.5.hardware.json"): [V2023], ("v2023.9.0", "v2.6.hardware.json"): [V2023],
    ("v2023.9.0", "pscopehat-latest.hardware.json"): [V2023],
    ("v2024.0.0", "v2.5.hardware.json"): [V2024], ("v2024.0.0", "v2.6.hardware.json"): [V2024],
    ("v2024.0.0", "planktoscopehat-latest.hardware.json"): [V2024],
    ("v2025.0.0", "v2.6.hardware.json"): [V2025], ("v2025.0.0", "adafruithat-latest.hardware.json"): [V2025],
    ("v2025.0.0", "planktoscopehat-latest.hardware.json"): [V2025],
}


def _kind(path: Path) -> str:
    return schema.HARDWARE if "hardware" in path.name else schema.CONFIG


def test_the_fixture_copy_is_complete():
    assert len(ALL_FILES) == 17
    sizes = {("v2.3", "hardware.json"): 306, ("v2.3", "config.json"): 525,
             ("v2023.9.0", "v2.6.hardware.json"): 336, ("v2025.0.0", "v2.6.hardware.json"): 277}
    for (release, name), size in sizes.items():
        assert (FIXTURES / release / name).stat().st_size == size


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_real_file_is_recognised_as_its_release(path: Path):
    rec = schema.recognise(_kind(path), path.read_bytes())
    release = path.parent.name
    assert release in rec.candidates, (rec.candidates, rec.lineage)
    assert rec.is_default and rec.preset is not None
    assert any(p.startswith(release + "/") for p in rec.presets), rec.presets
    assert not [f for f in rec.findings if f.level == "error"], rec.findings
    if (release, path.name) in EXACT:
        assert rec.candidates == EXACT[(release, path.name)]


def test_the_shared_data_folder_matches_the_fixture_copy_when_present():
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "planktoscope"  # beside the repo
    if not shared.exists():
        pytest.skip("the shared research folder is not on this machine (CI)")
    for path in shared.glob("*/*.json"):
        assert (FIXTURES / path.parent.name / path.name).read_bytes() == path.read_bytes()


def test_v2026_presets_follow_the_recipe():
    v26 = parse_object(presets.hardware_presets(V2026)["v2.6"], "v2.6")
    assert len(v26) == 13 and list(v26)[-2:] == ["hat_type", "hat_version"] and v26["hat_version"] == 1.2
    v30 = parse_object(presets.hardware_presets(V2026)["v3.0"], "v3.0")
    assert (v30["focus_steps_per_mm"], v30["pump_steps_per_ml"], v30["pump_max_speed"], v30["hat_version"]) == \
        (40, 3220, 20, 3.3)
    cfg = presets.config_presets(V2026)["v2.6"]
    assert cfg.endswith(b"}\n") and b'\n  "user_setup": false\n}' in cfg
    assert schema.recognise(schema.HARDWARE, presets.hardware_presets(V2026)["v3.0"]).candidates == [V2026]


def test_v2025_derived_presets_drop_the_stepper_lines():
    data = presets.hardware_presets(V2025)["v2.3"]
    assert b"stepper" not in data and data.endswith(b"}\n")
    assert presets.hardware_presets(V2025)["fairscope-latest"] == presets.hardware_presets(V2025)[
        "planktoscopehat-latest"]
    assert presets.config_presets(V2024) == presets.config_presets(V2025)


def test_every_preset_of_every_release_is_recognised():
    for release in RELEASES:
        for kind in schema.KINDS:
            for name, data in schema.library(kind, release).items():
                rec = schema.recognise(kind, data)
                assert release in rec.candidates, (release, kind, name, rec.candidates)


@pytest.mark.parametrize(("doc", "expected"), [
    ({"microsteps": 256, "stepper_type": "x"}, [V2023, V2024]),
    ({"microsteps": 256, "wb_red_gain": 2}, [V2_3]),
    ({"microsteps": 256, "hat_version": 1.2}, [V2026]),
    ({"microsteps": 256}, [V2025]),
])
def test_key_rules_for_modified_hardware_files(doc, expected):
    rec = schema.recognise(schema.HARDWARE, json.dumps(doc).encode())
    assert rec.candidates == expected and not rec.is_default


def test_config_rules():
    assert schema.recognise(schema.CONFIG, b'{"generic_path": "/x", "sample_id": 1}').candidates == []
    assert schema.recognise(schema.CONFIG, b'{"user_setup": true}').candidates == [V2026]


def test_validation_findings():
    hw = parse_object(presets.hardware_presets(V2024)["v2.6"], "hw")
    assert schema.validate(schema.HARDWARE, hw, V2024) == []
    partial = {k: v for k, v in hw.items() if k != "blue_gain"}
    assert any(f.level == "error" and "both" in f.message for f in schema.validate(schema.HARDWARE, partial, V2024))
    assert schema.white_balance({**hw, "red_gain": 40}, V2024)[0] == "out_of_range"
    assert schema.white_balance({**hw, "red_gain": 8}, V2_3)[0] == "out_of_range"
    assert schema.white_balance({**hw, "red_gain": 8}, V2024)[0] == "ok"
    assert schema.white_balance({**hw, "red_gain": "8"}, V2024)[0] == "not_numeric"
    unknown = schema.validate(schema.HARDWARE, {**hw, "mystery": 1}, V2024)
    assert [f.level for f in unknown] == ["info"]


def test_release_changes():
    change = schema.release_changes(schema.HARDWARE, V2024, V2025)
    assert "stepper_type" in change.removed and change.notes
    assert schema.release_changes(schema.HARDWARE, V2025, V2026).added == ("hat_type", "hat_version")
    assert schema.release_changes(schema.CONFIG, V2025, V2026).added == ("user_setup",)


def test_bad_json_is_bad_input():
    for data in (b"", b"[1]", b'{"a": 1, "a": 2}', b"\xff", b'{"a": NaN}'):
        with pytest.raises(BadInput):
            schema.recognise(schema.HARDWARE, data)


def test_canonical_release_names():
    assert canonical_release("2024.0.0") == V2024
    assert canonical_release("v2026.0.0-beta.0") == V2026
    assert canonical_release("v2024.0.0-3-gabcdef0") == V2024
    with pytest.raises(BadInput):
        canonical_release("v1999.0.0")


def test_writer_styles():
    doc = {"a": 1.0, "b": 0.75, "c": [1.0]}
    assert dump(doc, NODE_RED) == b'{\n    "a": 1,\n    "b": 0.75,\n    "c": [\n        1\n    ]\n}\n'
    assert dump(doc, PYTHON).endswith(b"}") and b"1.0" in dump(doc, PYTHON)
    assert dump(doc, JS) == b'{\n  "a": 1,\n  "b": 0.75,\n  "c": [\n    1\n  ]\n}'
    assert detect_style(presets.hardware_presets(V2024)["v2.6"]) == PRESET


_values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.booleans(), st.none(), st.text(max_size=10))


@given(st.dictionaries(st.text(min_size=1, max_size=12), _values, max_size=12))
def test_every_style_round_trips_semantically(doc):
    for style in (PRESET, NODE_RED, PYTHON, JS):
        again = parse_object(dump(doc, style), "doc")
        assert schema.semantic_equal(again, doc)
        assert detect_style(dump(doc, style)).indent == style.indent or len(doc) == 0
