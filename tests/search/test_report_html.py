"""report.html carries what report.md does, and the CLI prints other packages' warnings once (issue 16).

One real ``edgeopt compile --int8`` of a small CNN (its convs are quantized statically by onnxruntime,
whose quantizer warns on every call), in a fresh process as a user runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = [pytest.mark.compile, pytest.mark.slow]  # compiles or trains for tens of seconds a test
torch = pytest.importorskip("torch")
pytest.importorskip("optuna")

from .conftest import TARGET_TOML  # noqa: E402 - after the pytest.importorskip guards

REPO = Path(__file__).resolve().parents[2]
TASK = """
import numpy as np, torch, edgeopt
from sklearn.datasets import load_digits
def make():
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8); y = d.target.astype(np.int64)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(32 * 64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(torch.from_numpy(X[:1000])), torch.from_numpy(y[:1000])).backward()
        opt.step()
    return edgeopt.Task(m.eval(), train=(X[:1000], y[:1000]), val=(X[1000:1400], y[1000:1400]),
                        test=(X[1400:], y[1400:]), name="cli-cnn")
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("report_html")
    (tmp / "task_def.py").write_text(textwrap.dedent(TASK))
    (tmp / "testhost.toml").write_text(TARGET_TOML.format(name="testhost", budget="model_size_mb = 0.2"))
    out = tmp / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeopt",
            "compile",
            f"{tmp / 'task_def.py'}:make",
            "--target",
            str(tmp / "testhost.toml"),
            "--out",
            str(out),
            "--int8",
            "--trials",
            "4",
            "--epochs",
            "2",
            "--final-epochs",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert r.returncode in (0, 1), r.stderr[-3000:]
    return out, r


class _Page(HTMLParser):
    """The page's headings, tables (rows of cell texts), paragraph/list texts and image names."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.texts: list[str] = []
        self.images: list[str] = []
        self._tag: str | None = None
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag == "img":
            self.images.append(dict(attrs)["alt"])
        if tag in ("h1", "h2", "h3", "td", "th", "p", "li"):
            self._tag, self._buf = tag, []

    def handle_endtag(self, tag: str) -> None:
        if tag != self._tag:
            return
        text = "".join(self._buf).strip()
        if tag in ("td", "th"):
            self.tables[-1][-1].append(text)
        elif tag.startswith("h"):
            self.headings.append(text)
        else:
            self.texts.append(text)
        self._tag = None

    def handle_data(self, data: str) -> None:
        if self._tag:
            self._buf.append(data)


def _plain(md: str) -> str:
    """A Markdown line's text as a browser shows it: no backticks, bold markers or italics underscores."""
    md = md.replace("`", "").replace("**", "")
    return md[1:-1] if md.startswith("_") and md.endswith("_") else md


def _md_tables(md: str) -> list[list[list[str]]]:
    tables, cur = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [_plain(c.strip()) for c in line.strip().strip("|").split(" | ")]
            if set(line) <= set("|-"):
                continue
            if cur is None:
                cur = []
                tables.append(cur)
            cur.append(cells)
        else:
            cur = None
    return tables


def test_html_has_every_heading_table_and_line_of_the_markdown(compiled):
    out, _ = compiled
    md = (out / "report.md").read_text()
    page = _Page()
    page.feed((out / "report.html").read_text())
    headings = [_plain(line.lstrip("#").strip()) for line in md.splitlines() if line.startswith("#")]
    assert "Per-layer tables" in headings and "Chosen plan" in headings
    assert page.headings[: len(headings)] == headings
    tables = _md_tables(md)
    assert len(tables) >= 5 and page.tables == tables  # every table, every cell, in order
    lines = [
        _plain(ln.removeprefix("- "))
        for ln in md.splitlines()
        if ln and not ln.startswith(("#", "|", "![")) and not set(ln) <= set("|-")
    ]
    missing = [ln for ln in lines if ln not in page.texts]
    assert not missing, missing
    assert any(t.startswith("Do the layers add up?") for t in page.texts)  # the additivity/fit line
    plots = re.findall(r"^!\[(.*)\]\((.*)\)$", md, flags=re.M)
    assert plots and [name for name, _ in plots] == page.images


def test_page_is_rendered_and_self_contained(compiled):
    """No Markdown left over (backticks, bold markers, table rules, image links): all of it rendered."""
    out, _ = compiled
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", (out / "report.html").read_text())
    for raw in ("`", "**", "|---", "](plots/", "<p>- ", "<p>#"):
        assert raw not in page, raw
    assert "<code>" in page and re.search(r"<ul>\s*<li>", page)


def test_cli_prints_each_third_party_warning_once(compiled):
    _, r = compiled
    assert "WARNING:root" not in r.stderr and "pre-processing" not in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if "onnxruntime" in ln]
    assert lines, r.stderr[-3000:]
    assert all(
        ln.startswith("warning from onnxruntime.quantization: ")
        and "times during the compile)" in ln
        or ln.endswith("(once during the compile)")
        for ln in lines
    ), lines
    kinds = Counter(ln.split(": ", 1)[1].rsplit(" (", 1)[0] for ln in lines)
    assert max(kinds.values()) == 1, kinds


def test_a_real_report_prints_no_negative_latency_and_names_trials_by_number(compiled):
    """Every millisecond cell of every table is a time (or says why not); trials read ``#k``, Optuna's number."""
    out, _ = compiled
    md = (out / "report.md").read_text()
    for head, *body in _md_tables(md):
        cols = [i for i, h in enumerate(head) if " ms" in f" {h}" or h == "saves"]
        cells = [r[i] for r in body for i in cols]
        assert not [c for c in cells if c.lstrip().startswith("-")], (head, cells)
        if head[0] in ("#", "trial"):
            assert all(re.fullmatch(r"#\d+", r[0]) for r in body), body
