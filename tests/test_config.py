"""Profiles: every shipped profile loads; bad names, keys and types fail with one line."""
import pytest
import yaml

from xai_utils.settings import RUN_KEYS, ConfigError, RunConfig, available_profiles, load_profile, stage_hash
from xai_utils.study.objectives import paper_objectives


def _write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["smoke", "quick", "cifar10", "imagenet_s50"])
def test_shipped_profiles_load(name):
    prof = load_profile(name)
    runs = list(prof.runs())
    assert len(runs) == len(prof.datasets) * len(prof.objectives) * len(prof.seeds)
    assert {r.objective for r in runs} == set(paper_objectives())


def test_paper_profiles_follow_paper_md():
    c = load_profile("cifar10")
    assert c.seeds == [0, 1, 2, 3, 4]
    ce, scl, tl = (c.run_config("cifar10", o, 0) for o in ("ce", "scl", "tl"))
    assert (ce.epochs, ce.batch_size, ce.lr, ce.weight_decay, ce.warmup_epochs) == (200, 128, 0.1, 5e-4, 0)
    assert (scl.epochs, scl.batch_size, scl.lr, scl.weight_decay, scl.temperature, scl.warmup_epochs) == (
        500, 256, 0.5, 1e-4, 0.07, 10)
    assert (tl.epochs, tl.lr, tl.margin) == (500, 0.1, 0.3)
    assert ce.widths is None and ce.arch == "resnet18" and ce.features_in_step == 32
    i = load_profile("imagenet_s50")
    ce, scl = i.run_config("imagenet_s50", "ce", 0), i.run_config("imagenet_s50", "scl", 0)
    assert (ce.arch, ce.optimizer, scl.optimizer, ce.epochs, ce.batch_size, ce.features_in_step) == (
        "resnet50", "adamw", "radam", 160, 512, 224)


def test_quick_profile_shape():
    q = load_profile("quick")
    assert q.datasets == ["fashion_mnist", "shapes"] and len(q.seeds) >= 2
    assert "pointing_game" in q.run_config("shapes", "ce", 0).metrics


def test_selector_precedence(tmp_path):
    p = _write(tmp_path, """
datasets: [shapes, cifar10]
objectives: [ce, scl]
seeds: [0]
settings:
  default: {epochs: 1, lr: 0.5}
  scl: {epochs: 2}
  shapes: {epochs: 3}
  shapes/scl: {epochs: 4}
""")
    prof = load_profile(p)
    assert prof.run_config("cifar10", "ce", 0).epochs == 1
    assert prof.run_config("cifar10", "scl", 0).epochs == 2
    assert prof.run_config("shapes", "ce", 0).epochs == 3
    assert prof.run_config("shapes", "scl", 0).epochs == 4
    assert load_profile(p, epochs=9).run_config("shapes", "scl", 0).epochs == 9
    assert load_profile(p, seeds=[3, 4]).seeds == [3, 4]


def _one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unknown_profile_is_one_line():
    msg = _one_line_error(load_profile, "no-such-profile")
    assert "no-such-profile" in msg and "smoke" in msg


def test_unknown_key_lists_valid_keys(tmp_path):
    p = _write(tmp_path, "datasets: [shapes]\nsettings:\n  default: {epoch: 3}\n")
    msg = _one_line_error(load_profile, p)
    assert "'epoch'" in msg and "epochs" in msg and "weight_decay" in msg
    msg = _one_line_error(load_profile, _write(tmp_path, "datasets: [shapes]\nseedz: [1]\n"))
    assert "'seedz'" in msg and "seeds" in msg


@pytest.mark.parametrize("block, key", [
    ("{epochs: abc}", "epochs"), ("{lr: fast}", "lr"), ("{amp: 1}", "amp"),
    ("{widths: [16, x]}", "widths"), ("{optimizer: adam}", "optimizer"), ("{epochs: 2.5}", "epochs")])
def test_wrong_type_names_key(tmp_path, block, key):
    p = _write(tmp_path, f"datasets: [shapes]\nsettings:\n  default: {block}\n")
    assert f"'{key}'" in _one_line_error(load_profile, p)


def test_bad_override_and_selector(tmp_path):
    assert "'epochs'" in _one_line_error(load_profile, "smoke", epochs="abc")
    assert "'nope'" in _one_line_error(load_profile, "smoke", nope=1)
    assert "selector" in _one_line_error(load_profile, _write(
        tmp_path, "datasets: [shapes]\nsettings:\n  cifar100: {epochs: 1}\n"))
    # a registered dataset or objective the study does not run may keep its settings
    # (so that --set objectives=[ce] works on a profile with an scl block)
    prof = load_profile(_write(tmp_path, "datasets: [shapes]\nsettings:\n  cifar10: {epochs: 1}\n  scl: {epochs: 2}\n"),
                        objectives=["ce"])
    assert prof.run_config("shapes", "ce", 0).epochs == 200
    assert "datasets" in _one_line_error(load_profile, _write(tmp_path, "datasets: [mnist]\n"))


def test_int_accepted_for_float_and_hashes():
    a = RunConfig.from_dict({"lr": 1})
    assert isinstance(a.lr, float) and RunConfig.from_dict(a.to_dict()) == a
    b = RunConfig(eval_samples=5)
    # evaluation settings do not change the training hash, but do change later stages
    assert stage_hash(a, "train") != stage_hash(RunConfig(), "train")
    assert stage_hash(b, "train") == stage_hash(RunConfig(), "train")
    assert stage_hash(b, "attribute") != stage_hash(RunConfig(), "attribute")
    q = dict(pixel_flipping_tie_break="quantus")
    assert stage_hash(RunConfig(device="cuda", **q), "evaluate") == stage_hash(RunConfig(device="cpu", **q), "evaluate")
    assert stage_hash(RunConfig(device="cpu", eval_chunk=64), "evaluate") == stage_hash(RunConfig(device="cpu"), "evaluate")


def test_the_stage_hash_does_not_depend_on_where_the_plan_is_made(monkeypatch):
    """A SLURM login node without a GPU plans, a GPU node evaluates: both compute the same
    stage hashes ('auto' is resolved where the stage runs, not hashed as its resolution)."""
    import torch
    from xai_utils.ops.metrics import resolve_tie_break

    cfgs = [RunConfig(device=d, pixel_flipping_tie_break="auto") for d in ("auto", "cuda", "cpu")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_login_node = [stage_hash(c, s) for c in cfgs for s in ("train", "attribute", "evaluate", "figures")]
    assert resolve_tie_break("auto", torch.device("cpu")) == "quantus"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu_node = [stage_hash(c, s) for c in cfgs for s in ("train", "attribute", "evaluate", "figures")]
    assert on_gpu_node == on_login_node
    assert resolve_tie_break("auto", torch.device("cuda")) == "stable"
    # an explicit rule is a different evaluation
    assert stage_hash(RunConfig(pixel_flipping_tie_break="stable"), "evaluate") != stage_hash(RunConfig(), "evaluate")


def test_available_profiles_and_keys_are_documented():
    assert {"smoke", "quick", "cifar10", "imagenet_s50"} <= set(available_profiles())
    # every key used by a shipped profile is a RunConfig field (the loader would reject it otherwise)
    for name in available_profiles():
        raw = yaml.safe_load(open(load_profile(name).path))
        for block in (raw.get("settings") or {}).values():
            assert set(block) <= set(RUN_KEYS)


def test_evaluating_on_images_the_model_was_trained_on_is_refused():
    """eval_split=train: only images after train_subset in the fixed permutation are held out."""
    from xai_utils.settings.validation import check_sizes
    from xai_utils.study.data import eval_indices, train_permutation
    n = 10_000                                                       # shapes' training split
    cfg = RunConfig(dataset="shapes", eval_split="train", eval_samples=100, train_subset=4000)
    with pytest.raises(ConfigError, match="eval_split.*would evaluate .* of the 100 evaluation images"):
        check_sizes(cfg, {"train": n, "test": 2000})
    first = int(eval_indices(n, 1, seed=0)[0])                       # the one image eval_samples=1 explains
    position = int(list(train_permutation(n, seed=0)).index(first))  # its place in the training order
    check_sizes(RunConfig(dataset="shapes", eval_split="train", eval_samples=1, train_subset=position,
                          calibration="crossfit"), {"train": n, "test": 2000})          # not trained on: allowed
    with pytest.raises(ConfigError, match="would evaluate 1 of the 1"):
        check_sizes(RunConfig(dataset="shapes", eval_split="train", eval_samples=1, train_subset=position + 1,
                              calibration="crossfit"), {"train": n, "test": 2000})
    check_sizes(RunConfig(dataset="shapes", eval_split="test", eval_samples=100, train_subset=4000),
                {"train": n, "test": 2000})                                              # held-out split


# ----------------------------------------------------------------------------- where results and figures go

def test_relative_folders_are_the_repositorys_whatever_the_working_directory(tmp_path, monkeypatch):
    from pathlib import Path
    from xai_utils.settings import layout
    repo = Path(layout.__file__).resolve().parents[2]
    monkeypatch.delenv("XAI_RESULTS", raising=False)
    monkeypatch.delenv("XAI_FIGURES", raising=False)
    monkeypatch.chdir(tmp_path)                     # a kernel started in notebooks/, a shell elsewhere
    profile = load_profile("smoke")
    assert Path(profile.results_root) == repo / "results" and profile.figures_dir() == repo / "figures" / "smoke"
    assert Path(load_profile("smoke", results_root="elsewhere").results_root) == repo / "elsewhere"
    assert Path(load_profile("smoke", results_root=str(tmp_path)).results_root) == tmp_path
    assert layout.run_folder("smoke/shapes/ce/seed0") == repo / "results" / "smoke" / "shapes" / "ce" / "seed0"
    assert layout.run_folder(tmp_path / "run") == tmp_path / "run"
    assert layout.study_dir(None, "quick") == repo / "results" / "quick"
    # the environment moves the defaults (a relative value is the repository's too)
    monkeypatch.setenv("XAI_RESULTS", str(tmp_path / "r"))
    monkeypatch.setenv("XAI_FIGURES", "figs")
    profile = load_profile("smoke")
    assert Path(profile.results_root) == tmp_path / "r" and profile.figures_dir() == repo / "figs" / "smoke"
    assert layout.run_folder("smoke/shapes/ce/seed0") == tmp_path / "r" / "smoke" / "shapes" / "ce" / "seed0"


def test_a_profile_root_must_be_a_folder(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [shapes]\nresults_root: 3\n")
    with pytest.raises(ConfigError, match="'results_root' must be a folder"):
        load_profile(str(bad))
