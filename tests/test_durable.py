"""harness/durable.py: big downloads written with O_DIRECT from two buffers, small ones through the page cache."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.durable import ALIGN, DIRECT_BUFFER, DIRECT_MIN, DurableFile


def _write_in_random_pieces(path: Path, data: bytes, expected: int | None, seed: int) -> DurableFile:
    rng = random.Random(seed)
    f = DurableFile(path, expected)
    i = 0
    while i < len(data):
        n = rng.randint(1, DIRECT_BUFFER + ALIGN + 7)  # pieces that straddle the buffers, of odd sizes
        f.write(data[i:i + n])
        i += n
    f.close()
    return f


@pytest.mark.parametrize("size", [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, DIRECT_BUFFER, 2 * DIRECT_BUFFER + 12345])
def test_direct_mode_writes_exactly_the_bytes(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "big.part"
    f = _write_in_random_pieces(path, data, DIRECT_MIN, size)  # announced big: O_DIRECT where the fs has it
    assert path.read_bytes() == data  # the padding of the last block is truncated away
    assert f.size == size


def test_small_files_go_through_the_page_cache(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * DIRECT_BUFFER + 5)
    f = _write_in_random_pieces(tmp_path / "small.part", data, None, 1)
    assert f.direct is False
    assert (tmp_path / "small.part").read_bytes() == data


def test_big_files_use_o_direct_where_the_filesystem_has_it(tmp_path: Path) -> None:
    f = DurableFile(tmp_path / "x", DIRECT_MIN)
    f.close()
    # tmpfs has no O_DIRECT: the file is then written through the page cache (and still fsynced)
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip()
    assert f.direct is (fs != "tmpfs")


def test_a_failed_write_of_the_writer_thread_is_raised_not_lost(tmp_path: Path) -> None:
    """The writer thread's OSError (here EFBIG from a file size limit, as a full disk would give ENOSPC)
    must come out of write() or close(): a download must never look complete when it is not on disk."""
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from harness.durable import DIRECT_BUFFER, DIRECT_MIN, DurableFile
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 * DIRECT_BUFFER, 3 * DIRECT_BUFFER))
        f = DurableFile({str(tmp_path / "limited")!r}, DIRECT_MIN)
        try:
            for _ in range(8):
                f.write(bytes(DIRECT_BUFFER))
            f.close()
        except OSError as exc:
            print("raised", exc.errno)
        else:
            print("no error")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().startswith("raised"), out.stdout + out.stderr


def test_abandon_leaves_the_file_to_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "gone.part"
    with pytest.raises(RuntimeError), DurableFile(path, DIRECT_MIN) as f:
        f.write(bytes(DIRECT_BUFFER + 1))
        raise RuntimeError("the body broke")
    assert path.exists()  # not fsynced, not removed: the download deletes its .part itself
    with pytest.raises(ValueError):
        f.write(b"x")
