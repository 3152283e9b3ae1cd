"""What a GPU run does differently, checked on the CPU: bf16 autocast in the training step (the
losses' similarities stay float32), TF32 only inside the step (IEEE float32 for the probe, the
test pass, attribution and metrics), deterministic kernels on request, the streamed loader's
clean view only where it is used, and one run per GPU by default."""
import argparse
import os

import pytest
import torch
import torch.nn.functional as F

from xai_utils.errors import ConfigError
from xai_utils.ops.attribution import METHODS, attribute
from xai_utils.ops.augment import get_augmentation
from xai_utils.ops.devices import deterministic_algorithms, fp32_precision, ieee_float32
from xai_utils.ops.losses import SupConLoss, TripletLoss
from xai_utils.ops.seeds import epoch_generator
from xai_utils.pipeline import cli, executors
from xai_utils.settings import RunConfig, stage_hash
from xai_utils.study.data import load_dataset
from xai_utils.study.data.streaming import RandomCropFiles
from xai_utils.study.objectives import OBJECTIVES, StreamedViews, TrainBatch, explained_model
from xai_utils.study.objectives.cgc import CGCLoss
from xai_utils.study.training import (OPTIMIZERS, Engine, EpochTotals, build_scheduler, resolve_augmentation,
                                      train_probe, train_step)

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach().clamp_min(1e-12))


# ----------------------------------------------------------------------------- losses under autocast

def test_a_matrix_product_under_autocast_is_bf16_which_is_why_the_losses_switch_it_off():
    z = F.normalize(torch.randn(16, 8), dim=1)
    with torch.autocast(**BF16):
        assert (z @ z.T).dtype == torch.bfloat16


@pytest.mark.parametrize("background", [False, True])
def test_supcon_under_bf16_autocast_equals_float32(background):
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(64, 2, 128, generator=g), dim=2).requires_grad_(True)
    labels = torch.randint(0, 10, (64,), generator=g)
    bg = (torch.rand(64, generator=g) < 0.2) if background else None
    loss = SupConLoss(0.07)
    ref = loss(feats, labels, background=bg)
    (g_ref,) = torch.autograd.grad(ref, feats)
    with torch.autocast(**BF16):
        got = loss(feats, labels, background=bg)
    (g_got,) = torch.autograd.grad(got, feats)
    assert got.dtype == torch.float32
    assert _rel(got, ref) <= 1e-5 and _rel(g_got, g_ref) <= 1e-5


@pytest.mark.parametrize("mining", ["semi-hard", "semi-hard-hardest", "batch-hard"])
def test_triplet_under_bf16_autocast_equals_float32(mining):
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(64, 512, generator=g).to(torch.bfloat16).requires_grad_(True)   # a backbone's bf16 output
    labels = torch.randint(0, 10, (64,), generator=g)
    loss = TripletLoss(0.3, mining)
    ref = loss(emb.float(), labels)                   # the same values, promoted, no autocast
    with torch.autocast(**BF16):
        got = loss(emb, labels)
    assert got.dtype == torch.float32 and _rel(got, ref) <= 1e-5


def test_cgc_loss_under_bf16_autocast_equals_float32():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(32, 1, 16, 16, generator=g), torch.rand(32, 1, 16, 16, generator=g)
    loss = CGCLoss(0.5)
    ref = loss(a, b)
    with torch.autocast(**BF16):
        got = loss(a, b)
    assert _rel(got, ref) <= 1e-5


# ----------------------------------------------------------------------------- training step under autocast

def _cfg(objective: str, **kw) -> RunConfig:
    return RunConfig(dataset="shapes", objective=objective, arch="resnet18", widths=[8, 16, 16, 16], batch_size=8,
                     epochs=2, excon_warmup_epochs=0, device="cpu", **kw)


def _step_parts(objective: str, **kw):
    cfg = _cfg(objective, **kw)
    torch.manual_seed(0)
    model = explained_model(cfg, 10, (0.26,) * 3, (0.24,) * 3)
    obj = OBJECTIVES[objective](cfg, model)
    engine = Engine(cfg, model, torch.device("cpu"), compile=False)
    opt = OPTIMIZERS[cfg.optimizer](obj.trainable(model), cfg)
    return cfg, model, obj, engine, opt, build_scheduler(opt, cfg, steps_per_epoch=4)


def _batch(cfg: RunConfig, images=None) -> TrainBatch:
    ds = load_dataset("shapes", "test")
    gen = epoch_generator(cfg.seed, 0)
    return TrainBatch(ds.images[:8] if images is None else images, ds.labels[:8], 0, gen,
                      get_augmentation(resolve_augmentation(cfg)), get_augmentation("none", cfg.dataset))


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_every_objective_trains_under_bf16_autocast_with_tf32_only_in_the_step(objective):
    """On CUDA a step runs under bf16 autocast with TF32 kernels; the same step under CPU bf16
    autocast gives finite, float32 losses and updates, and the precision flags are TF32 inside
    the step only."""
    cfg, model, obj, engine, opt, sched = _step_parts(objective)
    engine.amp, engine.tf32 = True, True               # what a CUDA engine does
    seen = []
    real_step = obj.step

    def step(*a):
        seen.append((torch.is_autocast_enabled("cpu"), torch.backends.cuda.matmul.fp32_precision,
                     torch.backends.cudnn.conv.fp32_precision))
        return real_step(*a)

    obj.step = step
    before = [p.detach().clone() for p in obj.trainable(model)]
    flags = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    totals = EpochTotals.zeros(torch.device("cpu"))
    train_step(obj, model, engine, opt, sched, _batch(cfg), totals)
    assert seen == [(True, "tf32", "tf32")]
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == flags
    assert torch.isfinite(totals.loss) and totals.loss.dtype == torch.float64
    after = list(obj.trainable(model))
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_the_probe_and_the_test_pass_run_in_ieee_float32_even_inside_tf32_and_autocast():
    cfg, model, obj, engine, *_ = _step_parts("scl")
    flags = []
    model.backbone.register_forward_hook(lambda *a: flags.append(
        (torch.is_autocast_enabled("cpu"), torch.backends.cuda.matmul.fp32_precision,
         torch.backends.cudnn.conv.fp32_precision)))
    ds = load_dataset("shapes", "test")
    with fp32_precision("tf32"), torch.autocast(**BF16):
        feats, labels = engine.extract(iter([ds.batch(slice(0, 8))]))
        probe, _ = train_probe(feats, labels, 10, cfg)
    assert flags == [(False, "ieee", "ieee")] and feats.dtype == torch.float32
    assert probe.weight.dtype == torch.float32


def test_attribution_is_ieee_float32_whatever_the_callers_context():
    cfg, model, *_ = _step_parts("ce")
    model.eval()
    ds = load_dataset("shapes", "test")
    x, y = ds.batch(slice(0, 4))
    cheap = {"gradcam": {}, "eigencam": {}, "saliency": {}, "input_x_gradient": {}, "guided_backprop": {},
             "integrated_gradients": {"n_steps": 4}, "smoothgrad": {"nt_samples": 2}, "occlusion": {}, "random": {}}
    assert set(cheap) == set(METHODS)
    for method, options in cheap.items():
        ref = attribute(model, x, y, method, **options)
        with fp32_precision("tf32"), torch.autocast(**BF16):
            got = attribute(model, x, y, method, **options)
        assert torch.equal(got, ref), method


def test_ieee_float32_restores_what_surrounds_it():
    with fp32_precision("tf32"), torch.autocast(**BF16):
        with ieee_float32("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.is_autocast_enabled("cpu") and torch.backends.cuda.matmul.fp32_precision == "tf32"
    with pytest.raises(ValueError, match="precision"):
        with fp32_precision("half"):
            pass


# ----------------------------------------------------------------------------- deterministic kernels

def test_deterministic_algorithms_are_switched_on_and_restored(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    benchmark = torch.backends.cudnn.benchmark
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark == benchmark and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with deterministic_algorithms(False):
        assert not torch.are_deterministic_algorithms_enabled()


def _stepped(objective: str, deterministic: bool) -> tuple[dict, dict, EpochTotals]:
    cfg, model, obj, engine, opt, sched = _step_parts(objective, deterministic=deterministic)
    assert not (deterministic and engine.tf32)                     # deterministic: no TF32
    before = {k: v.clone() for k, v in model.state_dict().items()}
    totals = EpochTotals.zeros(torch.device("cpu"))
    with deterministic_algorithms(cfg.deterministic):
        train_step(obj, model, engine, opt, sched, _batch(cfg), totals)
    return before, model.state_dict(), totals


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_every_objective_steps_with_deterministic_algorithms(objective):
    """Every operation of every objective's step has a deterministic kernel (none raises), and
    the step under deterministic algorithms moves the weights exactly as the default step does
    on the CPU."""
    before, after, totals = _stepped(objective, deterministic=True)
    _, default, default_totals = _stepped(objective, deterministic=False)
    assert torch.isfinite(totals.loss) and torch.equal(totals.loss, default_totals.loss)
    moved = [k for k in after if after[k].is_floating_point() and not torch.equal(after[k], before[k])]
    assert moved                                                     # the step changed weights...
    for k in after:
        assert torch.equal(after[k], default[k]), k                  # ...exactly as the default step


def test_deterministic_enters_the_training_hash_only_when_set():
    assert stage_hash(RunConfig(deterministic=False), "train") == stage_hash(RunConfig(), "train")
    assert stage_hash(RunConfig(deterministic=True), "train") != stage_hash(RunConfig(), "train")
    assert stage_hash(RunConfig(deterministic=True), "attribute") != stage_hash(RunConfig(), "attribute")


# ----------------------------------------------------------------------------- the clean view

def test_the_crop_loader_decodes_the_clean_view_only_when_asked(tmp_path):
    from xai_utils.study.data.generated import write_imagenet_s50
    write_imagenet_s50(tmp_path, train_per_class=1, val_per_class=1)
    ds = load_dataset("imagenet_s50", "train", tmp_path)
    with_clean = RandomCropFiles(ds.paths[:2], [0, 1], views=2, size=32)
    without = RandomCropFiles(ds.paths[:2], [0, 1], views=2, size=32, clean=False)
    crops, clean, _ = with_clean[(0, 7)]
    crops2, empty, _ = without[(0, 7)]
    assert clean.shape == (3, 224, 224) and empty.numel() == 0 and torch.equal(crops, crops2)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_uses_clean_view_says_exactly_which_objectives_need_it(objective):
    """A streamed batch without the clean view: the objectives that do not declare it train,
    those that do would need it (the flag is neither missing nor superfluous)."""
    cls = OBJECTIVES[objective]
    cfg, model, obj, engine, opt, sched = _step_parts(objective)
    crops = load_dataset("shapes", "test").images[:8].unsqueeze(1).repeat(1, cls.random_view_count(), 1, 1, 1)
    batch = _batch(cfg, images=StreamedViews(crops, None))
    if cls.uses_clean_view:
        with pytest.raises(RuntimeError, match="uses_clean_view"):
            train_step(obj, model, engine, opt, sched, batch, EpochTotals.zeros(torch.device("cpu")))
    else:
        totals = EpochTotals.zeros(torch.device("cpu"))
        train_step(obj, model, engine, opt, sched, batch, totals)
        assert totals.seen == 8 and torch.isfinite(totals.loss) and float(totals.loss) > 0


# ----------------------------------------------------------------------------- one run per GPU

def _args(**kw) -> argparse.Namespace:
    base = dict(executor="local", jobs="auto", devices=None, slurm_partition=None, slurm_option=[],
                slurm_cpus_per_run=None, wait=False, slurm_gpus_per_run=None, slurm_time="24:00:00", no_wait=False)
    return argparse.Namespace(**{**base, **kw})


def test_one_run_per_gpu_by_default(monkeypatch):
    monkeypatch.setattr(executors, "available_gpus", lambda: 4)
    args = _args()
    assert cli._check_scale_out(args) == ["0", "1", "2", "3"] and args.jobs == 4
    args = _args(jobs="2")
    assert cli._check_scale_out(args) == ["0", "1", "2", "3"] and args.jobs == 2
    args = _args(devices="cuda:1")
    assert cli._check_scale_out(args) == ["1"] and args.jobs == 1
    with pytest.raises(ConfigError, match="--jobs 5 is larger than the 4 GPU"):
        executors.check_local(5, cli._check_scale_out(_args(jobs="5")), [])


def test_without_a_gpu_two_runs_at_a_time(monkeypatch):
    monkeypatch.setattr(executors, "available_gpus", lambda: 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    args = _args()
    assert cli._check_scale_out(args) == [] and args.jobs == 2
    args = _args(executor="inline")
    assert cli._check_scale_out(args) == [] and args.jobs == 1
    with pytest.raises(ConfigError, match="inline runs one run at a time"):
        cli._check_scale_out(_args(executor="inline", jobs="2"))
    with pytest.raises(ConfigError, match="--jobs must be at least 1"):
        cli._check_scale_out(_args(jobs="many"))
