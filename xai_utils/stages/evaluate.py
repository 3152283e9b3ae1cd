"""Evaluation stage: every metric for every stored attribution map of a run -> results.csv.

    df = evaluate_run("results/smoke/shapes/ce/seed0")      # settings from the run's config

Reads the run's config, its model (``model.pt``), the maps of the attribution stage
(``attributions/<method>.npz``) and the evaluation split (images, and object masks for
the coherence metrics), then computes each metric of :data:`xai_utils.ops.metrics.METRICS`
for every stored sample, correctly classified or not (``correct`` is a column; the
statistics keep the correct ones). Writes, atomically:

* ``results.csv`` — long format, one row per (sample, method, metric), columns
  :data:`~xai_utils.settings.layout.RESULT_COLUMNS`; undefined values (see :mod:`xai_utils.ops.metrics`) are written ``nan``;
  ``pair`` is empty for single images and ``"<index1>-<index2>"`` for the rows of the pair
  analysis (runs with ``pair_metrics``: :mod:`xai_utils.stages.pairs`);
* ``curves/<method>.npz`` — pixel-flipping curves (float32 [N, S], key ``curves``) and the
  probability on the unperturbed image (``unperturbed``), the curves of the other
  pixel-flipping scores (``curves_<metric>``), with their sample indices;
* ``calibration.json`` — when a metric needs it, the temperature of the explained model
  (:mod:`xai_utils.stages.calibrate`).

A metric may add rows of variants named ``<metric>[<variant>]`` (e.g. continuity at other
noise levels: ``continuity[sigma=0.05]``).

Every random draw (continuity noise, contrast class, random subsets) depends only on the
sample's index in the evaluation split, so models are compared on the same perturbations.
The pixel-flipping curve follows the true class (the paper's "softmax probability of the
true class"); the other metrics explain the class the stored maps explain.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from tqdm.auto import tqdm

from ..ops.attribution import check_methods, is_class_agnostic
from ..ops.devices import ieee_float32, resolve_device
from ..ops.metrics import METRICS, SETTINGS, MetricInputs, MetricResult, check_metrics, resolve_method, resolve_tie_break
from ..settings.run_config import RunConfig
from ..study.data import load_dataset
from ..settings import layout as runs
from . import files
from .artefacts import load_npz, load_run_config
from .fingerprint import record_fingerprint
from .attribute import load_attributions
from .calibrate import calibrate_run, image_temperatures
from .ground_truth import ground_truth_run
from .model_io import load_model
from .pairs import evaluate_pairs

log = logging.getLogger(__name__)



def _load_eval_split(cfg: RunConfig):
    return load_dataset(cfg.dataset, cfg.eval_split, cfg.data_root)


def _check_request(run_dir: Path, methods: list[str], metrics: list[str]) -> None:
    """All name and file checks, before any work: one clear error each."""
    check_metrics(metrics)
    check_methods(methods)
    missing = [m for m in methods if not runs.attribution_path(run_dir, m).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no stored maps for method(s) {missing} in {run_dir / 'attributions'}: run the attribution "
            f"stage first (notebook 02_attribute, or xai_utils.stages.attribute.attribute_run(run_dir))")


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
    Returns the table written to ``results.csv`` (columns :data:`~xai_utils.settings.layout.RESULT_COLUMNS`).
    """

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    methods = list(methods or cfg.methods)
    metrics = list(metrics or cfg.metrics)
    n_samples = int(n_samples or cfg.eval_samples)
    batch_size = int(batch_size or cfg.batch_size_eval)
    _check_request(run_dir, methods, metrics)

    dev = resolve_device(device)
    model, _ = load_model(run_dir, dev, explain_features=cfg.explain_features)
    if cfg.channels_last:   # metric forward passes, x1.3-1.5 on CPU too (benchmarks/metrics_speed.py)
        model = model.to(memory_format=torch.channels_last)
    ds = _load_eval_split(cfg)
    has_masks = getattr(ds, "masks", None) is not None
    for metric in metrics:
        if "masks" in METRICS[metric].needs and not has_masks:
            log.warning("skipping %s: dataset '%s' split '%s' has no object masks", metric, cfg.dataset, cfg.eval_split)

    calibration = None
    if any("calibration" in METRICS[m].needs for m in metrics):
        calibration = calibrate_run(run_dir, device=device, batch_size=batch_size)

    chunk = _chunk_size(cfg.eval_chunk, batch_size)
    tie_break = resolve_tie_break(cfg.pixel_flipping_tie_break, dev)
    settings = {f: getattr(cfg, k) for k, f in SETTINGS.items()}
    settings["pixel_flipping_tie_break"] = tie_break
    sizes = {m: _n_evaluated(m, _n_stored(runs.attribution_path(run_dir, m)), n_samples) for m in methods}
    bar = tqdm(total=sum(len(_chunks(sizes[m], chunk, batch_size)) * len(metrics) for m in methods),
               desc=f"{cfg.run_id} metrics", unit="metric")
    ev = _Evaluation(cfg, run_dir, model, ds, dev, metrics, batch_size, chunk, calibration, settings, has_masks,
                     tie_break, bar)
    tables: list[pd.DataFrame] = []
    for method in methods:
        tables += _evaluate_method(ev, method, sizes[method])
    bar.close()
    if cfg.pair_metrics:                       # the pair analysis (xai_utils.ops.pairs): rows with a pair id
        with ieee_float32(dev):                  # no autocast, no TF32
            pair_rows = evaluate_pairs(run_dir, cfg, model, ds, dev, batch_size, list(runs.RESULT_COLUMNS))
        if pair_rows is not None:
            tables.append(pair_rows)
    df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(runs.RESULT_COLUMNS))
    ground_truth_run(run_dir, cfg, model, batch_size)    # planted datasets: ground_truth.csv
    files.save_text(run_dir / runs.RESULTS, df.to_csv(index=False, na_rep="nan"))
    record_fingerprint(run_dir, runs.Stage.EVALUATE, dev)
    return df


@dataclass
class _Evaluation:
    """What scoring one run's stored maps works with (one per :func:`evaluate_run` call)."""
    cfg: RunConfig
    run_dir: Path
    model: torch.nn.Module
    ds: Any
    dev: torch.device
    metrics: list[str]
    batch_size: int
    chunk: int
    calibration: Optional[dict]
    settings: dict[str, Any]
    has_masks: bool
    tie_break: str
    bar: Any


def _evaluate_method(ev: _Evaluation, method: str, n: int) -> list[pd.DataFrame]:
    """The rows of every metric of one method's first ``n`` stored maps; its curves written to
    ``curves/<method>.npz``. The evaluation set stays on the host, a device-sized chunk at a
    time goes to the device."""
    cfg = ev.cfg
    stored = load_attributions(runs.attribution_path(ev.run_dir, method))
    idx = np.asarray(stored["indices"][:n], dtype=np.int64)
    x_host, y = ev.ds.batch(idx, device="cpu")
    labels = torch.as_tensor(stored["labels"][:n], dtype=torch.long)
    if not torch.equal(labels, y.long()):
        raise ValueError(f"{method}: the stored labels differ from the evaluation split's labels at the "
                         f"stored indices; the maps belong to another dataset/split: rerun 02_attribute")
    options = dict((stored.get("options") or {}).get("options") or {})
    temperatures = torch.as_tensor(image_temperatures(ev.calibration, idx) if ev.calibration else np.ones(len(idx)))
    host = {"x": x_host, "maps": torch.as_tensor(stored["maps"][:n]), "labels": labels,
            "preds": torch.as_tensor(stored["preds"][:n], dtype=torch.long),
            "targets": torch.as_tensor(stored["targets"][:n], dtype=torch.long),
            "masks": ev.ds.mask_batch(idx, device="cpu") if ev.has_masks else None, "temperatures": temperatures}
    runnable = []
    for metric in ev.metrics:
        reason = _skip_reason(metric, method, ev.has_masks)
        if reason is None:
            runnable.append(metric)
        elif "masks" not in METRICS[metric].needs:
            log.warning("skipping %s for %s: %s", metric, method, reason)
    parts = _score_chunks(ev, method, options, idx, host, runnable)
    tables: list[pd.DataFrame] = []
    curves: dict[str, np.ndarray] = {}
    true, pred = host["labels"].numpy(), host["preds"].numpy()
    for metric in runnable:
        out = _concat(parts[metric])
        tables.append(_rows(cfg, idx, true, pred, method, metric, out.values))
        for variant, values in out.variants.items():
            tables.append(_rows(cfg, idx, true, pred, method, str(runs.RowName(metric, (variant,))), values))
        if out.curves is not None:
            # the paper's curves keep the names "curves" / "unperturbed"; other scores theirs
            key = "curves" if metric == "pixel_flipping" else f"curves_{metric}"
            curves[key] = out.curves.float().numpy()
            curves.update({(k if metric == "pixel_flipping" else f"{k}_{metric}"): v.float().numpy()
                           for k, v in out.extras.items()})
    if curves:
        files.save_npz(runs.curves_path(ev.run_dir, method), indices=idx, labels=true,
                      features_in_step=np.int64(cfg.features_in_step), temperature=temperatures.numpy(),
                      tie_break=np.str_(ev.tie_break), **curves)
    return tables


def _score_chunks(ev: _Evaluation, method: str, options: dict, idx: np.ndarray, host: dict[str, Any],
                  runnable: list[str]) -> dict[str, list[MetricResult]]:
    """Each runnable metric's results, chunk by chunk (device memory bounded by the chunk)."""
    method_fn = resolve_method(method, **options)
    parts: dict[str, list[MetricResult]] = {m: [] for m in runnable}
    for sl in _chunks(len(idx), ev.chunk, ev.batch_size):
        dev_part = {k: _to_device(v[sl], ev.dev) for k, v in host.items() if v is not None}
        inputs = MetricInputs(
            model=ev.model, x=dev_part["x"], maps=dev_part["maps"], labels=dev_part["labels"],
            preds=dev_part["preds"], targets=dev_part["targets"], sample_ids=torch.as_tensor(idx[sl]),
            masks=dev_part.get("masks"), method=method_fn, method_name=method,
            method_options=dict(options), batch_size=ev.batch_size,
            temperature=dev_part["temperatures"], calibrated=ev.calibration is not None, **ev.settings)
        for metric in ev.metrics:
            ev.bar.set_postfix_str(f"{method}/{metric}")
            if metric in parts:
                with ieee_float32(ev.dev):                     # no autocast, no TF32
                    parts[metric].append(_to_host(METRICS[metric].compute(inputs)))
            ev.bar.update(1)
        del inputs, dev_part
    return parts


def _n_stored(path: Path) -> int:
    return len(load_npz(path, ["indices"])["indices"])   # reads the indices only


def _n_evaluated(method: str, n_stored: int, n_samples: int) -> int:
    if n_samples > n_stored:
        log.warning("%s: %d samples requested but %d stored; evaluating all stored samples "
                    "(rerun 02_attribute with more samples to change this)", method, n_samples, n_stored)
    return min(n_samples, n_stored)


def _chunk_size(eval_chunk: int, batch_size: int) -> int:
    """Images per device chunk: ``eval_chunk`` rounded down to a multiple of the batch size
    (at least one batch), so every forward pass sees the batches an unchunked run would."""
    return max(int(batch_size), int(eval_chunk) // int(batch_size) * int(batch_size))


def _chunks(n: int, chunk: int, batch_size: int) -> list[slice]:
    """Consecutive slices of ``chunk`` images; a last piece smaller than one batch joins the
    one before it (its pixel-flipping batches are then those of an unchunked run)."""
    starts = list(range(0, n, chunk))
    if len(starts) > 1 and n - starts[-1] < batch_size:
        starts.pop()
    return [slice(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host slice on the device; pinned and copied without blocking on CUDA."""
    if device.type == "cuda":
        return t.contiguous().pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _to_host(r: MetricResult) -> MetricResult:
    cpu = lambda t: t.detach().cpu()  # noqa: E731
    return MetricResult(cpu(r.values), None if r.curves is None else cpu(r.curves),
                        {k: cpu(v) for k, v in r.extras.items()}, {k: cpu(v) for k, v in r.variants.items()})


def _concat(parts: list[MetricResult]) -> MetricResult:
    """One result from the results of consecutive chunks."""
    first = parts[0]
    cat = lambda get: torch.cat([get(p) for p in parts])  # noqa: E731
    return MetricResult(cat(lambda p: p.values),
                        None if first.curves is None else cat(lambda p: p.curves),
                        {k: cat(lambda p, k=k: p.extras[k]) for k in first.extras},
                        {k: cat(lambda p, k=k: p.variants[k]) for k in first.variants})


def _rows(cfg: RunConfig, idx: np.ndarray, true: np.ndarray, pred: np.ndarray, method: str, metric: str,
          values: torch.Tensor) -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": cfg.run_id, "dataset": cfg.dataset, "objective": cfg.objective, "seed": cfg.seed,
        "sample_index": idx, "pair": "", "true": true, "pred": pred, "correct": true == pred,
        "method": method, "metric": metric,
        "value": values.detach().double().cpu().numpy().reshape(-1)}, columns=list(runs.RESULT_COLUMNS))
