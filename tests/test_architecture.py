"""The house: layers, module sizes, no import cycles, a pure core, one api-version constant."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
CODE_DIRS = ("replay", "analysis")


def python_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in python_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these where their concerns part: {long}"


def test_lint_imports_keeps_the_layers() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph("replay", "analysis", cache_dir=None)
    modules = sorted(graph.modules)
    # Tarjan's strongly connected components over "imports" edges between modules.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in graph.modules:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in modules:
        if module not in index:
            visit(module)
    assert cycles == [], f"import cycles: {cycles}"


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) for every import in a file."""
    found: list[tuple[str, int, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, child.lineno, in_function))
            walk(child, nested)

    walk(ast.parse(path.read_text()), False)
    return found


@pytest.mark.parametrize("banned", ["aiohttp", "pyarrow", "pandas", "numpy", "replay.clock"])
def test_the_core_imports_no_io_library_and_reads_no_clock(banned: str) -> None:
    for path in (ROOT / "replay" / "core").glob("*.py"):
        for module, line, _ in _imports(path):
            assert not (module == banned or module.startswith(banned + ".")), f"{path}:{line}"
        text = path.read_text()
        for call in ("time.monotonic", "time.time(", "datetime.now(", "asyncio.sleep("):
            assert call not in text, f"{path} reads the clock ({call})"


def test_only_the_cli_imports_inside_functions() -> None:
    """Outside the CLI (which loads heavy libraries per command so --help stays fast), imports
    sit at the top: an import inside a function is how a cycle hides."""
    inside = [
        f"{path.relative_to(ROOT)}:{line} {module}"
        for path in python_files()
        if "cli" not in path.relative_to(ROOT).parts
        for module, line, in_function in _imports(path)
        if in_function and module.startswith(("replay", "analysis"))
    ]
    assert inside == []


def test_the_newest_api_version_is_written_once() -> None:
    """One constant (replay.core.imds.LATEST_VERSION); other modules refer to it."""
    from replay.core.imds import LATEST_VERSION

    places = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in python_files()
        if path != ROOT / "replay" / "core" / "imds.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(re.escape(LATEST_VERSION), line)
    ]
    assert places == []


def test_every_subpackage_says_what_it_owns_and_may_import() -> None:
    for init in sorted((ROOT / "replay").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init} has no docstring"
        assert "May import" in doc, f"{init} does not say what it may import"


def test_the_public_api_resolves() -> None:
    import replay

    for name in replay.__all__:
        assert getattr(replay, name) is not None, name
