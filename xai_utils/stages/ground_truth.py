"""The ground truth of a run on a planted dataset (:mod:`xai_utils.study.data.planted`): what its
model uses, by intervention on the cue -> ``ground_truth.csv``, one row per evaluation image:

=================  ===========================================================================
``image``          the image's index in the test splits (the one its maps carry)
``label``          its class
``target``         the class its maps explain
``cue_swapped``    the class whose cue the ``test_swapped`` image carries (never ``label``)
``pred``           the prediction with the image's own cue (``test``)
``pred_absent``    the prediction without a cue (``test_absent``)
``pred_swapped``   the prediction with another class's cue (``test_swapped``)
``logit``          the explained class's logit with the cue
``logit_absent``   the same logit without it
``reliance``       ``logit - logit_absent``: how much the model's evidence for the explained
                   class comes from the cue (:func:`~xai_utils.ops.metrics.ground_truth.cue_reliance`)
=================  ===========================================================================

The model-level measures follow from it: accuracy with the cue minus accuracy without, and
the share of swapped images predicted as the cue's class (:mod:`xai_utils.analysis.ground_truth`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from ..ops.metrics.ground_truth import class_logits, cue_reliance
from ..settings import layout as runs
from ..settings.run_config import RunConfig
from ..study.data import is_planted, load_dataset, resolve_split
from ..study.data.planted import cue_layout
from . import files
from .artefacts import GROUND_TRUTH_COLUMNS
from .attribute import load_attributions

log = logging.getLogger(__name__)


def ground_truth_run(run_dir: Path, cfg: RunConfig, model: torch.nn.Module, batch_size: int
                     ) -> Optional[pd.DataFrame]:
    """Write the run's ``ground_truth.csv`` (the images and explained classes of its stored
    maps) and return it; None (nothing written) for a dataset without planted evidence, or an
    evaluation split other than the aligned test split (the maps would not be of these images)."""
    if not is_planted(cfg.dataset):
        return None
    if resolve_split(cfg.dataset, cfg.eval_split) != "test":
        log.warning("no ground truth for %s: its maps are of split '%s', not of the aligned test split",
                    cfg.run_id, cfg.eval_split)
        return None
    stored = load_attributions(runs.attribution_path(run_dir, cfg.methods[0]))
    idx = np.asarray(stored["indices"], dtype=np.int64)
    targets = torch.as_tensor(np.asarray(stored["targets"], dtype=np.int64))
    splits = {s: load_dataset(cfg.dataset, s, cfg.data_root) for s in ("test", "test_absent", "test_swapped")}
    aligned = splits["test"]
    swapped = cue_layout("test_swapped", aligned.labels, 1.0, aligned.num_classes,
                         aligned.images.shape[-1]).cue_class[idx]
    out = {}
    for split, ds in splits.items():
        out[split] = class_logits(model, ds.batch(idx)[0], targets, batch_size)
    (logit, pred), (logit_absent, pred_absent), (_, pred_swapped) = out["test"], out["test_absent"], out["test_swapped"]
    df = pd.DataFrame({"image": idx, "label": aligned.labels[idx].numpy(), "target": targets.numpy(),
                       "cue_swapped": swapped.numpy(), "pred": pred.numpy(), "pred_absent": pred_absent.numpy(),
                       "pred_swapped": pred_swapped.numpy(), "logit": logit.numpy(),
                       "logit_absent": logit_absent.numpy(), "reliance": cue_reliance(logit, logit_absent).numpy()})
    files.save_text(Path(run_dir) / runs.GROUND_TRUTH, df[list(GROUND_TRUTH_COLUMNS)].to_csv(index=False))
    return df
