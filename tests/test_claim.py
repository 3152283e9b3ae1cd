"""Is the claim robust? Faithfulness variants, temperature scaling, the authors' protocol and
the claim table, each against an independent computation."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

from xai_utils.errors import ConfigError
from xai_utils.ops import calibration as C
from xai_utils.stages.calibrate import calibration_indices
from xai_utils.ops import metrics as M
from xai_utils.settings import layout as runs
from xai_utils.stages import files
from xai_utils.settings import RunConfig, load_profile
from xai_utils.settings.run_config import resolve_calibration
from xai_utils.study.data import eval_indices, load_dataset, train_indices
from xai_utils.study.data.cifar10 import STAND_IN


# ----------------------------------------------------------------------------- faithfulness variants

def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _trapz_mean(c):
    """The paper's AUC: trapezoid with dx = 1, divided by the number of intervals."""
    c = np.asarray(c, float)
    return sum((c[i] + c[i + 1]) / 2 for i in range(len(c) - 1)) / (len(c) - 1)


@pytest.fixture(scope="module")
def hand_logits():
    """Logits of 3 images along 5 points (unperturbed + 4 steps), 4 classes, true classes."""
    g = np.random.default_rng(0)
    z = g.normal(0, 2, size=(3, 5, 4)).astype(np.float32)
    y = np.array([0, 2, 3])
    for i in range(3):               # make the true class the top one on the unperturbed image
        z[i, 0, y[i]] = z[i, 0].max() + 1.0
    return z, y


def test_each_pixel_flipping_score_equals_a_literal_computation(hand_logits):
    z, y = hand_logits
    T = 2.5
    for score in M.FLIP_SCORES:
        curves, auc = M.flip_curves(torch.from_numpy(z), torch.from_numpy(y), score, temperature=T)
        for i in range(3):
            p = [_softmax(z[i, s])[y[i]] for s in range(5)]
            if score == "probability":
                ref = p[1:]
            elif score == "normalised":
                ref = [v / p[0] for v in p]
            elif score == "calibrated":
                ref = [_softmax(z[i, s] / T)[y[i]] for s in range(1, 5)]
            else:   # logit: true-class logit minus the mean logit, over its unperturbed value
                c = [z[i, s, y[i]] - z[i, s].mean() for s in range(5)]
                ref = [v / c[0] for v in c]
            np.testing.assert_allclose(curves[i].numpy(), ref, rtol=1e-5, atol=1e-6)
            assert auc[i].item() == pytest.approx(_trapz_mean(ref), rel=1e-5)


def test_logit_score_is_nan_without_evidence_and_constant_maps_are_nan(hand_logits):
    z, y = hand_logits
    z = z.copy()
    z[1, 0, :] = 0.0                                            # true logit not above the mean
    a = torch.rand(3, 1, 4, 4)
    a[2] = 0.0                                                  # constant map
    curves, auc = M.flip_curves(torch.from_numpy(z), torch.from_numpy(y), "logit", a=a)
    assert np.isnan(auc[1].item()) and np.isnan(auc[2].item()) and np.isfinite(auc[0].item())


def test_scores_share_one_pass_and_the_paper_score_is_unchanged():
    """The paper's pixel flipping from the shared logits equals pixel_flipping(); the
    normalised score is the paper's curve over its unperturbed point."""
    torch.manual_seed(3)
    from xai_utils.study.objectives import explained_model
    model = explained_model(RunConfig(arch="resnet18", widths=[8, 16, 32, 64]), 10, (0.4,) * 3, (0.25,) * 3).eval()
    x, y, a = torch.rand(4, 3, 32, 32), torch.tensor([1, 2, 3, 4]), torch.rand(4, 1, 32, 32)
    logits = M.pixel_flipping_logits(model, x, a, 64, batch_size=8)
    assert logits.shape == (4, 49, 10)
    curves, auc = M.pixel_flipping(model, x, y, a, 64, batch_size=3)
    c2, a2 = M.flip_curves(logits, y, "probability", a=a)
    torch.testing.assert_close(curves, c2)
    torch.testing.assert_close(auc, a2)
    with torch.no_grad():
        p0 = torch.softmax(model(x), -1).gather(1, y[:, None])[:, 0]
    cn, _ = M.flip_curves(logits, y, "normalised")
    torch.testing.assert_close(cn[:, 1:], curves / p0[:, None], rtol=1e-5, atol=1e-6)
    assert torch.allclose(cn[:, 0], torch.ones(4))


# ----------------------------------------------------------------------------- temperature scaling

def test_temperature_fit_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    true_t = 2.7
    z = torch.randn(20000, 10, generator=g, dtype=torch.float64) * 3.0
    labels = torch.multinomial(torch.softmax(z / true_t, dim=1), 1, generator=g)[:, 0]
    t = C.fit_temperature(z, labels)
    assert abs(t - true_t) / true_t < 0.05
    assert C.nll(z, labels, t) <= C.nll(z, labels, 1.0)


def test_temperature_fit_is_the_bounded_minimum():
    """Against SciPy's bounded minimiser of the same NLL over log T; a fold the model gets all
    wrong ends at the upper bound instead of running off (4.8e11 was seen in a rehearsal)."""
    from scipy.optimize import minimize_scalar
    g = torch.Generator().manual_seed(3)
    z = torch.randn(300, 5, generator=g, dtype=torch.float64) * 2.0
    y = torch.multinomial(torch.softmax(z / 1.7, dim=1), 1, generator=g)[:, 0]
    lo, hi = np.log(C.TEMPERATURE_BOUNDS)
    ref = minimize_scalar(lambda s: float(torch.nn.functional.cross_entropy(z / np.exp(s), y)), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-10})
    assert 0.5 < float(np.exp(ref.x)) < 5.0                              # an inner minimum
    assert C.fit_temperature(z, y) == pytest.approx(float(np.exp(ref.x)), rel=1e-4)
    wrong = torch.zeros(8, 3, dtype=torch.float64)
    wrong[:, 0] = torch.arange(1.0, 9.0, dtype=torch.float64)           # confident, and every label is 1
    assert C.fit_temperature(wrong, torch.ones(8, dtype=torch.long)) == C.TEMPERATURE_BOUNDS[1]


def test_ece_equals_a_literal_binning():
    g = np.random.default_rng(1)
    z = torch.from_numpy(g.normal(0, 2, size=(500, 5)))
    y = torch.from_numpy(g.integers(0, 5, 500))
    ece = C.expected_calibration_error(z, y, temperature=1.5, n_bins=10)
    p = torch.softmax(z / 1.5, 1).numpy()
    conf, pred = p.max(1), p.argmax(1)
    ref = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        sel = [i for i in range(500) if lo < conf[i] <= hi]
        if sel:
            ref += len(sel) / 500 * abs(np.mean(pred[sel] == y.numpy()[sel]) - np.mean(conf[sel]))
    assert ece == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("eval_split", ["test", "train"])
def test_no_evaluation_or_training_image_is_used_for_calibration(eval_split):
    cfg = RunConfig(dataset="shapes", train_subset=2048, calibration_samples=1500, eval_split=eval_split,
                    eval_samples=1000)
    idx = calibration_indices(cfg, 10_000)
    assert len(idx) > 0 and len(set(idx)) == len(idx)
    assert not set(idx) & set(train_indices(10_000, 2048, seed=0))         # never trained on
    if eval_split == "train":
        assert not set(idx) & set(eval_indices(10_000, 1000, seed=0))      # never explained
    else:
        assert len(idx) == 1500


def test_held_out_calibration_needs_held_out_images_and_auto_cross_fits_otherwise():
    with pytest.raises(ConfigError, match="'calibration' 'heldout' .*set train_subset"):
        load_profile("smoke", train_subset=None, metrics=["pixel_flipping_calibrated"], calibration="heldout")
    run = next(load_profile("smoke", train_subset=None, metrics=["pixel_flipping_calibrated"]).runs())
    assert resolve_calibration(run) == "crossfit"
    assert resolve_calibration(RunConfig(train_subset=100)) == "heldout"
    with pytest.raises(ConfigError, match="'eval_samples' must be >= 4"):
        load_profile("smoke", train_subset=None, metrics=["pixel_flipping_calibrated"], eval_samples=3)


# ----------------------------------------------------------------------------- the authors' protocol

def test_official_protocol_sets_every_quirk():
    c = RunConfig(dataset="cifar10", protocol="official")
    assert (c.noise_space, c.pixel_flipping_baseline, c.explain_features, c.nan_pairing) == (
        "official", "black_normalised", "raw", "per_model")
    assert c.method_options["eigencam"]["sign"] == "numpy"
    assert RunConfig(dataset="shapes", protocol="official").explain_features == "trained"   # CIFAR only
    d = RunConfig()
    assert (d.noise_space, d.pixel_flipping_baseline, d.explain_features, d.nan_pairing) == (
        "pixel", "black", "trained", "pairs")
    assert RunConfig.from_dict(c.to_dict()) == c


def _fake_cifar(root, images: np.ndarray, labels: np.ndarray):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / STAND_IN).write_text("not CIFAR-10")
    batch = {b"data": images.reshape(len(images), -1), b"labels": labels.tolist()}
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def test_official_protocol_equals_the_authors_single_image_evaluation(tmp_path):
    """A small SCL-style model (probe on normalised features) on CIFAR-format files: our
    batched evaluation under ``protocol: official`` against the authors' loop written out
    here (pytorch-grad-cam and Quantus one image at a time, on normalised images, the probe
    on raw features): equal per image for pixel flipping and complexity, equal in the mean
    for continuity (the noise draws differ)."""
    import quantus
    from pytorch_grad_cam import EigenCAM, GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from skimage.metrics import structural_similarity

    from xai_utils.stages.attribute import attribute_run
    from xai_utils.stages.evaluate import evaluate_run
    from xai_utils.stages.model_io import model_state
    from xai_utils.study.objectives import explained_model

    n = 40
    shapes = load_dataset("shapes", "test")
    root = _fake_cifar(tmp_path / "data", shapes.images[:n].numpy(), shapes.labels[:n].numpy())
    cfg = RunConfig(dataset="cifar10", objective="scl", arch="resnet18", widths=[8, 16, 32, 64], data_root=str(root),
                    protocol="official", eval_samples=n, batch_size_eval=16, methods=["gradcam", "eigencam"],
                    metrics=["pixel_flipping", "complexity", "continuity"], continuity_sigma=0.02)
    torch.manual_seed(0)
    model = explained_model(cfg, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    with torch.no_grad():                     # a non-trivial head on unit-norm features
        model.head.weight.mul_(20.0)
    run_dir = tmp_path / "run"
    files.save_torch(run_dir / runs.MODEL, model_state(model, cfg, 10))
    files.save_json(run_dir / runs.CONFIG, cfg.to_dict())
    attribute_run(run_dir, device="cpu")
    ours = evaluate_run(run_dir, device="cpu")

    # ---- the authors' loop, one image at a time
    model.eval()

    class OnNormalised(nn.Module):            # their model: normalised images in, probe on raw features
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, xn):
            return self.m.head(self.m.backbone(xn))

    ref_model = OnNormalised(model).eval()
    x = shapes.images[:n].float() / 255.0
    xn = (x - model.mean) / model.std
    y = shapes.labels[:n]
    with torch.no_grad():
        preds = ref_model(xn).argmax(1)
    cams = {"gradcam": GradCAM(model=ref_model, target_layers=[model.backbone.layer4[-1]]),
            "eigencam": EigenCAM(model=ref_model, target_layers=[model.backbone.layer4[-1]])}
    pf = quantus.PixelFlipping(perturb_baseline="black", features_in_step=32, disable_warnings=True,
                               display_progressbar=False)
    cx = quantus.Complexity(disable_warnings=True, display_progressbar=False)
    ref = {}
    for i in range(n):
        targets = [ClassifierOutputTarget(int(preds[i]))]
        torch.manual_seed(i)
        noisy = torch.clamp(xn[i:i + 1] + torch.randn_like(xn[i:i + 1]) * 0.02, 0, 1)
        for name, cam in cams.items():
            attr = cam(input_tensor=xn[i:i + 1], targets=targets)[0]
            if np.all(attr == 0):
                auc, cplx = np.nan, np.nan
            else:
                curve = pf(model=ref_model, x_batch=xn[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                           a_batch=attr[None, None], device="cpu")[0]
                auc = np.trapz(curve) / (len(curve) - 1)
                cplx = cx(model=ref_model, x_batch=xn[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                          a_batch=attr[None, None], device="cpu")[0]
            cont = structural_similarity(attr, cam(input_tensor=noisy, targets=targets)[0], data_range=1.0)
            ref[(name, i)] = {"pixel_flipping": auc, "complexity": cplx, "continuity": cont}

    assert np.array_equal(ours.drop_duplicates("sample_index")["pred"].to_numpy(), preds.numpy())
    for name in ("gradcam", "eigencam"):
        for metric in ("pixel_flipping", "complexity"):
            got = ours[(ours.method == name) & (ours.metric == metric)].sort_values("sample_index")["value"].to_numpy()
            want = np.array([ref[(name, i)][metric] for i in range(n)], dtype=float)
            assert np.array_equal(np.isnan(got), np.isnan(want)), (name, metric)
            assert np.isfinite(want).sum() >= n // 2                  # most maps are not all-zero
            np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], atol=2e-5, rtol=1e-4)
        got = ours[(ours.method == name) & (ours.metric == "continuity")]["value"].to_numpy()
        want = np.array([ref[(name, i)]["continuity"] for i in range(n)])
        # same noise level and distortion, other random draws: the means agree within their error
        se = np.sqrt(got.var(ddof=1) / n + want.var(ddof=1) / n)
        assert abs(got.mean() - want.mean()) < 4 * se + 1e-3, (name, got.mean(), want.mean(), se)


def test_cross_fitted_temperatures_never_use_the_image_they_scale():
    """Each image's temperature is fitted on the other fold only: changing an image's own logits
    leaves its temperature unchanged and moves the other fold's."""
    from xai_utils.ops.calibration import crossfit_folds, crossfit_temperatures, fit_temperature
    g = torch.Generator().manual_seed(0)
    logits, labels = 4 * torch.randn(40, 5, generator=g), torch.randint(0, 5, (40,), generator=g)
    fold = crossfit_folds(40, seed=0)
    assert sorted(np.bincount(fold)) == [20, 20]
    per, (t0, t1) = crossfit_temperatures(logits, labels, fold)
    assert t0 == pytest.approx(fit_temperature(logits[torch.as_tensor(fold) == 0], labels[torch.as_tensor(fold) == 0]))
    np.testing.assert_allclose(per.numpy(), np.where(fold == 0, t1, t0))
    i = int(np.flatnonzero(fold == 0)[0])
    changed = logits.clone()
    changed[i] *= 5                                              # image i's own logits, much sharper
    per2, (u0, u1) = crossfit_temperatures(changed, labels, fold)
    assert per2[i] == per[i] and u1 == t1 and u0 != t0            # its temperature comes from the other fold
    assert per2[fold == 1].unique().item() == u0


def test_crossfit_calibration_of_a_run_trained_on_the_whole_split(tmp_path):
    """The paper's profiles train on the whole training split: the calibrated scores are
    cross-fitted on the evaluation images, recorded in calibration.json, and the image-level
    temperatures reach the evaluation."""
    from xai_utils.stages.calibrate import calibrate_run, image_temperatures
    from xai_utils.stages.evaluate import evaluate_run
    from xai_utils.stages.model_io import model_state
    from xai_utils.study.objectives import explained_model

    cfg = RunConfig(dataset="shapes", objective="ce", arch="resnet18", widths=[8, 16, 16, 16], eval_samples=24,
                    batch_size_eval=12, methods=["gradcam"], metrics=["pixel_flipping_calibrated", "road_morf"],
                    features_in_step=384, road_fractions=[0.3, 0.7], device="cpu")
    torch.manual_seed(0)
    model = explained_model(cfg, 10, (0.26,) * 3, (0.24,) * 3)
    files.save_torch(tmp_path / runs.MODEL, model_state(model, cfg, 10))
    files.save_json(tmp_path / runs.CONFIG, cfg.to_dict())
    from xai_utils.stages.attribute import attribute_run
    attribute_run(tmp_path, device="cpu")
    cal = calibrate_run(tmp_path, device="cpu")
    assert cal["method"] == "crossfit" and len(cal["indices"]) == 24 and len(cal["fold_temperatures"]) == 2
    temps = image_temperatures(cal, cal["indices"])
    assert sorted(np.unique(temps)) == sorted(cal["fold_temperatures"])
    df = evaluate_run(tmp_path, device="cpu")
    assert {"pixel_flipping_calibrated", "road_morf", "road_morf[calibrated]"} <= set(df["metric"])
    with np.load(runs.curves_path(tmp_path, "gradcam")) as z:
        np.testing.assert_allclose(z["temperature"], image_temperatures(cal, z["indices"]))
