"""Chapter 6 reads at 1280 pixels (issue 18): its code fits the book's column.

At 1280 pixels a code cell's box in the book's content column is 672 pixels wide and holds 75
characters of its 14-pixel monospace: measured in headless Chromium on the built chapter, a
line of 75 characters fits (scrollWidth 672), 76 overflow by 1 pixel and 77 by 9 (a scroll bar
and a cut-off line). The chapter's printed output is kept as narrow by the code that prints it
(``ProgramReport.table``, ``textwrap``), and its figures are drawn 6.9 inches wide with text at
the body size (``tests/test_bench.py``, ``tests/test_analysis_width.py``)."""

import json
from pathlib import Path

CHAPTER = Path(__file__).resolve().parents[1] / "notebooks" / "06_export_and_inspection.ipynb"
COLUMN = 75  # characters of a code line in the book's column at 1280 pixels


def test_chapter_6_code_lines_fit_the_column():
    cells = json.loads(CHAPTER.read_text())["cells"]
    long = [(i, len(line), line) for i, cell in enumerate(cells) if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if len(line) > COLUMN]
    assert long == [], f"{len(long)} code lines longer than {COLUMN} characters: {long[:3]}"
