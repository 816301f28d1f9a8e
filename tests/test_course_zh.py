"""The course's Chinese layer: README.zh-CN.md shows the English README's newcomer commands
exactly, and its results are the README's; each notebook opens with a Chinese summary and has
bilingual section headings; the glossary (docs/glossary.md) names terms the notebooks really
use; and every relative link of the Chinese pages and the notebooks leads to a file."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

import pytest

from alexnet import cli_reference
from alexnet.cli import build_parser

from .test_readme import shown_commands

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
README_ZH = ROOT / "README.zh-CN.md"
ZH_COMMANDS = shown_commands(README_ZH.read_text())
# The README's sections a newcomer reads, whose every command the Chinese one shows.
NEWCOMER = ("## Two commands", "## Commands", "## Learning with it", "## In a container")
GLOSSARY = ROOT / "docs" / "glossary.md"
FROM_TF = ROOT / "docs" / "from-tensorflow.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CJK = re.compile(r"[\u4e00-\u9fff]")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def notebook_cells(path: Path) -> list:
    import nbformat

    return nbformat.read(path, as_version=4).cells


def markdown_lines(source: str, headings_only: bool = False) -> list[str]:
    """A markdown cell's lines outside fenced code (``#`` there is a comment, not a heading)."""
    lines, fenced = [], False
    for line in source.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (not headings_only or re.match(r"#{1,2} ", line)):
            lines.append(line)
    return lines


def english_of(line: str) -> str:
    """The English of a line: a bilingual heading's second half; nothing of other Chinese."""
    if re.match(r"#+ ", line) and " / " in line:
        return line.split(" / ", 1)[1]
    return "" if CJK.search(line) else line


@functools.cache
def notebooks_text() -> str:
    """What the notebooks teach in, lower-cased: every cell in English, without the Chinese
    summaries and notes added for the course."""
    cells = [c for path in NOTEBOOKS for c in notebook_cells(path)
             if "zh-summary" not in c.metadata.get("tags", [])]  # fmt: skip
    return "\n".join(english_of(line) for c in cells for line in c.source.splitlines()).lower()


def glossary_rows() -> list[list[str]]:
    """The glossary's table rows as cells: Chinese, English, meaning, where it is taught."""
    rows = []
    for line in GLOSSARY.read_text().splitlines():
        if not line.startswith("| ") or line.startswith(("| 中文 |", "|---")):
            continue
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def english_terms(cell: str) -> list[str]:
    """``a / b (AB)`` -> ["a", "b", "AB"]: each name the notebooks should contain."""
    terms = []
    for part in cell.split(" / "):
        name, _, abbreviation = part.partition(" (")
        terms += [name.strip(), *([abbreviation.rstrip(")")] if abbreviation else [])]
    return terms


def relative_links(text: str) -> list[str]:
    found = [target.split("#")[0] for target in LINK.findall(text)]
    return [t for t in found if t and not re.match(r"[a-z]+:", t)]


def test_the_glossary_is_a_table_of_four_columns():
    rows = glossary_rows()
    assert len(rows) >= 60
    for row in rows:
        assert len(row) == 4, row
        chinese, english, meaning, where = row
        assert CJK.search(chinese) or chinese == english, row  # ReLU, softmax: the same in both
        assert english and not CJK.search(english), row
        assert CJK.search(meaning), row
        assert relative_links(where), f"{english}: where is it taught?"
    englishes = [row[1].lower() for row in rows]
    assert len(set(englishes)) == len(englishes), "a term listed twice"


def test_the_glossary_has_the_courses_core_terms():
    english = {term.lower() for row in glossary_rows() for term in english_terms(row[1])}
    core = {"convolution", "pooling", "overlapping pooling", "lrn", "dropout", "keep probability",
            "cross-entropy", "momentum", "weight decay", "kernel map", "parameters",
            "multiply-adds", "data augmentation", "learning rate", "training set",
            "validation set", "test set", "top-1 error", "top-5 error", "relu", "softmax",
            "stride", "padding", "kernel", "epoch", "batch size", "mean image",
            "colour augmentation"}  # fmt: skip
    assert core <= english, sorted(core - english)


@pytest.mark.parametrize("row", glossary_rows(), ids=lambda row: row[1])
def test_each_glossary_term_is_one_the_notebooks_use(row):
    text = notebooks_text()
    for term in english_terms(row[1]):
        assert term.lower() in text, f"{term!r} is not in the notebooks"


def section(text: str, heading: str) -> str:
    """From ``heading`` to the next heading of its level."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_the_readme_points_to_the_chinese_one_first():
    assert "[README.zh-CN.md](README.zh-CN.md)" in "\n".join(README.splitlines()[:5])
    assert "](README.md)" in "\n".join(README_ZH.read_text().splitlines()[:5])


@pytest.mark.parametrize("heading", NEWCOMER)
def test_the_chinese_readme_shows_each_newcomer_command_as_the_readme_does(heading):
    shown = shown_commands(section(README, heading))
    assert shown, f"README.md: no command under {heading}"
    missing = [command for command in shown if command not in ZH_COMMANDS]
    assert not missing, f"README.zh-CN.md lacks, or shows otherwise: {missing}"


def test_the_chinese_readme_shows_no_command_of_its_own():
    """Every line it shows is the README's, or an ``alexnet`` line (which must parse)."""
    readme = set(shown_commands(README))
    extra = [c for c in ZH_COMMANDS if c not in readme and c.split()[0] != "alexnet"]
    assert not extra, extra


@pytest.mark.parametrize("line", [c for c in ZH_COMMANDS if c.split()[0] == "alexnet"])
def test_every_alexnet_line_of_the_chinese_readme_parses(line):
    args = shlex.split(line)[1:]
    assert build_parser().parse_args(args).command == args[0]


def test_the_chinese_command_table_names_every_command():
    table = section(README_ZH.read_text(), "## 命令")
    for name, _, _ in cli_reference.commands():
        assert f"[`alexnet {name}`](docs/cli.md#alexnet-{name})" in table, name


def test_the_chinese_results_are_the_readmes():
    text = README_ZH.read_text()
    results = text[text.index("<!-- results:start -->") : text.index("<!-- results:end -->")]
    numbers = re.findall(r"\d[\d,]*(?:\.\d+)?%?", results)
    assert len(numbers) >= 15
    invented = [n for n in numbers if n not in README]
    assert not invented, f"figures the English README does not give: {invented}"


@pytest.mark.parametrize("page", [README_ZH, GLOSSARY, FROM_TF], ids=lambda p: p.name)
def test_every_relative_link_of_the_chinese_pages_exists(page):
    links = relative_links(page.read_text())
    assert links
    for target in links:
        assert (page.parent / target).is_file(), f"{page.name}: {target} does not exist"


def test_the_glossary_and_the_tensorflow_page_link_each_other():
    assert "from-tensorflow.md" in relative_links(GLOSSARY.read_text())
    assert "glossary.md" in relative_links(FROM_TF.read_text())
    zh = relative_links(README_ZH.read_text())
    assert "docs/glossary.md" in zh and "docs/from-tensorflow.md" in zh


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_opens_with_a_chinese_summary(path):
    first = notebook_cells(path)[0]
    assert first.cell_type == "markdown" and first.metadata.get("tags") == ["zh-summary"]
    text = first.source
    assert len(CJK.findall(text)) > 150, "a summary, in Chinese"
    assert "**练习**" in text, "what its exercises ask"
    assert "../docs/glossary.md" in relative_links(text)
    assert not [line for line in markdown_lines(text) if line.startswith("#")], (
        "no heading of its own"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_section_heading_is_bilingual(path):
    headings = [line for c in notebook_cells(path) if c.cell_type == "markdown"
                for line in markdown_lines(c.source, headings_only=True)]  # fmt: skip
    assert headings[0].startswith("# ") and len(headings) >= 5
    for heading in headings:
        chinese, slash, english = heading.partition(" / ")
        assert slash and CJK.search(chinese), f"{path.name}: {heading!r} is not bilingual"
        assert re.search(r"[A-Za-z]{3}", english) and not CJK.search(english), heading


@pytest.mark.parametrize("stem", ["03_activations_softmax_loss", "04_dropout_lrn_pooling"])
def test_the_tensorflow_page_is_linked_where_tensorflow_differs(stem):
    body = [c for c in notebook_cells(ROOT / "notebooks" / f"{stem}.ipynb")[1:]
            if c.cell_type == "markdown"]  # fmt: skip
    assert any("../docs/from-tensorflow.md" in relative_links(c.source) for c in body)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_relative_link_of_the_notebooks_exists(path):
    for cell in notebook_cells(path):
        if cell.cell_type == "markdown":
            for target in relative_links(cell.source):
                assert (path.parent / target).is_file(), f"{path.name}: {target} does not exist"
