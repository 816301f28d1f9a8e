"""Writing files whole: temporary names, and what killed processes leave behind."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from alexnet.data.cache import extract
from alexnet.files import write_text

GONE = 9_999_999  # above Linux's largest process id (4,194,304): no such process


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path):
    """SIGKILL during export left `.m.PID.partial.pt2` for good; the next write of the same
    name removes it, and leaves a live process's own."""
    abandoned = tmp_path / f".m.{GONE}.partial.pt2"
    abandoned.write_bytes(b"half an archive")
    live = tmp_path / f".m.{os.getppid()}.partial.pt2"  # a running process's, in progress
    live.write_bytes(b"in progress")
    write_text(tmp_path / "m.pt2", "whole")
    assert (tmp_path / "m.pt2").read_text() == "whole"
    assert not abandoned.exists() and live.exists()


def test_a_killed_extraction_is_removed_by_the_next(tmp_path, monkeypatch):
    """A prepare killed while unpacking an archive left cache/extracted/*.part behind."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "x.txt").write_text("x")
    archive = tmp_path / "photos.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "a", arcname="a")
    first = extract(archive)
    abandoned = first.with_name(f"{first.name}.{GONE}.part")
    abandoned.mkdir()
    (abandoned / "half").write_text("half")
    for entry in [first / ".complete"]:
        entry.unlink()  # as if this archive had not been unpacked yet
    again = extract(archive)
    assert (again / "a" / "x.txt").read_text() == "x"
    assert not abandoned.exists()
    assert sorted(p.name for p in again.parent.iterdir()) == [again.name]


def test_a_stopped_extraction_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM while unpacking: the half-unpacked copy is removed at once."""
    import pytest

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "photos.tar"
    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "x.txt", arcname="x.txt")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(archive)
    assert list(Path(tmp_path / "cache" / "extracted").iterdir()) == []
