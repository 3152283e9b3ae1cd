"""Aggregation and paired tests of the per-sample metric values of a study.

Works on the saved results of a study as :mod:`.saved` reads them, and follows the paper's
aggregation (../shared/PAPER.md, "Aggregation"):

* **per-seed means** over the correctly classified samples of each model (each model's own
  correct set, as in the paper's tables), then **mean and standard deviation across seeds**
  (``ddof=1``; with one seed the std is NaN, shown as "–" in the tables);
* **paired t-tests** (``scipy.stats.ttest_rel``) and **Cohen's d for paired samples**
  between objectives, per dataset x method x metric, on the samples that *every compared
  model* classifies correctly.

Pairing. A pair is the same evaluation image (``sample_index``) explained by the models of
two objectives trained with the same seed, i.e. it is keyed by ``(seed, sample_index)``
(and ``pair``, the id of a pair of images in the pair analysis, empty for single images).
Pairs are formed *first* (inner join on the key), then restricted to samples correct for
every compared model of that seed, and only then is a pair with a NaN on either side dropped
as a whole. (The authors' script drops NaNs per model and truncates, which silently shifts
one model's values against the other's.)

Seeds. The evaluation subset is the same images for every model, so the unit of
replication of a test is the *image*. Three ways to use several seeds are available
(:data:`SEED_HANDLING`); the default is ``"image_mean"``:

* ``"image_mean"`` (default): for every image the per-seed differences A-B are averaged over
  the seeds in which the pair is valid, and ``ttest_rel`` is run on the seed-averaged values
  (one pair per image). Each image counts once, so the test's independence assumption holds;
  pooling would count every image once per seed (pseudo-replication: n inflated, p too small).
* ``"pooled"``: every valid ``(seed, image)`` pair is one observation (the simplest analogue
  of the authors' per-model test; p-values optimistic for the reason above).
* ``"per_seed"``: one test per seed (shows whether the effect is stable across training runs).

With one seed the three coincide.

Effect sizes, both signed as ``A - B``:

* ``d_z = mean(A - B) / sd(A - B)`` (``ddof=1``): Cohen's d of the paired per-image
  differences, the effect size that goes with the paired t-test (``t = d_z * sqrt(n)``);
* ``d_pooled = (mean(A) - mean(B)) / sqrt((sd(A)^2 + sd(B)^2) / 2)`` (``ddof=1``): Cohen's d
  of the two models' values taken as separate groups (pooled standard deviation), the
  per-model effect size, on the same paired images. It ignores the pairing, so it is
  smaller than d_z when the two models' values are positively correlated across images.

(The authors' released comparison script computes ``mean(A - B) / std(A - B)`` with NumPy's
``ddof=0``, i.e. d_z times sqrt(n / (n - 1)).)

Multiple tests: Holm's step-down correction (:func:`holm`) within each family, by default
the comparisons of one dataset x method x metric (x seed for ``per_seed``); pass
``family=()`` to correct over the whole table. ``alpha = 0.05``.

Metric directions and facets come from the metric registries, objective order from the
objective registry (:mod:`xai_utils.analysis.names`).
"""
from __future__ import annotations

import itertools
import warnings
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .names import metric_direction, metric_sort_key, objective_label, order_objectives
from .seed_level import comparison_seed, model_level, model_verdict

# what identifies an explained item across models: an image, or a pair of images (pair analysis)
ITEM = ["sample_index", "pair"]
KEY = ["seed", *ITEM]                  # what pairs two objectives' scores
ALPHA = 0.05
GROUP = ["dataset", "method", "metric"]


# ----------------------------------------------------------------------------- aggregation

def _check_columns(df: pd.DataFrame, need: Iterable[str], what: str) -> None:
    missing = set(need) - set(df.columns)
    if missing:
        raise KeyError(f"{what} lacks columns {sorted(missing)}")


def seed_means(df: pd.DataFrame, correct_only: bool = True) -> pd.DataFrame:
    """Mean of each model's metric over its correctly classified samples (NaN values skipped).

    Returns dataset, method, metric, objective, seed, mean, n (samples averaged).
    """
    _check_columns(df, ["dataset", "method", "metric", "objective", "seed", "value", "correct"], "results")
    d = df[df["correct"].astype(bool)] if correct_only else df
    d = d.dropna(subset=["value"])
    keys = GROUP + ["objective", "seed"]
    g = d.groupby(keys, sort=True)["value"]
    return g.agg(mean="mean", n="size").reset_index()


def across_seeds(per_seed: pd.DataFrame, keys: Sequence[str] = ("dataset", "method", "metric", "objective"),
                 value: str = "mean") -> pd.DataFrame:
    """Mean and std (ddof=1; NaN for one seed) across seeds of the per-seed values."""
    g = per_seed.groupby(list(keys), sort=True)[value]
    out = g.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_seeds="size")
    return out.reset_index()


def summarize(df: pd.DataFrame, correct_only: bool = True) -> pd.DataFrame:
    """Per-seed means, then mean +- std across seeds, per dataset x method x metric x objective."""
    return across_seeds(seed_means(df, correct_only))


def accuracy_summary(summaries: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (percent): mean +- std across seeds per dataset x objective."""
    _check_columns(summaries, ["dataset", "objective", "seed", "test_accuracy"], "train summaries")
    return across_seeds(summaries.rename(columns={"test_accuracy": "mean"}).dropna(subset=["mean"]),
                        keys=("dataset", "objective"))


# ----------------------------------------------------------------------------- pairing

def correct_for_all(df: pd.DataFrame, objectives: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Per (dataset, seed, sample_index, pair): True when every compared model classifies the
    image (both images of a pair) correctly.

    The compared models of a (dataset, seed) are the ``objectives`` (default: all) that have
    results for it; a sample a model has no row for counts as not correct (it cannot be paired).
    """
    d = df if objectives is None else df[df["objective"].isin(objectives)]
    if "pair" not in d:
        d = d.assign(pair="")
    per_model = (d.groupby(["dataset", "seed", *ITEM, "objective"])["correct"]
                 .agg(lambda c: bool(np.all(c.astype(bool)))).unstack("objective"))
    present = d.groupby(["dataset", "seed"])["objective"].agg(lambda o: sorted(set(o)))
    rows = []
    for (ds, seed), objs in present.items():
        sub = per_model.loc[(ds, seed), objs]
        ok = sub.eq(True).all(axis=1)
        items = ok.index.to_frame(index=False)
        rows.append(pd.DataFrame({"dataset": ds, "seed": seed, **{k: items[k].to_numpy() for k in ITEM},
                                  "all_correct": ok.to_numpy()}))
    if not rows:
        return pd.DataFrame(columns=["dataset", "seed", *ITEM, "all_correct"])
    return pd.concat(rows, ignore_index=True)


NAN_PAIRINGS = ("pairs", "per_model")


def paired_values(df: pd.DataFrame, dataset: str, method: str, metric: str, a: str, b: str,
                  objectives: Optional[Sequence[str]] = None,
                  common: Optional[pd.DataFrame] = None, nan_pairing: str = "pairs") -> pd.DataFrame:
    """Valid pairs of objective ``a`` and ``b``: columns seed, sample_index, a, b.

    Pairs are keyed by (seed, sample_index) and formed before anything is dropped; then only
    samples correct for every compared model (``objectives``, default all in ``df``) are kept,
    and finally a pair with a NaN on either side is dropped as a pair (``nan_pairing="pairs"``).

    ``nan_pairing="per_model"`` reproduces the authors' script: after the correct samples are
    kept, each model's NaNs are dropped on their own and the two lists, in sample order per
    seed, are cut to the shorter one and paired by position (which misaligns every pair after
    a NaN on one side only). ``sample_index`` is then model ``a``'s.
    """
    if nan_pairing not in NAN_PAIRINGS:
        raise ValueError(f"nan_pairing='{nan_pairing}' unknown; choose one of {', '.join(NAN_PAIRINGS)}")
    if "pair" not in df:                       # frames built before the pair analysis existed
        df = df.assign(pair="")
    sel = df[(df["dataset"] == dataset) & (df["method"] == method) & (df["metric"] == metric)]
    if common is None:
        common = correct_for_all(df[df["dataset"] == dataset], objectives)
    return _pair_up(_scores(sel, a, dataset, method, metric), _scores(sel, b, dataset, method, metric),
                    _correct_keys(common, dataset), a, b, nan_pairing)


def _scores(sel: pd.DataFrame, objective: str, dataset: str, method: str, metric: str) -> pd.DataFrame:
    """One objective's scores of one dataset, method and metric (``sel``): the key columns and
    the value, named after the objective; a (seed, sample) listed twice is refused."""
    s = sel[sel["objective"] == objective]
    dup = s.duplicated(KEY)
    if dup.any():
        raise ValueError(f"{dataset}/{objective}: {int(dup.sum())} duplicated (seed, sample_index) rows for "
                         f"{method}/{metric}; each run must list a sample once per method and metric")
    return s[KEY + ["value"]].rename(columns={"value": objective})


def _correct_keys(common: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The keys of the samples of ``dataset`` that every compared model classifies correctly."""
    return common[(common["dataset"] == dataset) & common["all_correct"]][KEY]


def _pair_up(side_a: pd.DataFrame, side_b: pd.DataFrame, ok: pd.DataFrame, a: str, b: str,
             nan_pairing: str) -> pd.DataFrame:
    """:func:`paired_values` from the two objectives' scores and the correct samples' keys."""
    pairs = side_a.merge(side_b, on=KEY, how="inner")
    pairs = pairs.merge(ok, on=KEY, how="inner").sort_values(KEY)
    if nan_pairing == "per_model":
        parts = []
        for seed, g in pairs.groupby("seed", sort=True):
            va, vb = g.loc[g[a].notna(), [*KEY, a]], g.loc[g[b].notna(), b].to_numpy()
            n = min(len(va), len(vb))
            parts.append(va.iloc[:n].assign(**{b: vb[:n]}))
        cols = [*KEY, a, b]
        return (pd.concat(parts, ignore_index=True)[cols] if parts else pairs[cols].iloc[:0]).reset_index(drop=True)
    pairs = pairs[pairs[a].notna() & pairs[b].notna()]
    return pairs.reset_index(drop=True)


def paired_test(x: np.ndarray, y: np.ndarray) -> dict:
    """``ttest_rel(x, y)``, Cohen's ``d_z = mean(x - y) / sd(x - y)`` and the per-model
    ``d_pooled = (mean(x) - mean(y)) / sqrt((sd(x)^2 + sd(y)^2) / 2)`` (all ``ddof=1``).

    n < 2, or differences with zero spread, give NaN for t, p and d_z; d_pooled is NaN
    for n < 2 or zero pooled spread.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.shape} and {y.shape}")
    diff = x - y
    n = int(diff.size)
    out = {"n_pairs": n, "mean_a": float(np.mean(x)) if n else np.nan, "mean_b": float(np.mean(y)) if n else np.nan,
           "mean_diff": float(np.mean(diff)) if n else np.nan, "t": np.nan, "p": np.nan, "d_z": np.nan,
           "d_pooled": np.nan}
    if n < 2:
        return out
    pooled = float(np.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2.0))
    if np.isfinite(pooled) and pooled > 0:
        out["d_pooled"] = float((np.mean(x) - np.mean(y)) / pooled)
    sd = float(np.std(diff, ddof=1))
    if not np.isfinite(sd) or sd == 0.0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_rel(x, y)
    out.update(t=float(res.statistic), p=float(res.pvalue), d_z=float(np.mean(diff) / sd))
    return out


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaNs stay NaN and do not count in the family)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


# seed handling: pairs (seed, sample_index, a, b) -> list of (seed label, x, y, n_obs)
def _image_mean(pairs: pd.DataFrame, a: str, b: str) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    g = pairs.groupby(ITEM if "pair" in pairs else "sample_index")[[a, b]].mean()
    return [("all", g[a].to_numpy(), g[b].to_numpy(), len(pairs))]


def _pooled(pairs: pd.DataFrame, a: str, b: str) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    return [("all", pairs[a].to_numpy(), pairs[b].to_numpy(), len(pairs))]


def _per_seed(pairs: pd.DataFrame, a: str, b: str) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    return [(str(s), g[a].to_numpy(), g[b].to_numpy(), len(g)) for s, g in pairs.groupby("seed")]


SEED_HANDLING: dict[str, Callable[[pd.DataFrame, str, str], list]] = {
    "image_mean": _image_mean, "pooled": _pooled, "per_seed": _per_seed,
}


MODEL_COLUMNS = ("n_seeds", "model_diff", "model_ci_low", "model_ci_high", "seeds_a_better", "seeds_b_better",
                 "model_verdict")


def _model_level(pairs: pd.DataFrame, a: str, b: str, metric: str, seed: int) -> dict:
    """The model-level inference (:func:`seed_level.model_level`) of one comparison's valid
    pairs: each seed's differences a - b; the seeds favouring a or b by the metric's direction."""
    groups = [(g[a] - g[b]).to_numpy() for _, g in pairs.groupby("seed", sort=True)] if len(pairs) else []
    m = model_level(groups, seed=seed)
    direction = metric_direction(metric)
    lower = direction == "lower"
    better_a, better_b = ((m["seeds_negative"], m["seeds_positive"]) if lower else
                          (m["seeds_positive"], m["seeds_negative"])) if direction else (np.nan, np.nan)
    verdict = model_verdict(m["model_ci_low"], m["model_ci_high"], m["n_seeds"], direction or "")
    return {"n_seeds": m["n_seeds"], "model_diff": m["model_diff"], "model_ci_low": m["model_ci_low"],
            "model_ci_high": m["model_ci_high"], "seeds_a_better": better_a, "seeds_b_better": better_b,
            "model_verdict": verdict.label(objective_label(a), objective_label(b)) if direction
            else "direction unknown"}


def describe_effect(a: str, b: str, mean_diff: float, metric: str, significant: bool) -> tuple[str, str, str]:
    """Words for a comparison: (direction, better, verdict), e.g.
    ("SCL lower than CE", "SCL", "SCL better than CE")."""
    A, B = objective_label(a), objective_label(b)
    if not np.isfinite(mean_diff):
        return "", "", "not tested"
    if mean_diff == 0:
        return f"{B} equal to {A}", "", "no difference"
    lo, hi = (A, B) if mean_diff < 0 else (B, A)
    direction = f"{lo} lower than {hi}"
    d = metric_direction(metric)
    better = (lo if d == "lower" else hi) if d else ""
    worse = ({A, B} - {better}).pop() if better else ""
    if not significant:
        verdict = "no significant difference"
    elif better:
        verdict = f"{better} better than {worse}"
    else:
        verdict = direction + " (direction of 'better' unknown)"
    return direction, better, verdict


def compare_objectives(df: pd.DataFrame, pairs: Optional[Sequence[tuple[str, str]]] = None,
                       seeds: str = "image_mean", common: str = "all", correction: Optional[str] = "holm",
                       family: Sequence[str] = ("dataset", "method", "metric"), alpha: float = ALPHA,
                       nan_pairing: str = "pairs", reference: Optional[str] = None) -> pd.DataFrame:
    """Paired t-tests and effect sizes (d_z, d_pooled) between objectives, per dataset x method x metric.

    Args:
        df: long results (:func:`study_results`).
        pairs: (a, b) objective pairs; default every pair, in registry order.
        reference: compare every other objective with this one only (instead of ``pairs``).
        seeds: how seeds are used, one of :data:`SEED_HANDLING` (see module docstring).
        common: "all" = samples correct for every objective of the dataset (the paper's
            "every compared model"); "pair" = correct for the two compared models only.
        correction: "holm" or None. family: columns whose values define one family.
        alpha: significance level (applied to ``p_holm`` when corrected, else to ``p``).
        nan_pairing: "pairs" (default) or "per_model" (the authors'; see :func:`paired_values`).

    Returns one row per test: dataset, method, metric, objective_a, objective_b, seed, n_pairs
    (pairs in the test), n_obs (seed x image pairs used), mean_a, mean_b, mean_diff (a - b),
    t, p, d_z, d_pooled, p_holm, significant, direction, better, verdict, direction_of_better;
    and the model-level inference of the same pairs with the seed as the unit
    (:mod:`.seed_level`): n_seeds, model_diff (a - b), model_ci_low, model_ci_high (95 %),
    seeds_a_better, seeds_b_better, model_verdict (NaN / empty for ``per_seed`` rows).
    """
    if seeds not in SEED_HANDLING:
        raise ValueError(f"seeds='{seeds}' unknown; choose one of {', '.join(SEED_HANDLING)}")
    if common not in ("all", "pair"):
        raise ValueError(f"common='{common}' unknown; choose 'all' or 'pair'")
    if correction not in (None, "holm"):
        raise ValueError(f"correction='{correction}' unknown; choose 'holm' or None")
    if nan_pairing not in NAN_PAIRINGS:
        raise ValueError(f"nan_pairing='{nan_pairing}' unknown; choose one of {', '.join(NAN_PAIRINGS)}")
    cols = ["dataset", "method", "metric", "objective_a", "objective_b", "seed", "seed_handling", "n_pairs",
            "n_obs", "mean_a", "mean_b", "mean_diff", "t", "p", "d_z", "d_pooled", "p_holm", "significant",
            "direction", "better", "verdict", "direction_of_better", *MODEL_COLUMNS]
    if df.empty:
        return pd.DataFrame(columns=cols)
    rows = [row for ds, dsub in df.groupby("dataset", sort=True)
            for row in _dataset_tests(ds, dsub, pairs, reference, seeds, common, nan_pairing)]
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=cols)
    for c in MODEL_COLUMNS:                    # per_seed tests have no model-level columns
        if c not in out:
            out[c] = np.nan
    out = _decide(out, correction, family, seeds, alpha)[cols]
    out = out.assign(_m=out["metric"].map(metric_sort_key)).sort_values(
        ["dataset", "method", "_m"], kind="stable").drop(columns="_m")
    return out.reset_index(drop=True)


def _dataset_tests(ds: str, dsub: pd.DataFrame, pairs: Optional[Sequence[tuple[str, str]]],
                   reference: Optional[str], seeds: str, common: str, nan_pairing: str) -> list[dict]:
    """The rows of :func:`compare_objectives` for one dataset, before the correction."""
    objs = order_objectives(dsub["objective"].unique())
    if reference:
        pair_list = [(reference, o) for o in objs if o != reference]
    else:
        pair_list = list(pairs) if pairs is not None else list(itertools.combinations(objs, 2))
    if "pair" not in dsub:                     # frames built before the pair analysis existed
        dsub = dsub.assign(pair="")
    correct: dict[tuple, pd.DataFrame] = {}    # the correct samples' keys per set of compared models
    rows = []
    for (method, metric), msub in dsub.groupby(["method", "metric"], sort=False):   # in order of appearance
        scores: dict[str, pd.DataFrame] = {}   # each objective's scores, read once per method and metric
        for a, b in pair_list:
            if a not in objs or b not in objs:
                continue
            compared = tuple(objs if common == "all" else [a, b])
            if compared not in correct:
                correct[compared] = _correct_keys(correct_for_all(dsub, list(compared)), ds)
            for o in (a, b):
                if o not in scores:
                    scores[o] = _scores(msub, o, ds, method, metric)
            pv = _pair_up(scores[a], scores[b], correct[compared], a, b, nan_pairing)
            models = (_model_level(pv, a, b, metric, comparison_seed(ds, method, metric, a, b))
                      if seeds != "per_seed" else {})
            for seed_label, x, y, n_obs in SEED_HANDLING[seeds](pv, a, b) or [("all", np.array([]), np.array([]), 0)]:
                rows.append({"dataset": ds, "method": method, "metric": metric, "objective_a": a,
                             "objective_b": b, "seed": seed_label, "seed_handling": seeds, "n_obs": n_obs,
                             **paired_test(x, y), **models})
    return rows


def _decide(out: pd.DataFrame, correction: Optional[str], family: Sequence[str], seeds: str,
            alpha: float) -> pd.DataFrame:
    """Holm's correction within each family (or none), significance at ``alpha``, and the words
    of each test's outcome (direction, better, verdict, direction_of_better)."""
    if correction == "holm":
        fam = list(family) + (["seed"] if seeds == "per_seed" and "seed" not in family else [])
        out["p_holm"] = np.nan
        if fam:
            for _, idx in out.groupby(fam, sort=False).groups.items():
                out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].to_numpy())
        else:
            out["p_holm"] = holm(out["p"].to_numpy())
        p_used = out["p_holm"]
    else:
        out["p_holm"] = np.nan
        p_used = out["p"]
    out["significant"] = p_used < alpha
    words = [describe_effect(r.objective_a, r.objective_b, r.mean_diff, r.metric, bool(r.significant))
             for r in out.itertuples()]
    out["direction"] = [w[0] for w in words]
    out["better"] = [w[1] for w in words]
    out["verdict"] = [w[2] for w in words]
    out["direction_of_better"] = out["metric"].map(lambda m: metric_direction(m) or "unknown")
    return out


def run_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One run's ``results.csv`` (:func:`xai_utils.stages.evaluate.evaluate_run`) summarised per
    method and metric over correctly classified samples: mean, std, number of values, and how
    many were undefined (NaN), with the metric's direction."""
    d = df[df["correct"].astype(bool)]
    g = d.groupby(["method", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["n_nan"] = g.apply(lambda v: int(v.isna().sum())).to_numpy()
    out["better"] = out["metric"].map(lambda m: metric_direction(m) or "")
    return out
