"""Set-up files: environment.yml parses and pins what pyproject.toml pins; notebooks are clean."""
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.split("#")[0].replace(" ", "") for r in
              py["dependencies"] + py["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    got = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}
    assert got == wanted
    assert wanted["torch"] == "torch==2.14.1" and wanted["torchvision"] == "torchvision==0.29.1"
    assert "<2.4" in wanted["numpy"]


def test_four_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_train.ipynb", "02_attribute.ipynb", "03_evaluate.ipynb", "04_figures.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_clean_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        "notebooks are committed without outputs"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    # the parameters cell holds only assignments of literals
    import ast
    for stmt in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(stmt, (ast.Assign, ast.AnnAssign))
        ast.literal_eval(stmt.value)
    # Papermill sees every parameter (it silently skips a line it cannot parse, e.g. a
    # comment holding '='), so the pipeline's validation covers all of them
    import papermill as pm
    names = {t.id for stmt in ast.parse("".join(tagged[0]["source"])).body
             for t in ([stmt.target] if isinstance(stmt, ast.AnnAssign) else stmt.targets)}
    assert set(pm.inspect_notebook(str(path))) == names
    # the Colab cell installs the package in Colab only
    colab = "".join(code[0]["source"])
    assert "google.colab" in colab and "pip install" in colab
