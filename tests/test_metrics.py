"""Batched metrics against their references: Quantus 0.6.0 and scikit-image called per image
(the authors' way) on the same numpy arrays, or a literal per-image loop written here.

Tolerances: pixel-flipping curves and AUC 1e-5; complexity, sparseness, pointing game and
attribution localisation 1e-6; SSIM 1e-4; FaithfulnessCorrelation and MaxSensitivity 1e-5.
"""
import math

import numpy as np
import pytest
import quantus
import scipy.stats
import torch
import torch.nn as nn
from skimage.metrics import structural_similarity

from xai_utils.ops import metrics as M
from xai_utils.settings import RunConfig
from xai_utils.study.data import load_dataset
from xai_utils.study.objectives import explained_model

pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]
N_EVAL = 8
FIT = 48              # images the test model is fitted on; the evaluation images are among them


def grad_map(model, x, target):
    """A simple class-specific map: |d logit / d x|, max over channels, min-max scaled per image."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x).gather(1, torch.as_tensor(target).long().view(-1, 1)).sum()
        (g,) = torch.autograd.grad(out, x)
    g = g.abs().amax(dim=1, keepdim=True)
    lo = g.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = g.flatten(1).amax(1).view(-1, 1, 1, 1)
    return ((g - lo) / (hi - lo + 1e-12)).detach()


def explain_numpy(model, inputs, targets, **kwargs):
    """grad_map as a Quantus explain_func."""
    return grad_map(model, torch.as_tensor(inputs).float(), torch.as_tensor(targets)).numpy()


@pytest.fixture(scope="module")
def shapes():
    ds = load_dataset("shapes", "test")
    return ds


@pytest.fixture(scope="module")
def trained(shapes):
    """A narrow ResNet-18 fitted for a few steps on 48 shapes images: non-trivial predictions."""
    torch.manual_seed(0)
    model = explained_model(RunConfig(arch="resnet18", widths=[16, 32, 64, 128]), 10, shapes.mean, shapes.std)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    x, y = shapes.batch(torch.arange(FIT))
    for step in range(12):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def batch(trained, shapes):
    """Evaluation images, labels, masks, and maps with the edge cases: 1 = all zero,
    2 = constant, 3 = heavy ties (quantised to 5 levels)."""
    idx = torch.arange(FIT - N_EVAL, FIT)
    x, y = shapes.batch(idx)
    masks = shapes.mask_batch(idx)
    with torch.no_grad():
        pred = trained(x).argmax(1)
    a = grad_map(trained, x, y)
    a[1] = 0.0
    a[2] = 0.5
    a[3] = torch.round(a[3] * 4) / 4
    return dict(x=x, y=y, masks=masks, pred=pred, a=a, ids=idx.numpy())


def test_trained_model_is_not_trivial(trained, shapes):
    x, y = shapes.batch(torch.arange(FIT))
    with torch.no_grad():
        p = torch.softmax(trained(x), -1)
    assert p.argmax(1).unique().numel() >= 3
    assert (p.argmax(1) == y).float().mean() > 0.2    # fitted beyond chance (0.1)
    assert p.amax(1).std() > 0.02                     # confidences differ between images


# ----------------------------------------------------------------------------- pixel flipping

def test_pixel_flipping_matches_quantus_with_ties_and_constant_maps(trained, batch):
    x, y, a = batch["x"], batch["y"], batch["a"]
    curves, auc = M.pixel_flipping(trained, x, y, a, features_in_step=32, batch_size=64, constant_map_nan=False)
    assert curves.shape == (N_EVAL, 96)               # 32*32*3 features, 32 per step
    args = dict(model=trained, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy())
    q_curves = np.array(quantus.PixelFlipping(features_in_step=32, perturb_baseline="black",
                                              disable_warnings=True)(**args))
    q_auc = np.array(quantus.PixelFlipping(features_in_step=32, perturb_baseline="black", disable_warnings=True,
                                           return_auc_per_sample=True)(**args))
    np.testing.assert_allclose(curves.numpy(), q_curves, atol=1e-5, rtol=0)
    # Quantus's AUC is the raw trapezoid (dx=1); ours is divided by S-1 as in the authors' code
    np.testing.assert_allclose(auc.numpy(), q_auc / 95, atol=1e-5, rtol=0)
    np.testing.assert_allclose(auc.numpy() * 95, np.trapz(q_curves, axis=1), atol=1e-4, rtol=0)
    # the last step is the all-baseline image: its probability is that of the constant image
    black = x.flatten(1).amin(1).view(-1, 1, 1, 1).expand_as(x)
    with torch.no_grad():
        p_black = torch.softmax(trained(black), -1).gather(1, y[:, None])[:, 0]
    np.testing.assert_allclose(curves[:, -1].numpy(), p_black.numpy(), atol=1e-5)


def test_pixel_flipping_matches_quantus_per_image_other_step(batch):
    """Random model, random inputs, one Quantus call per image, 64 features per step."""
    torch.manual_seed(1)
    model = explained_model(RunConfig(arch="resnet18", widths=[8, 16, 32, 64]), 10, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)).eval()
    x = torch.rand(3, 3, 32, 32)
    y = torch.tensor([0, 4, 9])
    a = torch.rand(3, 1, 32, 32)
    a[1] = torch.round(a[1] * 3)                      # ties
    curves, auc = M.pixel_flipping(model, x, y, a, features_in_step=64, batch_size=2)
    assert curves.shape == (3, 48)
    pf = quantus.PixelFlipping(features_in_step=64, perturb_baseline="black", disable_warnings=True)
    q = np.concatenate([pf(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                           a_batch=a[i:i + 1].numpy()) for i in range(3)])
    np.testing.assert_allclose(curves.numpy(), q, atol=1e-5, rtol=0)
    np.testing.assert_allclose(auc.numpy(), np.trapz(q, axis=1) / 47, atol=1e-5, rtol=0)


def test_pixel_flipping_black_normalised_is_quantus_on_normalised_images(trained, batch):
    """The official protocol: Quantus sees normalised images and a model taking them."""
    x, y, a = batch["x"][4:7], batch["y"][4:7], batch["a"][4:7]

    class NormalisedInput(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, xn):
            return self.m(xn * self.m.std + self.m.mean)

    xn = trained.normalize_input(x)
    q = np.array(quantus.PixelFlipping(features_in_step=32, perturb_baseline="black", disable_warnings=True)(
        model=NormalisedInput(trained).eval(), x_batch=xn.numpy(), y_batch=y.numpy(), a_batch=a.numpy()))
    ours, _ = M.pixel_flipping(trained, x, y, a, 32, baseline="black_normalised")
    np.testing.assert_allclose(ours.numpy(), q, atol=1e-5, rtol=0)
    pixel, _ = M.pixel_flipping(trained, x, y, a, 32, baseline="black")
    assert not np.allclose(pixel.numpy(), q, atol=1e-5)    # the two baselines do differ


def test_pixel_flipping_batching_and_sorters(trained, batch):
    x, y = batch["x"], batch["y"]
    a3 = torch.rand(N_EVAL, 3, 32, 32, generator=torch.Generator().manual_seed(3))   # no ties
    ref, ref_auc = M.pixel_flipping(trained, x, y, a3, 256, batch_size=N_EVAL)
    for bs in (3, 5 * N_EVAL):                         # several blocks; several steps per pass
        c, auc = M.pixel_flipping(trained, x, y, a3, 256, batch_size=bs)
        np.testing.assert_allclose(c.numpy(), ref.numpy(), atol=1e-6)
    stable, _ = M.pixel_flipping(trained, x, y, a3, 256, batch_size=N_EVAL, tie_break="stable")
    np.testing.assert_allclose(stable.numpy(), ref.numpy(), atol=1e-6)   # same order without ties
    # with 1-channel maps the 3 channels of a pixel tie: NumPy's order is not the stable one
    a1 = batch["a"]
    q, _ = M.pixel_flipping(trained, x, y, a1, 32, tie_break="quantus")
    s, _ = M.pixel_flipping(trained, x, y, a1, 32, tie_break="stable")
    assert np.nanmax(np.abs(q.numpy() - s.numpy())) > 1e-6
    assert 0 <= float(ref_auc.min()) and float(ref_auc.max()) <= 1


def test_pixel_flipping_constant_maps_are_nan(trained, batch):
    curves, auc = M.pixel_flipping(trained, batch["x"], batch["y"], batch["a"], 32)
    undefined = np.isnan(auc.numpy())
    assert undefined.tolist() == [False, True, True] + [False] * (N_EVAL - 3)
    assert np.isnan(curves[1].numpy()).all() and np.isfinite(curves[3].numpy()).all()
    with pytest.raises(ValueError, match="baseline"):
        M.pixel_flipping(trained, batch["x"], batch["y"], batch["a"], 32, baseline="grey")


def test_curve_auc_is_trapezoid_over_width():
    c = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.2, 0.2]])
    np.testing.assert_allclose(M.curve_auc(c).numpy(), np.trapz(c.numpy(), axis=1) / 2)


# ----------------------------------------------------------------------------- complexity

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_complexity_and_sparseness_match_quantus(batch, dtype):
    x, y, a = batch["x"].numpy(), batch["y"].numpy(), batch["a"].numpy().astype(dtype)
    ours_c = M.complexity(torch.from_numpy(a)).numpy()
    ours_s = M.sparseness(torch.from_numpy(a)).numpy()
    ok = [i for i in range(N_EVAL) if i not in (1, 2)]   # Quantus refuses a constant map per image
    for Q, ours in ((quantus.Complexity, ours_c), (quantus.Sparseness, ours_s)):
        q = np.array([Q(disable_warnings=True)(model=None, x_batch=x[i:i + 1], y_batch=y[i:i + 1],
                                               a_batch=a[i:i + 1])[0] for i in ok])
        np.testing.assert_allclose(ours[ok], q, atol=1e-6, rtol=0)
        # inside a batch call (max |a| = 1 here, so the same normalisation) constant maps pass
        qb = np.array(Q(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a))
        np.testing.assert_allclose(ours[2], qb[2], atol=1e-6)
    assert np.isnan(ours_c[1])                          # all-zero: 0/0, as Quantus
    np.testing.assert_allclose(ours_c[2], math.log(32 * 32), atol=1e-9)
    assert abs(ours_s[1]) < 1e-12 and abs(ours_s[2]) < 1e-12


# ----------------------------------------------------------------------------- SSIM

@pytest.mark.parametrize("size", [(32, 32), (20, 27)])
def test_ssim_matches_skimage(size):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 1, *size, generator=g)
    b = (a + 0.3 * torch.rand(6, 1, *size, generator=g)).clamp(0, 1)
    b[0] = torch.rand(1, *size, generator=g)          # unrelated
    a[1] = 0.0                                        # zero vs something
    a[2] = 0.0
    b[2] = 0.0                                        # zero vs zero -> 1
    a[3] = 0.7                                        # constant
    ours = M.ssim(a, b).numpy()
    ref = [structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), data_range=1.0) for i in range(6)]
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours[2], 1.0, atol=1e-12)
    np.testing.assert_allclose(M.ssim(a[:, 0], a[:, 0]).numpy(), 1.0, atol=1e-12)   # [N, H, W] too


# ----------------------------------------------------------------------------- localisation

def test_pointing_game_and_localisation_match_quantus(batch):
    x, y, a, masks = batch["x"].numpy(), batch["y"].numpy(), batch["a"].clone(), batch["masks"].clone()
    # image 4: a tie at the maximum, one inside the object and one outside
    inside = masks[4, 0].nonzero()[0]
    outside = (~masks[4, 0]).nonzero()[0]
    a[4] = a[4] * 0.5
    a[4, 0, inside[0], inside[1]] = 1.0
    a[4, 0, outside[0], outside[1]] = 1.0
    an, s = a.numpy(), masks.numpy().astype(np.float32)
    pg, al = M.pointing_game(a, masks).numpy(), M.attribution_localisation(a, masks).numpy()
    ok = [i for i in range(N_EVAL) if i not in (1, 2)]
    for Q, ours in ((quantus.PointingGame, pg), (quantus.AttributionLocalisation, al)):
        q = np.array([Q(disable_warnings=True)(model=None, x_batch=x[i:i + 1], y_batch=y[i:i + 1],
                                               a_batch=an[i:i + 1], s_batch=s[i:i + 1])[0] for i in ok], float)
        np.testing.assert_allclose(ours[ok], q, atol=1e-6, rtol=0)
    assert pg[4] == 1.0
    assert set(np.unique(pg[ok])) <= {0.0, 1.0}
    # constant maps: no peak -> NaN (a Quantus batch call scores a hit); all-zero: no mass -> NaN
    qb = quantus.PointingGame(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=an, s_batch=s)
    assert bool(qb[2]) and np.isnan(pg[1]) and np.isnan(pg[2])
    assert np.isnan(al[1])
    np.testing.assert_allclose(al[2], s[2].mean(), atol=1e-6)        # flat map: the mask's area share


def test_empty_masks_give_nan(batch):
    a, masks = batch["a"][4:6], batch["masks"][4:6].clone()
    masks[0] = False
    x, y = batch["x"][4:6].numpy(), batch["y"][4:6].numpy()
    q = quantus.PointingGame(disable_warnings=True)(model=None, x_batch=x[:1], y_batch=y[:1], a_batch=a[:1].numpy(),
                                                    s_batch=masks[:1].numpy().astype(np.float32))
    assert bool(q[0]) is True                         # Quantus's NaN written into a bool array
    assert np.isnan(M.pointing_game(a, masks)[0].item())
    assert np.isnan(M.attribution_localisation(a, masks)[0].item())
    assert not np.isnan(M.attribution_localisation(a, masks)[1].item())


# ----------------------------------------------------------------------------- continuity

def test_continuity_noise_is_reproducible_per_sample(trained, batch):
    x, ids = batch["x"], batch["ids"]
    n1 = M.continuity_perturbation(trained, x, 0.02, "pixel", seed=0, sample_ids=ids)
    perm = torch.tensor([3, 0, 7, 1, 2, 6, 5, 4])
    n2 = M.continuity_perturbation(trained, x[perm], 0.02, "pixel", seed=0, sample_ids=ids[perm.numpy()])
    torch.testing.assert_close(n2, n1[perm], rtol=0, atol=0)          # same image id -> same noise
    n3 = M.continuity_perturbation(trained, x, 0.02, "pixel", seed=0, sample_ids=ids + 1)
    assert not torch.equal(n1, n3)
    assert n1.min() >= 0 and n1.max() <= 1
    d = (n1 - x).abs()
    assert 0.005 < d.mean() < 0.03                    # ~ sigma * sqrt(2/pi), a few clamped
    # official: noise in normalised space, clamped to [0, 1] there -> a much larger distortion
    off = M.continuity_perturbation(trained, x, 0.02, "official", seed=0, sample_ids=ids)
    xn = trained.normalize_input(off)
    assert xn.min() >= -1e-5 and xn.max() <= 1 + 1e-5
    assert (off - x).abs().mean() > 5 * d.mean()


def test_continuity_ssim_equals_literal_loop(trained, batch):
    x, t, ids = batch["x"][4:8], batch["pred"][4:8], batch["ids"][4:8]
    # batch_size=1: maps computed image by image like the loop (a gradient can flip at a ReLU
    # boundary between batched and single-image float arithmetic)
    ours = M.continuity_ssim(trained, x, t, grad_map, sigma=0.05, seed=2, sample_ids=ids, batch_size=1).numpy()
    ref = []
    for i in range(4):
        g = torch.Generator().manual_seed(M.sample_seed(2, int(ids[i]), "continuity"))
        noisy = (x[i:i + 1] + 0.05 * torch.randn(x.shape[1:], generator=g)).clamp(0, 1)
        m0 = grad_map(trained, x[i:i + 1], t[i:i + 1])[0, 0].numpy()
        m1 = grad_map(trained, noisy, t[i:i + 1])[0, 0].numpy()
        ref.append(structural_similarity(m0, m1, data_range=1.0))
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    off = M.continuity_ssim(trained, x, t, grad_map, sigma=0.05, noise_space="official", seed=2, sample_ids=ids)
    assert not np.allclose(off.numpy(), ours, atol=1e-3)


# ----------------------------------------------------------------------------- contrastivity

def test_other_class_is_never_pred_and_uniform():
    n, c = 9000, 10
    pred = torch.full((n,), 3)
    other = M.other_classes(pred, c, seed=0, sample_ids=np.arange(n)).numpy()
    assert (other != 3).all() and other.min() >= 0 and other.max() < c
    counts = np.bincount(other, minlength=c)
    assert counts[3] == 0
    assert scipy.stats.chisquare(np.delete(counts, 3)).pvalue > 1e-3
    pred = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(0))
    other_g = M.other_classes(pred, c, generator=torch.Generator().manual_seed(1))
    assert (other_g != pred).all()
    offsets = ((other_g - pred) % c).numpy()           # 1..9, uniform
    assert scipy.stats.chisquare(np.bincount(offsets, minlength=c)[1:]).pvalue > 1e-3
    # per-sample draws do not depend on the batch
    again = M.other_classes(torch.full((3,), 3), c, seed=0, sample_ids=[5, 0, 8]).numpy()
    assert again.tolist() == other[[5, 0, 8]].tolist()


def test_contrastivity_ssim_equals_literal_loop(trained, batch):
    x, pred, ids = batch["x"][:4], batch["pred"][:4], batch["ids"][:4]
    ours, other = M.contrastivity_ssim(trained, x, pred, grad_map, seed=0, sample_ids=ids, batch_size=1,
                                       return_classes=True)
    assert (other != pred).all()
    ref = [structural_similarity(grad_map(trained, x[i:i + 1], pred[i:i + 1])[0, 0].numpy(),
                                 grad_map(trained, x[i:i + 1], other[i:i + 1])[0, 0].numpy(), data_range=1.0)
           for i in range(4)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)


# ----------------------------------------------------------------------------- extras

def test_faithfulness_correlation_matches_quantus(trained, batch):
    x, y, a, ids = batch["x"], batch["y"], batch["a"], batch["ids"]
    ok = [0, 3, 4]
    ours = M.faithfulness_correlation(trained, x[ok], y[ok], a[ok], nr_runs=12, seed=5, sample_ids=ids[ok]).numpy()
    q = []
    for i in ok:
        np.random.seed(M.sample_seed(5, int(ids[i]), "faithfulness_correlation"))
        q.append(quantus.FaithfulnessCorrelation(nr_runs=12, subset_size=224, return_aggregate=False,
                                                 disable_warnings=True)(
            model=trained, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(), a_batch=a[i:i + 1].numpy())[0])
    np.testing.assert_allclose(ours, q, atol=1e-5, rtol=0)
    zero = M.faithfulness_correlation(trained, x[:2], y[:2], a[:2], nr_runs=4, sample_ids=ids[:2]).numpy()
    assert np.isfinite(zero[0]) and np.isnan(zero[1])    # all-zero map: constant sums


def test_max_sensitivity_matches_quantus(trained, batch):
    x, y, ids = batch["x"][4:7], batch["y"][4:7], batch["ids"][4:7]
    ours = M.max_sensitivity(trained, x, y, grad_map, nr_samples=3, seed=1, sample_ids=ids, batch_size=1).numpy()
    q = []
    for i in range(3):
        np.random.seed(M.sample_seed(1, int(ids[i]), "max_sensitivity"))
        q.append(quantus.MaxSensitivity(nr_samples=3, disable_warnings=True)(
            model=trained, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
            a_batch=grad_map(trained, x[i:i + 1], y[i:i + 1]).numpy(), explain_func=explain_numpy)[0])
    np.testing.assert_allclose(ours, q, atol=1e-5, rtol=0)
    zero = M.max_sensitivity(trained, x[:1], y[:1], grad_map, a=torch.zeros(1, 1, 32, 32), nr_samples=1)
    assert torch.isnan(zero).all()


def test_randomised_model_and_similarity(trained, batch):
    state = torch.random.get_rng_state()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    r1, r2 = M.randomise_model(trained, seed=0), M.randomise_model(trained, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)            # global RNG untouched
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k])                               # original untouched
        assert torch.equal(r1.state_dict()[k], r2.state_dict()[k])      # seeded
    for (name, p), p0 in zip(r1.named_parameters(), trained.parameters()):
        assert not torch.equal(p, p0), name
    x, t = batch["x"][:4], batch["pred"][:4]
    ours = M.model_randomisation(trained, x, t, grad_map, seed=0, batch_size=1).numpy()
    ref = [structural_similarity(grad_map(trained, x[i:i + 1], t[i:i + 1])[0, 0].numpy(),
                                 grad_map(r1, x[i:i + 1], t[i:i + 1])[0, 0].numpy(), data_range=1.0) for i in range(4)]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    sp = M.model_randomisation(trained, x, t, grad_map, similarity="spearman", seed=0, batch_size=1).numpy()
    ref = [scipy.stats.spearmanr(grad_map(trained, x[i:i + 1], t[i:i + 1]).flatten(),
                                 grad_map(r1, x[i:i + 1], t[i:i + 1]).flatten())[0] for i in range(4)]
    np.testing.assert_allclose(sp, ref, atol=1e-6)


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    u = torch.round(torch.rand(5, 60, generator=g) * 4)
    v = torch.rand(5, 60, generator=g)
    v[1] = u[1] * 2 + 1
    ours = M.spearman(u, v).numpy()
    ref = [scipy.stats.spearmanr(u[i], v[i])[0] for i in range(5)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert np.isnan(M.spearman(torch.zeros(1, 9), v[:1, :9]).item())


# ----------------------------------------------------------------------------- registry

def test_registry_names_and_errors():
    paper = {"pixel_flipping", "continuity", "complexity", "contrastivity", "sparseness",
             "pointing_game", "attribution_localisation"}
    assert paper <= set(M.METRICS)
    assert {m for m, s in M.METRICS.items() if not s.in_paper} == {
        "faithfulness_correlation", "max_sensitivity", "model_randomisation", "pixel_flipping_normalised",
        "pixel_flipping_calibrated", "pixel_flipping_logit", "consistency", "road_morf", "road_lerf", "road",
        "cue_mass", "cue_pointing"}
    assert M.METRICS["contrastivity"].needs >= {"class_specific", "method"}
    assert M.METRICS["pointing_game"].needs == {"masks"}
    assert not M.METRICS["pixel_flipping"].higher_is_better
    with pytest.raises(ValueError, match="available: .*pixel_flipping"):
        M.check_metrics(["complexity", "entropy"])
    with pytest.raises(ValueError, match="maps"):
        M.complexity(torch.zeros(3, 32, 32))


def test_tie_break_rule_on_the_host():
    """The device sort ('stable', the default on CUDA) gives NumPy's order (Quantus's) except
    among exactly equal keys: both visit the same values in the same order, and the stable
    sort visits tied features by index."""
    from xai_utils.ops.metrics.faithfulness import SORTERS
    g = torch.Generator().manual_seed(4)
    distinct = torch.rand(6, 300, generator=g, dtype=torch.float64)
    assert torch.equal(SORTERS["quantus"](distinct), SORTERS["stable"](distinct))
    tied = torch.randint(0, 7, (6, 300), generator=g).double() / 6      # many exact ties
    q, s = SORTERS["quantus"](tied), SORTERS["stable"](tied)
    assert torch.equal(tied.gather(1, q), tied.gather(1, s))             # same value sequence
    assert torch.equal(torch.sort(q, 1).values, torch.arange(300).expand(6, -1))   # permutations
    vals = tied.gather(1, s)
    same = vals[:, 1:] == vals[:, :-1]
    assert bool((s[:, 1:] > s[:, :-1])[same].all())                   # ties by feature index
    assert not torch.equal(q, s)                                         # NumPy's ties are not


def test_auto_tie_break_resolves_by_device():
    assert M.resolve_tie_break("auto", torch.device("cpu")) == "quantus"
    assert M.resolve_tie_break("auto", "cuda:0") == "stable"
    assert M.resolve_tie_break("quantus", "cuda") == "quantus"
    with pytest.raises(ValueError, match="tie_break"):
        M.resolve_tie_break("random", "cpu")


def test_ssim_chunks_do_not_change_values(monkeypatch):
    from xai_utils.ops.metrics import map_similarity as similarity
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(9, 1, 20, 20, generator=g), torch.rand(9, 1, 20, 20, generator=g)
    whole = M.ssim(a, b)
    monkeypatch.setattr(similarity, "SSIM_CPU_CHUNK", 2 * 400)            # 2 maps per chunk
    assert torch.equal(M.ssim(a, b), whole)
