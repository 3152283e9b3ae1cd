"""Model-level inference: the two-level bootstrap against its analytic mean and variance, its
coverage where seeds vary more than images (against the image-level test's) and its power, and its
columns in the comparison tables."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from xai_utils.analysis import stats
from xai_utils.analysis.claim import claim_table, plot_claim
from xai_utils.analysis.seed_level import MIN_SEEDS, model_level, model_verdict, two_level_bootstrap


def test_two_level_bootstrap_has_the_analytic_mean_and_variance():
    """Seeds drawn with replacement, then images within each drawn seed: the replicate mean has
    expectation the mean of the seed means and variance (sigma_b^2 + mean_k sigma_k^2 / n_k) / S,
    sigma_b^2 the variance of the S seed means, sigma_k^2 that of seed k's images (both ddof 0)."""
    rng = np.random.default_rng(0)
    groups = [rng.normal(0.3 * k, 1 + 0.2 * k, size=n) for k, n in enumerate((7, 12, 5, 9))]
    boot = two_level_bootstrap(groups, 40_000, np.random.default_rng(1))
    means = np.array([g.mean() for g in groups])
    analytic = (means.var() + np.mean([g.var() / len(g) for g in groups])) / len(groups)
    assert boot.shape == (40_000,)
    assert abs(boot.var() / analytic - 1) < 0.03                    # 40,000 draws: about 0.7 % standard error
    assert abs(boot.mean() - means.mean()) < 4 * np.sqrt(analytic / 40_000)


def test_too_few_seeds_never_give_a_verdict():
    two = model_level([np.array([-1.0, -2.0, -1.5]), np.array([-2.0, -1.0])])
    assert two["n_seeds"] == 2 and np.isnan(two["model_ci_low"]) and two["seeds_negative"] == 2
    assert model_verdict(two["model_ci_low"], two["model_ci_high"], 2, "lower") == "too few seeds"
    assert MIN_SEEDS == 3
    assert model_verdict(-0.5, -0.1, 5, "lower") == "yes" and model_verdict(0.1, 0.5, 5, "lower").words("CE") == "no (CE better)"
    assert model_verdict(-0.1, 0.2, 5, "higher") == "no (n.s.)" and model_verdict(0.1, 0.2, 5, "higher") == "yes"


def _simulate(effect: float, sims: int = 200, seeds: int = 5, images: int = 40) -> tuple[float, float]:
    """(share of model-level 95 % intervals covering 0, share of image-level paired tests that
    reject at 5 %) for a true difference ``effect``, with five seeds whose own effects vary as
    much as the images do (standard deviation 1 each)."""
    rng = np.random.default_rng(123)
    covered = rejected = 0
    for _ in range(sims):
        offsets = rng.normal(0, 1.0, seeds)
        groups = [effect + offsets[s] + rng.normal(0, 1.0, images) for s in range(seeds)]
        m = model_level(groups, seed=int(rng.integers(1 << 30)), draws=500)
        covered += m["model_ci_low"] <= 0 <= m["model_ci_high"]
        rejected += sps.ttest_1samp(np.mean(groups, axis=0), 0).pvalue < 0.05
    return covered / sims, rejected / sims


def test_coverage_where_seed_variation_dominates(capsys):
    """No true difference: the model-level 95 % interval covers 0 close to 95 % of the time (not
    far more: an interval that is always wide would pass a one-sided check); the image-level
    paired test (seed-averaged images, the tables' default) rejects far more often than 5 %."""
    covered, rejected = _simulate(0.0)
    with capsys.disabled():
        print(f"\ncoverage of the two-level interval {covered:.3f}, "
              f"false-positive rate of the image-level test {rejected:.2f} (200 simulations)")
    assert 0.92 <= covered <= 0.985
    assert rejected >= 0.5


def test_power_at_a_moderate_effect():
    """A true difference of 1.5 seed standard deviations: the model-level interval excludes 0 in
    most simulations (the power of a 5-seed study), and more often at 2."""
    power = {effect: 1 - _simulate(effect)[0] for effect in (1.5, 2.0)}
    assert power[1.5] >= 0.6 and power[2.0] >= 0.85 and power[2.0] > power[1.5]


def _results(effects: list[float], images: int = 30) -> pd.DataFrame:
    """Synthetic results.csv rows: CE and SCL on the same images, SCL lower by ``effects[s]``
    (plus noise) in seed s, every image correct."""
    rng = np.random.default_rng(7)
    rows = []
    for s, eff in enumerate(effects):
        base = rng.normal(0.5, 0.1, images)
        for obj, values in (("ce", base), ("scl", base - eff + rng.normal(0, 0.02, images))):
            rows += [{"run_id": f"shapes/{obj}/seed{s}", "dataset": "shapes", "objective": obj, "seed": s,
                      "sample_index": i, "pair": "", "true": 0, "pred": 0, "correct": True, "method": "gradcam",
                      "metric": "pixel_flipping", "value": v, "protocol": "corrected"} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("effects, verdict, favouring", [
    ([0.1, 0.12, 0.08, 0.11], "SCL better than CE", 4),
    ([0.1, -0.12, 0.08, -0.09], "no significant difference", 2),
    ([0.1, 0.12], "too few seeds", 2),
])
def test_comparisons_carry_the_model_level_columns(effects, verdict, favouring):
    res = _results(effects)
    t = stats.compare_objectives(res, pairs=[("scl", "ce")])
    r = t.iloc[0]
    assert r["n_seeds"] == len(effects) and r["model_verdict"] == verdict
    assert r["seeds_a_better"] == favouring
    np.testing.assert_allclose(r["model_diff"], -np.mean(effects), atol=0.01)
    if len(effects) >= 3:
        assert r["model_ci_low"] < r["model_diff"] < r["model_ci_high"]
    c = claim_table(res).iloc[0]
    assert c["seeds_favouring"] == favouring and {"model_diff", "model_ci_low", "model_ci_high"} <= set(c.index)
    assert c["model_holds"] == {"SCL better than CE": "yes", "no significant difference": "no (n.s.)",
                                "too few seeds": "too few seeds"}[verdict]


def test_the_floor_is_the_distance_to_random_maps_and_the_figure_says_when_there_is_none():
    """real_minus_random against a literal computation (pixel flipping: lower is better), and
    the figure's share: SCL's advantage over that distance, or 'real ≤ random' when the
    method's maps score no better than the random ones."""
    res = _results([0.1, 0.12, 0.08, 0.11])
    control = res.assign(method="random")
    for obj, shift in (("ce", 0.3), ("scl", 0.2)):
        control.loc[control["objective"] == obj, "value"] += shift      # random maps: higher AUC, worse
    t = claim_table(pd.concat([res, control], ignore_index=True))
    assert list(t["method"]) == ["gradcam"]                             # the control has no row of its own
    r = t.iloc[0]
    means = {k: g["value"].mean() for k, g in res.groupby("objective")}
    cmeans = {k: g["value"].mean() for k, g in control.groupby("objective")}
    random = (cmeans["ce"] + cmeans["scl"]) / 2
    np.testing.assert_allclose(r["random"], random, rtol=1e-12)
    np.testing.assert_allclose(r["real_minus_random"], random - (means["ce"] + means["scl"]) / 2, rtol=1e-12)
    share = (means["ce"] - means["scl"]) / r["real_minus_random"]      # SCL lower: its advantage, > 0
    texts = [x.get_text() for x in plot_claim(t).axes[0].texts]
    assert f"{share:+.0%}" in texts
    worse = control.assign(value=control["value"] - 1.0)               # random maps now better than the real ones
    t2 = claim_table(pd.concat([res, worse], ignore_index=True))
    assert t2.iloc[0]["real_minus_random"] < 0
    assert "real ≤ random" in [x.get_text() for x in plot_claim(t2).axes[0].texts]


def test_claim_table_cells_equal_scipy_on_the_seed_averaged_images():
    """The image-level cells of a claim row from their definitions: each image's value averaged
    over the seeds per objective, SCL - CE paired image by image (SciPy's ttest_rel; one
    comparison in its Holm family, so p_holm = p), d_z the mean paired difference over its
    standard deviation, and the verdict from the sign and p < 0.05."""
    res = pd.concat([_results([0.03, -0.01, 0.02]), _results([0.02, 0.0, 0.01]).assign(metric="complexity")],
                    ignore_index=True)
    table = claim_table(res).set_index("metric")
    for metric, lower in (("pixel_flipping", True), ("complexity", True)):
        r = table.loc[metric]
        per = res[res["metric"] == metric].groupby(["objective", "sample_index"])["value"].mean()
        scl, ce = per["scl"].to_numpy(), per["ce"].to_numpy()
        d = scl - ce
        p = sps.ttest_rel(scl, ce).pvalue
        assert r["n_pairs"] == 30
        np.testing.assert_allclose([r["mean_scl"], r["mean_ce"], r["diff"]], [scl.mean(), ce.mean(), d.mean()],
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["d_z"], d.mean() / d.std(ddof=1), rtol=1e-9)
        np.testing.assert_allclose(r["p_holm"], p, rtol=1e-9)
        better = d.mean() < 0 if lower else d.mean() > 0
        assert r["holds"] == ("yes" if p < 0.05 and better else "no (n.s.)" if p >= 0.05 else "no (CE better)")


def test_the_order_and_the_difference_of_a_claim_row_come_from_the_same_means():
    """Each model averaged over its own correctly classified images, then over seeds (the
    study's means, as in table_attribution_metrics): mean_scl, mean_ce, their difference and
    the order, computed here by a literal loop. SCL is lower (better) on the images both
    models classify correctly, but scores high on images only it classifies correctly, so
    the means favour CE while the paired test, on the shared images only, favours SCL."""
    res = _results([0.1, 0.12, 0.08])
    extra = []
    for s in range(3):
        for obj, correct in (("scl", True), ("ce", False)):
            extra += [{"run_id": f"shapes/{obj}/seed{s}", "dataset": "shapes", "objective": obj, "seed": s,
                       "sample_index": 100 + i, "pair": "", "true": 0, "pred": 0 if correct else 1,
                       "correct": correct, "method": "gradcam", "metric": "pixel_flipping", "value": 2.0,
                       "protocol": "corrected"} for i in range(10)]
    res = pd.concat([res, pd.DataFrame(extra)], ignore_index=True)
    r = claim_table(res).iloc[0]
    means = {}
    for obj in ("scl", "ce"):
        per_seed = []
        for s in range(3):
            values = [v for o, sd, c, v in zip(res["objective"], res["seed"], res["correct"], res["value"])
                      if o == obj and sd == s and c]
            per_seed.append(sum(values) / len(values))
        means[obj] = sum(per_seed) / 3
    assert means["scl"] > means["ce"]                            # the means: CE lower, better
    np.testing.assert_allclose([r["mean_scl"], r["mean_ce"]], [means["scl"], means["ce"]], rtol=0, atol=1e-12)
    assert r["diff"] == r["mean_scl"] - r["mean_ce"] and r["diff"] > 0
    assert r["order"] == "CE < SCL"
    assert r["n_pairs"] == 30 and r["d_z"] < 0 and r["holds"] == "yes"   # the test: SCL better on shared images
