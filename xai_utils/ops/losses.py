"""Training losses of the contrastive baselines: Supervised Contrastive and Triplet.

Both are fully vectorised (masks on a similarity / distance matrix, no Python loop over
the batch), device-agnostic and compute in float32 even inside an autocast region: half /
bfloat16 inputs are promoted, and autocast is switched off for the loss (under autocast a
matrix product of float32 inputs would otherwise run in bfloat16), so that they are
numerically safe inside a bf16 training step.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .devices import float32

__all__ = ["SupConLoss", "TripletLoss", "pairwise_distances", "MINING"]

# in-batch mining rules of TripletLoss (the config's ``mining`` choices)
MINING = ("semi-hard", "semi-hard-hardest", "batch-hard")


def _promote(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 / float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _zero_loss(x: torch.Tensor) -> torch.Tensor:
    """A zero that still belongs to the autograd graph of ``x`` (backward gives zero grads)."""
    return x.sum() * 0.0


class SupConLoss(nn.Module):
    """Supervised Contrastive loss, the L_out form of Khosla et al. (2020), eq. 2.

    ``features`` [B, V, D] holds V L2-normalised views of B images, ``labels`` [B]. The
    N = B*V views are all anchors; for anchor i with positives P(i) (same label, not i)
    and the set A(i) of all other views::

        l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a in A(i)} exp(z_i.z_a / t) )

    The loss is the mean of l_i over the anchors that have at least one positive; anchors
    without a positive (a class seen once, with V = 1) contribute nothing, and a batch where
    no anchor has a positive gives 0 (with a gradient path, all gradients zero). There is no
    ``t / base_t`` rescaling (the reference implementation's optional factor; 1 at t = 0.07).
    The log-softmax subtracts the row maximum (``logsumexp``), so small temperatures are safe.

    Two kinds of extra rows, for losses with a fixed batch shape (no host synchronisation):

    * ``background`` (bool [B]): these images are *background samples* (ExConB): their views
      appear only in the denominators A(i), never as anchors or positives, and the mean runs
      over the other anchors;
    * a negative label: the row is absent (in no anchor, positive or denominator).
    """

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"SupConLoss: temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def forward(self, features: torch.Tensor, labels: torch.Tensor,
                background: torch.Tensor | None = None) -> torch.Tensor:
        with float32(features.device):          # the similarities in float32, under autocast too
            return self._loss(features, labels, background)

    def _loss(self, features: torch.Tensor, labels: torch.Tensor, background: torch.Tensor | None) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"SupConLoss: features must be [batch, views, dim], got shape "
                             f"{tuple(features.shape)} (stack the views with torch.stack(views, 1))")
        b, v, d = features.shape
        if labels.shape != (b,):
            raise ValueError(f"SupConLoss: labels must have shape ({b},), got {tuple(labels.shape)}")
        if background is not None and background.shape != (b,):
            raise ValueError(f"SupConLoss: background must be a bool mask of shape ({b},), "
                             f"got {tuple(background.shape)}")
        features = _promote(features)
        if b * v < 2:
            return _zero_loss(features)
        z = features.transpose(0, 1).reshape(v * b, d)       # view-major: row k = view k//b of image k%b
        lab = labels.repeat(v)
        n = z.shape[0]
        self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
        if background is None:
            # the plain loss, as before: bit-identical results for SCL runs
            logits = (z @ z.T / self.temperature).masked_fill(self_mask, float("-inf"))
            log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            pos = (lab[:, None] == lab[None, :]) & ~self_mask
            n_pos = pos.sum(dim=1)
            valid = (n_pos > 0).to(z.dtype)
            # where() keeps the -inf of the diagonal out of both the sum and its gradient; the
            # mean over valid anchors is a masked sum (no boolean index: no host read), and a
            # batch without any positive gives 0 / 1 = 0 with every gradient zero
            mean_log_prob_pos = torch.where(pos, log_prob, 0.0).sum(dim=1) / n_pos.clamp(min=1)
            return -(mean_log_prob_pos * valid).sum() / valid.sum().clamp(min=1.0)
        bg = background.to(torch.bool).repeat(v)
        absent = lab < 0
        real = ~bg & ~absent
        # absent views leave every denominator; a row with nothing left keeps a finite zero
        logits = (z @ z.T / self.temperature).masked_fill(self_mask | absent[None, :], float("-inf"))
        lse = torch.logsumexp(torch.where(absent[:, None], 0.0, logits), dim=1, keepdim=True)
        log_prob = logits - lse
        pos = (lab[:, None] == lab[None, :]) & ~self_mask & real[:, None] & real[None, :]
        n_pos = pos.sum(dim=1)
        valid = (n_pos > 0).to(z.dtype)
        mean_log_prob_pos = torch.where(pos, log_prob, 0.0).sum(dim=1) / n_pos.clamp(min=1)
        return -(mean_log_prob_pos * valid).sum() / valid.sum().clamp(min=1.0)


def pairwise_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix [B, B] of the rows of ``x`` [B, D], safe to differentiate.

    Uses the Gram form (memory O(B^2), not O(B^2 D)). Squared distances at or below ``eps``
    (the diagonal, duplicates) give distance 0 with zero gradient instead of NaN from
    d sqrt(s)/ds = 1 / (2 sqrt(s)) at s = 0.
    """
    x = _promote(x)
    sq_norm = (x * x).sum(dim=1)
    sq = (sq_norm[:, None] + sq_norm[None, :] - 2.0 * (x @ x.T)).clamp(min=0.0)
    sq = sq.masked_fill(torch.eye(x.shape[0], dtype=torch.bool, device=x.device), 0.0)
    zero = sq <= eps
    return torch.sqrt(torch.where(zero, torch.ones_like(sq), sq)) * (~zero)


class TripletLoss(nn.Module):
    """In-batch triplet loss on raw (not normalised) embeddings with Euclidean distance.

    A triplet (a, p, n) has a != p of the same label and n of another label; its loss is
    ``d(a, p) - d(a, n) + margin``. It is *semi-hard* when

        d(a, p) < d(a, n) < d(a, p) + margin

    (the negative is farther than the positive but still inside the margin, so the loss is
    positive). Mining rules (:data:`MINING`):

    * ``"semi-hard"`` (default; the rule of the authors' code, which produced the paper's
      numbers): the mean loss over *every* semi-hard triplet of the batch.
    * ``"semi-hard-hardest"`` (Schroff et al. 2015, FaceNet; TensorFlow Addons'
      ``triplet_semihard_loss``): each anchor-positive pair takes only its hardest semi-hard
      negative (the closest negative farther than the positive); the mean over the pairs that
      have one.
    * ``"batch-hard"`` (Hermans et al. 2017): per anchor with at least one positive and one
      negative, relu(max_p d(a, p) - min_n d(a, n) + margin), mean over those anchors.

    Both semi-hard rules fall back to batch-hard for a batch without any semi-hard triplet,
    as the authors' code does. A batch without any (anchor, positive, negative) triple gives
    0 with a gradient path.
    """

    def __init__(self, margin: float = 0.3, mining: str = "semi-hard"):
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"TripletLoss: mining must be one of {', '.join(MINING)}, got {mining!r}")
        if not margin >= 0:
            raise ValueError(f"TripletLoss: margin must be >= 0, got {margin!r}")
        self.margin = float(margin)
        self.mining = mining

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with float32(embeddings.device):        # distances and mining in float32, under autocast too
            return self._loss(embeddings, labels)

    def _loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2:
            raise ValueError(f"TripletLoss: embeddings must be [batch, dim], got shape {tuple(embeddings.shape)}")
        if labels.shape != (embeddings.shape[0],):
            raise ValueError(f"TripletLoss: labels must have shape ({embeddings.shape[0]},), "
                             f"got {tuple(labels.shape)}")
        embeddings = _promote(embeddings)
        dist = pairwise_distances(embeddings)
        same = labels[:, None] == labels[None, :]
        pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        neg = ~same
        hard, has_hard = self._batch_hard(dist, pos, neg)
        if self.mining == "batch-hard":
            return hard
        semi, has_semi = self._semi_hard(dist, pos, neg, hardest=self.mining == "semi-hard-hardest")
        # the fallback is chosen on the device (torch.where), not by a Python branch
        return torch.where(has_semi, semi, hard)

    def _semi_hard(self, dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, hardest: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, whether the batch has a semi-hard triplet): the mean over all semi-hard
        triplets, or (``hardest``) over anchor-positive pairs of their hardest semi-hard
        negative.

        Fixed shapes, memory O(B^2), no host read: each anchor's negative distances are
        sorted once; for every pair (a, p) two binary searches bound the negatives with
        d(a, p) < d(a, n) < d(a, p) + margin, and prefix sums give their count and the sum of
        their distances. Sums run in float64, so the result equals the literal triple loop to
        float32 rounding.
        """
        b = dist.shape[0]
        key = torch.where(neg, dist, torch.full_like(dist, float("inf")))
        order = key.argsort(dim=1, stable=True)      # negatives first; ties in index order
        sorted_key = key.gather(1, order)                                    # [B, B], +inf tail
        sorted_d = torch.where(neg.gather(1, order), dist.gather(1, order), torch.zeros_like(dist))
        csum = torch.cat([torch.zeros_like(sorted_d[:, :1]), sorted_d], 1).double().cumsum(1)
        d_ap = dist                                                          # [a, p]
        lo = torch.searchsorted(sorted_key.detach(), d_ap.detach(), right=True)      # first n: d > d_ap
        hi = torch.searchsorted(sorted_key.detach(), (d_ap + self.margin).detach(), right=False)
        count = (hi - lo).clamp_min(0) * pos                                  # [a, p]
        if hardest:
            has = count > 0
            closest = sorted_d.gather(1, lo.clamp(max=b - 1))
            pair = torch.where(has, d_ap - closest + self.margin, torch.zeros_like(d_ap))
            n = has.sum()
            return pair.sum() / n.clamp(min=1), n > 0
        sum_an = (csum.gather(1, hi) - csum.gather(1, lo.clamp(max=hi)))      # [a, p], float64
        total = (count * (d_ap.double() + self.margin) - torch.where(count > 0, sum_an, 0.0)).sum()
        n = count.sum()
        return (total / n.clamp(min=1)).to(dist.dtype), n > 0

    def _batch_hard(self, dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean batch-hard loss over anchors with a positive and a negative, whether there is
        any such anchor); 0 with a gradient path when there is none."""
        valid = (pos.any(dim=1) & neg.any(dim=1)).to(dist.dtype)
        hardest_pos = torch.where(pos, dist, torch.full_like(dist, float("-inf"))).max(dim=1).values
        hardest_neg = torch.where(neg, dist, torch.full_like(dist, float("inf"))).min(dim=1).values
        per_anchor = torch.where(valid > 0, F.relu(hardest_pos - hardest_neg + self.margin),
                                 torch.zeros_like(hardest_pos))
        return per_anchor.sum() / valid.sum().clamp(min=1.0) + _zero_loss(dist), valid.sum() > 0
