"""Models and images a user brings, through a profile: checkpoints imported instead of trained,
an image folder as the data, the tables and the claim figure comparing the models' labels;
every bad input refused in one line before anything is written."""
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

import xai_utils
from xai_utils import pipeline

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("cat", "dog", "fox")


def _write_folder(root: Path, per_class: int = 4, size: int = 32, seed: int = 0) -> Path:
    """images/{train,test}/<class>/<k>.png: random RGB images, the class a colour cast."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                img = rng.integers(0, 200, (size, size, 3), dtype=np.uint8)
                img[..., c] += 55
                Image.fromarray(img).save(d / f"{k}.png")
    return root


def _read_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split of a written folder read with PIL alone: images in [0, 1] class by class, as the
    folder is read, and their labels."""
    files = sorted((root / split).glob("*/*.png"))
    images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
    return images.float() / 255, torch.tensor([CLASSES.index(f.parent.name) for f in files])


def _checkpoint(path: Path, arch: str = "test_resnet", num_classes: int = 3, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_file(timm.create_model(arch, num_classes=num_classes).state_dict(), str(path))
    return path


def _profile(tmp: Path, models: dict, settings: dict | None = None, **extra) -> Path:
    doc = {"description": "brought models", "models": models, "reference": next(iter(models)),
           "datasets": ["mine"], "data": {"mine": {"kind": "imagefolder", "root": "images", "image_size": 32}},
           "settings": {"default": settings or {"methods": ["gradcam", "random"],
                                                "metrics": ["pixel_flipping", "complexity"], "eval_samples": 16}},
           **extra}
    path = tmp / "my.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run(capfd, profile: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    capfd.readouterr()
    try:
        status = pipeline.main(["--no-progress", "--profile", str(profile), "--set", f"results_root={out / 'r'}",
                                "--set", f"figures_root={out / 'f'}", *args])
    except SystemExit as e:
        status = e.code
    o, e = capfd.readouterr()
    return subprocess.CompletedProcess(args, status, o, e)


def _page_section() -> dict[str, str]:
    """docs/own-models.md's profile route: its yaml, bash and python blocks."""
    page = (ROOT / "docs" / "own-models.md").read_text().split("## Through a profile")[1]
    return {lang: body for lang, body in re.findall(r"```(yaml|bash|python)\n(.*?)```", page, flags=re.S)}


def test_the_docs_profile_runs_to_the_tables_with_the_labels_compared(tmp_path, capfd, monkeypatch):
    """docs/own-models.md's profile, as a reader would run it: one baseline ResNet-18 and three
    replicates of a contrastive one (random timm weights, written by the page's code), a
    generated image folder: imported, explained, scored, and the claim table compares the labels."""
    blocks = _page_section()
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks["python"], "own-models.md", "exec"), {})
    profile = tmp_path / "my.yaml"
    profile.write_text(blocks["yaml"])
    command = blocks["bash"].split()
    assert command[:3] == ["python", "-m", "xai_utils.pipeline"] and "my.yaml" in command
    contrastive = [str(tmp_path / "ckpt" / f"scl_{i}.safetensors") for i in range(3)]
    res = _run(capfd, profile, tmp_path, "--executor", "inline")
    assert res.returncode == 0, res.stdout + res.stderr
    study = tmp_path / "r" / "my" / "mine"
    assert sorted(p.relative_to(study).as_posix() for p in study.glob("*/seed*")) == [
        "baseline/seed0", "contrastive/seed0", "contrastive/seed1", "contrastive/seed2"]
    summary = pd.read_json(study / "contrastive" / "seed1" / "train_summary.json", typ="series")
    assert summary["epochs"] == 0 and summary["checkpoint"] == contrastive[1]
    assert len(summary["checkpoint_sha256"]) == 64
    log = [json.loads(line) for line in (study / "contrastive" / "seed1" / "train_log.jsonl").read_text().splitlines()]
    assert log == [{"event": "imported", "checkpoint": contrastive[1], "checkpoint_sha256": summary["checkpoint_sha256"]}]
    results = pd.read_csv(study / "baseline" / "seed0" / "results.csv")
    assert len(results) == 16 * 2 * 2                                    # 16 of 18 images x 2 methods x 2 metrics
    assert np.isfinite(results.loc[results["method"] == "random", "value"]).all()   # (a constant map scores NaN)
    claim = pd.read_csv(tmp_path / "f" / "my" / "table_claim_robustness.csv")
    assert {"mean_contrastive", "mean_baseline"} <= set(claim.columns)
    words = set(claim["holds"]) | set(claim["model_holds"])
    assert words <= {"yes", "no (n.s.)", "no (baseline better)", "too few seeds"} and "CE" not in str(words)
    md = (tmp_path / "f" / "my" / "table_claim_robustness.md").read_text()
    assert "contrastive − baseline" in md and "SCL" not in md
    assert (tmp_path / "f" / "my" / "fig_claim_robustness.png").is_file()
    # a second invocation skips every stage: the checkpoints' hashes are unchanged
    again = _run(capfd, profile, tmp_path, "--executor", "inline")
    assert again.returncode == 0 and "done" not in again.stdout.split("skipped")[-1], again.stdout


def test_evaluate_on_a_plain_timm_model_equals_the_pipeline(tmp_path, capfd):
    """xai_utils.evaluate on the timm model itself and the images of the folder gives the
    values the pipeline wrote for the same checkpoint."""
    _write_folder(tmp_path / "images")
    path = _checkpoint(tmp_path / "m.safetensors", seed=3)
    metrics = ["pixel_flipping", "complexity", "sparseness"]
    profile = _profile(tmp_path, {"mine_model": {"arch": "test_resnet", "checkpoint": "m.safetensors",
                                                 "num_classes": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
                       {"methods": ["gradcam"], "metrics": metrics, "eval_samples": 12, "target": "true"})
    res = _run(capfd, profile, tmp_path, "--executor", "inline")
    assert res.returncode == 0, res.stdout + res.stderr
    piped = pd.read_csv(tmp_path / "r" / "my" / "mine" / "mine_model" / "seed0" / "results.csv")

    net = timm.create_model("test_resnet", num_classes=3)
    from safetensors.torch import load_file
    net.load_state_dict(load_file(str(path)))
    images, labels = _read_split(tmp_path / "images", "test")
    direct = xai_utils.evaluate(net.eval(), images, labels, methods=["gradcam"], metrics=metrics, target="true",
                                mean=[0.5] * 3, std=[0.25] * 3, device="cpu")
    merged = direct.merge(piped, left_on=["image", "method", "metric"], right_on=["sample_index", "method", "metric"])
    assert len(merged) == len(direct) == 12 * len(metrics)
    np.testing.assert_allclose(merged["value_x"], merged["value_y"], rtol=0, atol=1e-6)


def test_an_encoder_gets_the_papers_linear_probe_fitted_on_the_train_split(tmp_path, capfd):
    """``probe: fit``: a checkpoint without a classifier (timm's num_classes=0) is imported with a
    linear probe on its frozen, L2-normalised train features, fitted as the paper fits it (a literal
    full-batch SGD loop here); the run then scores as any other."""
    _write_folder(tmp_path / "images", per_class=5)
    torch.manual_seed(4)
    encoder = timm.create_model("test_resnet", num_classes=0).eval()
    save_file(encoder.state_dict(), str(tmp_path / "enc.safetensors"))
    assert not any(k.startswith("fc.") for k in encoder.state_dict())
    settings = {"methods": ["gradcam"], "metrics": ["complexity"], "eval_samples": 6, "probe_epochs": 30,
                "probe_lr": 0.5, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    profile = _profile(tmp_path, {"enc": {"arch": "test_resnet", "checkpoint": "enc.safetensors", "num_classes": 3,
                                          "probe": "fit"}}, settings)
    res = _run(capfd, profile, tmp_path, "--executor", "inline")
    assert res.returncode == 0, res.stdout + res.stderr
    run = tmp_path / "r" / "my" / "mine" / "enc" / "seed0"
    imported, probe = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert imported["event"] == "imported" and probe["stage"] == "probe" and probe["n_train"] == 15

    x, y = _read_split(tmp_path / "images", "train")
    with torch.no_grad():
        h = torch.nn.functional.normalize(encoder((x - 0.5) / 0.25), dim=1)
    torch.manual_seed(0)                                  # the run's seed
    ref = torch.nn.Linear(h.shape[1], 3)
    opt = torch.optim.SGD(ref.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)   # probe_* defaults
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(h), y).backward()
        opt.step()
    weights = torch.load(run / "model.pt", weights_only=True)["weights"]
    torch.testing.assert_close(weights["fc.weight"], ref.weight.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(weights["fc.bias"], ref.bias.detach(), rtol=0, atol=1e-5)
    accuracy = 100.0 * float((ref(h).argmax(1) == y).float().mean())
    assert abs(json.loads((run / "train_summary.json").read_text())["probe_train_accuracy"] - accuracy) < 1e-9
    assert len(pd.read_csv(run / "results.csv")) == 6
    again = _run(capfd, profile, tmp_path, "--executor", "inline", "--stage", "train", "--set", "probe_epochs=31")
    assert again.returncode == 0, again.stdout + again.stderr                  # another probe: fitted again
    assert json.loads((run / "train_log.jsonl").read_text().splitlines()[1])["epochs"] == 31


class _RunsCode:
    """A pickled object whose loading would call ``Path.touch`` on a marker."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_inputs(tmp: Path) -> dict:
    """name -> (models of the profile, what to do to the folder, the words of the refusal)."""
    marker = tmp / "code_ran"
    with open(tmp / "evil.pt", "wb") as f:
        pickle.dump({"fc.weight": _RunsCode(marker)}, f)
    _checkpoint(tmp / "good.safetensors")
    _checkpoint(tmp / "four.safetensors", num_classes=4)
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", num_classes=3).state_dict(), tmp / "r18.pt")

    def model(path, arch="test_resnet", n=3):
        return {"m": {"arch": arch, "checkpoint": path, "num_classes": n}}

    def broken(name):
        (tmp / "images" / "test" / "dog" / "1.png").write_bytes(b"not a png")

    def oblong(name):
        Image.new("RGB", (32, 20)).save(tmp / "images" / "test" / "fox" / "2.png")

    def empty(name):
        for f in (tmp / "images" / "test" / "cat").glob("*"):
            f.unlink()
    return {
        "keys": (model("r18.pt"), None, "does not fit arch 'test_resnet': missing keys"),
        "classes of the checkpoint": (model("four.safetensors"), None, "has 4 classes (fc.weight), num_classes says 3"),
        "classes of the folder": (model("four.safetensors", n=4), None, "is 4, but the image folder"),
        "code inside": (model("evil.pt"), None, "need code to load"),
        "unreadable image": (model("good.safetensors"), broken, "dog/1.png is unreadable"),
        "non-square image": (model("good.safetensors"), oblong, "fox/2.png is 32x20"),
        "empty class": (model("good.safetensors"), empty, "cat: the class folder holds no image"),
    }


@pytest.mark.parametrize("case", ["keys", "classes of the checkpoint", "classes of the folder", "code inside",
                                  "unreadable image", "non-square image", "empty class"])
def test_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, capfd, case):
    _write_folder(tmp_path / "images", per_class=3)
    models, spoil, words = _bad_inputs(tmp_path)[case]
    if spoil:
        spoil(case)
    profile = _profile(tmp_path, models)
    res = _run(capfd, profile, tmp_path / "out")
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], res.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "code_ran").exists()                # the pickled call never ran


def test_the_command_line_exits_2_on_a_checkpoint_with_code(tmp_path):
    """The same refusal through ``python -m xai_utils.pipeline`` itself."""
    _write_folder(tmp_path / "images", per_class=2)
    models, _, words = _bad_inputs(tmp_path)["code inside"]
    profile = _profile(tmp_path, models)
    res = subprocess.run([sys.executable, "-m", "xai_utils.pipeline", "--profile", str(profile),
                          "--set", f"results_root={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "code_ran").exists()


@pytest.mark.parametrize("models, words", [
    ({"m": {"arch": "test_resnet", "checkpoint": "nope.safetensors", "num_classes": 3}}, "not found"),
    ({"m": {"arch": "test_resnet", "num_classes": 3}}, "needs 'checkpoint'"),
    ({"m": {"arch": "test_resnet", "checkpoint": "good.safetensors", "num_classes": 3, "epochs": 3}},
     "unknown key 'epochs'"),
    ({"m": {"arch": "no_such_net", "checkpoint": "good.safetensors", "num_classes": 3}}, "'arch' must be a timm"),
    ({"m": {"arch": "test_resnet", "checkpoint": "good.safetensors", "num_classes": 3, "probe": "train"}},
     "'probe' must be null"),
])
def test_a_bad_model_entry_is_one_line(tmp_path, capfd, models, words):
    _write_folder(tmp_path / "images", per_class=1)
    _checkpoint(tmp_path / "good.safetensors")
    res = _run(capfd, _profile(tmp_path, models), tmp_path / "out")
    assert res.returncode == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "out").exists()


def test_an_image_folder_is_read_resized_with_the_train_splits_statistics(tmp_path):
    """Each split in class order, resized; mean and std those of train/'s pixels (computed here
    with PIL and NumPy), for the test split too."""
    from xai_utils.study.data.imagefolder import load_imagefolder
    root = _write_folder(tmp_path / "images", per_class=2, size=40, seed=5)
    test = load_imagefolder("test", root, 32)
    assert test.images.shape == (6, 3, 32, 32) and test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert test.class_names == list(CLASSES) and test.num_classes == 3
    train = np.stack([np.asarray(Image.open(f).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
                      for f in sorted((root / "train").glob("*/*.png"))]).astype(np.float64) / 255
    np.testing.assert_allclose(test.mean, train.mean(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(test.std, train.std(axis=(0, 1, 2), ddof=1), rtol=0, atol=1e-12)
    assert load_imagefolder("train", root, 32).mean == test.mean
