"""The backup ZIP: what the node writes reads back; every hostile or damaged file is refused with its code."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import BadInput
from harness.targets.mobiusflow import TARGET
from harness.targets.mobiusflow.archive import ArchiveError, Limits, read_backup, unsafe_name
from harness.targets.mobiusflow.corpus import DAMAGES
from simulators.core.options import SimOptions
from simulators.mobiusflow.interface import MobiusFlowSimulator


def _good(tmp_path: Path, version: str, kind: str = "full") -> bytes:
    sim = MobiusFlowSimulator(SimOptions(target="mobiusflow", state=tmp_path / version, firmware=version))
    data, _name, _manifest = sim.node.make_backup("example-backup", kind)
    return data


@pytest.mark.parametrize("version,fmt", [("1.16.4", "1.0"), ("1.19.1", "1.1"), ("3004", "3.0"), ("3021", "3.1")])
def test_backup_reads_back(tmp_path: Path, version: str, fmt: str) -> None:
    data = _good(tmp_path, version)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names[0] == "backup.json"
        assert zf.testzip() is None
        mpv = [i for i in zf.infolist() if i.filename.endswith(".mpv")]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in mpv)
    archive = read_backup(data)
    assert archive.manifest.format == fmt and archive.manifest.version == version
    assert ("values/020.mpv" in names) == fmt.startswith("3.")
    assert ("flows/flows.json" in names) == (fmt != "1.0")
    if fmt == "1.0":
        assert archive.manifest.files is None and archive.warnings
    else:
        assert {f.path for f in archive.manifest.files} == set(names) - {"backup.json"}
        assert archive.manifest.config_digest == archive.content.config_digest(archive.manifest.hub_id)


def test_config_kind_has_no_values(tmp_path: Path) -> None:
    archive = read_backup(_good(tmp_path, "3021", "config"))
    assert archive.manifest.kind == "config" and not archive.content.values
    assert archive.manifest.contents["persistedValues"] is False


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("version", ["3021", "1.19.1"])
def test_damaged_backups_are_refused(tmp_path: Path, damage: str, version: str) -> None:
    maker, code = DAMAGES[damage]
    bad = tmp_path / "bad.zip"
    bad.write_bytes(maker(_good(tmp_path, version)))
    with pytest.raises(ArchiveError) as err:
        read_backup(bad)
    assert err.value.code == code
    # The harness's loader says the same in one line, as BadInput (exit 2).
    with pytest.raises(BadInput) as bad_input:
        TARGET.load_artifact(bad)
    assert bad_input.value.exit_code == 2 and code in str(bad_input.value) and "\n" not in str(bad_input.value)


def test_format_1_0_relies_on_crc_only(tmp_path: Path) -> None:
    """Format 1.0 has no hashes: an edit that keeps the ZIP consistent is accepted, with a warning."""
    maker, _ = DAMAGES["tampered configuration file"]
    archive = read_backup(maker(_good(tmp_path, "1.16.4")))
    assert any("CRC-32 only" in w for w in archive.warnings)


def test_a_forged_manifest_digest_is_caught(tmp_path: Path) -> None:
    """Re-hashing the edited file in backup.json defeats the file check, not the recomputed digest."""
    import hashlib
    import json

    data = _good(tmp_path, "3021")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    services = entries["node/services.json"].replace(b'"enabled": true', b'"enabled": false', 1)
    entries["node/services.json"] = services
    manifest = json.loads(entries["backup.json"])
    for f in manifest["files"]:
        if f["path"] == "node/services.json":
            f["sha256"] = hashlib.sha256(services).hexdigest()
            f["sizeBytes"] = len(services)
    entries["backup.json"] = json.dumps(manifest).encode()
    out = tmp_path / "forged.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    read_backup(out)  # structurally fine...
    with pytest.raises(BadInput, match="configDigest"):
        TARGET.load_artifact(out)  # ...but the configuration is not what the digest says


def test_entry_count_limit(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(12):
            zf.writestr(f"e{i}", b"x")
    with pytest.raises(ArchiveError) as err:
        read_backup(buf.getvalue(), Limits(max_entries=10))
    assert err.value.code == "zip_bomb_suspected"


def test_total_size_limit(tmp_path: Path) -> None:
    data = _good(tmp_path, "3021")
    with pytest.raises(ArchiveError) as err:
        read_backup(data, Limits(max_total=1000))
    assert err.value.code == "zip_bomb_suspected"


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.json"]), min_size=1, max_size=5))
def test_unsafe_name_agrees_with_path_resolution(parts: list[str]) -> None:
    """A name is accepted only if it stays inside the extraction folder when resolved."""
    import posixpath

    name = "/".join(parts)
    if unsafe_name(name) is None and name:
        resolved = posixpath.normpath(posixpath.join("/extract", name))
        assert resolved == "/extract" or resolved.startswith("/extract/"), name


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/x", "C:/x", "c:x", "a\\b", "a//b", "./a/b", "a\0b"])
def test_unsafe_names(name: str) -> None:
    assert unsafe_name(name) is not None


@pytest.mark.parametrize("name", ["backup.json", "services/020/objects.json", "values/020.mpv", "a..b/c"])
def test_safe_names(name: str) -> None:
    assert unsafe_name(name) is None
