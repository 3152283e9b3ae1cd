"""Pairwise explanations and pair metrics against literal references (xai_utils.ops.pairs).

References written here, one pair (or one window, one step) at a time: pairwise Grad-CAM as
the autograd gradient of the cosine with respect to each image's own activations (two
separate forwards), conditional occlusion as a window-by-window loop, insertion/deletion as
a step-by-step loop on a hand-made linear embedding (torchvision's Gaussian blur for the
insertion's start), average drop/increase from their definitions. Tolerance: 1e-5 of the
map's or curve's scale (float32); 1e-6 absolute for occlusion drops (differences of cosines).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xai_utils.settings import ConfigError, RunConfig
from xai_utils.study.objectives import explained_model
from xai_utils.ops.pairs import PAIR_METHODS, PairInputs, make_pairs, pair_attribute, pair_ids, similarity
from xai_utils.ops.pairs.methods import window_masks
from xai_utils.ops.pairs.metrics import PAIR_METRICS, pair_noise, step_fractions
from xai_utils.ops.pairs.sets import second_views
from xai_utils.settings.validation import check_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CFG = RunConfig(dataset="fashion_mnist", arch="resnet18", widths=[4, 8, 8, 16], objective="ce")
FAST = {"pair_smoothgrad": {"samples": 3}, "averaged_transforms": {"transforms": 2, "steps": 3},
        "conditional_occlusion": {"window": 8, "stride": 8}}


@pytest.fixture(scope="module")
def model(one_thread) -> nn.Module:
    torch.manual_seed(0)
    m = explained_model(CFG, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    for mod in m.modules():                    # BN statistics away from the identity, as after training
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)


def test_similarity_is_the_cosine_of_the_pooled_features(model, images):
    x1, x2 = images
    with torch.no_grad():
        want = F.cosine_similarity(model.features(x1), model.features(x2), dim=1)
        dist = -((model.features(x1) - model.features(x2)) ** 2).sum(1)
        assert torch.allclose(similarity(model, x1, x2), want, atol=1e-6)
        assert torch.allclose(similarity(model, x1, x2, "distance"), dist, rtol=1e-5)
    with pytest.raises(ValueError, match="projection head"):
        similarity(model, x1, x2, "projection")


def test_pair_gradcam_is_activations_times_relu_of_the_similarity_gradient(model, images):
    x1, x2 = images
    m1, m2 = pair_attribute(model, x1, x2, "pair_gradcam", postprocess="none")
    layer = model.cam_layer
    for i in range(x1.shape[0]):
        acts = []
        h = layer.register_forward_hook(lambda mod, inp, out: acts.append(out))
        f1 = model.features(x1[i:i + 1])
        f2 = model.features(x2[i:i + 1])
        h.remove()
        s = F.cosine_similarity(f1, f2, dim=1).sum()
        g1, g2 = torch.autograd.grad(s, acts)
        for got, a, g in ((m1, acts[0], g1), (m2, acts[1], g2)):
            want = (a * g.clamp_min(0)).sum(1, keepdim=True)[0]
            assert got.shape[-2:] == a.shape[-2:]                    # layer resolution
            want = want.detach()
            assert torch.allclose(got[i], want, atol=1e-5 * float(want.abs().max()) + 1e-12)
            assert float(want.abs().max()) > 0


def test_conditional_occlusion_equals_a_window_by_window_loop(model, images):
    x1, x2 = images
    window, stride = 8, 4
    m1, m2 = pair_attribute(model, x1, x2, "conditional_occlusion", window=window, stride=stride,
                            postprocess="none")
    with torch.no_grad():
        for i in range(x1.shape[0]):
            f1, f2 = model.features(x1[i:i + 1]), model.features(x2[i:i + 1])
            s0 = F.cosine_similarity(f1, f2).item()
            for got, x, other, first in ((m1, x1, f2, True), (m2, x2, f1, False)):
                total, count = torch.zeros(32, 32), torch.zeros(32, 32)
                for r in range(0, 32 - window + 1, stride):
                    for c in range(0, 32 - window + 1, stride):
                        occ = x[i:i + 1].clone()
                        occ[..., r:r + window, c:c + window] = 0.0
                        s = F.cosine_similarity(model.features(occ), other).item()
                        total[r:r + window, c:c + window] += s0 - s
                        count[r:r + window, c:c + window] += 1
                want = total / count.clamp_min(1)
                # drops are differences of float32 cosines: absolute error ~1e-7 whatever their size
                assert torch.allclose(got[i, 0], want, atol=1e-6)
                assert float(want.abs().max()) > 1e-4


@pytest.mark.parametrize("method", list(PAIR_METHODS))
def test_symmetric_methods_swap_their_maps_when_the_images_swap(model, images, method):
    x1, x2 = images
    opts = FAST.get(method, {})
    a1, a2 = pair_attribute(model, x1, x2, method, **opts)
    b1, b2 = pair_attribute(model, x2, x1, method, **opts)
    assert PAIR_METHODS[method].symmetric
    assert torch.allclose(a1, b2, atol=1e-5) and torch.allclose(a2, b1, atol=1e-5)
    assert a1.shape == (3, 1, 32, 32) and float(a1.max()) == pytest.approx(1.0)   # upsampled, scaled


@pytest.mark.parametrize("method", list(PAIR_METHODS))
def test_batched_maps_equal_maps_of_each_pair_alone(model, images, method):
    x1, x2 = images
    opts = FAST.get(method, {})
    m1, m2 = pair_attribute(model, x1, x2, method, **opts)
    for i in range(x1.shape[0]):
        s1, s2 = pair_attribute(model, x1[i:i + 1], x2[i:i + 1], method, **opts)
        assert torch.allclose(m1[i:i + 1], s1, atol=1e-4) and torch.allclose(m2[i:i + 1], s2, atol=1e-4)


def test_interaction_cam_gradient_interaction_and_pooling(model, images):
    """The interaction variant against its definition, written with loops over channels."""
    x1, x2 = images
    m1, m2 = pair_attribute(model, x1, x2, "interaction_cam", pooling="max", gradients="interaction",
                            postprocess="none")
    acts = []
    h = model.cam_layer.register_forward_hook(lambda mod, inp, out: acts.append(out))
    f1, f2 = model.features(x1[:1]), model.features(x2[:1])
    h.remove()
    g1, g2 = torch.autograd.grad(F.cosine_similarity(f1, f2).sum(), acts)
    a1, a2 = acts[0][0].detach(), acts[1][0].detach()
    c = a1.shape[0]
    inter = torch.zeros(c, c)
    for p in range(a1.shape[1] * a1.shape[2]):
        u, v = g1[0].flatten(1)[:, p], g2[0].flatten(1)[:, p]
        inter += torch.outer(u, v)
    w = a1.amax(dim=(1, 2)) * a2.amax(dim=(1, 2))
    want1 = sum(w[k] * a1[k] * inter[k].max().clamp_min(0) for k in range(c))
    want2 = sum(w[k] * a2[k] * inter[:, k].max().clamp_min(0) for k in range(c))
    assert torch.allclose(m1[0, 0], want1, atol=1e-5 * float(want1.abs().max()) + 1e-9)
    assert torch.allclose(m2[0, 0], want2, atol=1e-5 * float(want2.abs().max()) + 1e-9)


class LinearEmbedding(nn.Module):
    """A hand-made similarity: features = a fixed linear map of the pixels."""

    def __init__(self, dim: int = 6, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(3 * 16 * 16, dim, generator=g))

    def features(self, x):
        return x.flatten(1) @ self.w


def _cosine_gradients(w: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d cos(W'x1, W'x2) / d x1 and / d x2 of one pair, by hand: with u = W'x1, v = W'x2,
    d cos / du = v / (|u| |v|) - cos u / |u|^2 (and symmetrically)."""
    u, v = x1.ravel() @ w, x2.ravel() @ w
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    c = u @ v / (nu * nv)
    return ((w @ (v / (nu * nv) - c * u / nu ** 2)).reshape(x1.shape),
            (w @ (u / (nu * nv) - c * v / nv ** 2)).reshape(x2.shape))


def _pairs_loop(x1, x2, w, points) -> tuple[np.ndarray, np.ndarray]:
    """Channel max of |x_k * mean gradient| over ``points`` (a list of (x1', x2') per pair)."""
    m1, m2 = np.zeros((len(x1), 1, 16, 16)), np.zeros((len(x1), 1, 16, 16))
    for n in range(len(x1)):
        grads = [_cosine_gradients(w, a, b) for a, b in points(n)]
        g1, g2 = (np.mean([g[k] for g in grads], axis=0) for k in (0, 1))
        m1[n, 0], m2[n, 0] = np.abs(x1[n] * g1).max(axis=0), np.abs(x2[n] * g2).max(axis=0)
    return m1, m2


@pytest.mark.parametrize("method", ["pair_input_x_gradient", "pair_smoothgrad", "averaged_transforms"])
def test_gradient_pair_methods_equal_a_literal_loop_with_gradients_by_hand(method):
    """The cosine of a linear embedding has its gradient in closed form: each gradient pair
    method is its definition evaluated image by image, noise copy by noise copy (SmoothGrad: the
    same seeded noise image on both images of a pair) and jitter step by step (averaged
    transforms: x(l) = l x + (1 - l) J(x), l = 1, 1 - 1/steps, ..., 1/steps)."""
    from xai_utils.ops.augment import apply_color_jitter, sample_color_jitter_params
    model = LinearEmbedding(dim=5).double()
    g = torch.Generator().manual_seed(4)
    x1, x2 = torch.rand(3, 3, 16, 16, generator=g), torch.rand(3, 3, 16, 16, generator=g)
    w, a, b = model.w.detach().numpy(), x1.double().numpy(), x2.double().numpy()
    if method == "pair_input_x_gradient":
        options = {}
        points = lambda n: [(a[n], b[n])]                                     # noqa: E731
    elif method == "pair_smoothgrad":
        options = {"samples": 4, "stdev": 0.2, "seed": 7}
        noise = torch.normal(0.0, 0.2, size=(4, 3, 16, 16), generator=torch.Generator().manual_seed(7)).double().numpy()
        points = lambda n: [(a[n] + e, b[n] + e) for e in noise]              # noqa: E731
    else:
        options = {"transforms": 2, "steps": 3, "seed": 5}
        params = sample_color_jitter_params(2, p=1.0, generator=torch.Generator().manual_seed(5))
        jit = [[apply_color_jitter(x[n:n + 1], {k: v[t:t + 1] for k, v in params.items()})[0].double().numpy()
                for t in range(2)] for x in (x1, x2) for n in range(3)]
        j1, j2 = jit[:3], jit[3:]
        points = lambda n: [(l * a[n] + (1 - l) * j1[n][t], l * b[n] + (1 - l) * j2[n][t])   # noqa: E731
                            for t in range(2) for l in (1.0, 2 / 3, 1 / 3)]
    m1, m2 = PAIR_METHODS[method](model.float(), x1, x2, postprocess="none", **options)
    r1, r2 = _pairs_loop(a, b, w, points)
    np.testing.assert_allclose(m1.double().numpy(), r1, rtol=1e-4, atol=1e-7 * r1.max())
    np.testing.assert_allclose(m2.double().numpy(), r2, rtol=1e-4, atol=1e-7 * r2.max())


def _pair_inputs(model, n=3, seed=2, per_step=20):
    g = torch.Generator().manual_seed(seed)
    x1, x2 = torch.rand(n, 3, 16, 16, generator=g), torch.rand(n, 3, 16, 16, generator=g)
    m1, m2 = torch.rand(n, 1, 16, 16, generator=g), torch.rand(n, 1, 16, 16, generator=g)
    return PairInputs(model=model, x1=x1, x2=x2, maps1=m1, maps2=m2, index1=np.arange(n), index2=np.arange(n) + 10,
                      batch_size=7, pair_pixels_per_step=per_step, pair_blur_kernel=5, pair_blur_sigma=2.0)


def _loop_auc(model, x1, x2, m1, m2, mode, per_step, which):
    """AUC of s for one pair, literally: sort, change pixels, embed, cosine, trapezoid."""
    from torchvision.transforms.functional import gaussian_blur
    hw = 16 * 16
    counts = list(range(0, hw, per_step)) + [hw]
    o1 = np.argsort(-m1.flatten().numpy(), kind="stable")
    o2 = np.argsort(-m2.flatten().numpy(), kind="stable")
    sims = []
    for k in counts:
        imgs = []
        for x, o, perturb in ((x1, o1, which in ("both", "first")), (x2, o2, which in ("both", "second"))):
            if not perturb:
                imgs.append(x)
                continue
            if mode == "deletion":
                start, end = x.clone(), torch.zeros_like(x)
            else:
                start, end = gaussian_blur(x[None], [5, 5], [2.0, 2.0])[0], x.clone()
            flat_s, flat_e = start.reshape(3, -1), end.reshape(3, -1)
            flat_s[:, o[:k]] = flat_e[:, o[:k]]
            imgs.append(flat_s.reshape(3, 16, 16))
        with torch.no_grad():
            sims.append(F.cosine_similarity(model.features(imgs[0][None]), model.features(imgs[1][None])).item())
    return float(np.trapezoid(sims, np.asarray(counts) / hw))


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_insertion_and_deletion_equal_a_step_by_step_loop(mode):
    model = LinearEmbedding()
    d = _pair_inputs(model)
    out = PAIR_METRICS[f"pair_{mode}"].compute(d)
    for i in range(3):
        args = (model, d.x1[i], d.x2[i], d.maps1[i], d.maps2[i], mode, d.pair_pixels_per_step)
        assert out.values[i].item() == pytest.approx(_loop_auc(*args, "both"), abs=1e-5)
        cond = (_loop_auc(*args, "first") + _loop_auc(*args, "second")) / 2
        assert out.variants["conditional"][i].item() == pytest.approx(cond, abs=1e-5)
        with torch.no_grad():
            s = F.cosine_similarity(model.features(d.x1[i:i + 1]), model.features(d.x2[i:i + 1])).item()
        want = _loop_auc(*args, "both") / s if s > 0 else float("nan")
        assert out.variants["normalised"][i].item() == pytest.approx(want, abs=1e-5, nan_ok=True)
    assert len(step_fractions(256, 20)) == 14 and out.curves.shape == (3, 14)


def test_average_drop_and_increase_from_their_definition_and_nan_for_nonpositive_similarity():
    model = LinearEmbedding(seed=3)
    d = _pair_inputs(model, n=6, seed=4)
    drop = PAIR_METRICS["pair_average_drop"].compute(d).values
    inc = PAIR_METRICS["pair_average_increase"].compute(d).values
    with torch.no_grad():
        for i in range(6):
            f = lambda x: model.features(x[None])  # noqa: E731
            s = F.cosine_similarity(f(d.x1[i]), f(d.x2[i])).item()
            scale = lambda m: (m - m.min()) / (m.max() - m.min())  # noqa: E731
            sm = F.cosine_similarity(f(d.x1[i] * scale(d.maps1[i])), f(d.x2[i] * scale(d.maps2[i]))).item()
            if s <= 0:
                assert np.isnan(drop[i].item()) and np.isnan(inc[i].item())
            else:
                assert drop[i].item() == pytest.approx(max(0.0, s - sm) / s, abs=1e-5)
                assert inc[i].item() == float(sm > s)
    d.pair_space, d.cache = "distance", {}
    assert torch.isnan(PAIR_METRICS["pair_average_drop"].compute(d).values).all()   # s <= 0 always


def test_pair_max_sensitivity_is_the_largest_relative_change_under_shared_noise(model, images):
    x1, x2 = images
    fn = lambda m, a, b: pair_attribute(m, a, b, "pair_input_x_gradient")  # noqa: E731
    m1, m2 = fn(model, x1, x2)
    d = PairInputs(model=model, x1=x1, x2=x2, maps1=m1, maps2=m2, index1=np.array([5, 6, 7]),
                   index2=np.array([8, 9, 10]), method=fn, batch_size=2, pair_max_sensitivity_samples=3)
    got = PAIR_METRICS["pair_max_sensitivity"].compute(d).values
    for i in range(3):
        worst = [0.0, 0.0]
        for r in range(3):
            u = pair_noise((3, 32, 32), d.index1[i:i + 1], d.index2[i:i + 1], 0.2, 0, r)[0]
            n1, n2 = fn(model, x1[i:i + 1] + u, x2[i:i + 1] + u)
            for k, (new, ref) in enumerate(((n1, m1[i:i + 1]), (n2, m2[i:i + 1]))):
                worst[k] = max(worst[k], float((new - ref).norm() / ref.norm()))
        assert got[i].item() == pytest.approx(sum(worst) / 2, rel=1e-4)
    u_a = pair_noise((3, 4, 4), np.array([1]), np.array([2]), 0.2, 0, 0)
    assert torch.equal(u_a, pair_noise((3, 4, 4), np.array([1]), np.array([2]), 0.2, 0, 0))
    assert u_a.abs().max() <= 0.2


def test_pair_sets_have_the_kinds_they_claim_and_depend_only_on_the_seed():
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(1000, 60, replace=False))
    labels = rng.integers(0, 5, 60)
    p = make_pairs(idx, labels, 8, seed=3)
    lab = dict(zip(idx.tolist(), labels.tolist()))
    assert (p["kind"] == "view").sum() == (p["kind"] == "same").sum() == (p["kind"] == "different").sum() == 8
    for a, b, k in zip(p["index1"], p["index2"], p["kind"]):
        assert a in lab and b in lab
        if k == "view":
            assert a == b
        elif k == "same":
            assert a != b and lab[a] == lab[b]
        else:
            assert lab[a] != lab[b]
    assert len(set(map(tuple, np.sort(np.stack([p["index1"], p["index2"]], 1), 1).tolist()))) == 24
    q = make_pairs(idx, labels, 8, seed=3)
    assert all(np.array_equal(p[k], q[k]) for k in p)
    assert not np.array_equal(p["index1"], make_pairs(idx, labels, 8, seed=4)["index1"])
    assert pair_ids(np.array([3]), np.array([17]))[0] == "3-17"
    x = torch.rand(4, 3, 32, 32)
    v = second_views(x, np.array(["view", "same", "view", "different"]), seed=1)
    assert torch.equal(v[1], x[1]) and torch.equal(v[3], x[3]) and not torch.equal(v[0], x[0])
    assert torch.equal(v, second_views(x, np.array(["view", "same", "view", "different"]), seed=1))


@pytest.mark.parametrize("setting, message", [
    ({"pair_methods": ["pair_gradcm"]}, "pair_methods"),
    ({"pair_methods": ["pair_gradcam"], "pair_metrics": ["pair_delete"]}, "pair_metrics"),
    ({"pair_metrics": ["pair_deletion"]}, "pair_methods' is empty"),
    ({"pair_methods": ["pair_gradcam"], "pair_space": "projection"}, "projection head"),
    ({"pair_methods": ["pair_gradcam"], "pair_method_options": {"pair_gradcam": {"postprocess": "blur"}}},
     "postprocess"),
    ({"pair_kinds": ["views"]}, "pair_kinds"),
    ({"pair_blur_kernel": 4}, "odd"),
])
def test_bad_pair_settings_are_one_line_errors(setting, message):
    cfg = RunConfig(**{**CFG.to_dict(), **setting})
    with pytest.raises(ConfigError, match=message) as e:
        check_run(cfg)
    assert "\n" not in str(e.value)
    check_run(RunConfig(**{**CFG.to_dict(), "objective": "scl", "pair_methods": ["pair_gradcam"],
                           "pair_space": "projection"}))


def test_windows_cover_the_image_for_the_32px_defaults():
    masks = window_masks(32, 32, 8, 2, torch.device("cpu"))
    assert masks.shape[0] == 13 * 13 and bool(masks.any(dim=0).all())


def test_the_projection_space_uses_the_saved_scl_head(tmp_path, images):
    """model.pt keeps an SCL run's projection head; the projection space is its cosine."""
    from xai_utils.settings import layout as runs
    from xai_utils.stages import files
    from xai_utils.study.models import ProjectionHead
    from xai_utils.stages.model_io import load_model, model_state
    cfg = RunConfig(**{**CFG.to_dict(), "objective": "scl", "proj_dim": 8})
    torch.manual_seed(1)
    m = explained_model(cfg, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    head = ProjectionHead(m.feature_dim, cfg.proj_dim)
    files.save_torch(tmp_path / "model.pt", model_state(m, cfg, 10, head))
    loaded, _ = load_model(tmp_path / "model.pt")
    x1, x2 = images
    with torch.no_grad():
        want = F.cosine_similarity(head(m.eval().features(x1)), head(m.features(x2)), dim=1)
        assert torch.allclose(similarity(loaded, x1, x2, "projection"), want, atol=1e-6)
        assert not torch.allclose(similarity(loaded, x1, x2, "projection"), similarity(loaded, x1, x2), atol=1e-3)


def test_pair_table_cells_equal_the_seed_means_of_the_correct_pairs():
    """table_pair_metrics from a synthetic results.csv: each cell is the mean (and sample
    standard deviation, ddof 1) over seeds of the per-seed mean over the pairs whose images the
    model classifies correctly, recomputed here with NumPy; the best objective is the lower one
    for deletion."""
    from xai_utils.analysis.pair_figures import table_pair_metrics
    rng = np.random.default_rng(0)
    rows = []
    for obj in ("ce", "scl"):
        for s in range(3):
            for i in range(10):
                for kind in ("view", "same"):
                    rows.append({"run_id": f"shapes/{obj}/seed{s}", "dataset": "shapes", "objective": obj, "seed": s,
                                 "sample_index": i, "pair": f"{kind}:{i}:{i + 1}", "true": 0, "pred": int(i % 4 == 0),
                                 "correct": bool(i % 4), "method": "pair_gradcam",
                                 "metric": f"pair_deletion[{kind},joint]", "value": rng.random(), "protocol": "corrected"})
    results = pd.DataFrame(rows)
    data = table_pair_metrics(results).data.set_index("metric")
    for kind in ("view", "same"):
        r = data.loc[f"pair_deletion[{kind},joint]"]
        for obj in ("ce", "scl"):
            sel = results[(results["objective"] == obj) & results["pair"].str.startswith(kind) & results["correct"]]
            per_seed = [sel[sel["seed"] == s]["value"].mean() for s in range(3)]
            np.testing.assert_allclose([r[f"{obj}_mean"], r[f"{obj}_std"]], [np.mean(per_seed), np.std(per_seed, ddof=1)],
                                       rtol=0, atol=1e-12)
            assert r[f"{obj}_n_seeds"] == 3
        assert r["best"] == min(("ce", "scl"), key=lambda o: r[f"{o}_mean"])
