"""A control: the random map, the floor a real explanation must beat.

Its scores say how large a difference between two real explanations is: an SCL-CE gap in a
metric means little when a random map scores as well as either of them.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor

from ..contract import Explainable
from .registry import register_method


def image_seed(x: Tensor, seed: int) -> int:
    """A seed that depends only on the image (its pixels, quantised to 8 bits) and ``seed``:
    the same image gets the same draw in every model, batch and run."""
    quantised = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return int(np.random.SeedSequence([zlib.crc32(quantised.tobytes()), int(seed) & 0xFFFFFFFF])
               .generate_state(1)[0])


@register_method("random", label="Random", class_agnostic=True)
def random_map(model: Explainable, x: Tensor, target: Tensor, *, seed: int = 0) -> Tensor:
    """Uniform [0, 1) noise, one value per pixel, drawn from a generator seeded by the image
    itself (:func:`image_seed`): the same images get the same maps for every model, and a
    perturbed image (continuity's noise) gets an unrelated map, as a random explanation should.
    The model and the class are ignored."""
    maps = [torch.rand(1, *x.shape[-2:], generator=torch.Generator().manual_seed(image_seed(xi, seed)))
            for xi in x]
    return torch.stack(maps).to(x.device) if maps else x.new_zeros(0, 1, *x.shape[-2:])
