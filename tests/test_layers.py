"""The layering rule (pyproject.toml [tool.importlinter], docs/architecture.md) holds, fails on a
deliberately wrong import, no import circle is left in the package (lazy imports included), no
private name crosses a module, and the tests mirror the package's folders."""

import ast
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
    assert "2 kept, 0 broken" in proc.stdout


def _lint_with(tmp_path: Path, module: str, wrong_import: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the package where `module` (a path under autointerp/) gains one import."""
    shutil.copytree(ROOT / "autointerp", tmp_path / "autointerp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "autointerp" / module
    path.write_text(path.read_text() + f"\n\ndef _wrong():\n    {wrong_import}  # noqa: F401\n")
    return _lint(tmp_path)


def test_a_wrong_import_breaks_the_contract(tmp_path):
    """A copy of the package where the bottom layer imports the CLI: lint-imports must say so."""
    proc = _lint_with(tmp_path, "core/errors.py", "from autointerp import cli")
    assert proc.returncode != 0
    assert "autointerp.core is not allowed to import autointerp.cli" in proc.stdout, proc.stdout[-3000:]


def test_a_stage_importing_a_runner_or_the_job_launcher_breaks_the_contracts(tmp_path):
    """A scorer reaching up into the runners breaks the layers; one launching jobs (a lower layer,
    so the layers alone allow it) breaks the forbidden contract."""
    proc = _lint_with(tmp_path, "score/classify.py", "from autointerp.runs import executor")
    assert proc.returncode != 0
    assert "autointerp.score is not allowed to import autointerp.runs" in proc.stdout, proc.stdout[-3000:]
    shutil.rmtree(tmp_path / "autointerp")
    proc = _lint_with(tmp_path, "score/classify.py", "from autointerp import jobs")
    assert proc.returncode != 0
    assert "stages do not import jobs BROKEN" in proc.stdout, proc.stdout[-3000:]
    assert "autointerp.score.classify -> autointerp.jobs" in proc.stdout, proc.stdout[-3000:]


def private_imports(package: Path) -> list[str]:
    """`from autointerp.x import _name` anywhere in the package: a private name crossing modules."""
    out = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autointerp"):
                out += [f"{path.relative_to(package.parent)}:{node.lineno} {node.module}.{a.name}"
                        for a in node.names if a.name.startswith("_")]
    return out


def test_no_private_name_is_imported_across_modules(tmp_path):
    assert private_imports(ROOT / "autointerp") == []
    # and the check sees one when there is one
    (tmp_path / "autointerp").mkdir()
    (tmp_path / "autointerp" / "m.py").write_text("from autointerp.runs.executor import _cause\n")
    assert private_imports(tmp_path / "autointerp") == ["autointerp/m.py:1 autointerp.runs.executor._cause"]


def test_the_tests_mirror_the_package_s_folders():
    """Every folder of the package has a folder of tests of the same name (e2e and the top-level
    tests cover the CLI, the demo, the README and this rule), and no test folder names a folder
    the package does not have."""
    package = {p.name for p in (ROOT / "autointerp").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    tests = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert package - tests == set(), f"package folders without tests: {sorted(package - tests)}"
    assert tests - package == {"e2e"}, f"test folders naming no package folder: {sorted(tests - package - {'e2e'})}"
    for folder in tests - {"e2e"}:
        assert list((ROOT / "tests" / folder).glob("test_*.py")), f"tests/{folder} has no test file"


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


def missing_names(files: list[Path]) -> list[str]:
    """Names that `from autointerp.x import name` asks for and the module does not have."""
    import importlib

    out = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autointerp"):
                module = importlib.import_module(node.module)
                for a in node.names:
                    if not hasattr(module, a.name):
                        try:
                            importlib.import_module(f"{node.module}.{a.name}")
                        except ImportError:
                            out.append(f"{path.name}:{node.lineno} {node.module}.{a.name}")
    return out


def test_bench_scripts_and_pages_import_what_the_package_has(tmp_path):
    """bench/ and the pages are not run by every test: a moved or renamed name must not leave them
    importing something that no longer exists."""
    files = sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    assert missing_names(files) == []
    # and the check sees a missing name (bench/intruder.py imported one the registry step removed)
    wrong = tmp_path / "old_bench.py"
    wrong.write_text("from autointerp.score.intruder import INTRUDER_CHANCE\n")
    assert missing_names([wrong]) == ["old_bench.py:1 autointerp.score.intruder.INTRUDER_CHANCE"]
