"""evaluate_run on a tiny run folder built here: schema, row counts, values equal to the metric
functions called directly, curves, per-sample seeding, and errors raised before any work."""
import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from xai_utils.analysis.stats import run_summary
from xai_utils.stages import evaluate as E
from xai_utils.ops import metrics as M
from xai_utils.settings import layout as runs
from xai_utils.stages import files
from xai_utils.stages.artefacts import load_json, load_results
from xai_utils.ops.attribution import attribute
from xai_utils.stages.attribute import save_attributions
from xai_utils.settings import RunConfig
from xai_utils.study.data import eval_indices, load_dataset
from xai_utils.stages.model_io import model_state
from xai_utils.study.objectives import explained_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PAPER_METRICS = ["pixel_flipping", "continuity", "complexity", "contrastivity", "sparseness",
                 "pointing_game", "attribution_localisation"]
N = 6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """config.json, model.pt (a narrow ResNet-18 fitted a few steps) and attributions/*.npz."""
    d = tmp_path_factory.mktemp("run") / "shapes" / "ce" / "seed0"
    cfg = RunConfig(dataset="shapes", objective="ce", seed=0, arch="resnet18", widths=[16, 32, 64, 128],
                    eval_samples=N, batch_size_eval=4, methods=["gradcam", "eigencam"],
                    metrics=PAPER_METRICS, features_in_step=32, target="pred", device="cpu")
    ds = load_dataset("shapes", "test")
    torch.manual_seed(0)
    model = explained_model(cfg, 10, ds.mean, ds.std)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    idx = eval_indices(len(ds), N, seed=0)
    x, y = ds.batch(np.concatenate([idx, np.arange(26)]))
    model.train()
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    files.save_json(d / runs.CONFIG, cfg.to_dict())
    files.save_torch(d / runs.MODEL, model_state(model, cfg, 10))
    x, y = ds.batch(idx)
    with torch.no_grad():
        pred = model(x).argmax(1)
    for m in cfg.methods:
        maps = attribute(model, x, pred, m)
        save_attributions(runs.attribution_path(d, m), maps, pred, pred, y, idx, {"method": m, "options": {}})
    return d


@pytest.fixture(scope="module")
def results(run_dir):
    return E.evaluate_run(run_dir, device="cpu")


def _direct(run_dir, method):
    from xai_utils.stages.model_io import load_model
    model, cfg = load_model(run_dir)
    assert cfg.channels_last           # the evaluation stage runs the model in channels_last
    model = model.to(memory_format=torch.channels_last)
    z = np.load(runs.attribution_path(run_dir, method))
    ds = load_dataset("shapes", "test")
    x, y = ds.batch(z["indices"])
    return model, x, y, torch.from_numpy(z["maps"]), torch.from_numpy(z["preds"]), z["indices"], ds


def test_schema_and_row_counts(results, run_dir):
    assert list(results.columns) == list(runs.RESULT_COLUMNS)
    on_disk = load_results(run_dir)
    assert list(on_disk.columns) == list(runs.RESULT_COLUMNS) and len(on_disk) == len(results)
    counts = results.groupby(["method", "metric"]).size()
    assert set(counts) == {N}
    # Eigen-CAM is class-agnostic: no contrastivity row; Grad-CAM has all seven metrics
    assert sorted(results.loc[results.method == "gradcam", "metric"].unique()) == sorted(PAPER_METRICS)
    assert "contrastivity" not in set(results.loc[results.method == "eigencam", "metric"])
    assert len(results) == N * (7 + 6)
    assert (results.run_id == "shapes/ce/seed0").all() and (results.seed == 0).all()
    assert (results.correct == (results.true == results.pred)).all()
    np.testing.assert_allclose(on_disk["value"].to_numpy(float), results["value"].to_numpy(float), equal_nan=True)


def test_values_equal_direct_metric_calls(results, run_dir):
    model, x, y, maps, pred, idx, ds = _direct(run_dir, "gradcam")
    r = results[results.method == "gradcam"]

    def col(metric):
        sub = r[r.metric == metric].set_index("sample_index").loc[idx]
        return sub["value"].to_numpy(float)

    curves, auc = M.pixel_flipping(model, x, y, maps, 32, batch_size=4)
    np.testing.assert_allclose(col("pixel_flipping"), auc.numpy(), atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(col("complexity"), M.complexity(maps).numpy(), atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(col("sparseness"), M.sparseness(maps).numpy(), atol=1e-9)
    masks = ds.mask_batch(idx)
    np.testing.assert_allclose(col("pointing_game"), M.pointing_game(maps, masks).numpy(), equal_nan=True)
    np.testing.assert_allclose(col("attribution_localisation"), M.attribution_localisation(maps, masks).numpy(),
                               atol=1e-9, equal_nan=True)
    cont = M.continuity_ssim(model, x, pred, "gradcam", sigma=0.02, sample_ids=idx, maps=maps, batch_size=4)
    np.testing.assert_allclose(col("continuity"), cont.numpy(), atol=1e-6)
    contr = M.contrastivity_ssim(model, x, pred, "gradcam", seed=0, sample_ids=idx, maps=maps, batch_size=4)
    np.testing.assert_allclose(col("contrastivity"), contr.numpy(), atol=1e-6)
    z = np.load(runs.curves_path(run_dir, "gradcam"))
    assert z["curves"].shape == (N, 96) and z["curves"].dtype == np.float32
    np.testing.assert_array_equal(z["indices"], idx)
    np.testing.assert_allclose(z["curves"], curves.numpy(), atol=1e-6, equal_nan=True)


def test_draws_depend_only_on_the_sample_index(results, run_dir):
    small = E.evaluate_run(run_dir, methods=["gradcam"], metrics=["continuity", "contrastivity"], n_samples=3,
                           batch_size=2, device="cpu")
    assert len(small) == 2 * 3
    for metric in ("continuity", "contrastivity"):
        a = small[small.metric == metric].set_index("sample_index")["value"]
        b = results[(results.method == "gradcam") & (results.metric == metric)].set_index("sample_index")["value"]
        np.testing.assert_allclose(a.to_numpy(), b.loc[a.index].to_numpy(), atol=1e-6)


def test_no_masks_skips_coherence_with_a_note(run_dir, monkeypatch, caplog):
    ds = load_dataset("shapes", "test")
    monkeypatch.setattr(E, "_load_eval_split", lambda cfg: dataclasses.replace(ds, masks=None))
    with caplog.at_level(logging.WARNING, logger="xai_utils.stages.evaluate"):
        df = E.evaluate_run(run_dir, methods=["eigencam"], metrics=["complexity", "pointing_game"], device="cpu")
    assert set(df.metric) == {"complexity"} and len(df) == N
    assert "no object masks" in caplog.text


def test_errors_before_any_work(run_dir, tmp_path):
    csv = run_dir / runs.RESULTS
    before = csv.stat().st_mtime_ns if csv.exists() else None
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['faithfulness'\]; available: pixel_flipping"):
        E.evaluate_run(run_dir, metrics=["complexity", "faithfulness"], device="cpu")
    with pytest.raises(ValueError, match="unknown attribution method.*available:.*gradcam"):
        E.evaluate_run(run_dir, methods=["gradcam", "lime"], device="cpu")
    with pytest.raises(FileNotFoundError, match="02_attribute"):
        E.evaluate_run(run_dir, methods=["saliency"], device="cpu")
    assert (csv.stat().st_mtime_ns if csv.exists() else None) == before
    with pytest.raises(FileNotFoundError, match="config.json"):
        E.evaluate_run(tmp_path, device="cpu")


def test_summarise_means_over_correct_samples():
    df = pd.DataFrame({
        "method": ["gradcam"] * 4, "metric": ["complexity"] * 4, "value": [1.0, 3.0, np.nan, 100.0],
        "correct": [True, True, True, False]})
    s = run_summary(df)
    row = s.iloc[0]
    assert row["mean"] == 2.0 and row["n"] == 2 and row["n_nan"] == 1 and row["better"] == "lower"


def test_chunked_evaluation_equals_one_chunk(run_dir, tmp_path):
    """The evaluation set stays on the host and goes to the device eval_chunk images at a
    time: the values and curves are those of a single chunk, and the rows in the same order."""
    import shutil
    tables = {}
    for chunk in (2, 512):
        d = tmp_path / f"chunk{chunk}"
        shutil.copytree(run_dir, d)
        cfg = load_json(d / runs.CONFIG)
        files.save_json(d / runs.CONFIG, {**cfg, "eval_chunk": chunk})
        tables[chunk] = (E.evaluate_run(d, device="cpu", batch_size=2),
                         np.load(runs.curves_path(d, "gradcam")))
    (small, c_small), (one, c_one) = tables[2], tables[512]
    assert E._chunks(N, 2, 2) == [slice(0, 2), slice(2, 4), slice(4, 6)]
    pd.testing.assert_frame_equal(small, one)
    np.testing.assert_array_equal(c_small["curves"], c_one["curves"])
    assert str(c_one["tie_break"]) == "quantus"                          # 'auto' on the CPU


def test_chunks_merge_a_last_piece_smaller_than_a_batch():
    assert E._chunks(10, 4, 4) == [slice(0, 4), slice(4, 10)]
    assert E._chunks(3, 8, 4) == [slice(0, 3)]
    assert E._chunk_size(100, 64) == 64 and E._chunk_size(512, 64) == 512 and E._chunk_size(600, 64) == 576
