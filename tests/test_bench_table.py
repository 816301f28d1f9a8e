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


def test_a_corrupt_result_is_one_line_naming_it_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "inference-amd-avx2.json").write_text('{"machine": {"cpu": "x"')  # cut short
    monkeypatch.setattr(table, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["table.py"])
    with pytest.raises(SystemExit) as stop:
        table.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "inference-amd-avx2.json" in err and "run it again" in err


def test_a_page_without_its_markers_is_left_as_it_was(tmp_path, monkeypatch, capsys):
    page = tmp_path / "performance.md"
    page.write_text("# no markers here\n")
    monkeypatch.setattr(table, "PAGE", page)
    monkeypatch.setattr(sys, "argv", ["table.py", "--page"])
    with pytest.raises(SystemExit) as stop:
        table.main()
    assert stop.value.code == 2
    assert "performance.md: no <!-- bench-table:start -->" in capsys.readouterr().err
    assert page.read_text() == "# no markers here\n"


def test_a_run_killed_while_writing_its_result_keeps_the_one_before(tmp_path, monkeypatch):
    import machine

    monkeypatch.setattr(machine, "RESULTS", tmp_path)
    first = machine.write("lrn", {"rows": [1]})
    before = first.read_text()

    def killed(self, text, *args, **kwargs):  # half the file written, then the process dies
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        machine.write("lrn", {"rows": [2]})
    monkeypatch.undo()
    assert first.read_text() == before
    assert sorted(p.name for p in tmp_path.glob("lrn-*.json")) == [first.name]  # table reads
