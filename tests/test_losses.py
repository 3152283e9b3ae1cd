"""SupCon and Triplet losses against slow, literal loop implementations of the formulas.

The references below follow the papers' definitions term by term (nested Python loops over
anchors, positives and negatives); values and autograd gradients must agree to 1e-5 in
float64.
"""
from __future__ import annotations

import math

import pytest
import torch

from xai_utils.ops.losses import SupConLoss, TripletLoss

TOL = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- references

def supcon_loop(features: torch.Tensor, labels: torch.Tensor, t: float) -> torch.Tensor:
    """Khosla et al. (2020) eq. 2 (L_out), mean over anchors that have a positive."""
    b, v, _ = features.shape
    views = [(i, k) for i in range(b) for k in range(v)]
    terms = []
    for (i, k) in views:
        zi = features[i, k]
        others = [(j, m) for (j, m) in views if (j, m) != (i, k)]
        positives = [(j, m) for (j, m) in others if labels[j] == labels[i]]
        if not positives:
            continue
        denom = sum(torch.exp(torch.dot(zi, features[j, m]) / t) for (j, m) in others)
        s = sum(torch.log(torch.exp(torch.dot(zi, features[j, m]) / t) / denom) for (j, m) in positives)
        terms.append(-s / len(positives))
    if not terms:
        return features.sum() * 0.0
    return sum(terms) / len(terms)


def triplet_loop(x: torch.Tensor, labels: torch.Tensor, margin: float, mining: str):
    """Returns (loss, mode, n_semi_hard) following the definitions in TripletLoss' docstring:
    "semi-hard" averages over every semi-hard triple (a, p, n) (the authors' rule),
    "semi-hard-hardest" over pairs (a, p) of their closest semi-hard negative (FaceNet)."""
    n = len(labels)
    d = lambda i, j: torch.linalg.norm(x[i] - x[j])  # noqa: E731
    if mining in ("semi-hard", "semi-hard-hardest"):
        losses = []
        for a in range(n):
            for p in range(n):
                if p == a or labels[p] != labels[a]:
                    continue
                d_ap = d(a, p)
                best = None
                for q in range(n):
                    if labels[q] == labels[a]:
                        continue
                    d_an = d(a, q)
                    if not d_ap < d_an < d_ap + margin:
                        continue
                    if mining == "semi-hard":
                        losses.append(d_ap - d_an + margin)
                    elif best is None or d_an < best:
                        best = d_an
                if best is not None:
                    losses.append(d_ap - best + margin)
        if losses:
            return sum(losses) / len(losses), "semi-hard", len(losses)
    losses = []
    for a in range(n):
        pos = [d(a, p) for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [d(a, q) for q in range(n) if labels[q] != labels[a]]
        if pos and neg:
            hp = pos[0]
            for v in pos[1:]:
                hp = torch.maximum(hp, v)
            hn = neg[0]
            for v in neg[1:]:
                hn = torch.minimum(hn, v)
            losses.append(torch.clamp(hp - hn + margin, min=0.0))
    if losses:
        return sum(losses) / len(losses), "batch-hard", 0
    return x.sum() * 0.0, "none", 0


# ----------------------------------------------------------------------------- helpers

def _value_and_grad(fn, x: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    loss = out[0] if isinstance(out, tuple) else out
    (g,) = torch.autograd.grad(loss, x, allow_unused=False)
    return loss.detach(), g, out


def _unit(b, v, d, gen):
    return torch.nn.functional.normalize(torch.randn(b, v, d, generator=gen, dtype=torch.float64), dim=-1)


def _check_supcon(feats, labels, t):
    crit = SupConLoss(temperature=t)
    lv, gv, _ = _value_and_grad(lambda f: crit(f, labels), feats)
    lr, gr, _ = _value_and_grad(lambda f: supcon_loop(f, labels, t), feats)
    assert torch.isfinite(lv) and torch.isfinite(gv).all()
    torch.testing.assert_close(lv, lr, **TOL)
    torch.testing.assert_close(gv, gr, **TOL)
    return lv


# ----------------------------------------------------------------------------- SupCon

@pytest.mark.parametrize("t", [0.07, 0.5])
def test_supcon_random_two_views(t):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (6,), generator=g)
    _check_supcon(_unit(6, 2, 5, g), labels, t)


def test_supcon_anchors_without_positive():
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])   # with one view, images 2 and 5 have no positive
    loss = _check_supcon(_unit(6, 1, 4, g), labels, 0.1)
    assert loss > 0


def test_supcon_all_same_and_all_different_labels():
    g = torch.Generator().manual_seed(2)
    _check_supcon(_unit(5, 2, 4, g), torch.zeros(5, dtype=torch.long), 0.1)
    _check_supcon(_unit(5, 2, 4, g), torch.arange(5), 0.1)   # only the other view is positive


def test_supcon_no_positive_at_all_is_zero_with_grad():
    g = torch.Generator().manual_seed(3)
    feats = _unit(4, 1, 3, g).requires_grad_(True)
    loss = SupConLoss(0.1)(feats, torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.equal(feats.grad, torch.zeros_like(feats))


def test_supcon_small_temperature_float32_is_stable():
    g = torch.Generator().manual_seed(4)
    feats = _unit(8, 2, 6, g)
    labels = torch.randint(0, 3, (8,), generator=g)
    v32 = SupConLoss(0.01)(feats.float(), labels)      # logits up to 100: exp overflows float32 naively
    ref = supcon_loop(feats, labels, 0.01)
    assert torch.isfinite(v32)
    assert math.isclose(v32.item(), ref.item(), rel_tol=1e-4)


# ----------------------------------------------------------------------------- Triplet

def _check_triplet(x, labels, margin, mining, expect_mode=None):
    crit = TripletLoss(margin=margin, mining=mining)
    lv, gv, _ = _value_and_grad(lambda e: crit(e, labels), x)
    lr, gr, (_, mode, n_semi) = _value_and_grad(lambda e: triplet_loop(e, labels, margin, mining), x)
    if expect_mode is not None:
        assert mode == expect_mode
    assert torch.isfinite(lv) and torch.isfinite(gv).all()
    torch.testing.assert_close(lv, lr, **TOL)
    torch.testing.assert_close(gv, gr, **TOL)
    return lv, n_semi


@pytest.mark.parametrize("mining", ["semi-hard", "semi-hard-hardest"])
def test_triplet_semi_hard_random(mining):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(14, 3, generator=g, dtype=torch.float64) * 0.6
    labels = torch.randint(0, 3, (14,), generator=g)
    loss, n_semi = _check_triplet(x, labels, 0.3, mining, expect_mode="semi-hard")
    assert n_semi >= 3 and loss > 0


@pytest.mark.parametrize("mining", ["semi-hard", "semi-hard-hardest", "batch-hard"])
def test_triplet_float32_batch_with_ties(mining):
    """A float32 batch of 48 with exact distance ties (duplicated rows): the fixed-shape loss
    (sorted negatives, binary searches, prefix sums) equals the literal loop in float64, and
    ties go to the first negative as in the loop. (Batch-hard's max/min split or pick tied
    gradients differently in the loop, so it is checked without duplicates.)"""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(48, 6, generator=g) * 0.5
    if mining != "batch-hard":
        x[40:] = x[:8]                                       # duplicates: equal distances
    labels = torch.randint(0, 5, (48,), generator=g)
    lv, gv, _ = _value_and_grad(lambda e: TripletLoss(0.3, mining)(e, labels), x)
    lr, gr, (_, mode, n_semi) = _value_and_grad(
        lambda e: triplet_loop(e, labels, 0.3, mining), x.double())
    assert mode == ("batch-hard" if mining == "batch-hard" else "semi-hard") and lv.dtype == torch.float32
    torch.testing.assert_close(lv.double(), lr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gv.double(), gr, rtol=1e-4, atol=1e-6)


def test_triplet_semi_hard_rules_differ():
    """The authors' rule (every semi-hard triple) and FaceNet's (the hardest per pair) are
    different losses on a batch where some pair has several semi-hard negatives."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(14, 3, generator=g, dtype=torch.float64) * 0.6
    labels = torch.randint(0, 3, (14,), generator=g)
    every, _, n_every = triplet_loop(x, labels, 0.3, "semi-hard")
    hardest, _, n_pairs = triplet_loop(x, labels, 0.3, "semi-hard-hardest")
    assert n_every > n_pairs                      # some pair has more than one semi-hard negative
    assert hardest > every                        # the closest negative has the largest loss
    torch.testing.assert_close(TripletLoss(0.3, "semi-hard")(x, labels), every, **TOL)
    torch.testing.assert_close(TripletLoss(0.3, "semi-hard-hardest")(x, labels), hardest, **TOL)


def test_triplet_semi_hard_falls_back_to_batch_hard():
    # points at 2^i along a random direction: all distances from an anchor are distinct
    # integers, so no negative lies within 0.3 of any positive distance -> no semi-hard triplet
    g = torch.Generator().manual_seed(6)
    u = torch.nn.functional.normalize(torch.randn(4, generator=g, dtype=torch.float64), dim=0)
    offset = torch.randn(4, generator=g, dtype=torch.float64)
    x = offset + (2.0 ** torch.arange(8, dtype=torch.float64))[:, None] * u
    labels = torch.tensor([0, 1, 0, 2, 1, 2, 0, 1])
    for mining in ("semi-hard", "semi-hard-hardest"):
        loss, n_semi = _check_triplet(x, labels, 0.3, mining, expect_mode="batch-hard")
        assert n_semi == 0 and loss > 0


def test_triplet_batch_hard_random():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (12,), generator=g)
    loss, _ = _check_triplet(x, labels, 0.3, "batch-hard", expect_mode="batch-hard")
    assert loss > 0


@pytest.mark.parametrize("mining", ["semi-hard", "semi-hard-hardest", "batch-hard"])
def test_triplet_all_same_and_all_different_labels(mining):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    for labels in (torch.zeros(6, dtype=torch.long), torch.arange(6)):   # no negative / no positive
        loss, _ = _check_triplet(x, labels, 0.3, mining, expect_mode="none")
        assert loss.item() == 0.0


def test_triplet_zero_distance_gradient_is_the_norms_subgradient():
    """Images 0 and 1 coincide (a positive pair at distance 0, where d|x|/dx is undefined): the
    loss and its gradient equal the literal loop, whose torch.linalg.norm takes the subgradient
    0 there, so the coinciding pair pulls on nothing and only the other triples move the points."""
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.2, 2.0], [5.0, 5.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    zero = torch.zeros(2, dtype=torch.float64)
    assert torch.autograd.grad(torch.linalg.norm(zero.requires_grad_()), zero)[0].abs().sum() == 0
    for mining in ("semi-hard", "semi-hard-hardest"):
        loss, _ = _check_triplet(x, labels, 0.3, mining)
        assert loss > 0
    # batch-hard: anchor 2's hardest negative is 0 or 1 (a tie the loop and the max/min split
    # differently), so the two coinciding rows are compared by their sum, the others row by row
    lv, gv, _ = _value_and_grad(lambda e: TripletLoss(0.3, "batch-hard")(e, labels), x)
    lr, gr, _ = _value_and_grad(lambda e: triplet_loop(e, labels, 0.3, "batch-hard"), x)
    torch.testing.assert_close(lv, lr, **TOL)
    torch.testing.assert_close(gv[0] + gv[1], gr[0] + gr[1], **TOL)
    torch.testing.assert_close(gv[2:], gr[2:], **TOL)


def test_bad_parameters():
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(0.0)
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(0.3, "hardest")
    with pytest.raises(ValueError, match=r"\[batch, views, dim\]"):
        SupConLoss()(torch.randn(4, 8), torch.arange(4))
