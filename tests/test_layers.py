"""The package's layers stay in order: no import runs up them, and none goes in a circle.

Data flows one way, from dataset to partition, features, client hosts, server and then
tracking; each layer may import those below it and never one above (a function-level
import included: it is the same arrow, only later). Lower layers reach implementations
above them only through a registry (`fuss_ray.plugins`), which finds them by name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fuss_ray"

# Bottom to top; a module belongs to the layer of its longest listed prefix.
LAYERS: list[tuple[str, ...]] = [
    (
        "fuss_ray.errors",
        "fuss_ray.io",
        "fuss_ray.log",
        "fuss_ray.progress",
        "fuss_ray.seeds",
        "fuss_ray.plugins",
        "fuss_ray.config",
    ),
    ("fuss_ray.data",),
    ("fuss_ray.features",),
    ("fuss_ray.models",),
    ("fuss_ray.losses",),
    ("fuss_ray.metrics",),
    ("fuss_ray.federation",),
    ("fuss_ray.tracking",),
    ("fuss_ray.simulation",),
    ("fuss_ray.tuning", "fuss_ray.study"),
    ("fuss_ray.api", "fuss_ray.strategies", "fuss_ray.cli"),
    # The package itself: its top-level names are the Python API, imported on first use.
    ("fuss_ray",),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    best, found = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    assert found >= 0, f"{module} is in no layer: add it to LAYERS"
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported fuss_ray module, at module level (run on import), line) for one file."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit_node(sub, False)
                continue
            visit_node(child, top)

    def visit_node(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, top, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                found.append((sub if is_module else node.module, top, node.lineno))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            visit(node, top and isinstance(node, ast.ClassDef))
        else:
            visit(node, top)

    visit(tree, True)
    return [(m, top, line) for m, top, line in found if m.split(".")[0] == "fuss_ray"]


def edges() -> list[tuple[str, str, bool, int]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = module_name(path)
        out.extend((src, dst, top, line) for dst, top, line in imports(path))
    return out


def test_no_import_runs_up_the_layers() -> None:
    upward = [
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)}), line {line}"
        for src, dst, _, line in edges()
        if layer(dst) > layer(src)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    """Function-level imports included: one that runs later still closes the circle (a
    module's own parent packages excepted, which Python has imported first)."""
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in edges():
        if src != dst and not src.startswith(dst + "."):
            graph.setdefault(src, set()).add(dst)
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """It can fail: a config that imported the federation would be caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from fuss_ray.errors import UserError\n"
        "def f():\n    from fuss_ray.federation.strategies import base\n"
    )
    found = imports(bad)
    assert ("fuss_ray.federation.strategies.base", False, 3) in found
    assert layer("fuss_ray.federation.strategies.base") > layer("fuss_ray.config")
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"],
        ["d"],
    ]


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import fuss_ray.config", ("ot", "scipy", "ray", "torch", "fuss_ray.federation")),
        (
            "from fuss_ray.config import load_config; load_config(None)",
            ("ot", "scipy", "ray", "fuss_ray.tracking"),
        ),
    ],
)
def test_checking_a_config_loads_neither_pot_nor_scipy_nor_ray(
    statement: str, absent: tuple[str, ...]
) -> None:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    loaded = [m for m in out if any(m == a or m.startswith(a + ".") for a in absent)]
    assert loaded == []


# Class flags that strategies once used to tell the rest of the package what they are;
# what makes a strategy special now lives in its own file, behind `Strategy`'s hooks.
STRATEGY_FLAGS = ("federated", "pools_data", "supports_async")


def flag_reads(path: Path) -> list[str]:
    """`x.flag` reads of a strategy flag in one file, as 'file:line flag'."""
    tree = ast.parse(path.read_text())
    return [
        f"{path.name}:{node.lineno} {node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in STRATEGY_FLAGS
    ]


def test_no_strategy_flag_is_read_outside_the_strategies() -> None:
    strategies = PACKAGE / "federation" / "strategies"
    reads = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if strategies not in path.parents
        for hit in flag_reads(path)
    ]
    assert reads == []


def test_the_flag_checker_sees_a_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(s):\n    return s.strategy.pools_data\n")
    assert flag_reads(bad) == ["bad.py:2 pools_data"]


CORE_PATH = ("simulation", "federation", "study", "tuning")
MAX_FUNCTION_LINES = 60


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions of one file longer than `limit` lines, as 'file:line name (n lines)'."""
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_on_the_core_path_runs_past_sixty_lines() -> None:
    paths = [p for folder in CORE_PATH for p in sorted((PACKAGE / folder).rglob("*.py"))]
    assert len(paths) > 20
    assert [hit for path in paths for hit in long_functions(path)] == []


def test_the_length_checker_counts_lines(tmp_path: Path) -> None:
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 3)
    assert long_functions(long, limit=3) == ["long.py:1 f (4 lines)"]
    assert long_functions(long, limit=4) == []
