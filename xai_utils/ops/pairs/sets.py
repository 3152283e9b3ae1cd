"""Seeded pair sets from a run's evaluation subset: the same pairs for every model of a study.

Kinds (:data:`PAIR_KINDS`, the configuration key ``pair_kinds``):

* ``view``: an image and a second view of it, the SCL recipe's random resized crop, flip,
  colour jitter and grey (SupCon's positive pair); both indices are the image's;
* ``same``: two different images of the same class (SupCon's other positives);
* ``different``: an image and one of another class (a negative).

A pair set is a dict of arrays: ``index1``, ``index2`` (int64, indices into the evaluation
split), ``kind`` (str). Its id in ``results.csv`` is ``"<index1>-<index2>"``
(:func:`pair_ids`). Every draw comes from one NumPy/torch generator seeded with
``pair_seed``, so the set depends only on the evaluation subset, the kinds, their size and
the seed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..augment import apply_scl, sample_scl_params

PAIR_KINDS: dict[str, str] = {
    "view": "two views of one image (the SCL recipe's crop, flip, jitter and grey)",
    "same": "two images of the same class",
    "different": "two images of different classes",
}


def check_kinds(kinds: Sequence[str]) -> list[str]:
    bad = [k for k in kinds if k not in PAIR_KINDS]
    if bad:
        raise ValueError(f"unknown pair kind(s) {bad}; available: {', '.join(PAIR_KINDS)}")
    return list(kinds)


def make_pairs(indices: np.ndarray, labels: np.ndarray, n_per_kind: int, kinds: Sequence[str] = tuple(PAIR_KINDS),
               seed: int = 0) -> dict[str, np.ndarray]:
    """``n_per_kind`` distinct pairs of each kind from the images ``indices`` (labels
    ``labels``, aligned). A kind with too few candidates gets as many pairs as exist."""
    check_kinds(kinds)
    indices, labels = np.asarray(indices, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"index1": [], "index2": [], "kind": []}
    for kind in kinds:
        if kind == "view":
            chosen = rng.permutation(len(indices))[:n_per_kind]
            pairs = [(int(indices[i]), int(indices[i])) for i in chosen]
        else:
            pairs, seen = [], set()
            for _ in range(50 * n_per_kind):
                if len(pairs) == n_per_kind:
                    break
                i = int(rng.integers(len(indices)))
                same = labels == labels[i]
                cand = np.flatnonzero(same & (indices != indices[i]) if kind == "same" else ~same)
                if not len(cand):
                    continue
                j = int(cand[rng.integers(len(cand))])
                key = tuple(sorted((int(indices[i]), int(indices[j]))))
                if key not in seen:
                    seen.add(key)
                    pairs.append((int(indices[i]), int(indices[j])))
        out["index1"] += [a for a, _ in pairs]
        out["index2"] += [b for _, b in pairs]
        out["kind"] += [kind] * len(pairs)
    return {"index1": np.asarray(out["index1"], dtype=np.int64), "index2": np.asarray(out["index2"], dtype=np.int64),
            "kind": np.asarray(out["kind"], dtype=str)}


def pair_ids(index1: np.ndarray, index2: np.ndarray) -> np.ndarray:
    """``"<index1>-<index2>"`` per pair: the key the statistics pair models on."""
    return np.asarray([f"{a}-{b}" for a, b in zip(np.asarray(index1).tolist(), np.asarray(index2).tolist())])


def second_views(x: Tensor, kind: np.ndarray, seed: int = 0) -> Tensor:
    """The second image of each pair: for ``view`` pairs an SCL-recipe view of ``x`` (drawn
    for all view pairs at once from a generator seeded with ``seed``), else ``x`` itself."""
    is_view = torch.as_tensor(np.asarray(kind) == "view")
    if not bool(is_view.any()):
        return x
    gen = torch.Generator().manual_seed(int(seed))
    params = sample_scl_params(int(is_view.sum()), x.shape[-2], x.shape[-1], generator=gen)
    out = x.clone()
    out[is_view.to(x.device)] = apply_scl(x[is_view.to(x.device)], params).to(x.dtype)
    return out
