"""report.html: report.md rendered by markdown-it-py (CommonMark with tables, raw HTML off), on one
self-contained page: the CSS inline, each plot embedded as a ``data:`` PNG, the headline coloured by the verdict."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from edgeopt.report.markdown import headline, render_markdown

_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}.pass{color:#1a7f37}.fail{color:#c62828}
code{background:#f5f5f5;padding:1px 4px}"""


def render_html(rep: dict[str, Any], out: Path) -> str:
    """A self-contained page of the same blocks as ``report.md``."""
    title = f"edgeopt — {html.escape(rep['task']['name'])} on {html.escape(rep['target']['name'])}"
    passed = rep["best"]["budget"]["passed"]
    body = markdown_to_html(render_markdown(rep), out, highlight=headline(rep), css_class="pass" if passed else "fail")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>\n"
        f"<style>{_CSS}</style></head><body>\n{body}</body></html>\n"
    )


def markdown_to_html(text: str, out: Path, *, highlight: str = "", css_class: str = "") -> str:
    """``text`` (CommonMark with tables) as HTML; images under ``out`` inlined, the paragraph ``highlight``
    given ``css_class``."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for i, token in enumerate(tokens):
        if token.type == "paragraph_open" and highlight and tokens[i + 1].content == highlight:
            token.attrSet("class", css_class)
        for child in token.children or []:
            if child.type == "image":
                child.attrSet("src", _data_uri(out, str(child.attrGet("src"))))
    return md.renderer.render(tokens, md.options, {})


def _data_uri(out: Path, rel: str) -> str:
    """The PNG at ``out/rel`` as a ``data:`` URI; the relative path when the file is missing (nothing to embed)."""
    path = out / rel
    if not path.is_file():
        return rel
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
