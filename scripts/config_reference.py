"""Write docs/configuration.md from the settings' declarations (edgeopt/pipeline/config.py).

    python -m scripts.config_reference          # rewrite the file
    python -m scripts.config_reference --check  # exit 1 when the file is not what the declarations say

The reference is generated, not written by hand, so it cannot drift from the flags and the TOML keys.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _default(f: dataclasses.Field) -> str:
    value = f.default if f.default is not dataclasses.MISSING else None
    if value is None:
        return "—"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _spec(spec: object) -> str:
    kind = getattr(spec, "kind", "")
    parts = [kind]
    if getattr(spec, "choices", ()):
        parts = [" \\| ".join(f"`{c}`" for c in spec.choices)]
    lo, hi = getattr(spec, "minimum", None), getattr(spec, "maximum", None)
    if lo is not None:
        parts.append(f"{'>' if spec.min_exclusive else '≥'} {lo}")
    if hi is not None:
        parts.append(f"{'<' if spec.max_exclusive else '≤'} {hi}")
    return ", ".join(p for p in parts if p)


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "`")


def render() -> str:
    from edgeopt.pipeline.config import SECTIONS

    lines = [
        "# Configuration reference",
        "",
        "Generated from the declarations in `edgeopt/pipeline/config.py` by `python -m scripts.config_reference`",
        "(a test checks that this file is current). Every compile writes its resolved configuration to",
        "`OUT/compile.toml`; `edgeopt compile --config FILE.toml` reads such a file, and flags override it.",
        "In Python: `edgeopt.compile(task, target, CompileConfig(...))` or the same names as keywords.",
        "",
    ]
    for section in SECTIONS:
        lines += [f"## `[{section.name}]`", "", _first_paragraph(section.__doc__), ""]
        lines += ["| key | flag | type | default | what |", "|---|---|---|---|---|"]
        for f in dataclasses.fields(section):
            md = f.metadata
            if not md or not md.get("saved", True):
                continue
            flags = ", ".join(f"`{x}`" for x in md.get("flags", ())) or "—"
            doc = str(md.get("doc", "")).replace("|", "\\|").replace("%%", "%")
            lines.append(f"| `{f.name}` | {flags} | {_spec(md.get('spec'))} | {_default(f)} | {doc} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python -m scripts.config_reference", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
