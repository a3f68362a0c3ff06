"""The layering rule (pyproject.toml [tool.importlinter], docs/architecture.md) holds, fails on a
deliberately wrong import, and no import circle is left in the package (lazy imports included)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())", "--no-cache"]


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT, cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_layers_contract_is_kept():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_a_wrong_import_breaks_the_contract(tmp_path):
    """A copy of the package where the bottom layer imports the CLI: lint-imports must say so."""
    shutil.copytree(ROOT / "autointerp", tmp_path / "autointerp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    errors = tmp_path / "autointerp" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _wrong():\n    from autointerp import cli  # noqa: F401\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "autointerp.core is not allowed to import autointerp.cli" in proc.stdout, proc.stdout[-3000:]


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), on direct imports."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return out


def test_no_import_circle_is_left():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    graph = grimp.build_graph("autointerp", cache_dir=None)
    assert len(graph.modules) > 40
    # a package's __init__ importing its own modules is not a circle between modules
    circles = [c for c in _circles(graph) if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert circles == []


def test_the_job_launcher_knows_the_cli_s_command_names():
    from autointerp.cli import COMMANDS
    from autointerp.config import COMMAND_NAMES

    assert tuple(COMMANDS) == COMMAND_NAMES


def test_paths_still_point_at_the_repository_after_the_moves():
    """core/paths.py moved one folder down: the data folder (the shipped SAEs, models, runs) must
    still be the repository's, not one inside the package."""
    from autointerp.core.paths import PROJECT_ROOT, data_dir

    assert (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "autointerp" / "core").is_dir()
    assert (PROJECT_ROOT / "data" / "saes" / "smollm2-4096x32" / "resid_post.15" / "cfg.json").is_file()
    if "AUTOINTERP_DATA" not in os.environ:
        assert data_dir() == PROJECT_ROOT / "data"
