"""The backup file (multispeq.md §7.2): build, load, and every way a file can be wrong (DESIGN rule 6)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from harness.errors import BadInput
from harness.targets.multispeq import TARGET
from harness.targets.multispeq.artifact import build_document, load_document, parse_document
from harness.targets.multispeq.protocol import (
    parse_device_info,
    printed_keys,
    render_print_memory,
    shape_of,
    with_crc,
)
from harness.targets.multispeq.schema import FAMILIES

CREATED = dt.datetime(2020, 7, 7, 19, 7, 58, tzinfo=dt.UTC)


def memory_of(family: str, device_id: str = "52:00:13:1f") -> dict:
    out: dict = {}
    for i, key in enumerate(printed_keys(FAMILIES[family])):
        value = f"{i}.250000"
        shape = shape_of(key)
        out[key] = (device_id if key == "device_id" else "52016" if key == "device_manufacture"
                    else value if shape == () else [[value] * 3] * 3 if shape == (3, 3) else [value] * shape[0])
    out["mag_cal"] = [["1.000000", "2.000000", "3.000000"], ["4.000000", "5.000000", "6.000000"],
                      ["7.000000", "8.000000", "-nan"]]
    return out


def document(family: str = "E", firmware: str = "1.17", device_id: str = "52:00:13:1f",
             print_id: str | None = None) -> bytes:
    memory = memory_of(family, print_id or device_id)
    raw = render_print_memory(memory)
    info = parse_device_info(with_crc(
        f'{{"device_name":"MultispeQ","device_version":"1","device_id":"{device_id}","device_battery":87,'
        f'"device_firmware":"{firmware}"}}'.encode()))
    return build_document(created=CREATED, reason="manual", info=info, family=FAMILIES[family], raw=raw,
                          memory=memory)


def write(tmp_path: Path, data: bytes | str, name: str = "2020-07-07T19.07.58.json") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def edit(data: bytes, change) -> bytes:
    doc = json.loads(data)
    change(doc)
    return json.dumps(doc).encode()


def test_round_trip(tmp_path):
    data = document()
    assert data.endswith(b"}\n")
    doc = json.loads(data)
    assert list(doc) == ["format", "format_version", "created_utc", "reason", "device", "print_memory_crc",
                         "print_memory_raw", "memory", "warnings"]
    assert doc["format"] == "multispeq-console-backup" and doc["format_version"] == 1
    assert doc["created_utc"] == "2020-07-07T19:07:58Z"
    assert doc["device"] == {"device_id": "52:00:13:1f", "device_id_u32": 1375736607, "device_name": "MultispeQ",
                             "device_version": "1", "device_firmware": "1.17", "layout_family": "E"}
    artifact = load_document(write(tmp_path, data))
    assert (artifact.target, artifact.device_id, artifact.firmware, artifact.created) == (
        "multispeq", "52:00:13:1f", "1.17", "2020-07-07T19:07:58Z")
    assert artifact.data.memory == memory_of("E") and artifact.data.edits == []
    assert artifact.data.raw == render_print_memory(memory_of("E"))
    assert document() == data  # stable bytes for the same input


@pytest.mark.parametrize(("family", "firmware"), [("A", "1.05"), ("C50", "1.06"), ("C75", "1.10"), ("D", "1.11")])
def test_older_families_and_pre_116_ids(tmp_path, family, firmware):
    data = document(family, firmware, device_id="d4:f5:52:00:13:1f", print_id="d4:f5:52:0:13:1f")
    artifact = load_document(write(tmp_path, data))
    assert artifact.device_id == "52:00:13:1f" and artifact.data.family.name == family


def test_target_fields_and_name(tmp_path):
    artifact = TARGET.load_artifact(write(tmp_path, document("E", "1.15", "d4:f5:52:00:13:1f",
                                                             "d4:f5:52:0:13:1f")))
    fields = TARGET.fields(artifact)
    assert fields["device_id"] == "52:00:13:1f" and fields["mag_cal"][2][2] == "-nan"
    assert TARGET.artifact_name("52:00:13:1f", CREATED) == "2020-07-07T19.07.58.json"
    assert TARGET.artifact_folder("d4:f5:52:0:13:1f") == "5200131f"


def test_truncated_file(tmp_path):
    data = document()
    with pytest.raises(BadInput, match="not a MultispeQ backup"):
        load_document(write(tmp_path, data[: len(data) // 2]))


@pytest.mark.parametrize("content", [
    b'{"target": "bactobox", "files": []}',
    b"PK\x03\x04 zip bytes",
    b"[1, 2, 3]",
    b"",
    b'{"format": "planktoscope-bundle", "format_version": 1}',
])
def test_foreign_files(tmp_path, content):
    with pytest.raises(BadInput, match="not a MultispeQ backup"):
        load_document(write(tmp_path, content))


def test_edited_value(tmp_path):
    def change(doc):
        doc["memory"]["userdef3"] = "99.000000"

    path = write(tmp_path, edit(document(), change))
    with pytest.raises(BadInput, match="userdef3"):
        load_document(path)
    forced = load_document(path, allow_edited=True)  # the explicit force path of a restore (§8.4)
    assert forced.data.memory["userdef3"] == "99.000000" and forced.data.edits


def test_edited_raw_fails_its_crc(tmp_path):
    def change(doc):
        doc["print_memory_raw"] = doc["print_memory_raw"].replace('"userdef3": "', '"userdef3": "1')
        doc["memory"]["userdef3"] = "1" + doc["memory"]["userdef3"]

    with pytest.raises(BadInput, match="CRC mismatch"):
        load_document(write(tmp_path, edit(document(), change)))


def test_edited_recorded_crc(tmp_path):
    def change(doc):
        doc["print_memory_crc"] = "00000000"

    with pytest.raises(BadInput, match="CRC"):
        load_document(write(tmp_path, edit(document(), change)))


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: d.update(format_version=2), "format_version"),
    (lambda d: d["device"].update(device_id="52:00:13:20"), "does not match"),
    (lambda d: d["device"].update(device_id_u32=1), "device_id_u32"),
    (lambda d: d["device"].update(layout_family="D"), "layout_family"),
    (lambda d: d.pop("memory"), "memory is missing"),
    (lambda d: d.update(created_utc="yesterday"), "created_utc"),
])
def test_inconsistent_documents(tmp_path, change, match):
    with pytest.raises(BadInput, match=match):
        load_document(write(tmp_path, edit(document(), change)))


def test_messages_are_one_line(tmp_path):
    with pytest.raises(BadInput) as info:
        load_document(write(tmp_path, b"{\n\n"))
    assert "\n" not in str(info.value)


def test_blank_unit_is_flagged():
    data = document(device_id="ff:ff:ff:ff")
    artifact = parse_document(data)
    assert any("unset" in w for w in artifact.warnings)
