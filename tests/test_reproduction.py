"""Does a reproduction agree with the study? The comparison of two figures folders (cells,
tolerances, verdicts, exit status) and the fingerprint of the machine each number was made on."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from xai_utils import reproduction as cli
from xai_utils.analysis import reproduction as R
from xai_utils.analysis.reproduction_report import report_markdown
from xai_utils.stages import fingerprint as F

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- a small study's tables

def _metrics(ce=0.20, scl=0.30, ce_std=0.01, scl_std=0.02, n=3) -> pd.DataFrame:
    return pd.DataFrame([
        {"method": "gradcam", "facet": "faithfulness", "metric": "pixel_flipping", "direction": "lower",
         "dataset": "fashion_mnist", "ce_mean": ce, "ce_std": ce_std, "ce_n_seeds": n, "scl_mean": scl,
         "scl_std": scl_std, "scl_n_seeds": n, "best": "ce" if ce < scl else "scl"},
        {"method": "gradcam", "facet": "complexity", "metric": "complexity", "direction": "lower",
         "dataset": "fashion_mnist", "ce_mean": 6.8, "ce_std": 0.05, "ce_n_seeds": n, "scl_mean": 6.3,
         "scl_std": 0.04, "scl_n_seeds": n, "best": "scl"}])


def _claim(holds="no (CE better)", p=1e-8, model=(0.10, 0.06, 0.14), model_holds="no (CE better)",
           n_seeds=3) -> pd.DataFrame:
    diff, low, high = model
    return pd.DataFrame([
        {"dataset": "fashion_mnist", "method": "gradcam", "facet": "faithfulness", "metric": "pixel_flipping",
         "protocol": "corrected", "order": "CE < SCL", "mean_scl": 0.30, "mean_ce": 0.20, "diff": diff,
         "d_z": 0.9, "p_holm": p, "n_pairs": 100, "holds": holds, "n_seeds": n_seeds, "model_diff": diff,
         "model_ci_low": low, "model_ci_high": high, "seeds_favouring": 0, "model_holds": model_holds,
         "random": np.nan, "real_minus_random": np.nan},
        {"dataset": "fashion_mnist", "method": "gradcam", "facet": "complexity", "metric": "complexity",
         "protocol": "corrected", "order": "SCL < CE", "mean_scl": 6.3, "mean_ce": 6.8, "diff": -0.5,
         "d_z": -5.0, "p_holm": 1e-30, "n_pairs": 100, "holds": "yes", "n_seeds": n_seeds, "model_diff": -0.5,
         "model_ci_low": -0.55, "model_ci_high": -0.45, "seeds_favouring": 3, "model_holds": "yes",
         "random": np.nan, "real_minus_random": np.nan}])


def _folder(path: Path, profile: str = "mini", metrics=None, claim=None, extra: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (metrics if metrics is not None else _metrics()).to_csv(path / "table_attribution_metrics.csv", index=False)
    (claim if claim is not None else _claim()).to_csv(path / "table_claim_robustness.csv", index=False)
    for name, df in (extra or {}).items():
        df.to_csv(path / f"{name}.csv", index=False)
    (path / "coverage.json").write_text(json.dumps({"profile": profile, "covered": [], "expected": [], "missing": []}))
    return path


def _cells(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "reproduction.csv")


# ----------------------------------------------------------------------------- identical, agreeing, differing

def test_the_committed_quick_study_against_a_copy_of_itself_is_identical(tmp_path, capsys):
    copy = tmp_path / "quick"
    shutil.copytree(ROOT / "figures" / "quick", copy)
    assert cli.main([str(ROOT / "figures" / "quick"), str(copy)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("reproduction of 'quick': identical (7 tables"), line
    assert "## Tables" in (copy / "reproduction.md").read_text()


def test_the_quick_study_made_on_another_cpu_kind_names_the_verdicts_that_changed(tmp_path, capsys):
    """figures/reproductions/quick-intel-xeon: the quick study's tables made on an Intel Xeon
    (the committed ones: an AMD EPYC at AVX512). The changed claim verdicts, counted here by a
    merge of the two tables, are the ones the comparison names."""
    other = tmp_path / "quick-intel-xeon"
    shutil.copytree(ROOT / "figures" / "reproductions" / "quick-intel-xeon", other)
    assert cli.main([str(ROOT / "figures" / "quick"), str(other)]) == 1
    keys = ["dataset", "method", "metric", "protocol"]
    both = pd.read_csv(ROOT / "figures" / "quick" / "table_claim_robustness.csv").merge(
        pd.read_csv(other / "table_claim_robustness.csv"), on=keys, suffixes=("_ref", "_rep"))
    flipped = {"/".join(r) for r in both.loc[both["holds_ref"] != both["holds_rep"], keys].itertuples(index=False)}
    cells = _cells(other)
    named = cells[(cells["table"] == "table_claim_robustness") & (cells["status"] == "changed")]
    assert set(named["row"]) == flipped and len(flipped) == 10
    assert "fashion_mnist/eigencam/road_morf[calibrated]/corrected" in flipped
    assert "Verdicts that changed" in (other / "reproduction.md").read_text()


def test_a_number_beyond_its_tolerance_and_a_flipped_verdict_are_named_and_exit_1(tmp_path, capsys):
    ref = _folder(tmp_path / "ref")
    rep = _folder(tmp_path / "rep", metrics=_metrics(ce=0.25, scl=0.305), claim=_claim(holds="no (n.s.)", p=0.4))
    assert cli.main([str(ref), str(rep)]) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "outside their tolerance" in line and "1 changed" in line, line
    cells = _cells(rep).set_index(["table", "column", "row"])
    pf = "fashion_mnist/gradcam/pixel_flipping"
    assert cells.loc[("table_attribution_metrics", "ce_mean", pf), "status"] == "outside"
    assert cells.loc[("table_attribution_metrics", "scl_mean", pf), "status"] == "within"
    assert cells.loc[("table_claim_robustness", "holds", pf + "/corrected"), "status"] == "changed"
    md = (rep / "reproduction.md").read_text()
    assert "## Verdicts that changed" in md and "no (CE better)" in md and "no (n.s.)" in md
    assert "## Numbers outside their tolerance" in md and "ce_mean" in md


def test_moves_within_the_seed_variation_agree_with_exit_0(tmp_path, capsys):
    ref = _folder(tmp_path / "ref")
    rep = _folder(tmp_path / "rep", metrics=_metrics(ce=0.205, scl=0.31), claim=_claim(p=1e-6))
    assert cli.main([str(ref), str(rep)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.endswith(": agrees") and "0 outside" in line and "0 changed" in line, line


def test_two_profiles_are_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    ref, rep = _folder(tmp_path / "ref", "quick"), _folder(tmp_path / "rep", "seeds")
    assert cli.main([str(ref), str(rep)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1 and "'quick'" in out.err and "'seeds'" in out.err
    assert not list(tmp_path.rglob("reproduction.*"))
    assert cli.main([str(ref), str(tmp_path / "absent")]) == 2
    assert not list(tmp_path.rglob("reproduction.*"))


def test_a_table_on_one_side_only_is_listed_not_an_error(tmp_path, capsys):
    extra = {"table_accuracy": pd.DataFrame([{"dataset": "fashion_mnist", "quantity": "test_accuracy",
                                              "ce_mean": 85.0, "ce_std": 0.5, "ce_n_seeds": 3}])}
    ref, rep = _folder(tmp_path / "ref"), _folder(tmp_path / "rep", extra=extra)
    assert cli.main([str(ref), str(rep)]) == 0          # a table the reference lacks: listed, agrees
    assert "| table_accuracy | only in the reproduction |" in (rep / "reproduction.md").read_text()
    assert cli.main([str(rep), str(ref)]) == 1          # the reference's table was not reproduced
    assert "| table_accuracy | only in the reference |" in (ref / "reproduction.md").read_text()


def test_a_folder_made_before_the_model_level_columns_is_compared(tmp_path):
    old = ROOT / "figures" / "extensions"                # no model-level columns, no fingerprints
    rep = tmp_path / "extensions"
    shutil.copytree(old, rep)
    df = pd.read_csv(rep / "table_attribution_metrics.csv")
    df.loc[0, "ce_mean"] += 10 * df.loc[0, "ce_std"]
    df.to_csv(rep / "table_attribution_metrics.csv", index=False)
    c = R.compare_folders(old, rep)
    moved = c.cells[c.cells["status"] != "equal"]
    assert list(moved["column"]) == ["ce_mean"] and list(moved["status"]) == ["outside"]
    assert "not recorded" in report_markdown(c)


# ----------------------------------------------------------------------------- tolerances, against scipy

@pytest.mark.parametrize("s1, n1, s2, n2", [(0.01, 3, 0.02, 5), (0.3, 2, 0.3, 2), (1.0, 5, 0.1, 4)])
def test_the_welch_tolerance_is_where_welchs_test_reaches_p_0_05(s1, n1, s2, n2):
    tol = R.welch_tolerance(s1 ** 2 / n1, n1 - 1, s2 ** 2 / n2, n2 - 1)
    p = sps.ttest_ind_from_stats(0.0, s1, n1, tol, s2, n2, equal_var=False).pvalue
    assert p == pytest.approx(0.05, abs=1e-9)


def test_each_cells_tolerance_equals_a_literal_computation(tmp_path):
    ref = _folder(tmp_path / "ref", claim=_claim(model=(0.10, 0.06, 0.14)))
    rep = _folder(tmp_path / "rep", metrics=_metrics(ce=0.21, ce_std=0.02, n=4),
                  claim=_claim(model=(0.12, 0.07, 0.17)))
    cells = R.compare_folders(ref, rep).cells.set_index(["table", "column", "row"])
    pf = "fashion_mnist/gradcam/pixel_flipping"
    # an objective's mean: Welch with each side's std over its seeds
    v1, v2 = 0.01 ** 2 / 3, 0.02 ** 2 / 4
    nu = (v1 + v2) ** 2 / (v1 ** 2 / 2 + v2 ** 2 / 3)
    expected = sps.t.ppf(0.975, nu) * np.sqrt(v1 + v2)
    assert cells.loc[("table_attribution_metrics", "ce_mean", pf), "tolerance"] == pytest.approx(expected)
    # a difference with a model-level interval on both sides: the half-widths in quadrature
    row = pf + "/corrected"
    assert cells.loc[("table_claim_robustness", "model_diff", row), "tolerance"] == pytest.approx(np.hypot(0.04, 0.05))
    # a standardised effect: its difference's tolerance times |d_z / diff| (0.9 / 0.10)
    assert cells.loc[("table_claim_robustness", "d_z", row), "tolerance"] == pytest.approx(np.hypot(0.04, 0.05) * 9)


def test_a_difference_without_an_interval_combines_both_objectives_spreads(tmp_path):
    nan3 = (0.10, np.nan, np.nan)
    ref = _folder(tmp_path / "ref", claim=_claim(model=nan3, model_holds="too few seeds"))
    rep = _folder(tmp_path / "rep", claim=_claim(model=(0.11, np.nan, np.nan), model_holds="too few seeds"))
    cells = R.compare_folders(ref, rep).cells.set_index(["table", "column", "row"])
    # SCL - CE from the metrics table's spreads (SCL 0.02, CE 0.01, 3 seeds each, both sides)
    v = 0.02 ** 2 / 3 + 0.01 ** 2 / 3
    nu = (2 * v) ** 2 / (2 * v ** 2 / 2)
    expected = sps.t.ppf(0.975, nu) * np.sqrt(2 * v)
    row = "fashion_mnist/gradcam/pixel_flipping/corrected"
    assert cells.loc[("table_claim_robustness", "diff", row), "tolerance"] == pytest.approx(expected)
    # "too few seeds" on both sides decides nothing: not a compared verdict
    assert ("table_claim_robustness", "model_holds", row) not in cells.index


def test_one_seed_gives_no_tolerance_and_a_moved_number_is_not_called_agreeing(tmp_path):
    ref = _folder(tmp_path / "ref", metrics=_metrics(ce_std=np.nan, scl_std=np.nan, n=1))
    rep = _folder(tmp_path / "rep", metrics=_metrics(ce=0.2001, ce_std=np.nan, scl_std=np.nan, n=1))
    c = R.compare_folders(ref, rep)
    assert c.without_tolerance == 1 and not c.agrees
    assert "without a seed spread" in c.summary()


# ----------------------------------------------------------------------------- fragile verdicts

@pytest.mark.parametrize("p, fragile", [(0.03, True), (0.011, True), (0.2, True), (0.009, False), (0.3, False),
                                        (1e-8, False)])
def test_an_image_level_verdict_is_fragile_within_a_factor_of_5_of_alpha(p, fragile):
    assert R.is_fragile(pd.Series({"p_holm": p}), "images") is fragile


@pytest.mark.parametrize("low, high, fragile", [(-0.055, -0.002, True), (-0.060, 0.008, True), (-0.060, 0.012, False),
                                                (-0.207, -0.108, False), (-0.3, 0.3, False)])
def test_a_model_level_verdict_is_fragile_when_its_interval_nearly_touches_0(low, high, fragile):
    assert R.is_fragile(pd.Series({"model_ci_low": low, "model_ci_high": high}), "models") is fragile


def test_a_changed_verdict_says_both_sides_and_whether_it_is_fragile(tmp_path):
    ref = _folder(tmp_path / "ref", claim=_claim(holds="no (CE better)", p=0.03, model=(0.03, 0.001, 0.059)))
    rep = _folder(tmp_path / "rep", claim=_claim(holds="no (n.s.)", p=0.2, model=(0.02, -0.01, 0.05),
                                                 model_holds="no (n.s.)"))
    changed = R.compare_folders(ref, rep).changed.set_index("column")
    assert set(changed.index) == {"holds", "model_holds"} and changed["fragile"].all()
    assert changed.loc["holds", "detail"] == ("no (CE better) (0.030, d_z 0.90, p = 0.03) -> "
                                              "no (n.s.) (0.020, d_z 0.90, p = 0.2)")
    assert changed.loc["model_holds", "detail"].endswith("-> no (n.s.) (0.020 [-0.010, 0.050])")


# ----------------------------------------------------------------------------- keep and check around a run

def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _profile(folder: Path) -> None:
    """The smoke profile as ``mini.yaml``, its results and figures under ``folder``."""
    text = (ROOT / "configs" / "smoke.yaml").read_text()
    (folder / "mini.yaml").write_text(text + f"\nresults_root: {folder / 'results'}\nfigures_root: {folder / 'figures'}\n")


def test_keep_takes_the_committed_tables_and_check_compares_the_new_ones(tmp_path, monkeypatch, capsys):
    _profile(tmp_path)
    committed = _folder(tmp_path / "figures" / "mini")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "study")
    _metrics(ce=0.9).to_csv(committed / "table_attribution_metrics.csv", index=False)   # an earlier, uncommitted run
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--keep", "mini.yaml"]) == 0
    kept = tmp_path / "results" / "mini" / "committed-figures"
    assert pd.read_csv(kept / "table_attribution_metrics.csv")["ce_mean"].iloc[0] == 0.20   # HEAD's, not the file's
    assert (kept / "coverage.json").is_file()
    capsys.readouterr()
    assert cli.main(["--check", "mini.yaml"]) == 0                # the figures were not rewritten: said so
    assert "this run did not rewrite" in capsys.readouterr().out
    _metrics(ce=0.5).to_csv(committed / "table_attribution_metrics.csv", index=False)   # this run's
    (committed / "coverage.json").write_text(json.dumps({"profile": "mini"}))
    assert cli.main(["--check", "mini.yaml"]) == 0                                     # moved, but make goes on
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("reproduction of 'mini':") and "1 outside" in out[-1], out
    assert not any("did not rewrite" in line for line in out)
    assert (committed / "reproduction.md").is_file()


def test_keep_without_committed_tables_says_so_and_check_then_compares_nothing(tmp_path, monkeypatch, capsys):
    _profile(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--keep", "mini.yaml"]) == 0 and "no committed tables" in capsys.readouterr().out
    assert cli.main(["--check", "mini.yaml"]) == 0 and "nothing kept" in capsys.readouterr().out


# ----------------------------------------------------------------------------- fingerprints

def test_the_fingerprint_names_the_machine_and_software():
    fp = F.machine_fingerprint("cpu")
    assert fp["cpu"] and fp["cpu_capability"] and fp["device"] == "cpu" and fp["threads"] >= 1
    assert fp["packages"]["torch"] and fp["packages"]["numpy"] == np.__version__
    assert fp["lock"]["file"] == "requirements.lock" and fp["lock"]["installed"] in (True, False)
    assert F.fingerprint_id(fp) == F.fingerprint_id(json.loads(json.dumps(fp)))   # stable through JSON


def test_the_lock_status_names_the_packages_that_differ(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# made by hand\nnumpy=={np.__version__}\n    # via x\nPandas=={pd.__version__}\n"
                    "scipy==0.0.1\nno-such-package==1.0 ; python_version >= '3'\n")
    status = F.lock_status(lock)
    assert status["installed"] is False and status["n_differing"] == 2
    scipy_line, absent_line = status["differing"]
    assert scipy_line.startswith("scipy ") and scipy_line.endswith("(lock 0.0.1)")
    assert absent_line == "no-such-package absent (lock 1.0)"
    lock.write_text(f"numpy=={np.__version__}\n")
    assert F.lock_status(lock)["installed"] is True
    assert F.lock_status(tmp_path / "absent.lock")["installed"] is None


def test_each_stage_records_its_entry_and_keeps_the_others(tmp_path):
    F.record_fingerprint(tmp_path, "train")
    F.record_fingerprint(tmp_path, "evaluate")
    entries = F.read_fingerprints(tmp_path)
    assert set(entries) == {"train", "evaluate"} and entries["train"] == entries["evaluate"]
    assert F.read_fingerprints(tmp_path / "nowhere") == {}
