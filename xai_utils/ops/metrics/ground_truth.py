"""What a model uses, by intervention on evidence planted in its images (the ground truth an
explanation is scored against; :mod:`xai_utils.study.data.planted`)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..attribution import per_batch_logits


def class_logits(model: torch.nn.Module, x: Tensor, classes: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """The logit of ``classes[i]`` for image ``x[i]`` and the predicted class (float64 and
    int64 [N], on the host), from the pass :func:`~xai_utils.ops.attribution.predict` makes."""
    def read(logits: Tensor, rows: slice) -> tuple[Tensor, Tensor]:
        out = logits.double().cpu()
        return out.gather(1, classes[rows].long().view(-1, 1)).view(-1), out.argmax(dim=1)
    parts = per_batch_logits(model, x, read, batch_size)
    return (torch.cat([torch.zeros(0, dtype=torch.float64)] + [p[0] for p in parts]),
            torch.cat([torch.zeros(0, dtype=torch.long)] + [p[1] for p in parts]))


def cue_reliance(logit_with: Tensor, logit_without: Tensor) -> Tensor:
    """Per image, how much the explained class's logit drops when the cue is removed
    (positive: the model used the cue for that class)."""
    return logit_with.double() - logit_without.double()
