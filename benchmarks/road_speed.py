"""Batched ROAD against pytorch-grad-cam's per-image ROAD: the same images, maps and fractions.

pytorch-grad-cam (the code ROAD's authors published, vendored there) imputes one image at a
time: it builds a SciPy sparse system per image and solves it with ``spsolve`` on the CPU,
then runs the model on the batch, once per percentile and order. Ours
(:func:`xai_utils.ops.metrics.road_logits`) imputes the whole batch at once on the device: an
exact block Cholesky over image rows (on a GPU above 128 px, conjugate gradients). This script
runs both for MoRF and LeRF at the nine fractions 0.1 ... 0.9 (their percentiles 90 ... 10)
with noise 0, checks that the true-class
probabilities agree, and prints the speed-up of the whole ROAD (imputation and forward passes),
of the imputation alone, and of the model's forward passes alone (the floor under any ROAD that
runs the model as often, so the most a faster imputation could gain):

    python benchmarks/road_speed.py                          # 64 shapes images at 32 px, full-width ResNet-18
    python benchmarks/road_speed.py --n 8 --size 224         # ImageNet-sized images (upsampled shapes)
    python benchmarks/road_speed.py --device cuda --n 256

The model has random weights (speed does not depend on them); the maps are CAM-like
(:func:`metrics_speed.cam_like_maps`). Run it alone on a quiet machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam.metrics.perturbation_confidence import (PerturbationConfidenceMetric,
                                                              RemoveLeastRelevantFirst, RemoveMostRelevantFirst)
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metrics_speed import cam_like_maps, timed  # noqa: E402
from xai_utils.ops import metrics as M  # noqa: E402
from xai_utils.ops.metrics.road import FRACTIONS, removal_masks  # noqa: E402
from xai_utils.settings import RunConfig  # noqa: E402
from xai_utils.study.data import load_dataset  # noqa: E402
from xai_utils.study.objectives import explained_model  # noqa: E402

THEIR_REMOVAL = {"morf": RemoveMostRelevantFirst, "lerf": RemoveLeastRelevantFirst}


def theirs(model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, y: torch.Tensor,
           order: str) -> np.ndarray:
    """True-class probabilities [N, F] from pytorch-grad-cam's per-image ROAD, percentile
    p = 100 (1 - f) for each fraction f, noise 0."""
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
    cams = maps[:, 0].numpy()
    cols = []
    for f in FRACTIONS:
        metric = PerturbationConfidenceMetric(THEIR_REMOVAL[order](100 * (1 - f), NoisyLinearImputer(noise=0.0)))
        cols.append(metric(x, cams, targets, model, return_diff=False))
    return np.stack(cols, axis=1)


def ours(model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, y: torch.Tensor, order: str,
         batch_size: int) -> np.ndarray:
    logits = M.road_logits(model, x, maps, order, FRACTIONS, noise=0.0, batch_size=batch_size)
    p = torch.softmax(logits, dim=-1).gather(2, y.to(logits.device)[:, None, None].expand(-1, logits.shape[1], 1))
    return p[:, 1:, 0].cpu().numpy()


@torch.no_grad()
def forward_passes(model: torch.nn.Module, x: torch.Tensor, batch_size: int, passes: int) -> None:
    """The model on every image ``passes`` times, in batches: the floor under any ROAD that
    runs the model as often (imputation free)."""
    for _ in range(passes):
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])


def their_imputation(x: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    imputer = NoisyLinearImputer(noise=0.0)
    return torch.stack([imputer(x[i], (~removed[i, 0]).float()) for i in range(x.shape[0])])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=64, help="images")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (shapes images resized)")
    p.add_argument("--widths", type=int, nargs=4, default=None,
                   help="ResNet-18 stage widths; default: full width (64 128 256 512)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (ours)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    ds = load_dataset("shapes", "test")
    x, y = ds.batch(torch.arange(args.n))
    if args.size != x.shape[-1]:
        x = F.interpolate(x, size=(args.size, args.size), mode="bilinear", align_corners=False).clamp(0, 1)
    maps = cam_like_maps(args.n, args.size)
    torch.manual_seed(0)
    cfg = RunConfig(arch="resnet18", widths=args.widths)
    model = explained_model(cfg, 10, ds.mean, ds.std).eval()

    print(f"ROAD, {args.n} images of {args.size}x{args.size}, fractions {FRACTIONS[0]}..{FRACTIONS[-1]} "
          f"({len(FRACTIONS)}), noise 0; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ours on {device}")
    print(f"{'part':34s} {'theirs s':>10s} {'ours s':>10s} {'speed-up':>9s} {'max |diff|':>11s}")
    total_theirs = total_ours = 0.0
    for order in ("morf", "lerf"):
        ref, t_ref = timed(lambda: theirs(model, x, maps, y, order), lambda: None)
        model_dev, x_dev, maps_dev = model.to(device), x.to(device), maps.to(device)
        ours(model_dev, x_dev[:2], maps_dev[:2], y[:2], order, args.batch_size)          # warm-up
        got, t_ours = timed(lambda: ours(model_dev, x_dev, maps_dev, y, order, args.batch_size), sync)
        model.cpu()
        total_theirs, total_ours = total_theirs + t_ref, total_ours + t_ours
        print(f"{'ROAD ' + order + ' (imputation + model)':34s} {t_ref:10.2f} {t_ours:10.3f} {t_ref / t_ours:9.1f} "
              f"{np.abs(ref - got).max():11.2e}")
    print(f"{'ROAD both orders':34s} {total_theirs:10.2f} {total_ours:10.3f} {total_theirs / total_ours:9.1f}")
    model_dev, x_dev = model.to(device), x.to(device)
    passes = 2 * (len(FRACTIONS) + 1)            # both orders, the unperturbed image and each fraction
    _, t_floor = timed(lambda: forward_passes(model_dev, x_dev, args.batch_size, passes), sync)
    model.cpu()
    print(f"{'model forward passes alone':34s} {'':10s} {t_floor:10.3f} {total_theirs / t_floor:9.1f}   "
          f"(ours: {passes} per image; no ROAD of these fractions needs fewer than {2 * len(FRACTIONS)})")

    removed = removal_masks(maps, [0.5], "morf")[0]
    ref_img, t_ref = timed(lambda: their_imputation(x, removed), lambda: None)
    x_dev, removed_dev = x.to(device), removed.to(device)
    M.noisy_linear_impute(x_dev[:2], removed_dev[:2], noise=0.0)                        # warm-up
    got_img, t_ours = timed(lambda: M.noisy_linear_impute(x_dev, removed_dev, noise=0.0), sync)
    print(f"{'imputation alone (f = 0.5, MoRF)':34s} {t_ref:10.2f} {t_ours:10.3f} {t_ref / t_ours:9.1f} "
          f"{(ref_img - got_img.cpu()).abs().max().item():11.2e}")


if __name__ == "__main__":
    main()
