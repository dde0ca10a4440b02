"""The artifact store on real files: atomic saves, no overwrite, manifests, latest-by-manifest, verify."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import threading
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness
from harness.compare import CompareRules
from harness.errors import BadInput
from harness.store import (
    MANIFEST_SUFFIX,
    Store,
    candidate_names,
    device_key,
    manifest_path,
    read_manifest,
    redact_address,
    verify_manifest,
)
from harness.targets.base import Artifact, Backup, DeviceInfo, Driver, Target

DEVICE = DeviceInfo(target="fake", device_id="52:00:13:1f", firmware="1.17", model="v1")
T0 = dt.datetime(2020, 7, 7, 19, 7, 58, tzinfo=dt.UTC)


class FakeTarget(Target):
    """A trivial artifact format: ``FAKE1 <device id> <firmware> <sha256 of body>\\n`` then the body."""

    name = "fake"
    artifact_ext = ".fak"
    compare_rules = CompareRules()
    driver = Driver

    def __init__(self) -> None:
        self.loaded: list[Path] = []

    def artifact_name(self, device_id: str, created: dt.datetime) -> str:
        return created.strftime("%Y-%m-%dT%H.%M.%S") + self.artifact_ext

    def load_artifact(self, path: Path) -> Artifact:
        self.loaded.append(path)
        with open(path, "rb") as f:
            parts = f.readline(300).split()
            if len(parts) != 4 or parts[0] != b"FAKE1":
                raise BadInput(f"{path.name}: not a fake artifact")
            digest = hashlib.sha256()
            while chunk := f.read(1 << 16):  # streamed, like a real multi-GB target
                digest.update(chunk)
        if digest.hexdigest().encode() != parts[3]:
            raise BadInput(f"{path.name}: body checksum mismatch")
        return Artifact(path, "fake", parts[1].decode(), parts[2].decode(), created="")

    def fields(self, artifact: Artifact) -> dict:
        return {}


def fake_bytes(body: bytes, device_id: str = DEVICE.device_id) -> bytes:
    return b"FAKE1 %s 1.17 %s\n" % (device_id.encode(), hashlib.sha256(body).hexdigest().encode()) + body


def backup_of(body: bytes, created: dt.datetime = T0, **kw) -> Backup:
    return Backup(device=DEVICE, created=created, content=fake_bytes(body), **kw)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def no_temp_left(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".tmp")]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_save_layout_read_only_and_manifest(store: Store) -> None:
    target = FakeTarget()
    path = store.save(target, backup_of(b"calibration", reason="eol first backup",
                                        source_address="https://admin:hunter2@unit.local/?token=abc&x=1"))
    assert path == store.root / "fake" / "5200131f" / "2020-07-07T19.07.58.fak"
    assert path.read_bytes() == fake_bytes(b"calibration")
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert stat.S_IMODE(manifest_path(path).stat().st_mode) == 0o444
    # load_artifact saw the file under its own name, before it had its final path
    assert target.loaded and target.loaded[0].name == path.name and target.loaded[0] != path

    text = manifest_path(path).read_text()
    assert "hunter2" not in text and "abc" not in text
    m = json.loads(text)
    assert m == {
        "target": "fake", "device_id": "52:00:13:1f", "firmware": "1.17", "model": "v1",
        "created": "2020-07-07T19:07:58Z", "sequence": 1,
        "sha256": hashlib.sha256(fake_bytes(b"calibration")).hexdigest(),
        "size": len(fake_bytes(b"calibration")), "file": path.name,
        "harness_version": harness.__version__,
        "source_address": "https://admin@unit.local/?token=REDACTED&x=1",
        "reason": "eol first backup", "manifest_version": 1,
    }
    assert verify_manifest(path).sha256 == m["sha256"]
    assert store.read_manifest(path) == read_manifest(manifest_path(path))
    assert visible(path.parent) == [path.name, path.name + MANIFEST_SUFFIX]
    assert no_temp_left(path.parent)


def test_never_overwrites_same_second_gets_suffix(store: Store) -> None:
    target = FakeTarget()
    paths = [store.save(target, backup_of(b"body %d" % i)) for i in range(3)]
    assert [p.name for p in paths] == ["2020-07-07T19.07.58.fak", "2020-07-07T19.07.58_2.fak",
                                       "2020-07-07T19.07.58_3.fak"]
    for i, p in enumerate(paths):
        assert p.read_bytes() == fake_bytes(b"body %d" % i)
        assert read_manifest(p).file == p.name
        assert read_manifest(p).sequence == i + 1
    assert store.latest("fake", DEVICE.device_id) == paths[-1]  # same created: the sequence decides


def test_naive_created_is_utc_and_other_zones_convert(store: Store) -> None:
    cest = dt.timezone(dt.timedelta(hours=2))
    p1 = store.save(FakeTarget(), backup_of(b"a", created=T0.replace(tzinfo=None)))
    p2 = store.save(FakeTarget(), backup_of(b"b", created=T0.astimezone(cest)))
    assert read_manifest(p1).created == read_manifest(p2).created == "2020-07-07T19:07:58Z"
    assert p2.name == "2020-07-07T19.07.58_2.fak"


def test_latest_comes_from_manifests_not_mtime(store: Store) -> None:
    target = FakeTarget()
    old = store.save(target, backup_of(b"old", created=T0))
    new = store.save(target, backup_of(b"new", created=T0 + dt.timedelta(hours=1)))
    assert store.latest("fake", "52:00:13:1F") == new  # the ID's case does not matter
    # Touch and then "edit and save" the old one, as the maker's desktop app invites.
    future = new.stat().st_mtime + 3600
    os.utime(old, (future, future))
    assert store.latest("fake", DEVICE.device_id) == new
    os.chmod(old, 0o644)
    with open(old, "ab") as f:
        f.write(b"edited")
    os.utime(old, (future + 10, future + 10))
    assert store.latest("fake", DEVICE.device_id) == new
    assert store.list("fake", DEVICE.device_id) == [old, new]
    with pytest.raises(BadInput, match="bytes but the manifest says"):
        verify_manifest(old)


def test_latest_with_nothing_stored(store: Store) -> None:
    with pytest.raises(BadInput, match="no fake backups of device 52:00:13:1f"):
        store.latest("fake", DEVICE.device_id)
    assert store.list("fake", DEVICE.device_id) == []


def test_verify_detects_flipped_byte_truncation_and_missing_manifest(store: Store) -> None:
    path = store.save(FakeTarget(), backup_of(b"x" * 1000))
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[500] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="sha256 .* does not match") as err:
        verify_manifest(path)
    assert "\n" not in str(err.value)

    path.write_bytes(bytes(data[:700]))
    with pytest.raises(BadInput, match="700 bytes but the manifest says 1"):
        store.verify_manifest(path)

    mpath = manifest_path(path)
    os.chmod(mpath, 0o644)
    mpath.unlink()
    with pytest.raises(BadInput, match="no manifest beside it") as err:
        verify_manifest(path)
    assert err.value.exit_code == 2
    with pytest.raises(BadInput, match="no such artifact"):
        verify_manifest(path.with_name("nothing.fak"))


def test_malformed_manifest_is_bad_input(store: Store) -> None:
    path = store.save(FakeTarget(), backup_of(b"m"))
    mpath = manifest_path(path)
    os.chmod(mpath, 0o644)
    mpath.write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        read_manifest(path)
    mpath.write_text(json.dumps({"target": "fake"}))
    with pytest.raises(BadInput, match="manifest lacks"):
        read_manifest(path)
    assert store.list("fake", DEVICE.device_id) == []  # skipped with a warning, not a crash


def test_concurrent_saves_never_clobber(store: Store) -> None:
    target = FakeTarget()
    n = 12
    barrier = threading.Barrier(n)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results.append(store.save(target, backup_of(b"writer %d" % i)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert len(set(results)) == n
    assert {p.read_bytes() for p in results} == {fake_bytes(b"writer %d" % i) for i in range(n)}
    assert sorted(read_manifest(p).sequence for p in results) == list(range(1, n + 1))
    for p in results:
        verify_manifest(p)
    assert len(store.list("fake", DEVICE.device_id)) == n
    assert no_temp_left(results[0].parent)


class BrokenTarget(FakeTarget):
    def load_artifact(self, path: Path) -> Artifact:
        raise RuntimeError("schema crashed")


@pytest.mark.parametrize("case", ["bad checksum", "foreign device", "loader crash"])
def test_failed_verification_leaves_nothing(store: Store, case: str) -> None:
    target: FakeTarget = FakeTarget()
    content = fake_bytes(b"body")
    if case == "bad checksum":
        content = content[:-1] + b"X"
    elif case == "foreign device":
        content = fake_bytes(b"body", device_id="52:00:99:99")
    else:
        target = BrokenTarget()
    backup = Backup(device=DEVICE, created=T0, content=content)
    with pytest.raises((BadInput, RuntimeError)) as err:
        store.save(target, backup)
    if case == "foreign device":
        assert "52:00:99:99" in str(err.value)
    folder = store.device_dir("fake", DEVICE.device_id)
    assert visible(folder) == []
    assert no_temp_left(folder)
    # and the name is still free for a good backup
    assert store.save(FakeTarget(), backup_of(b"good")).name == "2020-07-07T19.07.58.fak"


def test_big_file_is_linked_and_hashed_in_chunks(store: Store, tmp_path: Path) -> None:
    body = os.urandom(1 << 16) * 384  # 24 MiB
    src = tmp_path / "driver-temp.fak"
    src.write_bytes(fake_bytes(body))
    expected = hashlib.sha256(src.read_bytes()).hexdigest()
    del body
    inode = src.stat().st_ino

    tracemalloc.start()
    try:
        path = store.save(FakeTarget(), Backup(device=DEVICE, created=T0, path=src))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * (1 << 20), f"save held {peak} bytes in memory"
    assert not src.exists()  # the store took the driver's temp file over
    assert path.stat().st_ino == inode  # same filesystem: linked, not copied
    assert read_manifest(path).sha256 == expected
    assert verify_manifest(path).size == path.stat().st_size


def test_file_from_another_filesystem_is_copied(store: Store) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == store.root.parent.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem")
    src = shm / f"harness-test-{os.getpid()}-{threading.get_ident()}.fak"
    src.write_bytes(fake_bytes(b"y" * 3_000_000))
    try:
        path = store.save(FakeTarget(), Backup(device=DEVICE, created=T0, path=src))
        assert path.read_bytes() == fake_bytes(b"y" * 3_000_000)
        assert not src.exists()
        verify_manifest(path)
    finally:
        src.unlink(missing_ok=True)


def test_failed_save_from_file_leaves_source_untouched(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "driver-temp.fak"
    src.write_bytes(fake_bytes(b"z", device_id="00:00:00:01"))
    os.chmod(src, 0o640)
    with pytest.raises(BadInput, match="00:00:00:01"):
        store.save(FakeTarget(), Backup(device=DEVICE, created=T0, path=src))
    assert src.exists() and stat.S_IMODE(src.stat().st_mode) == 0o640
    assert visible(store.device_dir("fake", DEVICE.device_id)) == []


def test_orphans_are_ignored_and_keep_their_names(store: Store) -> None:
    target = FakeTarget()
    first = store.save(target, backup_of(b"one"))
    # An artifact deleted by hand leaves its manifest: the name stays taken, list() skips it.
    os.unlink(first)
    # A file dropped in by hand has no manifest: list() does not know it.
    (first.parent / "2020-07-07T19.07.58_3.fak").write_bytes(b"stray")
    second = store.save(target, backup_of(b"two"))
    assert second.name == "2020-07-07T19.07.58_2.fak"
    third = store.save(target, backup_of(b"three"))
    assert third.name == "2020-07-07T19.07.58_4.fak"
    assert store.list("fake", DEVICE.device_id) == [second, third]
    assert read_manifest(third).sequence == 3


def test_backup_must_carry_content_or_path(store: Store, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="either content or a file path"):
        store.save(FakeTarget(), Backup(device=DEVICE, created=T0))
    with pytest.raises(BadInput, match="missing"):
        store.save(FakeTarget(), Backup(device=DEVICE, created=T0, path=tmp_path / "gone.fak"))


def test_suffix_goes_before_the_extension_with_or_without_its_dot() -> None:
    for ext in ("json", ".json"):
        assert list(zip(candidate_names("2020-07-07T19.07.58.json", ext), range(3), strict=False)) == [
            ("2020-07-07T19.07.58.json", 0), ("2020-07-07T19.07.58_2.json", 1), ("2020-07-07T19.07.58_3.json", 2)]
    assert next(iter(candidate_names("backup-of-x-2024-01-02.tar.gz", "tar.gz"))) == "backup-of-x-2024-01-02.tar.gz"
    assert list(candidate_names("b.tar.gz", ".tar.gz"))[1] == "b_2.tar.gz"
    assert list(candidate_names("noext", ""))[1] == "noext_2"


def test_device_key_and_unsafe_ids() -> None:
    assert device_key("52:00:13:1F") == "5200131f"
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(BadInput):
            device_key(bad)


def test_redact_address() -> None:
    assert redact_address("/dev/ttyUSB0") == "/dev/ttyUSB0"
    assert redact_address("ASRL/dev/ttyUSB0::INSTR") == "ASRL/dev/ttyUSB0::INSTR"
    assert redact_address("rfc2217://bench7:7000?logging=debug") == "rfc2217://bench7:7000?logging=debug"
    assert redact_address("https://u:p@h:8443/api?jwt=x") == "https://u@h:8443/api?jwt=REDACTED"


ext_strategy = st.sampled_from(["", ".json", "json", ".gmi", ".tar.gz", "tar.gz", ".zip"])
stem_strategy = st.text(st.characters(codec="ascii", categories=("L", "N"), include_characters="-_."),
                        min_size=1, max_size=20)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stem=stem_strategy, ext=ext_strategy, count=st.integers(1, 50))
def test_candidate_names_are_distinct_and_keep_the_extension(stem: str, ext: str, count: int) -> None:
    dotted = "." + ext.lstrip(".") if ext else ""  # a target may declare "json" or ".json"
    name = stem + dotted
    names = [n for n, _ in zip(candidate_names(name, ext), range(count), strict=False)]
    assert names[0] == name
    assert len(set(names)) == len(names)
    real_ext = dotted if dotted and name != dotted else Path(name).suffix
    for i, candidate in enumerate(names[1:], start=2):
        assert candidate.endswith(f"_{i}{real_ext}")
        assert candidate[: -len(f"_{i}{real_ext}")] == name[: len(name) - len(real_ext)]


def test_driver_sha256_is_trusted_on_link_but_size_is_checked(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "driver-temp.fak"
    src.write_bytes(fake_bytes(b"v" * 1000))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    size = src.stat().st_size
    os.chmod(src, 0o640)
    with pytest.raises(BadInput, match="bytes"):  # the driver announced another size: not stored
        store.save(FakeTarget(), Backup(device=DEVICE, created=T0, path=src, sha256=sha, size=size + 1))
    assert src.exists() and stat.S_IMODE(src.stat().st_mode) == 0o640
    assert visible(store.device_dir("fake", DEVICE.device_id)) == []
    path = store.save(FakeTarget(), Backup(device=DEVICE, created=T0, path=src, sha256=sha, size=size))
    assert read_manifest(path).sha256 == sha and read_manifest(path).size == size
    assert verify_manifest(path).size == size
