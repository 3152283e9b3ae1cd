"""The attribution stage: a trained run's fixed evaluation subset explained with each method,
one ``attributions/<method>.npz`` per method (and ``pairs/<method>.npz`` for the pair
analysis), readable without the model.

    paths = attribute_run("results/smoke/shapes/ce/seed0")      # settings from the run's config

The methods themselves are :mod:`xai_utils.ops.attribution`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..ops.attribution import (TARGET_KINDS, attribute, check_method_options, check_methods, predict,
                               resolve_options)
from ..ops.devices import ieee_float32, resolve_device
from ..study.data import eval_indices, load_dataset, resolve_split
from ..settings import layout as runs
from . import files
from .artefacts import load_npz
from .fingerprint import record_fingerprint
from .artefacts import load_run_config
from .model_io import load_model
from .pairs import attribute_pairs

MAP_DTYPES = ("float32", "float16")


def save_attributions(path: Union[str, Path], maps: Any, targets: Any, preds: Any, labels: Any,
                      indices: Any, options: Union[dict, str], dtype: str = "float32") -> Path:
    """Write one run's maps of one method to ``path`` (.npz, atomic, compressed).

    Keys: maps [N, 1, H, W] (float32 by default, lossless; ``dtype="float16"`` halves the
    size), targets, preds, labels, indices (int64 [N]) and options (a JSON string: method,
    its options, run id, ...), so the file is readable without the model.
    """
    if dtype not in MAP_DTYPES:
        raise ValueError(f"dtype must be one of {MAP_DTYPES}, got {dtype!r}")
    as_np = lambda a: a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    maps = as_np(maps).astype(dtype)
    if maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"maps must be [N, 1, H, W], got shape {maps.shape}")
    ints = {k: as_np(v).astype(np.int64).reshape(-1) for k, v in
            dict(targets=targets, preds=preds, labels=labels, indices=indices).items()}
    bad = {k: len(v) for k, v in ints.items() if len(v) != len(maps)}
    if bad:
        raise ValueError(f"{len(maps)} maps but lengths {bad}: every array needs one entry per map")
    text = options if isinstance(options, str) else json.dumps(options, sort_keys=True, default=str)
    return files.save_npz(path, maps=maps, options=np.array(text), **ints)


def load_attributions(path: Union[str, Path]) -> dict[str, Any]:
    """Read a file of :func:`save_attributions`: numpy arrays (maps as float32) and
    ``options`` parsed from its JSON string into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the attribution stage first (notebook 02_attribute)")
    out: dict[str, Any] = load_npz(path)
    out["maps"] = out["maps"].astype(np.float32)
    out["options"] = json.loads(str(out["options"]))
    return out


def stored_predictions(run_dir: Union[str, Path], cfg: Any, idx: np.ndarray, labels: Tensor) -> Optional[Tensor]:
    """Predicted classes of evaluation images ``idx`` from the run's ``predictions.npz``
    (the fp32 pass that gave the test accuracy), or None when the evaluation split is not
    the test split, the explained model is not the trained one (``explain_features``), or
    the file is absent (a run trained before it existed)."""
    path = runs.trained_run_dir(run_dir) / runs.PREDICTIONS
    if (resolve_split(cfg.dataset, cfg.eval_split) != resolve_split(cfg.dataset, "test") or not path.is_file()
            or cfg.explain_features != "trained"):
        return None
    stored = load_npz(path, ["preds", "labels"])
    preds, stored_labels = stored["preds"], stored["labels"]
    if len(preds) <= int(idx.max(initial=0)) or not np.array_equal(stored_labels[idx], labels.numpy()):
        raise ValueError(f"{path} does not match the evaluation split of {cfg.dataset}: retrain the run")
    return torch.from_numpy(preds[idx].astype(np.int64))


def attribute_run(run_dir: Union[str, Path], methods: Optional[Sequence[str]] = None,
                  n_samples: Optional[int] = None, target: Optional[str] = None,
                  batch_size: Optional[int] = None, device: str = "auto",
                  method_options: Optional[dict[str, dict]] = None) -> dict[str, Path]:
    """Explain a trained run's fixed evaluation subset with each method; one .npz per method.

    Settings come from the run's ``config.json`` (kept up to date by the pipeline), not from
    the copy inside ``model.pt``. Empty values (None, [], 0, "") take that config:
    ``methods``, ``eval_samples``, ``target`` ("pred" | "true"), ``batch_size_eval``.
    ``method_options``: optional {method: {option: value}}. Unknown methods, options or
    target kinds are reported before anything is loaded. When the run lists ``pair_methods``,
    the maps of its pair set follow (:func:`xai_utils.stages.pairs.attribute_pairs`), under
    the keys ``pairs/<method>``. Returns {method: written .npz path}.
    """

    cfg = load_run_config(run_dir)
    methods = check_methods([methods] if isinstance(methods, str) else (methods or cfg.methods))
    target = target or cfg.target
    if target not in TARGET_KINDS:
        raise ValueError(f"unknown target kind '{target}'; use one of: {', '.join(TARGET_KINDS)}")
    method_options_ = {m: dict(cfg.method_options.get(m, {})) for m in methods}
    for m, opts in (method_options or {}).items():
        if m not in method_options_:
            raise ValueError(f"method_options given for '{m}', which is not in methods {methods}")
        method_options_[m].update(opts)
    for m, opts in method_options_.items():
        check_method_options(m, opts)
    resolved = {m: resolve_options(m, **o) for m, o in method_options_.items()}
    n_samples = n_samples or cfg.eval_samples
    batch_size = batch_size or cfg.batch_size_eval

    dev = resolve_device(device)
    model, _ = load_model(run_dir, dev, explain_features=cfg.explain_features)   # settings: config.json
    ds = load_dataset(cfg.dataset, cfg.eval_split, cfg.data_root)
    idx = np.asarray(eval_indices(len(ds), n_samples, seed=0), dtype=np.int64)
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]

    labels_t = ds.labels[torch.as_tensor(idx)].long()
    preds_t = stored_predictions(run_dir, cfg, idx, labels_t)
    if preds_t is None:                          # an evaluation split other than the test split
        preds_t = torch.cat([predict(model, ds.batch(b, device=dev)[0], batch_size=batch_size).cpu()
                             for b in batches])
    targets_t = TARGET_KINDS[target](preds_t, labels_t)

    paths: dict[str, Path] = {}
    for m in methods:
        maps, pos = [], 0
        for b in tqdm(batches, desc=f"{cfg.run_id} {m}", unit="batch"):
            xb, _ = ds.batch(b, device=dev)
            tb = targets_t[pos:pos + len(b)].to(dev)
            maps.append(attribute(model, xb, tb, m, **method_options_[m]).cpu())
            pos += len(b)
        all_maps = torch.cat(maps)
        options = {"method": m, "options": resolved[m], "run_id": cfg.run_id, "target": target,
                   "dataset": cfg.dataset, "eval_split": cfg.eval_split, "n_samples": len(idx),
                   "input_size": list(all_maps.shape[-2:])}
        paths[m] = save_attributions(runs.attribution_path(run_dir, m), all_maps, targets_t, preds_t,
                                     labels_t, idx, options)
    if cfg.pair_methods:                         # the pair analysis (xai_utils.ops.pairs): pairs/<method>.npz
        with ieee_float32(dev):                  # no autocast, no TF32
            pair_paths = attribute_pairs(Path(run_dir), cfg, model, ds, idx, labels_t, preds_t, dev, batch_size)
        paths.update({f"pairs/{m}": p for m, p in pair_paths.items()})
    record_fingerprint(run_dir, runs.Stage.ATTRIBUTE, dev)
    return paths


def summarize_attributions(run_dir: Union[str, Path], methods: Optional[Sequence[str]] = None):
    """One row per stored method: samples, map size, target kind, number of constant maps
    (degenerate explanations, e.g. an all-zero Grad-CAM) and the range and mean of the values."""
    folder = Path(run_dir) / runs.ATTRIBUTIONS
    methods = list(methods) if methods else sorted(p.stem for p in folder.glob("*.npz"))
    rows = []
    for m in methods:
        d = load_attributions(runs.attribution_path(run_dir, m))
        flat = d["maps"].reshape(len(d["maps"]), -1)
        rows.append({"method": m, "samples": len(flat), "map_size": "x".join(map(str, d["maps"].shape[-2:])),
                     "target": d["options"].get("target", ""),
                     "constant_maps": int((flat.max(1) == flat.min(1)).sum()) if len(flat) else 0,
                     "min": float(flat.min()) if flat.size else float("nan"),
                     "max": float(flat.max()) if flat.size else float("nan"),
                     "mean": float(flat.mean()) if flat.size else float("nan")})
    return pd.DataFrame(rows)
