"""CGC: the contrastive Grad-CAM consistency loss, the alignment of maps with their images,
the consistency metric, and that the objective learns on shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from xai_utils.ops import metrics as M
from xai_utils.ops.augment import apply_crop_flip, sample_crop_flip_params
from xai_utils.settings import RunConfig, load_profile
from xai_utils.study.objectives import OBJECTIVES
from xai_utils.study.objectives.cgc import CGCLoss
from xai_utils.stages.artefacts import read_jsonl

TOL = dict(rtol=1e-6, atol=1e-7)


def cgc_loop(a, b, t, negatives):
    """The InfoNCE of CGC.md written out: positive <a_i, b_i>, negatives <q_i, a_j> (j != i),
    q = a (the authors' code) or b (the paper's form); maps flattened and L2-normalised."""
    n = a.shape[0]
    an = [a[i].flatten() / a[i].flatten().norm() for i in range(n)]
    bn = [b[i].flatten() / b[i].flatten().norm() for i in range(n)]
    total = 0.0
    for i in range(n):
        q = an[i] if negatives == "augmented" else bn[i]
        pos = torch.exp(torch.dot(an[i], bn[i]) / t)
        neg = sum(torch.exp(torch.dot(q, an[j]) / t) for j in range(n) if j != i)
        total = total - torch.log(pos / (pos + neg))
    return total / n


@pytest.mark.parametrize("negatives", ["augmented", "aligned"])
def test_cgc_loss_equals_a_literal_loop(negatives):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 5, 5, generator=g, dtype=torch.float64)
    b = torch.rand(6, 5, 5, generator=g, dtype=torch.float64)
    a1, b1 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    a2, b2 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ours = CGCLoss(0.5, negatives)(a1, b1)
    ref = cgc_loop(a2, b2, 0.5, negatives)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    ga, gb = torch.autograd.grad(ours, (a1, b1))
    ra, rb = torch.autograd.grad(ref, (a2, b2))
    torch.testing.assert_close(ga.double(), ra, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gb.double(), rb, rtol=1e-4, atol=1e-6)
    assert not torch.isclose(CGCLoss(0.5, "augmented")(a, b), CGCLoss(0.5, "aligned")(a, b))


class Equivariant(nn.Module):
    """A model whose Grad-CAM commutes with any crop and flip: the CAM layer is a pointwise
    (1x1, positive) convolution of the input at full resolution and the head reads its global
    average, so every channel's gradient is a constant and the map a positive combination
    of the input's channels."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Conv2d(3, 4, 1, bias=False)
        with torch.no_grad():
            self.layer.weight.copy_(torch.rand(4, 3, 1, 1) + 0.1)
        self.fc = nn.Linear(4, 10)
        with torch.no_grad():
            self.fc.weight.copy_(torch.rand(10, 4) + 0.1)

    @property
    def cam_layer(self):
        return self.layer

    @property
    def head(self):
        return self.fc

    def forward(self, x):
        return self.fc(self.layer(x).mean(dim=(2, 3)))


def test_a_map_warped_with_the_images_transform_is_the_map_of_the_warped_image():
    torch.manual_seed(0)
    model = Equivariant().eval()
    x = torch.rand(5, 3, 32, 32) * 0.8 + 0.1
    t = torch.randint(0, 10, (5,))
    params = sample_crop_flip_params(5, 32, 32, (0.08, 1.0), torch.Generator().manual_seed(1))
    assert params["flip"].any() and (~params["flip"]).any()
    from xai_utils.ops.attribution import grad_cam
    g = grad_cam(model, model.cam_layer, x, t)
    g_t = grad_cam(model, model.cam_layer, apply_crop_flip(x, params), t)
    torch.testing.assert_close(apply_crop_flip(g, params), g_t, rtol=1e-4, atol=1e-5)


def test_consistency_is_one_for_an_equivariant_model_and_lower_for_a_random_network():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32) * 0.8 + 0.1
    t = torch.randint(0, 10, (16,))
    # the stored options of a method (its own `scale` among them) pass through
    cos, sim = M.consistency(Equivariant().eval(), x, t, "gradcam", sample_ids=range(16), method_options={"scale": True})
    assert torch.allclose(sim, torch.ones(16, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(cos, torch.ones(16, dtype=torch.float64), atol=1e-5)
    from xai_utils.study.objectives import explained_model
    net = explained_model(RunConfig(arch="resnet18", widths=[8, 16, 32, 64]), 10, (0.5,) * 3, (0.25,) * 3).eval()
    cos_r, sim_r = M.consistency(net, x, t, "gradcam", sample_ids=range(16))
    assert torch.nanmean(cos_r) < 0.95 and torch.nanmean(sim_r) < torch.nanmean(sim)
    # the transform of an image depends on its id only
    a = M.consistency_transforms(4, 32, 32, sample_ids=[7, 8, 9, 10])
    b = M.consistency_transforms(2, 32, 32, sample_ids=[9, 10])
    assert all(torch.equal(a[k][2:], b[k]) for k in a)


def _warp_loop(img: np.ndarray, top: int, left: int, h: int, w: int, flip: bool) -> np.ndarray:
    """T written out for one [C, H, W] array: output pixel (i, j) reads the image bilinearly at
    row top + (i + 0.5) h / H - 0.5 and column left + (j' + 0.5) w / W - 0.5 (j' = W - 1 - j when
    flipped), each clamped to the image (its border pixels extend it)."""
    c, height, width = img.shape
    out = np.zeros_like(img, dtype=np.float64)
    for i in range(height):
        for j in range(width):
            jj = width - 1 - j if flip else j
            r = min(max(top + (i + 0.5) * h / height - 0.5, 0.0), height - 1.0)
            q = min(max(left + (jj + 0.5) * w / width - 0.5, 0.0), width - 1.0)
            r0, q0 = int(math.floor(r)), int(math.floor(q))
            r1, q1 = min(r0 + 1, height - 1), min(q0 + 1, width - 1)
            fr, fq = r - r0, q - q0
            out[:, i, j] = ((1 - fr) * (1 - fq) * img[:, r0, q0] + (1 - fr) * fq * img[:, r0, q1]
                            + fr * (1 - fq) * img[:, r1, q0] + fr * fq * img[:, r1, q1])
    return out


def test_consistency_equals_a_per_image_loop_with_scikit_images_ssim():
    """Per image: the seeded crop and flip written out (:func:`_warp_loop`), the map of the warped
    image, the cosine in NumPy and scikit-image's SSIM of the max-scaled maps."""
    from skimage.metrics import structural_similarity
    from xai_utils.ops.attribution import attribute
    from xai_utils.study.objectives import explained_model

    torch.manual_seed(1)
    net = explained_model(RunConfig(arch="resnet18", widths=[8, 16, 32, 64]), 10, (0.5,) * 3, (0.25,) * 3).eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    t = torch.tensor([1, 4, 7, 9])
    ids = [3, 11, 12, 40]
    cos, sim = M.consistency(net, x, t, "gradcam", sample_ids=ids)
    params = M.consistency_transforms(4, 32, 32, sample_ids=ids)
    assert params["flip"].any() and (~params["flip"]).any()
    maps = attribute(net, x, t, "gradcam", scale=False).double().numpy()
    for n in range(4):
        box = [int(params[k][n]) for k in ("top", "left", "h", "w")] + [bool(params["flip"][n])]
        warped_image = torch.from_numpy(_warp_loop(x[n].double().numpy(), *box)).float()[None]
        map_t = attribute(net, warped_image, t[n:n + 1], "gradcam", scale=False)[0].double().numpy()
        warped_map = _warp_loop(maps[n], *box)
        u, v = warped_map.ravel(), map_t.ravel()
        assert abs(float(cos[n]) - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))) < 1e-5, n
        ref = structural_similarity(warped_map[0] / warped_map.max(), map_t[0] / map_t.max(), data_range=1.0)
        assert abs(float(sim[n]) - ref) < 1e-4, n


def test_cgc_step_terms_and_gradient():
    cfg = RunConfig(dataset="shapes", objective="cgc", arch="resnet18", widths=[8, 16, 32, 64], batch_size=8)
    torch.manual_seed(0)
    from xai_utils.ops.augment import get_augmentation
    from xai_utils.study.data import load_dataset
    from xai_utils.study.objectives import explained_model
    from xai_utils.study.objectives import TrainBatch
    model = explained_model(cfg, 10, (0.26,) * 3, (0.24,) * 3).train()
    obj = OBJECTIVES["cgc"](cfg, model)
    ds = load_dataset("shapes", "test")
    batch = TrainBatch(ds.images[:8], ds.labels[:8], 0, torch.Generator().manual_seed(0),
                       get_augmentation("ce"), get_augmentation("none"))

    class Eng:
        def features(self, x):
            return model.features(x)
    out = obj.step(batch, model, Eng())
    assert set(out.terms) == {"ce_view", "ce_clean", "ce_transformed", "cgc"}
    torch.testing.assert_close(out.loss, sum(out.terms[k] for k in ("ce_view", "ce_clean", "ce_transformed"))
                               + 0.5 * out.terms["cgc"])
    assert out.logits.shape == (8, 10)
    # the consistency term reaches the backbone's weights through the double backward

    def grads(lam):
        obj.lam = lam
        b = TrainBatch(ds.images[:8], ds.labels[:8], 0, torch.Generator().manual_seed(0),
                       get_augmentation("ce"), get_augmentation("none"))
        loss = obj.step(b, model, Eng()).loss
        return torch.autograd.grad(loss, model.backbone.layer3[0].conv1.weight)[0]
    assert not torch.allclose(grads(1.0), grads(0.0))
    assert OBJECTIVES["cgc"].uncompiled_reason


def test_cgc_learns_on_shapes(tmp_path, one_thread):
    """The smoke recipe on half its images (98.3 % measured; chance is 10 %)."""
    from xai_utils.stages.train import train_run
    prof = load_profile("smoke", results_root=str(tmp_path), objectives=["cgc"], device="cpu", train_subset=1024)
    cfg = prof.run_config("shapes", "cgc", 0)
    summary = train_run(cfg, prof.run_dir(cfg), progress=False)
    print(f"cgc: {summary['test_accuracy']:.1f} % in {summary['wall_time_s']:.0f} s")
    assert summary["test_accuracy"] >= 40.0
    log = [r for r in read_jsonl(prof.run_dir(cfg) / "train_log.jsonl") if "cgc" in r]
    assert len(log) == cfg.epochs and all(math.isfinite(r["cgc"]) for r in log)


def test_cgc_trains_uncompiled_and_says_so(tmp_path):
    """torch.compile has no double backward: a CGC run asked to compile trains eagerly and
    writes why into its log (the trained weights are those of an uncompiled run)."""
    from xai_utils.stages.train import train_run
    tiny = dict(train_subset=64, batch_size=32, epochs=1, probe_epochs=1, widths=[8, 16, 32, 64],
                device="cpu", eval_samples=8, compile=True)
    cfg = load_profile("smoke", objectives=["cgc"], **tiny).run_config("shapes", "cgc", 0)
    train_run(cfg, tmp_path / "run", progress=False)
    events = [r for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if r.get("event") == "not compiled"]
    assert len(events) == 1 and "double backward" in events[0]["reason"]
