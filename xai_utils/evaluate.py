"""Evaluation stage: every metric for every stored attribution map of a run -> results.csv.

    df = evaluate_run("results/smoke/shapes/ce/seed0")      # settings from the run's config

Reads the run's config, its model (``model.pt``), the maps of the attribution stage
(``attributions/<method>.npz``) and the evaluation split (images, and object masks for
the coherence metrics), then computes each metric of :data:`xai_utils.metrics.METRICS`
for every stored sample, correctly classified or not (``correct`` is a column; the
statistics keep the correct ones). Writes, atomically:

* ``results.csv`` — long format, one row per (sample, method, metric), columns
  :data:`COLUMNS`; undefined values (see :mod:`xai_utils.metrics`) are written ``nan``;
  ``pair`` is empty for single images and ``"<index1>-<index2>"`` for the rows of the pair
  analysis (runs with ``pair_metrics``: :mod:`xai_utils.pairs.stage`);
* ``curves/<method>.npz`` — pixel-flipping curves (float32 [N, S], key ``curves``) and the
  probability on the unperturbed image (``unperturbed``), the curves of the other
  pixel-flipping scores (``curves_<metric>``), with their sample indices;
* ``calibration.json`` — when a metric needs it, the temperature of the explained model
  (:mod:`xai_utils.calibration`).

A metric may add rows of variants named ``<metric>[<variant>]`` (e.g. continuity at other
noise levels: ``continuity[sigma=0.05]``).

Every random draw (continuity noise, contrast class, random subsets) depends only on the
sample's index in the evaluation split, so models are compared on the same perturbations.
The pixel-flipping curve follows the true class (the paper's "softmax probability of the
true class"); the other metrics explain the class the stored maps explain.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from . import runs
from .attribution import METHODS, is_class_agnostic, load_attributions
from .config import RunConfig, load_run_config
from .metrics import METRICS, SETTINGS, MetricInputs, check_metrics, metric_direction, resolve_method

log = logging.getLogger(__name__)

COLUMNS = ["run_id", "dataset", "objective", "seed", "sample_index", "pair", "true", "pred", "correct",
           "method", "metric", "value"]


def _load_eval_split(cfg: RunConfig):
    from .data import load_dataset
    return load_dataset(cfg.dataset, cfg.eval_split, cfg.data_root)


def _check_request(run_dir: Path, methods: list[str], metrics: list[str]) -> None:
    """All name and file checks, before any work: one clear error each."""
    check_metrics(metrics)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown attribution method(s) {bad}; available: {', '.join(METHODS)}")
    missing = [m for m in methods if not runs.attribution_path(run_dir, m).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no stored maps for method(s) {missing} in {run_dir / 'attributions'}: run the attribution "
            f"stage first (notebook 02_attribute, or xai_utils.attribution.attribute_run(run_dir))")


def _skip_reason(metric: str, method: str, has_masks: bool) -> Optional[str]:
    needs = METRICS[metric].needs
    if "masks" in needs and not has_masks:
        return "the evaluation split has no object masks"
    if "class_specific" in needs and is_class_agnostic(method):
        return f"'{method}' is class-agnostic (its map ignores the class)"
    return None


def evaluate_run(run_dir: Union[str, Path], methods: Optional[Sequence[str]] = None,
                 metrics: Optional[Sequence[str]] = None, n_samples: Optional[int] = None,
                 batch_size: Optional[int] = None, device: str = "auto") -> pd.DataFrame:
    """Compute the metrics of a run's stored maps; write ``results.csv`` and ``curves/``.

    Empty values (None, [], 0) take the run's config: ``methods``, ``metrics``,
    ``eval_samples`` (the first ``n_samples`` stored samples), ``batch_size_eval``.
    Returns the table written to ``results.csv`` (columns :data:`COLUMNS`).
    """
    from tqdm.auto import tqdm
    from .models import load_model

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    methods = list(methods or cfg.methods)
    metrics = list(metrics or cfg.metrics)
    n_samples = int(n_samples or cfg.eval_samples)
    batch_size = int(batch_size or cfg.batch_size_eval)
    _check_request(run_dir, methods, metrics)

    dev = runs.resolve_device(device)
    model, _ = load_model(run_dir, dev, explain_features=cfg.explain_features)
    if cfg.channels_last:   # metric forward passes, x1.3-1.5 on CPU too (benchmarks/metrics_speed.py)
        model = model.to(memory_format=torch.channels_last)
    ds = _load_eval_split(cfg)
    has_masks = getattr(ds, "masks", None) is not None
    for metric in metrics:
        if "masks" in METRICS[metric].needs and not has_masks:
            log.warning("skipping %s: dataset '%s' split '%s' has no object masks", metric, cfg.dataset, cfg.eval_split)

    temperature = 1.0
    if any("calibration" in METRICS[m].needs for m in metrics):
        from .calibration import calibrate_run
        temperature = calibrate_run(run_dir, device=device, batch_size=batch_size)["temperature"]

    tables: list[pd.DataFrame] = []
    work = [(me, mt) for me in methods for mt in metrics]
    bar = tqdm(total=len(work), desc=f"{cfg.run_id} metrics", unit="metric")
    for method in methods:
        stored = load_attributions(runs.attribution_path(run_dir, method))
        n_stored = len(stored["indices"])
        if n_samples > n_stored:
            log.warning("%s: %d samples requested but %d stored; evaluating all stored samples "
                        "(rerun 02_attribute with more samples to change this)", method, n_samples, n_stored)
        n = min(n_samples, n_stored)
        idx = np.asarray(stored["indices"][:n], dtype=np.int64)
        x, y = ds.batch(idx, device=dev)
        labels = torch.as_tensor(stored["labels"][:n], dtype=torch.long)
        if not torch.equal(labels, y.cpu().long()):
            raise ValueError(f"{method}: the stored labels differ from the evaluation split's labels at the "
                             f"stored indices; the maps belong to another dataset/split: rerun 02_attribute")
        options = stored.get("options") or {}
        method_fn = resolve_method(method, **(options.get("options") or {}))
        inputs = MetricInputs(
            model=model, x=x, maps=torch.as_tensor(stored["maps"][:n]).to(dev),
            labels=labels.to(dev), preds=torch.as_tensor(stored["preds"][:n], dtype=torch.long).to(dev),
            targets=torch.as_tensor(stored["targets"][:n], dtype=torch.long).to(dev),
            sample_ids=torch.as_tensor(idx), masks=ds.mask_batch(idx, device=dev) if has_masks else None,
            method=method_fn, method_name=method, method_options=dict(options.get("options") or {}),
            batch_size=batch_size, temperature=temperature,
            **{f: getattr(cfg, k) for k, f in SETTINGS.items()})
        curves: dict[str, np.ndarray] = {}
        for metric in metrics:
            bar.set_postfix_str(f"{method}/{metric}")
            reason = _skip_reason(metric, method, has_masks)
            if reason is not None:
                if "masks" not in METRICS[metric].needs:
                    log.warning("skipping %s for %s: %s", metric, method, reason)
                bar.update(1)
                continue
            out = METRICS[metric].compute(inputs)
            tables.append(_rows(cfg, idx, inputs, method, metric, out.values))
            for variant, values in out.variants.items():
                tables.append(_rows(cfg, idx, inputs, method, f"{metric}[{variant}]", values))
            if out.curves is not None:
                # the paper's curves keep the names "curves" / "unperturbed"; other scores theirs
                key = "curves" if metric == "pixel_flipping" else f"curves_{metric}"
                curves[key] = out.curves.float().cpu().numpy()
                curves.update({(k if metric == "pixel_flipping" else f"{k}_{metric}"): v.float().cpu().numpy()
                               for k, v in out.extras.items()})
            bar.update(1)
        if curves:
            runs.save_npz(runs.curves_path(run_dir, method), indices=idx, labels=inputs.labels.cpu().numpy(),
                          features_in_step=np.int64(cfg.features_in_step), temperature=np.float64(temperature),
                          **curves)
    bar.close()
    if cfg.pair_metrics:                       # the pair analysis (xai_utils.pairs): rows with a pair id
        from .pairs.stage import evaluate_pairs
        pair_rows = evaluate_pairs(run_dir, cfg, model, ds, dev, batch_size, COLUMNS)
        if pair_rows is not None:
            tables.append(pair_rows)
    df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    runs.save_text(run_dir / runs.RESULTS, df.to_csv(index=False, na_rep="nan"))
    return df


def _rows(cfg: RunConfig, idx: np.ndarray, d: MetricInputs, method: str, metric: str,
          values: torch.Tensor) -> pd.DataFrame:
    true, pred = d.labels.cpu().numpy(), d.preds.cpu().numpy()
    return pd.DataFrame({
        "run_id": cfg.run_id, "dataset": cfg.dataset, "objective": cfg.objective, "seed": cfg.seed,
        "sample_index": idx, "pair": "", "true": true, "pred": pred, "correct": true == pred,
        "method": method, "metric": metric,
        "value": values.detach().double().cpu().numpy().reshape(-1)}, columns=COLUMNS)


def load_results(run_dir: Union[str, Path]) -> pd.DataFrame:
    """Read a run's ``results.csv`` (``nan`` -> NaN, ``correct`` as bool)."""
    p = Path(run_dir) / runs.RESULTS
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run the evaluation stage first (notebook 03_evaluate)")
    df = pd.read_csv(p, dtype={"pair": str}, keep_default_na=False, na_values={"value": ["nan", "NaN", ""]})
    df["correct"] = df["correct"].astype(str).str.lower().eq("true")
    if "pair" not in df:
        df.insert(5, "pair", "")
    return df


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per method and metric over correctly classified samples: mean, std, number of values,
    and how many were undefined (NaN), with the metric's direction."""
    d = df[df["correct"].astype(bool)]
    g = d.groupby(["method", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["n_nan"] = g.apply(lambda v: int(v.isna().sum())).to_numpy()
    out["better"] = out["metric"].map(lambda m: metric_direction(m) or "")
    return out
