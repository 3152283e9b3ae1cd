"""The four notebooks as a user runs them: with their default parameters, from `notebooks/` (where
`make lab` opens them) and from the repository root, their files land in the repository's
`results/` and `figures/`, never in the kernel's working directory."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import papermill as pm

from notebook_copy import NOTEBOOKS, SMALL, copy_repository, python_path


def _run(notebook: Path, cwd: Path, out: Path, params: dict) -> None:
    """Run a notebook with papermill in ``cwd``, as JupyterLab would there (the kernel inherits
    this process's environment)."""
    pm.execute_notebook(str(notebook), str(out), parameters=params, cwd=str(cwd), kernel_name="python3",
                        progress_bar=False)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_the_notebooks_write_under_the_repository_wherever_they_run(tmp_path, monkeypatch):
    repo = copy_repository(tmp_path / "repo")
    for name in ("XAI_RESULTS", "XAI_FIGURES", "XAI_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", python_path(repo))
    executed = tmp_path / "executed"
    executed.mkdir()
    seen = {}
    for cwd in (repo / "notebooks", repo):
        for notebook in NOTEBOOKS:
            params = {"overrides": SMALL} if notebook == "01_train" else {}
            _run(repo / "notebooks" / f"{notebook}.ipynb", cwd, executed / f"{cwd.name}-{notebook}.ipynb", params)
        # nothing beside the notebooks or in the working directory but what was there
        assert _files(repo / "notebooks") == {f"{n}.ipynb" for n in NOTEBOOKS}
        assert sorted(p.name for p in repo.iterdir()) == ["configs", "figures", "notebooks", "results", "xai_utils"]
        seen[cwd] = (_files(repo / "results"), _files(repo / "figures"))

    run = repo / "results" / "smoke" / "shapes" / "ce" / "seed0"
    assert (run / "model.pt").is_file() and (run / "attributions" / "gradcam.npz").is_file()
    assert (run / "pairs" / "pair_gradcam.npz").is_file()
    results = pd.read_csv(run / "results.csv", keep_default_na=False)
    assert set(results["metric"]) >= {"pixel_flipping", "complexity", "pointing_game"}
    assert results["sample_index"].nunique() == SMALL["eval_samples"]
    figures = repo / "figures" / "smoke"
    assert (figures / "table_accuracy.csv").is_file() and (figures / "table_accuracy.md").is_file()
    assert any(figures.glob("fig_*.png"))
    # from the repository root the notebooks find the same run and write the same files
    first, second = seen.values()
    assert first == second
    # and the notebooks printed the folder they used: the copy's, as the kernels imported it
    printed = (executed / "notebooks-02_attribute.ipynb").read_text()
    assert f"run folder: {run}" in printed
