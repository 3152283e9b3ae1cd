"""Model-level inference: the two-level bootstrap against a literal resampling loop, its coverage
where seeds vary more than images (against the image-level test's), and its columns in the
comparison tables."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from xai_utils.analysis import stats
from xai_utils.analysis.claim import claim_table, plot_claim
from xai_utils.analysis.seed_level import MIN_SEEDS, model_level, model_verdict, two_level_bootstrap


def _literal(groups, draws, rng):
    """The two-level bootstrap written out: the same generator calls, then plain loops."""
    s = len(groups)
    picks = rng.integers(0, s, size=(draws, s))
    by_seed = {}
    for k in range(s):
        count = int((picks == k).sum())
        by_seed[k] = list(rng.integers(0, len(groups[k]), size=(count, len(groups[k])))) if count else []
    out = []
    for b in range(draws):
        total = 0.0
        for j in range(s):
            idx = by_seed[picks[b, j]].pop(0)
            total += sum(groups[picks[b, j]][i] for i in idx) / len(idx)
        out.append(total / s)
    return np.array(out)


def test_two_level_bootstrap_equals_a_literal_loop():
    rng = np.random.default_rng(0)
    groups = [rng.normal(k, 1, size=n) for k, n in enumerate((7, 12, 5, 9))]
    ours = two_level_bootstrap(groups, 300, np.random.default_rng(42))
    np.testing.assert_allclose(ours, _literal(groups, 300, np.random.default_rng(42)), rtol=0, atol=1e-12)


def test_too_few_seeds_never_give_a_verdict():
    two = model_level([np.array([-1.0, -2.0, -1.5]), np.array([-2.0, -1.0])])
    assert two["n_seeds"] == 2 and np.isnan(two["model_ci_low"]) and two["seeds_negative"] == 2
    assert model_verdict(two["model_ci_low"], two["model_ci_high"], 2, "lower") == "too few seeds"
    assert MIN_SEEDS == 3
    assert model_verdict(-0.5, -0.1, 5, "lower") == "yes" and model_verdict(0.1, 0.5, 5, "lower").words("CE") == "no (CE better)"
    assert model_verdict(-0.1, 0.2, 5, "higher") == "no (n.s.)" and model_verdict(0.1, 0.2, 5, "higher") == "yes"


def test_coverage_where_seed_variation_dominates(capsys):
    """No true difference; five seeds whose own effects vary as much as the images do. The
    model-level 95 % interval covers 0 about 95 % of the time; the image-level paired test
    (seed-averaged images, the tables' default) rejects far more often than 5 %."""
    rng = np.random.default_rng(123)
    sims, seeds, images = 200, 5, 40
    covered = rejected = 0
    for _ in range(sims):
        offsets = rng.normal(0, 1.0, seeds)
        groups = [offsets[s] + rng.normal(0, 1.0, images) for s in range(seeds)]
        m = model_level(groups, seed=int(rng.integers(1 << 30)), draws=500)
        covered += m["model_ci_low"] <= 0 <= m["model_ci_high"]
        rejected += sps.ttest_1samp(np.mean(groups, axis=0), 0).pvalue < 0.05
    with capsys.disabled():
        print(f"\ncoverage of the two-level interval {covered / sims:.2f}, "
              f"false-positive rate of the image-level test {rejected / sims:.2f} ({sims} simulations)")
    assert 0.90 <= covered / sims <= 1.0
    assert rejected / sims >= 0.5


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
