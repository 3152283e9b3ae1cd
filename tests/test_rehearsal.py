"""Rehearsals: the paper profiles end to end on the CPU, shrunk to minutes, on stand-in files in
the datasets' real formats; and the prepared GPU check at toy size."""
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from xai_utils import pipeline
from xai_utils.settings import load_profile
from xai_utils.settings.rehearsal import CURVE_STEPS, shrink, what_shrank
from xai_utils.study.data import files_present, load_dataset

ROOT = Path(__file__).resolve().parent.parent
# what a rehearsal must not change: the study's choices
KEPT = ("dataset", "objective", "arch", "widths", "proj_dim", "augmentation", "optimizer", "lr", "momentum",
        "weight_decay", "temperature", "margin", "mining", "methods", "metrics", "protocol", "amp", "channels_last",
        "compile", "pair_methods", "pair_metrics", "pair_kinds", "pair_space", "continuity_sigmas",
        "excon_threshold", "excon_layer", "cgc_lambda", "cgc_temperature", "cgc_negatives", "target", "eval_split")


@pytest.mark.parametrize("profile", ["cifar10", "cifar10_extensions", "cifar10_planted", "imagenet_s50", "quick"])
def test_a_rehearsal_shrinks_amounts_and_keeps_every_choice(profile, tmp_path):
    full = load_profile(profile, results_root=str(tmp_path))
    small = full.rehearsal()
    assert small.name == f"{profile}-rehearsal" and small.seeds == full.seeds[:2]
    assert small.figures_dir() == tmp_path / f"{profile}-rehearsal" / "figures"
    for run in small.runs():
        big = full.run_config(run.dataset, run.objective, run.seed)
        assert {k: getattr(run, k) for k in KEPT} == {k: getattr(big, k) for k in KEPT}
        assert run.epochs <= 2 and run.train_subset == run.batch_size <= 16 and run.probe_epochs <= 2
        assert run.eval_samples <= 8 and run.pair_samples <= 2 and run.kept_images == "all"
        assert len(run.road_fractions) <= 2 and set(run.road_fractions) <= set(big.road_fractions)
        size = 224 if run.dataset == "imagenet_s50" else 32
        assert -(-3 * size * size // run.features_in_step) <= CURVE_STEPS
        assert shrink(run) == run                               # shrinking twice changes nothing more
    lines = what_shrank((full.run_config(r.dataset, r.objective, r.seed), r) for r in small.runs())
    assert any(line.startswith("epochs: ") for line in lines)
    if profile != "quick":                                      # the paper's data are absent here: stand-ins
        assert set(small.stand_ins) == set(full.datasets)


# Amounts cut further than a rehearsal cuts them, to keep `make test` short (every stage, table and
# figure still runs). The ResNet-50 at 224 px is the slowest rehearsal on a CPU: CE and SCL ask the
# claim question, Grad-CAM and the random floor, the corrected protocol, pixel flipping (plain and
# calibrated), complexity, contrastivity and the two metrics read against ImageNet-S50's masks; its
# TL, Eigen-CAM, ROAD, continuity, consistency and the official protocol run the code the cifar10
# rehearsal runs at 32 px. Four images, the fewest a cross-fitted temperature takes. The cifar10
# pair analysis: one pair of each kind. The extensions rehearsal: its five objectives, with
# Grad-CAM and the random floor on the corrected protocol (Eigen-CAM and the official protocol are
# the cifar10 rehearsal's).
FEWER = {"imagenet_s50": {"objectives": ["ce", "scl"], "methods": ["gradcam", "random"], "protocols": ["corrected"],
                          "metrics": ["pixel_flipping", "pixel_flipping_calibrated", "complexity", "contrastivity",
                                      "pointing_game", "attribution_localisation"]},
         "cifar10_extensions": {"methods": ["gradcam", "random"], "protocols": ["corrected"]},
         "cifar10": {"pair_samples": 1}}


def _rehearse(profile: str, root: Path) -> None:
    settings = {"results_root": str(root), "seeds": [0], "eval_samples": 4, **FEWER.get(profile, {})}
    status = pipeline.main(["--profile", profile, "--rehearse", "--executor", "inline", "--no-progress",
                            *(a for key, value in settings.items() for a in ("--set", f"{key}={json.dumps(value)}"))])
    assert status == 0


@pytest.mark.parametrize("profile, dataset", [("cifar10", "cifar10"), ("cifar10_extensions", "cifar10"),
                                              ("imagenet_s50", "imagenet_s50")])
def test_the_paper_profiles_rehearse_end_to_end(profile, dataset, tmp_path, capsys):
    """Every stage of every run and every table and figure, on stand-in files read by the real
    loaders; tables name the real dataset; nothing is written under figures/."""
    before = sorted(p.name for p in (ROOT / "figures").iterdir())
    _rehearse(profile, tmp_path)
    out = capsys.readouterr().out
    assert f"rehearsal of '{profile}'" in out and "wrote stand-in files in its real on-disk format" in out
    study = tmp_path / f"{profile}-rehearsal"
    assert files_present(dataset, "train", study / "data" / dataset)
    fewer = FEWER.get(profile, {})
    prof = load_profile(profile, results_root=str(tmp_path), seeds=[0], **fewer).rehearsal()
    protocols = set()
    for run in prof.runs():
        for cfg, folder in prof.evaluations(run):
            protocols.add(cfg.noise_space)
            assert (folder / "results.csv").is_file(), folder
            res = pd.read_csv(folder / "results.csv")
            assert set(res["metric"].str.split("[").str[0]) >= set(cfg.metrics) - {"contrastivity"}
            if cfg.pair_metrics:
                assert (res["pair"].fillna("") != "").any()
            if cfg.noise_space == "official":                 # the same model, the authors' evaluation
                assert json.loads((folder / "config.json").read_text())["noise_space"] == "official"
                assert not (folder / "model.pt").exists() and not (folder / "pairs").exists()
    assert protocols == {"pixel", "official"} - ({"official"} if "protocols" in fewer else set())
    figures = prof.figures_dir()
    made = {p.stem for p in figures.glob("*.png")}
    assert {"fig_saliency_grid", "fig_metric_distributions", "fig_pixel_flipping_curves", "fig_embeddings",
            "fig_claim_robustness"} <= made
    assert "Nothing was skipped." in (figures / "report_notes.md").read_text()
    cmp_ = pd.read_csv(figures / "paper_vs_reproduced.csv")
    assert set(cmp_["reproduced_dataset"]) == {dataset} and not cmp_["stand_in"].any()
    assert sorted(p.name for p in (ROOT / "figures").iterdir()) == before
    if dataset == "imagenet_s50":                       # the streamed loader and the val masks were used
        assert load_dataset("imagenet_s50", "val", study / "data" / dataset).masks is not None
