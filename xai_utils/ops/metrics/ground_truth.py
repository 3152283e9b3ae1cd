"""What a model uses, by intervention on evidence planted in its images (the ground truth an
explanation is scored against; :mod:`xai_utils.study.data.planted`)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..attribution import explaining
from ..devices import ieee_float32


def class_logits(model: torch.nn.Module, x: Tensor, classes: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """The logit of ``classes[i]`` for image ``x[i]`` and the predicted class (float64 and
    int64 [N], on the host), in eval mode, batch by batch, as :func:`~xai_utils.ops.attribution.predict`."""
    dev = next(model.parameters()).device
    logits = [torch.zeros(0, dtype=torch.float64)]
    preds = [torch.zeros(0, dtype=torch.long)]
    with explaining(model), torch.no_grad(), ieee_float32(dev):
        for s in range(0, x.shape[0], batch_size):
            out = model(x[s:s + batch_size].to(dev).float()).double().cpu()
            logits.append(out.gather(1, classes[s:s + batch_size].long().view(-1, 1)).view(-1))
            preds.append(out.argmax(dim=1))
    return torch.cat(logits), torch.cat(preds)


def cue_reliance(logit_with: Tensor, logit_without: Tensor) -> Tensor:
    """Per image, how much the explained class's logit drops when the cue is removed
    (positive: the model used the cue for that class)."""
    return logit_with.double() - logit_without.double()
