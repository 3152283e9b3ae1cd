"""The trained model of a run on disk: what ``model.pt`` holds, and loading it back."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from ..settings.run_config import RunConfig
from ..study.models import EXPLAIN_FEATURES, ExplainedModel, ProjectionHead
from ..study.objectives import explained_model
from .artefacts import load_torch
from .imported import brought_model
from ..settings.layout import trained_model_path


def model_state(model: ExplainedModel, cfg: RunConfig, num_classes: int,
                projection: Optional[nn.Module] = None) -> dict:
    """What ``model.pt`` holds; ``projection``: the SCL projection head, kept for the pair
    analysis in its space (``pair_space: projection``), not part of the explained model."""
    out = {"config": cfg.to_dict(), "num_classes": num_classes,
           "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(),
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if isinstance(projection, ProjectionHead):
        out["projection"] = {k: v.detach().cpu() for k, v in projection.state_dict().items()}
    return out


def load_model(run_dir_or_file: Union[str, Path], device: Union[str, torch.device] = "cpu",
               explain_features: str = "trained") -> tuple[ExplainedModel, RunConfig]:
    """Load a trained run's explained model (``model.pt``) in eval mode, with its training config.

    ``run_dir_or_file``: the file, a run folder, or an evaluation folder under it
    (``<run>/protocols/<name>/``, which uses the run's model). ``explain_features="raw"``
    applies the head to the raw pooled features even where it was trained on L2-normalised
    ones (the authors' CIFAR-10 evaluation); ``"trained"`` keeps the model as trained.
    """
    if explain_features not in EXPLAIN_FEATURES:
        raise ValueError(f"explain_features must be one of {', '.join(EXPLAIN_FEATURES)}, got {explain_features!r}")
    p = Path(run_dir_or_file)
    if p.is_dir():
        p = trained_model_path(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: train the run first (notebook 01_train)")
    state = load_torch(p)
    cfg = RunConfig.from_dict(state["config"])
    if cfg.brought:                            # a model brought as a file (stages.imported)
        model = brought_model(cfg, state["num_classes"], state["mean"], state["std"], state["weights"])
    else:
        model = explained_model(cfg, state["num_classes"], state["mean"], state["std"])
        model.load_state_dict(state["state_dict"])
    if "projection" in state:                  # SCL-like runs: the head, for pair_space projection
        head = ProjectionHead(model.feature_dim, cfg.proj_dim)
        head.load_state_dict(state["projection"])
        model.projection = head
    if explain_features == "raw":
        model.normalize_features = False
    return model.to(device).eval(), cfg
