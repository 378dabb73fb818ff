"""The compile report: ``report.json`` (schema ``edgeopt.report/1``), ``report.md``, a self-contained
``report.html`` and ``plots/*.png``, all rebuilt from the study and ``compile.json`` by ``edgeopt report DIR``.

- :mod:`~edgeopt.report.build`: report.json's data (entries, layers, search summary), written with its renderings.
- :mod:`~edgeopt.report.tables`: every table as rows, rendered alike to Markdown, HTML and the terminal.
- :mod:`~edgeopt.report.markdown`: report.md, one list of blocks; :mod:`~edgeopt.report.html` renders it
  with markdown-it-py. :mod:`~edgeopt.report.plots`: the figures.
"""

from __future__ import annotations

from edgeopt.report._text import change, render_text_table
from edgeopt.report.build import SCHEMA, artifact_entry, build, layer_breakdown, quality_check, rebuild, write_report
from edgeopt.report.markdown import headline, render_markdown
from edgeopt.report.tables import budget_rows, comparison_rows

__all__ = [
    "SCHEMA",
    "artifact_entry",
    "budget_rows",
    "build",
    "change",
    "comparison_rows",
    "headline",
    "layer_breakdown",
    "quality_check",
    "rebuild",
    "render_markdown",
    "render_text_table",
    "write_report",
]
