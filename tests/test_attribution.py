"""Attribution maps against independent references.

References: pytorch-grad-cam 1.5.7 (``GradCAM``, ``EigenCAM`` and its ``get_2d_projection``),
Captum's ``NoiseTunnel`` (SmoothGrad), and slow literal computations written here (Grad-CAM
formula with cv2 upsampling, guided ReLU as an autograd Function, Gauss-Legendre integrated
gradients, a window-by-window occlusion loop). The model is a narrow CIFAR-stem ResNet-18
fitted for a few steps on synthetic shapes so that maps are not degenerate.

Tolerances (maps are float32):
* Grad-CAM / Eigen-CAM vs pytorch-grad-cam, min-max scaled maps in [0, 1]: max abs diff
  <= 1e-5. By design the two pipelines differ only in (a) pytorch-grad-cam's min-max before
  its cv2 resize and again after (ours: one min-max after torch's bilinear resize; bilinear
  resizing commutes with the affine min-max, so both are equal in exact arithmetic), and
  (b) its 1e-7 in the denominator (relative error 1e-7 / range; the ranges here are >= 1e-2).
  Eigen-CAM's SVD sign is arbitrary: images where pytorch-grad-cam's (NumPy/LAPACK) sign is
  opposite to our rule are compared with its post-processing applied to the negated
  projection; with ``sign="numpy"`` our maps equal pytorch-grad-cam's on every image.
  Measured: <= 1.3e-6 for both methods (64 images, fitted and random-init models).
* Literal references of gradient methods: rtol 1e-4 of the map's maximum.
* Same image alone vs inside a batch: 1e-4 of the map's maximum (measured <= 3e-6 with the
  single intra-op thread these tests use). With several threads the kernels' reduction
  order changes with the batch size; float32 rounding can then flip a ReLU gate sitting at
  zero and move an input-gradient map by up to ~1e-3 of its maximum (seen for SmoothGrad).
"""
from __future__ import annotations

import copy
import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xai_utils.ops import attribution as A
from xai_utils.stages import attribute as stage
from xai_utils.settings import layout as runs
from xai_utils.stages import files
from xai_utils.settings import RunConfig
from xai_utils.study.data import SHAPES_MEAN, SHAPES_STD, eval_indices, load_dataset, make_shapes
from xai_utils.stages.model_io import model_state
from xai_utils.study.objectives import explained_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

N = 4
FAST = {"integrated_gradients": {"n_steps": 4}, "smoothgrad": {"nt_samples": 2},
        "occlusion": {"window": 16, "stride": 16}}
CFG = RunConfig(dataset="shapes", arch="resnet18", widths=[16, 32, 64, 128], objective="ce",
                eval_samples=8, batch_size_eval=4, target="true", methods=["gradcam", "eigencam"])


@pytest.fixture(scope="module")
def model(one_thread) -> nn.Module:
    torch.manual_seed(0)
    m = explained_model(CFG, 10, SHAPES_MEAN, SHAPES_STD)
    x, y, _ = make_shapes(256, seed=123)
    x = x.float() / 255
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    m.train()
    for s in range(0, 256, 32):
        loss = F.cross_entropy(m(x[s:s + 32]), y[s:s + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.zero_grad(set_to_none=True)
    return m.eval()


@pytest.fixture(scope="module")
def batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _ = make_shapes(N, seed=7)
    x = x.float() / 255
    return x, A.predict(model, x)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


# ----------------------------------------------------------------------------- pytorch-grad-cam

def test_gradcam_matches_pytorch_grad_cam(model, batch):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    x, t = batch
    with GradCAM(model, [model.cam_layer]) as cam:
        ref = cam(x, [ClassifierOutputTarget(int(c)) for c in t])
    ours = A.attribute(model, x, t, "gradcam")[:, 0].numpy()
    assert np.allclose(ref.reshape(N, -1).max(1), 1.0, atol=1e-5)         # non-constant maps
    assert np.abs(ours - ref).max() <= 1e-5
    assert ours.min() == 0.0 and (ours.reshape(N, -1).max(1) == 1.0).all()


def test_gradcam_matches_literal_formula(model, batch):
    """Unscaled map: ReLU(sum_c mean(grad_c) * A_c) at 4x4, then cv2's bilinear resize."""
    x, t = batch
    acts = []
    h = model.cam_layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        logits = model(x)
    finally:
        h.remove()
    a = acts[0]
    g, = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)
    ref = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)).detach().numpy()
    ref = np.stack([cv2.resize(r, (32, 32), interpolation=cv2.INTER_LINEAR) for r in ref])
    model.zero_grad(set_to_none=True)
    ours = A.attribute(model, x, t, "gradcam", scale=False)[:, 0]
    assert ref.max() > 0 and _rel_err(ours, ref) <= 1e-4


def _cam_activations(model, x) -> np.ndarray:
    acts = []
    h = model.cam_layer.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return acts[0].numpy()


def _pgc_postprocess(proj: np.ndarray, size=(32, 32)) -> np.ndarray:
    """pytorch-grad-cam's post-processing of a CAM (BaseCAM.compute_cam_per_layer + aggregate)."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    return scale_cam_image(np.maximum(scale_cam_image(np.maximum(proj, 0), size), 0))


def test_eigencam_matches_pytorch_grad_cam(model, batch):
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    x, t = batch
    acts = _cam_activations(model, x)
    ref_proj = get_2d_projection(acts)                                   # [N, 4, 4], LAPACK sign
    ours_proj = A.eigencam_projection(torch.from_numpy(acts)).numpy()
    sign = np.sign((ref_proj * ours_proj).sum(axis=(1, 2)))
    assert (sign != 0).all()
    # core computation (CAM resolution): equal up to the SVD sign
    assert np.abs(ours_proj - sign[:, None, None] * ref_proj).max() <= 1e-4 * np.abs(ref_proj).max()
    # our sign rule: positive correlation with the channel-mean activation
    assert ((ours_proj * acts.mean(1)).sum(axis=(1, 2)) >= 0).all()

    with EigenCAM(model, [model.cam_layer]) as cam:
        ref = cam(x, None)
    assert np.abs(_pgc_postprocess(ref_proj) - ref).max() <= 1e-6      # replication is exact
    ours = A.attribute(model, x, t, "eigencam")[:, 0].numpy()
    expected = np.where(sign[:, None, None] > 0, ref, _pgc_postprocess(-ref_proj))
    assert np.abs(ours - expected).max() <= 1e-5
    as_official = A.attribute(model, x, t, "eigencam", sign="numpy")[:, 0].numpy()
    assert np.abs(as_official - ref).max() <= 1e-5                       # every image


def test_eigencam_is_class_agnostic_and_sign_options(model, batch):
    x, t = batch
    a = A.attribute(model, x, t, "eigencam")
    b = A.attribute(model, x, (t + 1) % 10, "eigencam")
    assert torch.equal(a, b)
    assert A.METHODS["eigencam"].class_agnostic
    assert {k for k, f in A.METHODS.items() if f.class_agnostic} == {"eigencam", "random"}
    acts = torch.from_numpy(_cam_activations(model, x))
    raw = A.eigencam_projection(acts, sign="none")
    mx = A.eigencam_projection(acts, sign="max").flatten(1)
    assert torch.allclose(raw.abs(), mx.view_as(raw).abs())
    assert (mx.max(1).values.abs() >= mx.min(1).values.abs()).all()
    with pytest.raises(ValueError, match="activation"):
        A.eigencam_projection(acts, sign="bogus")


def test_constant_maps_are_zero_not_nan(model, batch):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    x, t = batch
    dead = copy.deepcopy(model)
    nn.init.zeros_(dead.head.weight)                  # zero gradient -> all-zero Grad-CAM
    ours = A.attribute(dead, x, t, "gradcam")
    with GradCAM(dead, [dead.cam_layer]) as cam:
        ref = cam(x, [ClassifierOutputTarget(int(c)) for c in t])
    assert torch.isfinite(ours).all() and (ours == 0).all() and (ref == 0).all()
    flat = torch.stack([torch.full((1, 5, 5), 3.0), torch.zeros(1, 5, 5)])
    assert torch.equal(A.minmax_scale(flat), torch.zeros_like(flat))
    const = torch.ones(2, 8, 4, 4)                    # no variation over positions
    assert torch.equal(A.eigencam_projection(const), torch.zeros(2, 4, 4))


# ----------------------------------------------------------------------------- Captum methods

def test_smoothgrad_equals_captum_noise_tunnel(model, batch):
    from captum.attr import NoiseTunnel, Saliency
    x, t = batch
    for i in range(2):
        with torch.random.fork_rng():
            torch.manual_seed(5)
            ref = NoiseTunnel(Saliency(model)).attribute(
                x[i:i + 1].clone().requires_grad_(), nt_type="smoothgrad", nt_samples=8,
                stdevs=0.15, target=int(t[i]), abs=False).detach()
        ours = A.attribute(model, x[i:i + 1], t[i:i + 1], "smoothgrad", nt_samples=8, seed=5,
                           nt_samples_batch_size=8)
        assert _rel_err(ours, ref.abs().sum(1, keepdim=True)) <= 1e-4
    model.zero_grad(set_to_none=True)


def _input_grad(model, x, t) -> torch.Tensor:
    xr = x.clone().requires_grad_()
    g, = torch.autograd.grad(model(xr).gather(1, t[:, None]).sum(), xr)
    return g


@pytest.mark.parametrize("reduction,use_abs", [("sum", True), ("mean", False), ("max_abs", False)])
def test_saliency_and_input_x_gradient_literal(model, batch, reduction, use_abs):
    x, t = batch
    g = _input_grad(model, x, t).numpy()

    def literal(a):
        a = np.abs(a) if use_abs else a
        if reduction == "sum":
            return a.sum(1, keepdims=True)
        if reduction == "mean":
            return a.mean(1, keepdims=True)
        return np.take_along_axis(a, np.abs(a).argmax(1)[:, None], axis=1)
    sal = A.attribute(model, x, t, "saliency", reduction=reduction, abs=use_abs)
    ixg = A.attribute(model, x, t, "input_x_gradient", reduction=reduction, abs=use_abs)
    assert _rel_err(sal, literal(g)) <= 1e-4
    assert _rel_err(ixg, literal(x.numpy() * g)) <= 1e-4
    if not use_abs:
        assert (sal < 0).any()                        # signs kept when abs=False


def test_integrated_gradients_literal_gauss_legendre(model, batch):
    x, t = batch
    nodes, weights = np.polynomial.legendre.leggauss(8)
    ig = torch.zeros_like(x)
    for a, w in zip((nodes + 1) / 2, weights / 2):
        ig += float(w) * _input_grad(model, float(a) * x, t)
    ref = (x * ig).sum(1, keepdim=True)
    ours = A.attribute(model, x, t, "integrated_gradients", n_steps=8, abs=False)
    assert _rel_err(ours, ref) <= 1e-4


class _GuidedReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return g.clamp_min(0) * (x > 0)


class _GuidedReLU(nn.Module):
    def forward(self, x):
        return _GuidedReLUFn.apply(x)


def test_guided_backprop_with_inplace_relus(model, batch):
    x, t = batch
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)    # timm's in-place ReLUs are present
    ref_model = copy.deepcopy(model)
    for name, mod in list(ref_model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, child_name, _GuidedReLU())
    ref = _input_grad(ref_model, x, t).abs().sum(1, keepdim=True)
    ours = A.attribute(model, x, t, "guided_backprop")
    assert _rel_err(ours, ref) <= 1e-4
    assert all(m.inplace for m in relus)              # restored
    sal = A.attribute(model, x, t, "saliency")
    assert _rel_err(sal, ours) > 1e-2                 # the ReLU hooks did change the gradients


def test_occlusion_refuses_a_stride_longer_than_its_window(model, batch):
    """Pixels between windows would keep a map value of 0: refused by the options check
    (the run's validation) and by the method itself (its defaults depend on the image)."""
    A.check_method_options("occlusion", {"window": 4, "stride": 4})
    with pytest.raises(ValueError, match="stride 6 > window 4"):
        A.check_method_options("occlusion", {"window": 4, "stride": 6})
    x, t = batch[0][:1], batch[1][:1]
    with pytest.raises(ValueError, match="stride 8 > window 4"):
        A.attribute(model, x, t, "occlusion", stride=8)          # window: 32 // 8 = 4 px by default


def test_occlusion_literal_loop(model, batch):
    x, t = batch
    window, stride = 16, 8                           # overlapping windows: averaged
    with torch.no_grad():
        base = model(x).gather(1, t[:, None])[:, 0]
        total, count = torch.zeros(N, 32, 32), torch.zeros(32, 32)
        for i in range(0, 32 - window + 1, stride):
            for j in range(0, 32 - window + 1, stride):
                xo = x.clone()
                xo[:, :, i:i + window, j:j + window] = 0.0
                drop = base - model(xo).gather(1, t[:, None])[:, 0]
                total[:, i:i + window, j:j + window] += drop[:, None, None]
                count[i:i + window, j:j + window] += 1
    ref = (total / count)[:, None]
    ours = A.attribute(model, x, t, "occlusion", window=window, stride=stride, abs=False)
    assert _rel_err(ours, ref) <= 1e-4


# ----------------------------------------------------------------------------- contract of every method

@pytest.mark.parametrize("method", sorted(A.METHODS))
def test_method_contract(model, batch, method):
    x, t = batch
    opts = FAST.get(method, {})
    a = A.attribute(model, x, t, method, **opts)
    assert a.shape == (N, 1, 32, 32) and a.dtype == torch.float32 and a.device == x.device
    assert torch.isfinite(a).all() and (a >= 0).all() and a.flatten(1).max(1).values.gt(0).all()
    assert torch.equal(a, A.attribute(model, x, t, method, **opts))            # deterministic
    single = torch.cat([A.attribute(model, x[i:i + 1], t[i:i + 1], method, **opts) for i in range(2)])
    # same image alone / in a batch: equal up to float32 summation order, which differs between
    # batch sizes (oneDNN picks other kernels). Integrated Gradients sums gradients at points
    # along a path where a ReLU can change its gate under such rounding: 5e-4 was measured on an
    # Intel Xeon (1e-6 on AMD EPYC); any batch mixing would give errors of order 1.
    assert _rel_err(single, a[:2]) <= (2e-3 if method == "integrated_gradients" else 1e-4)


def test_scale_option(model, batch):
    x, t = batch
    a = A.attribute(model, x, t, "saliency")
    s = A.attribute(model, x, t, "saliency", scale=True)
    assert torch.allclose(s, A.minmax_scale(a), atol=1e-6) and not torch.allclose(s, a)
    assert (s.flatten(1).max(1).values == 1.0).all() and (s.flatten(1).min(1).values == 0.0).all()


def _snapshot(model):
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "training": [m.training for m in model.modules()],
            "inplace": [getattr(m, "inplace", None) for m in model.modules()],
            "requires_grad": [p.requires_grad for p in model.parameters()]}


@pytest.mark.parametrize("method", sorted(A.METHODS))
def test_model_left_unchanged(model, batch, method):
    x, t = batch
    with torch.no_grad():
        before = model(x)
    model.train()                                     # attribute must use eval mode, then restore it
    try:
        snap = _snapshot(model)
        with torch.no_grad():                         # and must work inside a no_grad block
            A.attribute(model, x, t, method, **FAST.get(method, {}))
        after_snap = _snapshot(model)
    finally:
        model.eval()
    assert after_snap["training"] == snap["training"] and all(snap["training"])
    assert after_snap["inplace"] == snap["inplace"]
    assert after_snap["requires_grad"] == snap["requires_grad"]
    assert all(torch.equal(v, after_snap["state"][k]) for k, v in snap["state"].items())  # BN stats
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                    or m._backward_pre_hooks), f"hook left on {type(m).__name__}"
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_bad_arguments(model, batch):
    x, t = batch
    with pytest.raises(ValueError, match="gradcam.*occlusion|available"):
        A.attribute(model, x, t, "lime")
    with pytest.raises(ValueError, match="n_steps"):
        A.attribute(model, x, t, "gradcam", n_steps=3)
    with pytest.raises(ValueError, match="one class per image"):
        A.attribute(model, x, t[:2], "gradcam")
    with pytest.raises(ValueError, match="reduction"):
        A.attribute(model, x, t, "saliency", reduction="median")


def test_predict_and_targets(model, batch):
    x, t = batch
    with torch.no_grad():
        ref = model(x).argmax(1)
    assert torch.equal(A.predict(model, x, batch_size=4), ref) and A.predict(model, x).dtype == torch.long
    labels = (ref + 3) % 10
    assert torch.equal(A.targets_for(model, x, labels, "true"), labels)
    assert torch.equal(A.targets_for(model, x, labels, "pred"), ref)
    with pytest.raises(ValueError, match="pred, true"):
        A.targets_for(model, x, labels, "random")


def test_per_batch_logits_reads_every_row_once_in_order_without_gradients(model, batch):
    """The batches cover the images once, in order (a last, shorter batch included); each read
    sees the model's logits of its rows (against one literal forward pass), with no graph, and
    the model is left in the mode it was in."""
    x, _ = batch
    with torch.no_grad():
        ref = model(x)
    model.train()
    try:
        parts = A.per_batch_logits(model, x, lambda z, rows: (rows, z, z.requires_grad, model.training),
                                   batch_size=3)
        assert model.training
    finally:
        model.eval()
    assert [(r.start, min(r.stop, len(x))) for r, *_ in parts] == [(s, min(s + 3, len(x))) for s in range(0, len(x), 3)]
    for rows, z, grad, training in parts:
        assert not grad and not training
        torch.testing.assert_close(z, ref[rows], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- storage and runs

def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.random((5, 1, 8, 8), dtype=np.float32)
    ints = {k: rng.integers(0, 10, 5) for k in ("targets", "preds", "labels", "indices")}
    opts = {"method": "gradcam", "options": {"scale": True}, "run_id": "shapes/ce/seed0"}
    p = stage.save_attributions(tmp_path / "a" / "gradcam.npz", maps, options=opts, **ints)
    with np.load(p, allow_pickle=False) as z:             # readable without the model or pickle
        assert set(z.files) == {"maps", "targets", "preds", "labels", "indices", "options"}
        assert z["maps"].dtype == np.float32 and z["indices"].dtype == np.int64
        assert json.loads(str(z["options"])) == opts
    d = stage.load_attributions(p)
    assert np.array_equal(d["maps"], maps) and d["options"] == opts
    assert all(np.array_equal(d[k], v) for k, v in ints.items())
    d16 = stage.load_attributions(stage.save_attributions(tmp_path / "h.npz", maps, options=opts, dtype="float16", **ints))
    assert d16["maps"].dtype == np.float32 and np.abs(d16["maps"] - maps).max() <= 1e-3
    with pytest.raises(ValueError, match="one entry per map"):
        stage.save_attributions(tmp_path / "bad.npz", maps, ints["targets"][:3], ints["preds"],
                            ints["labels"], ints["indices"], opts)


def _make_run(model, run_dir):
    files.save_json(run_dir / runs.CONFIG, CFG.to_dict())
    stale = dataclasses.replace(CFG, eval_samples=1000, methods=["occlusion"], target="pred")
    files.save_torch(run_dir / runs.MODEL, model_state(model, stale, 10))   # config.json wins


def test_attribute_run(model, tmp_path):
    run_dir = tmp_path / "run"
    _make_run(model, run_dir)
    paths = stage.attribute_run(run_dir, device="cpu")                        # config: 8 samples, batch 4, true
    assert paths == {m: runs.attribution_path(run_dir, m) for m in ("gradcam", "eigencam")}
    ds = load_dataset("shapes", "test")
    idx = eval_indices(len(ds), 8, seed=0)
    x, y = ds.batch(idx)
    for m, p in paths.items():
        d = stage.load_attributions(p)
        assert np.array_equal(d["indices"], idx) and np.array_equal(d["labels"], y.numpy())
        assert np.array_equal(d["targets"], y.numpy())
        assert np.array_equal(d["preds"], A.predict(model, x).numpy())
        assert _rel_err(d["maps"], A.attribute(model, x, y, m)) <= 1e-5
        assert d["options"]["run_id"] == "shapes/ce/seed0" and d["options"]["method"] == m
    paths = stage.attribute_run(run_dir, methods=["saliency"], n_samples=4, target="pred", batch_size=3,
                            device="cpu")
    d = stage.load_attributions(paths["saliency"])
    assert len(d["indices"]) == 4 and np.array_equal(d["targets"], d["preds"])
    summary = stage.summarize_attributions(run_dir).set_index("method")
    assert list(summary.index) == ["eigencam", "gradcam", "saliency"]
    assert summary.loc["gradcam", "samples"] == 8 and summary.loc["saliency", "samples"] == 4
    assert summary.loc["gradcam", "max"] == 1.0 and summary.loc["saliency", "target"] == "pred"


def test_attribute_run_rejects_unknown_method_before_work(tmp_path):
    run_dir = tmp_path / "run"
    files.save_json(run_dir / runs.CONFIG, CFG.to_dict())                 # no model.pt: any work would fail
    with pytest.raises(ValueError, match=r"\['nope'\].*available: .*gradcam"):
        stage.attribute_run(run_dir, methods=["gradcam", "nope"])
    assert not (run_dir / "attributions").exists()
