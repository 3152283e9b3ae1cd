"""The package's floors: layers that import only from below (the import-linter contract of
pyproject.toml), no import cycle, and imports inside functions only with a stated reason."""
import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "xai_utils"
# import-linter's command, through this interpreter (its console script may not be on PATH)
LINT_IMPORTS = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
MAX_FUNCTION_IMPORTS = 10


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted((root / "xai_utils").rglob("*.py")):
        parts = p.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _package_imports(root: Path) -> list[tuple[str, str, bool, int, str]]:
    """(module, imported package module, inside a function, line, source line) for every
    import statement of the package, those inside functions included."""
    mods = _modules(root)
    out = []
    for name, path in mods.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if n is not f}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    out.append((name, target, id(node) in in_function, node.lineno, lines[node.lineno - 1]))
    return out


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    edges: dict[str, set[str]] = {}
    for source, target, _, _, _ in _package_imports(ROOT):
        edges.setdefault(source, set()).add(target)
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_inside_functions_are_few_and_give_their_reason():
    inner = [(m, t, line, src) for m, t, inside, line, src in _package_imports(ROOT) if inside]
    assert len(inner) <= MAX_FUNCTION_IMPORTS, inner
    for module, target, line, src in inner:
        assert re.search(r"#\s*reason:\s*\S", src), f"{module}:{line} imports {target} inside a function without '# reason:'"


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([*LINT_IMPORTS, "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contract_holds():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module, upward, contract", [
    ("xai_utils/study/models.py", "from ..stages.files import save_json", "xai_utils.study is not allowed to import xai_utils.stages"),
    ("xai_utils/ops/metrics/spec.py", "from ..pairs import PAIR_METRICS", "xai_utils.ops.metrics is not allowed to import xai_utils.ops.pairs"),
    ("xai_utils/ops/losses.py", "import pandas", "xai_utils.ops is not allowed to import pandas"),
])
def test_an_upward_import_breaks_the_contract_and_is_named(tmp_path, module, upward, contract):
    shutil.copytree(PACKAGE, tmp_path / "xai_utils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    text = path.read_text()
    head, sep, rest = text.partition("\nimport torch\n")
    path.write_text(head + sep + upward + "\n" + rest)
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert contract in res.stdout, res.stdout[-3000:]
    assert module.removesuffix(".py").replace("/", ".") in res.stdout          # the importing module, named
