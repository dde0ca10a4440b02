"""Sparse partition images (bactobox.md §4.6) and GMI format 3: written with SparseLayout, read back by the one
SparseExpander every reader uses (file check, download follower, field view), corruption named."""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path

import pytest
from bbtools import LAYOUT, flip_byte, make_manifest, make_sparse_gmi, part_bytes, sparse_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import BadInput
from harness.targets.bactobox import TARGET
from harness.targets.bactobox import schema as S
from harness.targets.bactobox.artifact import forget, gmi_fields
from harness.targets.bactobox.gmi import (
    SPARSE_MAX_RAW_BLOCKS,
    GmiFollower,
    SparseExpander,
    SparseHasher,
    SparseLayout,
    inspect_gmi,
    verify_gmi,
    write_gmi,
)

BS = S.SPARSE_BLOCK


def expand(stored: bytes, size: int, cuts: list[int] = ()) -> bytes:
    """The expanded image, built only from the expander's callbacks, fed in the given pieces."""
    out = bytearray(size)

    def raw(at: int, view: memoryview) -> None:
        out[at:at + len(view)] = view

    def fill(at: int, n: int, pattern: bytes) -> None:
        out[at:at + n] = pattern * (n // 4)

    expander = SparseExpander("img", size, on_raw=raw, on_fill=fill)
    pos = 0
    for cut in sorted({c for c in cuts if 0 < c < len(stored)}) + [len(stored)]:
        expander.feed(stored[pos:cut])
        pos = cut
    expander.finish()
    return bytes(out)


def test_layout_headers_are_the_schema_layout():
    layout = SparseLayout.used_prefix(5000, 16 * BS)  # 5000 bytes used: two raw blocks, 14 zero blocks
    assert layout.chunks == ((S.SPARSE_RAW, 2), (S.SPARSE_ZERO, 14))
    header = S.SPARSE_HEADER.parse(layout.header())
    assert (header.block_size, header.total_blocks, header.chunk_count) == (BS, 16, 2)
    data = bytes(range(256)) * 20 + bytes(16 * BS - 5120)
    stored = b"".join(layout.stream(lambda at, n: [data[at:at + n]]))
    assert len(stored) == layout.stored_size == 32 + 12 + 2 * BS + 12
    raw = S.SPARSE_CHUNK.parse(stored[32:44])
    assert (raw.type, raw.blocks, raw.data_len) == (S.SPARSE_RAW, 2, 2 * BS)
    assert stored[44:44 + 2 * BS] == data[:2 * BS]
    zero = S.SPARSE_CHUNK.parse(stored[-12:])
    assert (zero.type, zero.blocks, zero.data_len) == (S.SPARSE_ZERO, 14, 0)


def test_layout_edges():
    assert SparseLayout.used_prefix(0, 4 * BS).chunks == ((S.SPARSE_ZERO, 4),)
    assert SparseLayout.used_prefix(4 * BS, 4 * BS).chunks == ((S.SPARSE_RAW, 4),)
    assert SparseLayout.used_prefix(10**9, 4 * BS).chunks == ((S.SPARSE_RAW, 4),)  # clamped to the image
    # data_len is a u32: a raw run past 4 GiB is split (pure: nothing is read)
    big = SparseLayout.used_prefix(6 << 30, 7 << 30)
    assert [k for k, _ in big.chunks] == [S.SPARSE_RAW, S.SPARSE_RAW, S.SPARSE_ZERO]
    assert big.chunks[0][1] == SPARSE_MAX_RAW_BLOCKS and big.expanded_size == 7 << 30
    with pytest.raises(ValueError):
        SparseLayout.used_prefix(0, BS + 512)  # not whole blocks


@settings(max_examples=60, deadline=None)
@given(blocks=st.integers(1, 24), used=st.integers(0, 24 * BS), seed=st.integers(0, 10**6),
       cuts=st.lists(st.integers(1, 120_000), max_size=10))
def test_round_trip_any_image_any_chunking(blocks, used, seed, cuts):
    """Write -> expand gives the image back, whatever pieces the stored bytes arrive in; the hasher's two
    digests are those of the stored bytes and of the image."""
    size = blocks * BS
    used = min(used, size)
    data = hashlib.shake_128(str(seed).encode()).digest(used) + bytes(size - used)
    stored, layout = sparse_bytes(data)
    assert layout.expanded_size == size and len(stored) == layout.stored_size
    assert len(stored) <= 32 + 2 * 12 + -(-used // BS) * BS
    assert expand(stored, size, cuts) == data
    hasher = SparseHasher("img", size)
    for i in range(0, len(stored), 7001):
        hasher.update(stored[i:i + 7001])
    assert hasher.finish() == (hashlib.sha256(stored).hexdigest(), hashlib.sha256(data).hexdigest())


def test_fill_chunks_are_read():
    """The device writes raw and zero chunks only; a fill chunk (§4.6) is still read."""
    stored = (S.build_sparse_header(BS, 3, 2) + S.build_sparse_chunk(S.SPARSE_RAW, 1, BS) + b"\x07" * BS
              + S.build_sparse_chunk(S.SPARSE_FILL, 2, BS) + b"ab\xcd\xef")
    assert expand(stored, 3 * BS, [3, 50, 4200]) == b"\x07" * BS + b"ab\xcd\xef" * (2 * BS // 4)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda s: s[:-1], "shorter than its chunks say"),
    (lambda s: s + b"\0", "follow the last chunk"),
    (lambda s: b"XXXX" + s[4:], "no valid sparse header"),
    (lambda s: s[:16] + struct.pack("<I", 17) + s[20:], "expands to"),
    (lambda s: s[:44 - 4] + struct.pack("<I", 5) + s[44:], "malformed chunk"),
    (lambda s: s[:-12 + 4] + struct.pack("<I", 99) + s[-4:], "more blocks"),
])
def test_malformed_images_are_refused(change, problem):
    data = b"\x01" * BS + bytes(15 * BS)
    stored, _ = sparse_bytes(data)
    with pytest.raises(BadInput, match=problem):
        expand(change(stored), 16 * BS)


# --- format-3 GMI files ----------------------------------------------------------------------------------


def test_format3_gmi_is_a_zip_and_verifies(tmp_path: Path):
    path = make_sparse_gmi(tmp_path / "f3.gmi")
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert z.namelist()[-1] == "parts/data.sparse"
        assert z.read("parts/data.sparse")[:4] == b"BBSP"
    info = verify_gmi(path)
    data = info.manifest.part("data")
    assert info.format == 3 and data.encoding == "sparse"
    assert data.sha256 == hashlib.sha256(part_bytes("data", LAYOUT[-1][2])).hexdigest()  # the expanded image
    assert data.stored_size_bytes < data.size_bytes
    assert info.manifest.total_size_bytes == sum(size for _, _, size in LAYOUT)  # expanded sizes


def test_field_view_reads_the_settings_from_the_sparse_part(tmp_path: Path):
    image = bytearray(part_bytes("data", LAYOUT[-1][2]))
    image[S.SETTINGS_OFFSET:S.SETTINGS_OFFSET + S.SETTINGS_SIZE] = S.build_env({"timezone": "Asia/Tokyo"}, 1)
    path = make_sparse_gmi(tmp_path / "f3.gmi", data=bytes(image))
    fields = TARGET.fields(TARGET.load_artifact(path))
    assert fields["settings.timezone"] == "Asia/Tokyo" and fields["format"] == 3
    assert gmi_fields(inspect_gmi(path))["parts"]["data"]["sha256"] == hashlib.sha256(image).hexdigest()


@pytest.mark.parametrize(("where", "problem"), [
    (44 + 100, "data sha256 mismatch"),  # a byte of the raw chunk: the image changes
    (26, "data stored sha256 mismatch"),  # a reserved header byte: only the stored bytes change
])
def test_a_corrupted_sparse_part_is_named(tmp_path: Path, where: int, problem: str):
    path = make_sparse_gmi(tmp_path / "f3.gmi")
    entry = next(e for p, e in inspect_gmi(path).parts if p.name == "data")
    flip_byte(path, entry.data_offset + where)
    forget()
    with pytest.raises(BadInput, match=f"local_gmi_corrupt: {problem}"):
        verify_gmi(path)
    follower = GmiFollower(path, inline=True)
    follower.feed(path.read_bytes())
    follower.finish(path.stat().st_size)
    with pytest.raises(BadInput, match=f"local_gmi_corrupt: {problem}"):
        follower.result()


def test_the_follower_checks_both_digests_of_a_good_sparse_part(tmp_path: Path):
    path = make_sparse_gmi(tmp_path / "f3.gmi")
    raw = path.read_bytes()
    for threaded in (False, True):
        follower = GmiFollower(path, inline=not threaded)
        if not threaded:
            for i in range(0, len(raw), 4099):  # pieces that split headers and chunks anywhere
                follower.feed(raw[i:i + 4099])
        follower.finish(len(raw))
        assert follower.result() == inspect_gmi(path).manifest_sha256


def test_a_truncated_sparse_chunk_is_named_by_the_follower(tmp_path: Path):
    """A sparse image whose chunk table says more than the entry holds: the ZIP is intact, the image is not."""
    path = make_sparse_gmi(tmp_path / "f3.gmi")
    entry = next(e for p, e in inspect_gmi(path).parts if p.name == "data")
    # The zero chunk's header claims one block fewer: the chunks no longer add up to the image.
    with open(path, "r+b") as f:
        at = entry.data_offset + entry.compressed_size - 12 + 4
        f.seek(at)
        blocks = struct.unpack("<I", f.read(4))[0]
        f.seek(at)
        f.write(struct.pack("<I", blocks - 1))
    follower = GmiFollower(path, inline=True)
    follower.feed(path.read_bytes())
    follower.finish(path.stat().st_size)
    with pytest.raises(BadInput, match="local_gmi_corrupt: data: malformed sparse image"):
        follower.result()
    forget()
    with pytest.raises(BadInput, match="chunks do not add up"):
        verify_gmi(path)


def test_a_sparse_bomb_is_refused_before_expanding(tmp_path: Path):
    """24 bytes of zero chunk can claim any size: the manifest's disk size bounds every part, and a disk beyond
    any BactoBox's is refused before a byte is hashed."""
    huge = 1 << 40
    stored = S.build_sparse_header(BS, huge // BS, 1) + S.build_sparse_chunk(S.SPARSE_ZERO, huge // BS, BS)
    datas = [part_bytes(n, size) for n, _, size in LAYOUT[:-1]]
    manifest = make_manifest([*datas, b""], format=3, version="3.1.0", disk=huge + (2 << 20),
                             layout=[*LAYOUT[:-1], ("data", LAYOUT[-1][1], huge)])
    part = manifest.parts[-1]
    part.file, part.encoding = "parts/data.sparse", "sparse"
    part.stored_size_bytes, part.stored_sha256 = len(stored), hashlib.sha256(stored).hexdigest()
    path = write_gmi(tmp_path / "bomb.gmi", manifest, [*datas, stored])
    with pytest.raises(BadInput, match="claims a 1024 GiB disk"):
        verify_gmi(path)
