"""Chapter 6 reads at 1280 pixels (issue 18): its code fits the book's column.

At 1280 pixels the book's content column is 688 pixels wide and a code line holds 77
characters (14-pixel monospace, measured in headless Chromium); a longer line is cut off at the
right edge. The chapter's printed output is kept as narrow by the code that prints it
(``ProgramReport.table``, ``textwrap``), and its figures are drawn 6.9 inches wide with text at
the body size (``tests/test_bench.py``, ``tests/test_analysis_width.py``)."""

import json
from pathlib import Path

CHAPTER = Path(__file__).resolve().parents[1] / "notebooks" / "06_export_and_inspection.ipynb"
COLUMN = 77  # characters of a code line in the book's column at 1280 pixels


def test_chapter_6_code_lines_fit_the_column():
    cells = json.loads(CHAPTER.read_text())["cells"]
    long = [(i, len(line), line) for i, cell in enumerate(cells) if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if len(line) > COLUMN]
    assert long == [], f"{len(long)} code lines longer than {COLUMN} characters: {long[:3]}"
