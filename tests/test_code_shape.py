"""The code's shape, checked: no import cycle inside edgeopt (imports inside functions count), and no
function longer than a screen. Both are read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgeopt"
MAX_FUNCTION_LINES = 60  # one screen


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes inside ``if TYPE_CHECKING:`` blocks (they never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def import_graph() -> dict[str, set[str]]:
    """module -> edgeopt modules it imports anywhere (top level or inside functions)."""
    mods = _modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, (path, tree) in mods.items():
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                # `from pkg import mod` imports the submodule when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles_counting_imports_inside_functions():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_no_function_is_longer_than_a_screen():
    long = []
    for name, (_path, tree) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {sorted(long)}"


MAX_MODULE_LINES = 400
# The runtime half runs on devices with only onnxruntime, numpy and psutil: it may import the shared
# leaf modules and itself, never the compiler, the search, the compile pipeline or the report.
RUNTIME = "edgeopt.runtime"
RUNTIME_MAY_IMPORT = ("edgeopt.runtime", "edgeopt.errors", "edgeopt._validate", "edgeopt._io", "edgeopt._version")


def dynamic_imports() -> dict[str, set[str]]:
    """module -> edgeopt modules named by a string constant (``importlib.import_module("edgeopt.x")``,
    ``-m edgeopt.x``, a lazy table): an import the ``import`` statements do not show."""
    mods = _modules()
    found: dict[str, set[str]] = {name: set() for name in mods}
    for name, (_path, tree) in mods.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("edgeopt."):
                t = node.value
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and t != "edgeopt":
                    found[name].add(t)
    return found


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, targets in graph.items():
        if name == RUNTIME or name.startswith(RUNTIME + "."):
            bad += [f"{name} -> {t}" for t in sorted(targets) if not t.startswith(RUNTIME_MAY_IMPORT)]
    return bad


def test_layering_rule_sees_a_violation():
    assert layering_violations({"edgeopt.runtime.bench": {"edgeopt.compiler.export", "edgeopt._io"}}) == [
        "edgeopt.runtime.bench -> edgeopt.compiler.export"
    ]


def test_the_runtime_never_imports_the_compiler_half_not_even_through_importlib():
    graph = import_graph()
    for name, targets in dynamic_imports().items():
        graph[name] |= targets
    bad = layering_violations(graph)
    assert not bad, f"the runtime half imports the compiler half: {bad}"


def test_no_module_is_longer_than_400_lines():
    long = []
    for name, (path, _tree) in _modules().items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            long.append(f"{name}: {n} lines")
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {sorted(long)}"
