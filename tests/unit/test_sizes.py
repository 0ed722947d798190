"""Files and functions stay small enough to read in one sitting: no Python or Go file over 500 lines, no function
over 60 (counted from its first statement, after the docstring, to its last line). A function that must be longer
goes in EXCEPTIONS with its reason; today there is none."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
EXCEPTIONS: dict[str, str] = {}  # "path:function" -> why it is longer


def _tracked(*suffixes: str) -> list[Path]:
    """The project's own files (no git here: the fast layer runs with only the venv on PATH): hidden dirs such as
    .venv and .git, and build output, left out."""
    skip = {"target", "node_modules", "__pycache__", "build", "dist"}
    found = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT).parts
        if any(part.startswith(".") or part in skip for part in rel[:-1]):
            continue
        if path.suffix in suffixes and path.is_file() and not path.is_symlink():
            found.append(path)
    return found


def _python_functions(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            found.append((node.name, (node.end_lineno or node.lineno) - body[0].lineno + 1))
    return found


GO_FUNC = re.compile(r"^func (?:\([^)]*\) )?(\w+)")


def _go_functions(path: Path) -> list[tuple[str, int]]:
    """gofmt puts a top-level func's closing brace alone in column 0: the lines between are its body."""
    found, name, start = [], "", 0
    for i, line in enumerate(path.read_text().splitlines()):
        m = GO_FUNC.match(line)
        if m and not line.rstrip().endswith("}"):
            name, start = m.group(1), i
        elif line == "}" and name:
            found.append((name, i - start - 1))
            name = ""
    return found


def test_no_file_is_over_500_lines() -> None:
    files = _tracked(".py", ".go")
    assert files
    long = {str(f.relative_to(ROOT)): n for f in files if (n := len(f.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for f in _tracked(".py", ".go"):
        rel = str(f.relative_to(ROOT))
        for name, lines in (_python_functions(f) if f.suffix == ".py" else _go_functions(f)):
            if lines > MAX_FUNCTION_LINES and f"{rel}:{name}" not in EXCEPTIONS:
                long[f"{rel}:{name}"] = lines
    assert long == {}


def test_the_counters_see_long_functions(tmp_path: Path) -> None:
    py = tmp_path / "long.py"
    py.write_text("def f():\n    '''doc'''\n" + "    x = 1\n" * 61)
    go = tmp_path / "long.go"
    go.write_text("package x\n\nfunc (s *T) f() {\n" + "\tx := 1\n" * 61 + "}\n\nfunc g() {}\n")
    assert _python_functions(py) == [("f", 61)]
    assert _go_functions(go) == [("f", 61)]
