"""The pair analysis of a run, inside the attribution and evaluation stages (the methods,
sets and metrics are :mod:`xai_utils.ops.pairs`).

* :func:`attribute_pairs` (called by :func:`xai_utils.stages.attribute.attribute_run` when the
  run lists ``pair_methods``): draws the study's pair set from the evaluation subset
  (:mod:`xai_utils.ops.pairs.sets`), computes each pair method's maps and writes ``pairs/<method>.npz``:
  ``maps1``, ``maps2`` (float32 [N, 1, H, W]), ``index1``, ``index2``, ``kind``, ``labels1``,
  ``labels2``, ``preds1``, ``preds2``, ``similarity`` (s of each pair) and ``options`` (JSON).
* :func:`evaluate_pairs` (called by :func:`xai_utils.stages.evaluate.evaluate_run` when the run
  lists ``pair_metrics``): the rows of ``results.csv`` for every pair, method and metric.
  A row's ``sample_index`` is the pair's first image, ``pair`` its id ``"<index1>-<index2>"``,
  ``true``/``pred`` the first image's, ``correct`` whether the model classifies *both*
  images correctly (the statistics keep those, as for single images), and the metric name
  carries the pair's kind: ``pair_deletion[same]``, ``pair_deletion[same,conditional]``.
  Pixel-flipping-like curves of the simultaneous deletion and insertion go to
  ``pairs/curves_<method>.npz``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
import torch

from tqdm.auto import tqdm

from ..ops.attribution import explaining
from ..ops.pairs.methods import check_pair_method_options, pair_attribute, resolve_pair_options
from ..ops.pairs.metrics import PAIR_METRICS, PAIR_SETTINGS, PairInputs, check_pair_metrics, step_fractions
from ..ops.pairs.sets import make_pairs, pair_ids, second_views
from ..ops.pairs.spaces import similarity
from ..settings import layout as runs
from . import files
from .artefacts import load_npz

def load_pairs(path: Union[str, Path]) -> dict[str, Any]:
    """Read a ``pairs/<method>.npz`` (``options`` parsed from JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the attribution stage with pair_methods (02_attribute)")
    out: dict[str, Any] = load_npz(path)
    out["options"] = json.loads(str(out["options"]))
    return out


def pair_images(ds, index1: np.ndarray, index2: np.ndarray, kind: np.ndarray, seed: int,
                device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The two images of every pair (pixel space, on ``device``); view pairs' second image is
    the seeded SCL-recipe view (:func:`xai_utils.ops.pairs.sets.second_views`)."""
    x1 = ds.batch(np.asarray(index1), device="cpu")[0].float()
    x2 = second_views(ds.batch(np.asarray(index2), device="cpu")[0].float(), kind, seed)
    return x1.to(device), x2.to(device)


def attribute_pairs(run_dir: Path, cfg, model, ds, idx: np.ndarray, labels: torch.Tensor, preds: torch.Tensor,
                    device: Any, batch_size: int) -> dict[str, Path]:
    """Maps of every pair method of ``cfg.pair_methods`` for the run's pair set."""
    for m in cfg.pair_methods:
        check_pair_method_options(m, dict(cfg.pair_method_options.get(m, {})))
    pairs = make_pairs(idx, labels.numpy(), cfg.pair_samples, cfg.pair_kinds, cfg.pair_seed)
    pos = {int(i): k for k, i in enumerate(np.asarray(idx).tolist())}
    at = lambda which: np.asarray([pos[int(i)] for i in pairs[which]], dtype=np.int64)  # noqa: E731
    p1, p2 = at("index1"), at("index2")
    x1, x2 = pair_images(ds, pairs["index1"], pairs["index2"], pairs["kind"], cfg.pair_seed, device)
    with torch.no_grad():
        with explaining(model):
            sims = torch.cat([similarity(model, x1[s:s + batch_size], x2[s:s + batch_size], cfg.pair_space)
                              for s in range(0, len(x1), batch_size)]).cpu().numpy()
    paths = {}
    for m in cfg.pair_methods:
        options = dict(cfg.pair_method_options.get(m, {}))
        maps1, maps2 = [], []
        for s in tqdm(range(0, len(x1), batch_size), desc=f"{cfg.run_id} {m}", unit="batch"):
            a, b = pair_attribute(model, x1[s:s + batch_size], x2[s:s + batch_size], m, cfg.pair_space, **options)
            maps1.append(a.cpu())
            maps2.append(b.cpu())
        meta = {"method": m, "options": resolve_pair_options(m, **options), "space": cfg.pair_space,
                "run_id": cfg.run_id, "dataset": cfg.dataset, "eval_split": cfg.eval_split,
                "pair_seed": cfg.pair_seed, "pair_samples": cfg.pair_samples}
        paths[m] = files.save_npz(
            runs.pairs_path(run_dir, m), maps1=torch.cat(maps1).numpy(), maps2=torch.cat(maps2).numpy(),
            index1=pairs["index1"], index2=pairs["index2"], kind=pairs["kind"],
            labels1=labels.numpy()[p1], labels2=labels.numpy()[p2], preds1=preds.numpy()[p1],
            preds2=preds.numpy()[p2], similarity=sims.astype(np.float32),
            options=np.array(json.dumps(meta, sort_keys=True, default=str)))
    return paths


def method_callable(name: str, space: str, options: dict) -> Any:
    return lambda model, x1, x2: pair_attribute(model, x1, x2, name, space, **options)


def evaluate_pairs(run_dir: Path, cfg, model, ds, device: Any, batch_size: int,
                   columns: list[str]) -> Optional[pd.DataFrame]:
    """The ``results.csv`` rows of every pair metric x pair method of the run (None if none)."""
    if not cfg.pair_metrics or not cfg.pair_methods:
        return None
    check_pair_metrics(cfg.pair_metrics)
    missing = [m for m in cfg.pair_methods if not runs.pairs_path(run_dir, m).is_file()]
    if missing:
        raise FileNotFoundError(f"no stored pair maps for {missing} in {Path(run_dir) / runs.PAIRS}: run the "
                                f"attribution stage first (02_attribute)")
    tables = []
    bar = tqdm(total=len(cfg.pair_methods) * len(cfg.pair_metrics), desc=f"{cfg.run_id} pair metrics", unit="metric")
    for m in cfg.pair_methods:
        z = load_pairs(runs.pairs_path(run_dir, m))
        if z["options"].get("space") != cfg.pair_space:
            raise ValueError(f"{runs.pairs_path(run_dir, m)} explains the space {z['options'].get('space')!r}, the run "
                             f"asks for {cfg.pair_space!r}: rerun 02_attribute")
        x1, x2 = pair_images(ds, z["index1"], z["index2"], z["kind"], int(z["options"].get("pair_seed", 0)), device)
        options = dict(z["options"].get("options") or {})
        inputs = PairInputs(model=model, x1=x1, x2=x2, maps1=torch.as_tensor(z["maps1"]).to(device),
                            maps2=torch.as_tensor(z["maps2"]).to(device), index1=z["index1"], index2=z["index2"],
                            method=method_callable(m, cfg.pair_space, options), batch_size=batch_size,
                            **{f: getattr(cfg, k) for k, f in PAIR_SETTINGS.items()})
        ids, kinds = pair_ids(z["index1"], z["index2"]), z["kind"].astype(str)
        base = pd.DataFrame({
            "run_id": cfg.run_id, "dataset": cfg.dataset, "objective": cfg.objective, "seed": cfg.seed,
            "sample_index": z["index1"], "pair": ids, "true": z["labels1"], "pred": z["preds1"],
            "correct": (z["labels1"] == z["preds1"]) & (z["labels2"] == z["preds2"]), "method": m})
        curves = {}
        with explaining(model):
            for metric in cfg.pair_metrics:
                bar.set_postfix_str(f"{m}/{metric}")
                out = PAIR_METRICS[metric].compute(inputs)
                for variant, values in [("", out.values), *out.variants.items()]:
                    v = values.detach().double().cpu().numpy()
                    for kind in dict.fromkeys(kinds):
                        sel = kinds == kind
                        name = str(runs.RowName.of_pair(metric, kind, variant))
                        tables.append(base[sel].assign(metric=name, value=v[sel]))
                if out.curves is not None:
                    curves[metric] = out.curves.float().cpu().numpy()
                bar.update(1)
        if curves:
            files.save_npz(runs.pair_curves_path(run_dir, m), index1=z["index1"], index2=z["index2"], kind=z["kind"],
                          fractions=step_fractions(x1.shape[-2] * x1.shape[-1], cfg.pair_pixels_per_step).numpy(),
                          **curves)
    bar.close()
    return pd.concat(tables, ignore_index=True)[columns] if tables else None
