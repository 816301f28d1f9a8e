"""bench/table.py: the tables in docs/performance.md and README.md are its output from the
results in bench/results/, so neither says more, or other, than the files do."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import table


def between_markers(path: Path) -> str:
    text = path.read_text()
    return text.split(table.START, 1)[1].split(table.END, 1)[0].strip()


@pytest.mark.parametrize(("path", "targets_only"), [(table.PAGE, False), (table.README, True)])
def test_the_written_tables_are_the_results(path, targets_only):
    assert between_markers(path) == table.markdown(targets_only), (
        f"{path.name} is out of date: run .venv/bin/python bench/table.py --page"
    )


def test_the_readme_keeps_only_rows_with_a_target():
    rows = table.markdown(targets_only=True).splitlines()[2:]
    assert rows and all(row.split(" | ")[3].strip() for row in rows)
    assert len(rows) < len(table.markdown().splitlines()[2:])
