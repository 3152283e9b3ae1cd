"""Set-up files: pyproject.toml states ranges, requirements.lock is the exact environment within
them, environment.yml installs that lock; notebooks are clean and install without replacing
Colab's torch."""
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith((" ", "#")):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.+!]+", version.strip()), f"not an exact pin: {line!r}"
            pins[_canonical(name)] = Version(version.strip())
    return pins


def _requirements() -> list[Requirement]:
    extras = PROJECT["optional-dependencies"]
    return [Requirement(r) for r in PROJECT["dependencies"] + extras["dev"] + extras["lab"]]


def test_pyproject_states_ranges_not_pins():
    core = [Requirement(r) for r in PROJECT["dependencies"]]
    assert all(not any(s.operator in ("==", "===") for s in r.specifier) for r in core)
    assert PROJECT["license"] == "MIT"                      # an SPDX expression, not a table


def test_the_lock_pins_every_requirement_within_its_range():
    pins = _lock()
    for req in _requirements():
        name = _canonical(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock: run make lock"
        assert pins[name] in req.specifier, f"requirements.lock has {req.name}=={pins[name]}, outside {req}"
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")
    assert len(pins) > 100                                   # every package of the environment, not only ours


def test_a_version_outside_the_range_would_be_caught():
    assert Version("2.4.0") not in Requirement("numpy<2.4").specifier
    assert Version("2.5.1") not in Requirement("torch>=2.6,<3").specifier


def test_environment_yml_installs_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["-r requirements.lock", "-e ."]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    make = (ROOT / "Makefile").read_text()
    assert f"Python {python.split('=')[1]}" in make           # the lock's platform in the Makefile
    assert f"--python-version {python.split('=')[1]}." in make


def test_colab_cell_keeps_colabs_torch():
    """The notebooks install the package with its ranges (pip keeps an installed torch that
    satisfies them), never the lock."""
    for path in NOTEBOOKS:
        colab = "".join(json.loads(path.read_text())["cells"][1]["source"])
        assert "google.colab" in colab and "pip install" in colab and "requirements.lock" not in colab


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
