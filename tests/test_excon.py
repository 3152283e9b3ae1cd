"""ExCon / ExConB: the background SupCon loss, the saliency mask, the filter, the one Grad-CAM
of training and attribution, and that both objectives learn on shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xai_utils.errors import ConfigError
from xai_utils.ops import attribution as A
from xai_utils.settings import RunConfig, load_profile
from xai_utils.ops.losses import SupConLoss
from xai_utils.study.objectives import explained_model
from xai_utils.study.objectives import OBJECTIVES, TrainBatch
from xai_utils.study.objectives.excon import frozen_bn_statistics, mask_images, saliency_mask
from xai_utils.stages.artefacts import read_jsonl

TOL = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the loss

def supcon_background_loop(features, labels, background, t):
    """Khosla's L_out over the real anchors; background views only in the denominators;
    rows with a negative label nowhere. Literal loops."""
    b, v, _ = features.shape
    views = [(i, k) for i in range(b) for k in range(v) if labels[i] >= 0]
    terms = []
    for (i, k) in views:
        if background[i]:
            continue
        zi = features[i, k]
        others = [(j, m) for (j, m) in views if (j, m) != (i, k)]
        positives = [(j, m) for (j, m) in others if not background[j] and labels[j] == labels[i]]
        if not positives:
            continue
        denom = sum(torch.exp(torch.dot(zi, features[j, m]) / t) for (j, m) in others)
        s = sum(torch.log(torch.exp(torch.dot(zi, features[j, m]) / t) / denom) for (j, m) in positives)
        terms.append(-s / len(positives))
    return sum(terms) / len(terms) if terms else features.sum() * 0.0


@pytest.mark.parametrize("case", ["background", "absent rows", "none"])
def test_background_supcon_equals_a_literal_loop(case):
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(8, 2, 5, generator=g, dtype=torch.float64), dim=2)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 1])
    background = torch.zeros(8, dtype=torch.bool)
    if case in ("background", "absent rows"):
        background[[5, 6]] = True                      # two background samples
    if case == "absent rows":
        labels = labels.clone()
        labels[7] = -1                                  # an absent row
    f1 = feats.clone().requires_grad_(True)
    f2 = feats.clone().requires_grad_(True)
    ours = SupConLoss(0.1)(f1, labels, background=background)
    ref = supcon_background_loop(f2, labels, background, 0.1)
    torch.testing.assert_close(ours, ref, **TOL)
    (g1,), (g2,) = torch.autograd.grad(ours, f1), torch.autograd.grad(ref, f2)
    torch.testing.assert_close(g1, g2, **TOL)
    if case == "none":                                  # an all-False mask is the plain loss
        torch.testing.assert_close(ours, SupConLoss(0.1)(feats, labels), **TOL)
    if case == "background":                            # background views do change the loss
        assert not torch.isclose(ours, SupConLoss(0.1)(feats[:5], labels[:5]))


# ----------------------------------------------------------------------------- mask and filter

def test_mask_keeps_the_salient_region_and_fills_the_mean_colour():
    cam = torch.zeros(2, 1, 4, 4)
    cam[0, 0, 1:3, 1:3] = 1.0                          # a hot 2x2 centre
    cam[1, 0] = torch.arange(16.0).view(4, 4)           # a ramp: values 0..15
    keep = saliency_mask(cam, (8, 8), threshold=0.5)
    assert keep.shape == (2, 1, 8, 8) and keep.dtype == torch.bool
    # bilinear upsampling x2 then min-max: the kept region is the centre, symmetric
    assert keep[0, 0, 3:5, 3:5].all() and not keep[0, 0, 0].any() and not keep[0, 0, :, 0].any()
    assert torch.equal(keep[0, 0], keep[0, 0].flip(0)) and torch.equal(keep[0, 0], keep[0, 0].T)
    from skimage.transform import resize                # the reference: scikit-image's bilinear resize
    up = resize(cam[1, 0].double().numpy(), (8, 8), order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    ref = torch.from_numpy((up - up.min()) / (up.max() - up.min()) > 0.5)
    assert torch.equal(keep[1, 0], ref) and 0 < int(ref.sum()) < 64   # the ramp: the upper half of the values
    ramp = torch.rand(1, 1, 5, 7, generator=torch.Generator().manual_seed(0))
    up = resize(ramp[0, 0].double().numpy(), (32, 32), order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    scaled = (up - up.min()) / (up.max() - up.min())
    clear = np.abs(scaled - 0.3) > 1e-6                 # pixels not within rounding of the threshold
    assert clear.all() and np.array_equal(saliency_mask(ramp, (32, 32), 0.3)[0, 0].numpy(), scaled > 0.3)
    assert not saliency_mask(torch.ones(1, 1, 4, 4), (8, 8), 0.5).any()   # constant map: nothing
    x = torch.rand(2, 3, 8, 8)
    fill = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    m = mask_images(x, keep, fill)
    assert torch.equal(m[keep.expand_as(m)], x[keep.expand_as(x)])
    out = m.permute(0, 2, 3, 1)[~keep[:, 0]]
    assert torch.allclose(out, torch.tensor([0.2, 0.4, 0.6]).expand_as(out))


def _excon(objective="excon", **kw):
    cfg = RunConfig(dataset="shapes", objective=objective, arch="resnet18", widths=[8, 16, 32, 64],
                    batch_size=8, excon_warmup_epochs=0, **kw)
    torch.manual_seed(0)
    model = explained_model(cfg, 10, (0.26,) * 3, (0.24,) * 3)
    obj = OBJECTIVES[objective](cfg, model)
    return cfg, model, obj


class _Engine:
    def __init__(self, model):
        self.model = model

    def features(self, x):
        return self.model.features(x)


def _batch(n=8, epoch=0):
    from xai_utils.ops.augment import get_augmentation
    from xai_utils.study.data import load_dataset
    ds = load_dataset("shapes", "test")
    return TrainBatch(ds.images[:n], ds.labels[:n], epoch, torch.Generator().manual_seed(0),
                      get_augmentation("ce"), get_augmentation("none"))


def test_filter_accepts_exactly_the_masks_the_classifier_gets_right():
    cfg, model, obj = _excon()
    model.train()
    batch = _batch()
    masked, accepted = obj.masked_views(batch, model, _Engine(model))
    with torch.no_grad():                              # same network state: train-mode batch statistics
        logits = obj.classifier(F.normalize(model.features(masked), dim=1))
    assert torch.equal(accepted, logits.argmax(1) == batch.labels)
    # a classifier that always answers the true class accepts every mask, one that never does none
    for always in (True, False):
        with torch.no_grad():
            obj.classifier.weight.zero_()
            obj.classifier.bias.copy_(torch.arange(10.0) * 0)
        target = batch.labels[0] if always else (batch.labels[0] + 1) % 10
        with torch.no_grad():
            obj.classifier.bias[target] = 10.0
        b = TrainBatch(batch.images[:1].repeat(4, 1, 1, 1), batch.labels[:1].repeat(4), 0, batch.generator,
                       batch.augment, batch.clean_view)
        _, acc = obj.masked_views(b, model, _Engine(model))
        assert bool(acc.all()) == always and bool((~acc).all()) == (not always)


def test_saliency_and_filter_leave_batchnorm_statistics_alone():
    cfg, model, obj = _excon()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    obj.masked_views(_batch(), model, _Engine(model))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    with frozen_bn_statistics(model):                  # and the context restores what a forward changes
        model(torch.rand(4, 3, 32, 32))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_one_grad_cam_for_training_and_attribution():
    """The saliency of a training step and the `gradcam` method are one implementation: in
    eval mode, at the CAM layer, on the model's logits, they give the same maps."""
    cfg, model, _ = _excon()
    model.eval()
    batch = _batch()
    x, t = batch.clean(), batch.labels
    cam = A.grad_cam(model, model.cam_layer, x, t, relu=True)
    mine = A.minmax_scale(A.upsample(cam, x.shape[-2:]))
    torch.testing.assert_close(mine, A.attribute(model, x, t, "gradcam"), rtol=0, atol=1e-6)
    # differentiable when asked: a gradient reaches the parameters through the map
    model.train()
    cam = A.grad_cam(model, A.module_at(model.backbone, cfg.excon_layer), x, t, relu=False, create_graph=True)
    assert cam.shape[-2:] == (16, 16)                   # layer2: 16x16 on 32 px inputs
    grads = torch.autograd.grad(cam.pow(2).sum(), [p for p in model.backbone.parameters()], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_a_step_logs_its_terms_and_exconb_adds_background_samples():
    for objective in ("excon", "exconb"):
        cfg, model, obj = _excon(objective)
        model.train()
        out = obj.step(_batch(), model, _Engine(model))
        assert set(out.terms) == {"supcon", "classifier_ce", "accepted_masked"}
        assert math.isfinite(out.loss.item()) and 0.0 <= out.terms["accepted_masked"].item() <= 1.0
        torch.testing.assert_close(out.loss, out.terms["supcon"] + out.terms["classifier_ce"])
    # during the warm-up the step is plain SupCon: no mask is accepted
    cfg, model, obj = _excon("excon", epochs=5)
    obj.warmup_epochs = 2
    out = obj.step(_batch(epoch=1), model, _Engine(model))
    assert out.terms["accepted_masked"].item() == 0.0


def test_bad_excon_settings_are_refused():
    with pytest.raises(ConfigError, match="excon_layer"):
        load_profile("smoke", objectives=["excon"], excon_layer="layer9.conv")
    with pytest.raises(ConfigError, match="excon_threshold"):
        load_profile("smoke", objectives=["excon"], excon_threshold=1.5)


# ----------------------------------------------------------------------------- they learn

def _masked_log(tmp_path, objective: str, **settings):
    """A smoke-recipe run of ``objective`` (one epoch of plain SupCon first): its summary and
    the training-log lines that count accepted masked views."""
    from xai_utils.stages.train import train_run
    prof = load_profile("smoke", results_root=str(tmp_path), objectives=[objective], excon_warmup_epochs=1,
                        device="cpu", **settings)
    cfg = prof.run_config("shapes", objective, 0)
    summary = train_run(cfg, prof.run_dir(cfg), progress=False)
    log = [r for r in read_jsonl(prof.run_dir(cfg) / "train_log.jsonl") if "accepted_masked" in r]
    assert [r["epoch"] for r in log] == list(range(1, cfg.epochs + 1))
    assert log[0]["accepted_masked"] == 0.0                       # warm-up: plain SupCon
    assert all(r["accepted_masked"] > 0.0 for r in log[1:])        # then masks are used
    assert all(math.isfinite(r["supcon"]) and math.isfinite(r["classifier_ce"]) for r in log)
    return summary, log


def test_exconb_learns_on_shapes(tmp_path, one_thread):
    """ExConB (ExCon's loss and its background negatives) on the smoke recipe: clearly above
    chance (10 %), masked views accepted after the warm-up."""
    summary, _ = _masked_log(tmp_path, "exconb")
    print(f"exconb: {summary['test_accuracy']:.1f} % in {summary['wall_time_s']:.0f} s")
    assert summary["test_accuracy"] >= 40.0


def test_excon_accepts_masked_views_after_the_warm_up(tmp_path, one_thread):
    """ExCon on an eighth of the smoke images (its learning is ExConB's test: the same loss,
    without the background negatives): the warm-up, then masked views, finite terms."""
    _masked_log(tmp_path, "excon", train_subset=256)
