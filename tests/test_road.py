"""ROAD: the batched noisy linear imputation against pytorch-grad-cam's (the authors' code), the
ROAD curves against a literal per-image loop with pytorch-grad-cam's removal rule, and the
random control maps."""
import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from xai_utils.ops import metrics as M
from xai_utils.ops.metrics import road as ROAD
from xai_utils.ops.attribution import attribute, is_class_agnostic
from xai_utils.ops.metrics.faithfulness import curve_auc
from xai_utils.settings import RunConfig
from xai_utils.study.data import load_dataset
from xai_utils.study.objectives import explained_model


def _reference(x: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    imputer = NoisyLinearImputer(noise=0.0)
    return torch.stack([imputer(x[i], (~removed[i, 0]).float()) for i in range(x.shape[0])])


def _holes(n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Random pixels, a large rectangle, holes touching every border, 90 % removed."""
    masks = [torch.rand(h, w, generator=g) < 0.3]
    big = torch.zeros(h, w, dtype=torch.bool)
    big[h // 5:4 * h // 5, w // 6:5 * w // 6] = True
    masks.append(big)
    border = torch.zeros(h, w, dtype=torch.bool)
    border[:3], border[-2:], border[:, :4], border[:, -1] = True, True, True, True
    masks.append(border)
    masks.append(torch.rand(h, w, generator=g) < 0.9)
    while len(masks) < n:
        masks.append(torch.rand(h, w, generator=g) < torch.rand(1, generator=g).item())
    return torch.stack(masks[:n])[:, None]


@pytest.mark.parametrize("solver", ["direct", "cg"])
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (4, 1, 17, 23), (4, 3, 48, 40)])
def test_imputation_equals_pytorch_grad_cams_without_noise(shape, solver):
    g = torch.Generator().manual_seed(0)
    n, c, h, w = shape
    x = torch.rand(n, c, h, w, generator=g)
    removed = _holes(n, h, w, g)
    ours = M.noisy_linear_impute(x, removed, noise=0.0, solver=solver)
    assert (ours - _reference(x, removed)).abs().max() <= 1e-4
    kept = ~removed.expand_as(x)
    assert torch.equal(ours[kept], x[kept])                     # kept pixels untouched


def test_imputation_noise_is_seeded_per_image():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 16, generator=g)
    removed = torch.rand(3, 1, 16, 16, generator=g) < 0.5
    gens = lambda: [torch.Generator().manual_seed(s) for s in (10, 11, 12)]  # noqa: E731
    clean = M.noisy_linear_impute(x, removed, noise=0.0)
    noisy = M.noisy_linear_impute(x, removed, noise=0.01, generator=gens())
    again = M.noisy_linear_impute(x[[2, 0]], removed[[2, 0]], noise=0.01, generator=[gens()[2], gens()[0]])
    assert torch.equal(noisy[[2, 0]], again)                    # an image's noise is its own
    resid = (noisy - clean)[removed.expand_as(x)]
    assert 0.007 < float(resid.std()) < 0.013 and abs(float(resid.mean())) < 0.002
    assert torch.equal(noisy[~removed.expand_as(x)], x[~removed.expand_as(x)])


@pytest.mark.parametrize("width", [ROAD.DIRECT_MAX_WIDTH - 8, ROAD.DIRECT_MAX_WIDTH + 8])
def test_direct_and_cg_solvers_agree_and_auto_is_direct_on_the_cpu(width):
    """Exact solve and CG within 1e-5, noise included (the same draws); on a CPU "auto" is the
    direct solve at every width."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 24, width, generator=g)
    removed = torch.rand(4, 1, 24, width, generator=g) < torch.tensor([0.1, 0.4, 0.7, 0.9])[:, None, None, None]
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(4)]  # noqa: E731
    out = {s: M.noisy_linear_impute(x, removed, 0.01, gens(), solver=s) for s in ("direct", "cg", "auto")}
    assert (out["direct"] - out["cg"]).abs().max() <= 1e-5
    assert torch.equal(out["auto"], out["direct"])


def test_auto_solver_on_a_gpu_is_direct_up_to_the_width_limit():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert ROAD.auto_solver(ROAD.DIRECT_MAX_WIDTH, cuda) == "direct"
    assert ROAD.auto_solver(ROAD.DIRECT_MAX_WIDTH + 1, cuda) == "cg"
    assert ROAD.auto_solver(224, cpu) == "direct"


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_an_image_with_every_pixel_removed_gets_zeros(solver):
    """Nothing to impute from (a singular system): zeros plus the noise, as pytorch-grad-cam
    gives; MoRF at f = 0.9 does this to many Grad-CAM maps. The other images are unaffected."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 2, 12, 10, generator=g)
    removed = torch.rand(3, 1, 12, 10, generator=g) < 0.5
    removed[1] = True
    out = M.noisy_linear_impute(x, removed, noise=0.0, solver=solver)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.allclose(out[1], _reference(x[1:2], removed[1:2])[0])
    assert torch.equal(out[[0, 2]], M.noisy_linear_impute(x[[0, 2]], removed[[0, 2]], noise=0.0, solver=solver))
    with pytest.raises(ValueError, match="at least one kept pixel"):
        ROAD._direct_solve(torch.zeros(3, 2, 12, 10, dtype=torch.float64), removed[:, 0])


def test_imputation_rejects_an_unknown_solver():
    with pytest.raises(ValueError, match="solver must be one of"):
        M.noisy_linear_impute(torch.rand(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool), solver="lu")


@pytest.fixture(scope="module")
def model_and_images():
    ds = load_dataset("shapes", "test")
    x, y = ds.batch(torch.arange(6))
    torch.manual_seed(0)
    model = explained_model(RunConfig(arch="resnet18", widths=[8, 16, 16, 16]), 10, ds.mean, ds.std).eval()
    maps = attribute(model, x, y, "gradcam")
    maps[1] = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(3))    # no ties
    return model, x, y, maps


@pytest.mark.parametrize("order, removal", [("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)])
def test_road_curves_equal_a_per_image_loop_with_pytorch_grad_cams_rule(model_and_images, order, removal):
    """Our fraction f is pytorch-grad-cam's percentile p = 100 (1 - f): the same pixels are
    removed, imputed alike, and the probabilities of the true class agree."""
    model, x, y, maps = model_and_images
    fractions = (0.1, 0.5, 0.9)
    logits = M.road_logits(model, x, maps, order, fractions, noise=0.0)
    ours = torch.softmax(logits, dim=-1).gather(2, y[:, None, None].expand(-1, logits.shape[1], 1))[..., 0]
    for i in range(x.shape[0]):
        for k, f in enumerate(fractions):
            perturb = removal(100 * (1 - f), NoisyLinearImputer(noise=0.0))
            imputed = perturb(x[i], maps[i, 0])
            with torch.no_grad():
                p = torch.softmax(model(imputed[None]), dim=-1)[0, y[i]]
            assert abs(float(ours[i, k + 1]) - float(p)) <= 1e-4, (i, f)
        with torch.no_grad():
            assert abs(float(ours[i, 0]) - float(torch.softmax(model(x[i:i + 1]), -1)[0, y[i]])) <= 1e-5


def test_road_aggregates_equal_pytorch_grad_cams_averages_after_the_conversion(model_and_images):
    """pytorch-grad-cam's ROAD averages (``AveragerAcrossThresholds`` of ``RemoveMostRelevantFirst``
    / ``RemoveLeastRelevantFirst`` at percentiles 10..90, the imputer without noise, the softmax
    target) and its combined score ``(LeRF - MoRF) / 2`` against ours. Its average over the K
    thresholds is mean_k p_k - p_0 (p_0: the unperturbed image); ours is the trapezoidal area of
    the removal curve [p_1, ..., p_K] over its K - 1 steps (SciPy's trapezoid checks it), so
    ours = (K (average + p_0) - (p_1 + p_K) / 2) / (K - 1)."""
    from scipy.integrate import trapezoid
    from pytorch_grad_cam.metrics.perturbation_confidence import AveragerAcrossThresholds, PerturbationConfidenceMetric
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, x, y, maps = model_and_images
    fractions = tuple(k / 10 for k in range(1, 10))
    k = len(fractions)
    d = M.MetricInputs(model=model, x=x, maps=maps, labels=y, preds=y, targets=y, sample_ids=torch.arange(6),
                       road_fractions=fractions, road_noise=0.0)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
    converted = {}
    for order, removal in (("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)):
        ours = M.METRICS[f"road_{order}"].compute(d)
        averager = AveragerAcrossThresholds(
            lambda p, removal=removal: PerturbationConfidenceMetric(removal(p, NoisyLinearImputer(noise=0.0))),
            percentiles=[round(100 * (1 - f)) for f in fractions])
        theirs = averager(x, maps[:, 0].numpy(), targets, model)
        curves, p0 = ours.curves.double().numpy(), ours.extras["unperturbed"].double().numpy()
        assert curves.shape == (6, k) and np.isfinite(ours.values.numpy()).sum() == 4   # 2 constant maps: NaN
        np.testing.assert_allclose(ours.values.numpy(), trapezoid(curves, axis=1) / (k - 1), rtol=0, atol=1e-12)
        converted[order] = (k * (theirs + p0) - (curves[:, 0] + curves[:, -1]) / 2) / (k - 1)
        np.testing.assert_allclose(ours.values.numpy(), converted[order], rtol=0, atol=2e-4)
    np.testing.assert_allclose(M.METRICS["road"].compute(d).values.numpy(),
                               (converted["lerf"] - converted["morf"]) / 2, rtol=0, atol=2e-4)


def test_road_metrics_through_the_registry(model_and_images):
    model, x, y, maps = model_and_images
    d = M.MetricInputs(model=model, x=x, maps=maps, labels=y, preds=y, targets=y, sample_ids=torch.arange(6),
                       road_fractions=(0.2, 0.5, 0.8), road_noise=0.01, calibrated=True, temperature=0.5)
    morf = M.METRICS["road_morf"].compute(d)
    lerf = M.METRICS["road_lerf"].compute(d)
    both = M.METRICS["road"].compute(d)
    assert morf.curves.shape == (6, 3) and set(morf.variants) == {"normalised", "logit", "calibrated"}
    np.testing.assert_allclose(morf.values.numpy(), curve_auc(morf.curves).numpy())
    np.testing.assert_allclose(both.values.numpy(), ((lerf.values - morf.values) / 2).numpy())
    for k in both.variants:
        np.testing.assert_allclose(both.variants[k].numpy(), ((lerf.variants[k] - morf.variants[k]) / 2).numpy())
    again = M.METRICS["road_morf"].compute(M.MetricInputs(
        model=model, x=x[[3, 1]], maps=maps[[3, 1]], labels=y[[3, 1]], preds=y[[3, 1]], targets=y[[3, 1]],
        sample_ids=torch.tensor([3, 1]), road_fractions=(0.2, 0.5, 0.8), road_noise=0.01))
    np.testing.assert_allclose(again.values.numpy(), morf.values[[3, 1]].numpy(), atol=1e-6)   # per-image noise
    assert M.METRICS["road_morf"].direction == "lower" and M.METRICS["road_lerf"].direction == "higher"


def test_random_maps_depend_on_the_image_only(model_and_images):
    model, x, y, _ = model_and_images
    other = explained_model(RunConfig(arch="resnet18", widths=[8, 16, 16, 16]), 10, (0.5,) * 3, (0.2,) * 3).eval()
    a = attribute(model, x, y, "random")
    b = attribute(other, x[[4, 2]], torch.tensor([0, 0]), "random")
    assert a.shape == (6, 1, 32, 32) and torch.equal(a[[4, 2]], b)
    assert float(a.min()) >= 0 and float(a.max()) < 1 and is_class_agnostic("random")
    assert not torch.equal(a, attribute(model, x, y, "random", seed=1))
    assert not torch.equal(a[0], attribute(model, x[:1] + 0.02, y[:1], "random")[0])   # a new image, a new map
