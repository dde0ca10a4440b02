"""The compatibility table of bactobox.md §5, pair by pair, with the unit's own refusal messages."""

from __future__ import annotations

import pytest

from harness.errors import BadInput, Refused
from harness.targets.bactobox.versions import VERSIONS, restore_verdict, version_key

# GMI made on (its format) -> restored on: expected verdict or refusal code. Transcribed from §5.
TABLE = {
    ("1.8.4", "1.8.4"): "as_is", ("2.2.0", "1.8.4"): "gmi_format_too_new", ("2.6.3", "1.8.4"): "gmi_format_too_new",
    ("3.1.0", "1.8.4"): "gmi_format_too_new",
    ("1.8.4", "2.2.0"): "migrate", ("2.2.0", "2.2.0"): "as_is", ("2.6.3", "2.2.0"): "as_is",
    ("3.1.0", "2.2.0"): "gmi_format_too_new",
    ("1.8.4", "2.6.3"): "migrate", ("2.2.0", "2.6.3"): "as_is", ("2.6.3", "2.6.3"): "as_is",
    ("3.1.0", "2.6.3"): "gmi_format_too_new",
    ("1.8.4", "3.1.0"): "gmi_format_unsupported", ("2.2.0", "3.1.0"): "as_is", ("2.6.3", "3.1.0"): "as_is",
    ("3.1.0", "3.1.0"): "as_is",
}


@pytest.mark.parametrize(("made_on", "restored_on"), sorted(TABLE))
def test_every_pair(made_on: str, restored_on: str):
    expected = TABLE[(made_on, restored_on)]
    gmi, unit = VERSIONS[made_on], VERSIONS[restored_on]
    if expected in ("as_is", "migrate"):
        assert restore_verdict(gmi.writes_format, made_on, unit.reads_formats, restored_on) == expected
    else:
        with pytest.raises(Refused, match=f"^{expected}: "):
            restore_verdict(gmi.writes_format, made_on, unit.reads_formats, restored_on)


def test_refusal_messages_say_what_to_do():
    with pytest.raises(Refused) as err:
        restore_verdict(3, "3.1.0", (1, 2), "2.6.3")
    assert "can restore formats 1 and 2 only" in str(err.value)
    assert "Update the BactoBox software to 3.0.0 or later" in str(err.value)
    with pytest.raises(Refused) as err:
        restore_verdict(1, "1.8.4", (2, 3), "3.1.0")
    assert "First restore a GMI file made with software 2.x" in str(err.value)


def test_semantic_version_order():
    assert version_key("2.10.0") > version_key("2.9.1")
    with pytest.raises(BadInput):
        version_key("2.x")
