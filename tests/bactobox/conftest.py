"""Shared fixtures of the BactoBox tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The driver's working folder (HARNESS_TMPDIR) for this test: a GMI in flight lives here, so a test
    can show nothing was left behind."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HARNESS_TMPDIR", str(work))
    return work
