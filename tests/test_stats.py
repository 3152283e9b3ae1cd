"""Tests of xai_utils.analysis.stats on hand-made results tables with known answers.

Every expected t, p and d is computed here, independently, with scipy / numpy on arrays
aligned by hand; the code under test only gets the long results table.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from xai_utils.analysis import saved, stats


def rows(objective, seed, values, correct=None, dataset="shapes", method="gradcam", metric="pixel_flipping",
         indices=None):
    """Long-format rows of one model: values[i] for sample indices[i]."""
    n = len(values)
    indices = list(range(n)) if indices is None else list(indices)
    correct = [True] * n if correct is None else list(correct)
    return pd.DataFrame({
        "run_id": f"{dataset}/{objective}/seed{seed}", "dataset": dataset, "objective": objective, "seed": seed,
        "sample_index": indices, "true": 0, "pred": [0 if c else 1 for c in correct], "correct": correct,
        "method": method, "metric": metric, "value": np.asarray(values, dtype=float)})


def d_paired(x, y):
    diff = np.asarray(x, float) - np.asarray(y, float)
    return diff.mean() / diff.std(ddof=1)


def d_pooled(x, y):
    """Cohen's d of two groups with the pooled standard deviation (equal sizes)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sp = np.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2))
    return (x.mean() - y.mean()) / sp


# ----------------------------------------------------------------------------- aggregation

def test_seed_means_use_correct_samples_and_skip_nan():
    df = pd.concat([
        rows("ce", 0, [1.0, 2.0, 3.0, 100.0, np.nan], correct=[True, True, True, False, True]),
        rows("ce", 1, [4.0, 6.0], correct=[True, True]),
    ])
    sm = stats.seed_means(df).set_index("seed")
    assert sm.loc[0, "mean"] == pytest.approx(2.0)      # 100 (wrong) and NaN excluded
    assert sm.loc[0, "n"] == 3
    assert sm.loc[1, "mean"] == pytest.approx(5.0)
    summ = stats.summarize(df).iloc[0]
    assert summ["mean"] == pytest.approx(3.5)
    assert summ["std"] == pytest.approx(np.std([2.0, 5.0], ddof=1))
    assert summ["n_seeds"] == 2


def test_one_seed_gives_nan_std():
    summ = stats.summarize(rows("scl", 0, [0.2, 0.4])).iloc[0]
    assert summ["mean"] == pytest.approx(0.3) and np.isnan(summ["std"]) and summ["n_seeds"] == 1


def test_accuracy_summary():
    s = pd.DataFrame({"dataset": "shapes", "objective": ["ce", "ce", "ce", "tl"], "seed": [0, 1, 2, 0],
                      "test_accuracy": [90.0, 92.0, 94.0, 80.0]})
    acc = stats.accuracy_summary(s).set_index("objective")
    assert acc.loc["ce", "mean"] == pytest.approx(92.0)
    assert acc.loc["ce", "std"] == pytest.approx(2.0)
    assert np.isnan(acc.loc["tl", "std"])


def test_load_results_and_summaries(tmp_path):
    for obj, vals in (("ce", [0.1, 0.2]), ("scl", [0.3, 0.5])):
        rd = tmp_path / "smoke" / "shapes" / obj / "seed0"
        rd.mkdir(parents=True)
        rows(obj, 0, vals).to_csv(rd / "results.csv", index=False)
        (rd / "config.json").write_text(json.dumps({"dataset": "shapes", "objective": obj, "seed": 0}))
        (rd / "train_summary.json").write_text(json.dumps({"test_accuracy": 91.5, "wall_time_s": 3}))
    df = saved.study_results(tmp_path, "smoke")
    assert len(df) == 4 and df["correct"].dtype == bool
    assert df.groupby("objective")["value"].sum().to_dict() == pytest.approx({"ce": 0.3, "scl": 0.8})
    summ = saved.load_summaries(tmp_path, "smoke")
    assert set(summ["objective"]) == {"ce", "scl"} and (summ["test_accuracy"] == 91.5).all()
    assert saved.study_results(tmp_path, "no_such_profile").empty


def test_load_results_rejects_wrong_columns(tmp_path):
    rd = tmp_path / "smoke" / "shapes" / "ce" / "seed0"
    rd.mkdir(parents=True)
    pd.DataFrame({"sample_index": [0], "value": [1.0]}).to_csv(rd / "results.csv", index=False)
    with pytest.raises(ValueError, match="lacks columns"):
        saved.study_results(tmp_path, "smoke")


# ----------------------------------------------------------------------------- paired tests

A = np.array([0.50, 0.42, 0.61, 0.38, 0.55, 0.47, 0.52, 0.44])
B = np.array([0.41, 0.40, 0.50, 0.35, 0.49, 0.46, 0.40, 0.39])


def _one(df, **kw):
    res = stats.compare_objectives(df, pairs=[("ce", "scl")], correction=None, **kw)
    assert len(res) == 1
    return res.iloc[0]


def test_t_p_d_match_scipy():
    df = pd.concat([rows("ce", 0, A), rows("scl", 0, B)])
    r = _one(df, seeds="pooled")
    ref = sps.ttest_rel(A, B)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert r["d_z"] == pytest.approx(d_paired(A, B), rel=1e-10)
    assert r["d_pooled"] == pytest.approx(d_pooled(A, B), rel=1e-10)
    assert r["t"] == pytest.approx(r["d_z"] * np.sqrt(len(A)), rel=1e-10)      # t = d_z sqrt(n)
    assert abs(r["d_pooled"]) != pytest.approx(abs(r["d_z"]))                 # two different numbers
    assert r["n_pairs"] == len(A)
    assert r["mean_diff"] == pytest.approx((A - B).mean())
    # SCL is lower on pixel flipping, where lower is better
    assert r["direction"] == "SCL lower than CE" and r["better"] == "SCL"
    assert r["significant"] == (ref.pvalue < 0.05)


def test_misaligned_inputs_are_paired_by_sample():
    """Shuffled rows, another sample order for each model, a sample missing for one model and
    a NaN for one model: the pairs are still (CE_i, SCL_i) for the samples both have."""
    idx = np.arange(len(A))
    b = B.copy()
    b[2] = np.nan                                   # NaN for SCL on sample 2
    ce = rows("ce", 0, A, indices=idx)
    scl = rows("scl", 0, b, indices=idx)
    scl = scl[scl["sample_index"] != 5]             # sample 5 missing for SCL
    scl = scl.iloc[::-1]                            # other sample order
    df = pd.concat([scl, ce]).sample(frac=1.0, random_state=0)   # rows shuffled
    keep = [i for i in idx if i not in (2, 5)]
    r = _one(df, seeds="pooled")
    ref = sps.ttest_rel(A[keep], B[keep])
    assert r["n_pairs"] == len(keep)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert r["d_z"] == pytest.approx(d_paired(A[keep], B[keep]), rel=1e-10)
    # the authors' approach (dropna per model, then truncate) pairs the wrong values here
    va = ce.sort_values("sample_index")["value"].dropna().to_numpy()
    vb = scl.sort_values("sample_index")["value"].dropna().to_numpy()
    n = min(len(va), len(vb))
    assert sps.ttest_rel(va[:n], vb[:n]).statistic != pytest.approx(r["t"], rel=1e-6)


def test_only_samples_correct_for_every_compared_model():
    ok = np.ones(len(A), bool)
    wrong_tl = ok.copy()
    wrong_tl[[0, 3]] = False                        # TL wrong on 0 and 3
    wrong_ce = ok.copy()
    wrong_ce[6] = False                             # CE wrong on 6
    df = pd.concat([rows("ce", 0, A, correct=wrong_ce), rows("scl", 0, B),
                    rows("tl", 0, (A + B) / 2, correct=wrong_tl)])
    r_all = _one(df, seeds="pooled", common="all")
    keep = [1, 2, 4, 5, 7]
    assert r_all["n_pairs"] == len(keep)
    assert r_all["t"] == pytest.approx(sps.ttest_rel(A[keep], B[keep]).statistic, rel=1e-10)
    r_pair = _one(df, seeds="pooled", common="pair")          # TL ignored
    keep2 = [i for i in range(len(A)) if i != 6]
    assert r_pair["n_pairs"] == len(keep2)
    assert r_pair["t"] == pytest.approx(sps.ttest_rel(A[keep2], B[keep2]).statistic, rel=1e-10)


def test_seed_handling_image_mean_pooled_and_per_seed():
    rng = np.random.default_rng(0)
    a0, b0, a1, b1 = (rng.random(6) for _ in range(4))
    correct1 = [True, True, False, True, True, True]     # seed 1: sample 2 wrong for CE
    df = pd.concat([rows("ce", 0, a0), rows("scl", 0, b0), rows("ce", 1, a1, correct=correct1), rows("scl", 1, b1)])
    # image_mean: average each image over the seeds where its pair is valid
    am = np.array([(a0[i] + a1[i]) / 2 if i != 2 else a0[i] for i in range(6)])
    bm = np.array([(b0[i] + b1[i]) / 2 if i != 2 else b0[i] for i in range(6)])
    r = _one(df, seeds="image_mean")
    assert r["n_pairs"] == 6 and r["n_obs"] == 11
    assert r["t"] == pytest.approx(sps.ttest_rel(am, bm).statistic, rel=1e-10)
    assert r["d_z"] == pytest.approx(d_paired(am, bm), rel=1e-10)
    # pooled: every (seed, image) pair counts
    keep1 = [0, 1, 3, 4, 5]
    x, y = np.r_[a0, a1[keep1]], np.r_[b0, b1[keep1]]
    r = _one(df, seeds="pooled")
    assert r["n_pairs"] == 11
    assert r["p"] == pytest.approx(sps.ttest_rel(x, y).pvalue, rel=1e-10)
    # per seed: one test per seed
    res = stats.compare_objectives(df, pairs=[("ce", "scl")], seeds="per_seed", correction=None)
    assert list(res["seed"]) == ["0", "1"]
    assert res["t"].iloc[1] == pytest.approx(sps.ttest_rel(a1[keep1], b1[keep1]).statistic, rel=1e-10)


def test_too_few_pairs_give_nan_not_error():
    df = pd.concat([rows("ce", 0, [0.1]), rows("scl", 0, [0.2])])
    r = _one(df)
    assert r["n_pairs"] == 1 and np.isnan(r["t"]) and np.isnan(r["p"]) and not r["significant"]


def test_holm_matches_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    expected = [0.03, 0.06, 0.06, 0.02]
    out = stats.holm(p)
    assert out[:4] == pytest.approx(expected)
    assert np.isnan(out[4])
    assert stats.holm([0.5, 0.9])[1] == pytest.approx(1.0)   # capped at 1


def holm_loop(p) -> np.ndarray:
    """Holm (1979) written out: the k-th smallest of m p-values times (m - k + 1), made
    non-decreasing along that order and capped at 1."""
    p = list(p)
    m, adjusted, running = len(p), [0.0] * len(p), 0.0
    for k, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return np.array(adjusted)


def test_holm_against_the_written_out_procedure():
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 17):
        p = rng.random(m) ** 3
        assert stats.holm(p) == pytest.approx(holm_loop(p), abs=1e-15)
    assert holm_loop([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])     # by hand


def test_holm_family_per_dataset_method_metric():
    rng = np.random.default_rng(1)
    base = rng.random(10)
    df = pd.concat([rows(o, 0, base + off + 0.05 * rng.standard_normal(10), metric=m)
                    for m in ("pixel_flipping", "continuity") for o, off in (("ce", 0.0), ("scl", 0.03), ("tl", 0.1))])
    res = stats.compare_objectives(df, seeds="pooled")
    for _, g in res.groupby("metric"):
        assert len(g) == 3
        assert g["p_holm"].to_numpy() == pytest.approx(holm_loop(g["p"].to_numpy()))
    whole = stats.compare_objectives(df, seeds="pooled", family=())
    assert len(whole) == 6 and whole["p_holm"].to_numpy() == pytest.approx(holm_loop(whole["p"].to_numpy()))
    assert (res["significant"] == (res["p_holm"] < 0.05)).all()


@pytest.mark.parametrize("metric,diff,direction,better", [
    ("pixel_flipping", 0.1, "SCL lower than CE", "SCL"),
    ("continuity", 0.1, "SCL lower than CE", "CE"),
    ("continuity", -0.1, "CE lower than SCL", "SCL"),
    ("complexity", -0.1, "CE lower than SCL", "CE"),
])
def test_effect_words(metric, diff, direction, better):
    d, b, verdict = stats.describe_effect("ce", "scl", diff, metric, significant=True)
    assert (d, b) == (direction, better)
    assert verdict.startswith(f"{better} better than")
    assert stats.describe_effect("ce", "scl", diff, metric, significant=False)[2] == "no significant difference"


def test_bad_options_are_rejected():
    df = pd.concat([rows("ce", 0, A), rows("scl", 0, B)])
    with pytest.raises(ValueError, match="seeds="):
        stats.compare_objectives(df, seeds="average")
    dup = pd.concat([df, rows("ce", 0, A[:1])])
    with pytest.raises(ValueError, match="duplicated"):
        stats.compare_objectives(dup)


def test_per_model_nan_pairing_reproduces_the_authors_script():
    """The official protocol's pairing: NaNs dropped per model, then both lists cut to the
    shorter and paired by position, as the authors' compare script does (written out here)."""
    a = np.array([0.1, np.nan, 0.3, 0.4, 0.5, 0.6])
    b = np.array([0.2, 0.25, 0.35, np.nan, 0.55, 0.7])
    df = pd.concat([rows("ce", 0, a), rows("scl", 0, b)])
    r = _one(df, seeds="pooled", nan_pairing="per_model")
    va, vb = a[~np.isnan(a)], b[~np.isnan(b)]            # the authors: dropna per column ...
    n = min(len(va), len(vb))                             # ... then vals[:n]
    ref = sps.ttest_rel(va[:n], vb[:n])
    assert r["n_pairs"] == n and r["t"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    # the default pairs by image first and drops the two pairs that hold a NaN
    r2 = _one(df, seeds="pooled")
    keep = ~np.isnan(a) & ~np.isnan(b)
    assert r2["n_pairs"] == keep.sum() == 4
    assert r2["t"] == pytest.approx(sps.ttest_rel(a[keep], b[keep]).statistic)
    assert r2["t"] != pytest.approx(r["t"])


def test_tests_against_a_reference_objective():
    df = pd.concat([rows("ce", 0, A), rows("scl", 0, B), rows("tl", 0, A + 0.05)])
    every = stats.compare_objectives(df)
    assert list(zip(every["objective_a"], every["objective_b"])) == [("ce", "scl"), ("ce", "tl"), ("scl", "tl")]
    ref = stats.compare_objectives(df, reference="scl")
    assert list(zip(ref["objective_a"], ref["objective_b"])) == [("scl", "ce"), ("scl", "tl")]
    # the same test, signed the other way round
    a = every[(every["objective_a"] == "ce") & (every["objective_b"] == "scl")].iloc[0]
    b = ref[ref["objective_b"] == "ce"].iloc[0]
    assert b["t"] == pytest.approx(-a["t"]) and b["p"] == pytest.approx(a["p"])
