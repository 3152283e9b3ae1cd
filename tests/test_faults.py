"""Nothing lost when two hands touch one study: two invocations on one run, a process killed at
five points and run again, damaged files of each kind, a failed write, stale locks, and each
value too large for its data rejected before any work (issue 25).

Every scenario runs one smoke run (shapes/ce/0) shrunk to seconds: 256 training images in
3 epochs of 8 steps, 8 evaluation images, one protocol, no pair analysis.
"""
import dataclasses
import errno
import json
import gzip
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xai_utils import pipeline
from xai_utils.errors import ArtefactError, ConfigError
from xai_utils.pipeline.locks import RunLock
from xai_utils.settings import RunConfig
from xai_utils.settings.profiles import load_profile
from xai_utils.settings.validation import check_runs, check_sizes
from xai_utils.settings import layout
from xai_utils.stages import files
from xai_utils.stages.artefacts import read_jsonl
from xai_utils.stages.artefacts import load_npz, load_torch, read_csv
from xai_utils.stages.calibrate import calibration_indices
from xai_utils.study.data import SHAPES_SPLITS, download, load_dataset, split_sizes, write_stand_in_data
from xai_utils.study.data.generated import write_cifar10, write_imagenet_s50

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "fault_driver.py"
STEPS = 8                                                          # per epoch: 256 images, batches of 32
SHRINK = ["--set", "train_subset=256", "--set", "eval_samples=8", "--set", "protocols=[corrected]",
          "--set", "pair_methods=[]", "--set", "pair_metrics=[]"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}     # the same arithmetic everywhere
pytestmark = pytest.mark.usefixtures("one_thread")                       # in this process too


def _args(root: Path, *extra: str) -> list[str]:
    return ["--profile", "smoke", "--only", "shapes/ce/0", "--set", f"results_root={root / 'results'}",
            "--set", f"figures_root={root / 'figures'}", *SHRINK, *extra]


def _run_dir(root: Path) -> Path:
    return root / "results" / "smoke" / "shapes" / "ce" / "seed0"


def _start(root: Path, *extra: str, kill_at: str = "", executor: str = "inline") -> subprocess.Popen:
    """The pipeline on the smoke run in a new process (``kill_at``: through the fault driver)."""
    head = [sys.executable, str(DRIVER), kill_at] if kill_at else [sys.executable, "-m", "xai_utils.pipeline",
                                                                    "--no-progress"]
    return subprocess.Popen([*head, *_args(root, "--executor", executor, *extra)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: int = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _cli_parts(capfd, *args: str) -> tuple[int, str, str]:
    """:func:`_completed` as (exit status, stdout, stderr)."""
    res = _completed(capfd, *args)
    return res.returncode, res.stdout, res.stderr


def _completed(capfd, *args) -> subprocess.CompletedProcess:
    """The command line in this process: its exit status and output (argparse's own exits included)."""
    capfd.readouterr()
    try:
        status = pipeline.main(["--no-progress", *args])
    except SystemExit as e:
        status = e.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(list(args), status, out, err)


def _epoch_lines(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / layout.TRAIN_LOG) if "epoch" in r and "stage" not in r]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """An uninterrupted run, started at once and waited for where it is used (it runs beside
    the first test's killed runs, on the other core)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    proc = _start(root)

    def wait() -> Path:
        if proc.returncode is None:
            status, out = _finish(proc)
            assert status == 0, out
        return root
    yield wait
    if proc.poll() is None:
        proc.kill()


# ----------------------------------------------------------------------------- killed and run again

def test_a_run_killed_at_five_points_and_run_again_ends_with_the_results_of_an_uninterrupted_run(
        tmp_path, uninterrupted):
    run_dir = _run_dir(tmp_path)

    # 1. during epoch 2 (its first checkpoint, of epoch 1, is written)
    status, out = _finish(_start(tmp_path, kill_at=f"epoch:{STEPS + 3}"))
    assert status == -signal.SIGKILL, out
    assert len(_epoch_lines(run_dir)) == 1
    assert load_torch(run_dir / layout.CHECKPOINT)["epoch"] == 1

    # 2. during the write of the next checkpoint (epoch 2): cut half-way
    status, out = _finish(_start(tmp_path, kill_at="checkpoint:1"))
    assert status == -signal.SIGKILL, out
    assert list(run_dir.glob(".checkpoint.pt.*.tmp")), "the cut write left no temporary file"
    assert load_torch(run_dir / layout.PREVIOUS_CHECKPOINT)["epoch"] == 1

    # 3. during attribution: the first method's maps are written, not the second's
    status, out = _finish(_start(tmp_path, kill_at="attribution:2"))
    assert status == -signal.SIGKILL, out
    assert not list(run_dir.glob(".*.tmp")), "the partial checkpoint write was not cleaned up"
    assert (run_dir / "attributions" / "gradcam.npz").is_file()
    assert not (run_dir / "attributions" / "eigencam.npz").is_file()
    assert [r["epoch"] for r in _epoch_lines(run_dir)] == [1, 2, 3]

    # 4. during evaluation (the second method's metrics): no results.csv yet
    status, out = _finish(_start(tmp_path, kill_at="evaluation:14"))
    assert status == -signal.SIGKILL, out
    assert (run_dir / "curves" / "gradcam.npz").is_file() and not (run_dir / layout.RESULTS).is_file()

    # 5. during the figures: some written, the figures not marked finished
    status, out = _finish(_start(tmp_path, kill_at="figures:3"))
    assert status == -signal.SIGKILL, out
    assert (run_dir / layout.RESULTS).is_file()
    assert not (tmp_path / "results" / "smoke" / "stages" / "figures_partial.json").is_file()

    status, out = _finish(_start(tmp_path))
    assert status == 0, out
    assert "done figures:figures" in out and "done shapes/ce/seed0:train" not in out

    reference = _run_dir(uninterrupted())
    assert (run_dir / layout.RESULTS).read_bytes() == (reference / layout.RESULTS).read_bytes()
    assert [r["loss"] for r in _epoch_lines(run_dir)] == [r["loss"] for r in _epoch_lines(reference)]


# ----------------------------------------------------------------------------- two invocations at once

def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """A handshake: return once ``path`` exists (written by ``proc``), fail if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the first process ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_two_invocations_on_one_run_train_it_once_and_both_finish(tmp_path):
    """Through the notebooks (two terminals); training only, the other stages take the same lock."""
    first = _start(tmp_path, "--stage", "train", executor="local")
    _wait_for(_run_dir(tmp_path) / "stages" / "run.lock", first)    # the first holds the run: start the second
    second = _start(tmp_path, "--stage", "train", executor="local")
    (s1, out1), (s2, out2) = _finish(first), _finish(second)
    assert (s1, s2) == (0, 0), out1 + out2
    run_dir = _run_dir(tmp_path)
    assert len(_epoch_lines(run_dir)) == 3                        # trained once
    assert not list(tmp_path.rglob("*.failed.ipynb"))
    waited = out2 if "waiting" in out2 else out1
    line = next(li for li in waited.splitlines() if "waiting" in li)
    assert f"on {socket.gethostname()} since " in line and "pid " in line, line
    assert sum("done shapes/ce/seed0:train" in o for o in (out1, out2)) == 1


def test_no_wait_skips_a_run_another_process_holds_and_says_so(tmp_path, capfd):
    run_dir = _run_dir(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from xai_utils.pipeline.locks import RunLock; "
        f"lock = RunLock(Path({str(run_dir)!r})); lock.acquire(); print('held', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, out, err = _cli_parts(capfd, *_args(tmp_path, "--executor", "inline", "--no-wait",
                                                     "--stage", "train"))
    finally:
        holder.kill()
        holder.wait()
    assert status == 0, out + err
    line = next((li for li in (out + err).splitlines() if "--no-wait" in li), out + err)
    assert f"pid {holder.pid} on {socket.gethostname()}" in line
    assert not (run_dir / layout.TRAIN_LOG).exists()


def test_a_lock_left_by_a_killed_process_is_taken_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from xai_utils.pipeline.locks import RunLock; "
        f"lock = RunLock(Path({str(tmp_path)!r})); lock.acquire(); print('held', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "stages" / "run.lock").is_file()           # the marker is still there
    lock = RunLock(tmp_path)
    assert lock.acquire(wait=False)                               # its process is gone from this host: no wait
    lock.release()


def test_a_lock_of_another_host_is_taken_once_its_lease_ran_out(tmp_path, monkeypatch):
    """filelock ages a lease on the contender's own monotonic clock (how long it has seen the
    marker unchanged, not the file's mtime, which another host's clock wrote): that clock is
    advanced here, not waited for."""
    from filelock._soft._exclusive import _recovery

    clock = [1000.0]
    monkeypatch.setattr(_recovery, "time", type("Clock", (), {"monotonic": staticmethod(lambda: clock[0])}))
    marker = tmp_path / "stages" / "run.lock"
    marker.parent.mkdir(parents=True)
    marker.write_text("filelock/2\npid=4242\nhost=node-elsewhere\nmode=lease\ntoken=abc\nduration=60\n")
    lock = RunLock(tmp_path, lease_seconds=60)
    assert not lock.acquire(wait=False)                           # fresh: its holder may be alive there
    clock[0] += 59.0
    assert not lock.acquire(wait=False)                           # unchanged for less than the lease
    clock[0] += 2.0
    assert lock.acquire(wait=False)                               # not refreshed for a lease: stale
    lock.release()


# ----------------------------------------------------------------------------- damaged files

def _damaged_copy(source: Path, target: Path, relative: str) -> Path:
    shutil.copytree(source, target, dirs_exist_ok=True)
    path = _run_dir(target) / relative
    os.truncate(path, path.stat().st_size // 2)
    return path


def _failed_line(out: str, name: str) -> str:
    lines = {li for li in out.splitlines() if li.startswith("FAILED") and name in li}   # as it ran, and in the summary
    assert len(lines) == 1, out
    assert "Traceback" not in out, out
    return lines.pop()


def test_a_truncated_model_is_named_with_the_command_that_remakes_it(tmp_path, uninterrupted, capfd):
    path = _damaged_copy(uninterrupted(), tmp_path, layout.MODEL)
    status, out = _finish(_start(tmp_path, "--stage", "attribute", "--force", executor="local"))
    assert status == 1
    line = _failed_line(out, "ArtefactError")
    assert f"{path} is truncated or unreadable" in line
    command = line.split("remake it: ", 1)[1]
    assert "--stage train --force --only shapes/ce/0" in command
    # the command it gives rebuilds the model from the last checkpoint, and the stages go on
    status, out, err = _cli_parts(capfd, *shlex.split(command)[3:], "--executor", "inline")
    assert status == 0, out + err
    assert f"{path} is truncated or unreadable" in out and "rebuilt from checkpoint.pt (epoch 3)" in out
    status, out, err = _cli_parts(capfd, *_args(tmp_path, "--executor", "inline", "--force", "--stage", "attribute",
                                                 "--stage", "evaluate"))
    assert status == 0, out + err
    reference = _run_dir(uninterrupted()) / layout.RESULTS
    assert (_run_dir(tmp_path) / layout.RESULTS).read_bytes() == reference.read_bytes()


def test_a_truncated_checkpoint_gives_way_to_the_one_before(tmp_path, uninterrupted, capfd):
    path = _damaged_copy(uninterrupted(), tmp_path, layout.CHECKPOINT)
    (_run_dir(tmp_path) / layout.TRAIN_SUMMARY).unlink()          # an interrupted run: training resumes
    status, out, err = _cli_parts(capfd, *_args(tmp_path, "--executor", "inline", "--stage", "train", "--force"))
    assert status == 0, out + err
    named = [li for li in out.splitlines() if str(path) in li]        # the stage's print and the pipeline's line
    assert any(li.startswith("shapes/ce/seed0:train: ") for li in named), out
    assert all(li.endswith("is truncated or unreadable (BadZipFile: File is not a zip file); "
                           "resumed from checkpoint.prev.pt (epoch 2)")
               for li in named), out
    assert "Traceback" not in out + err
    rebuilt = load_npz(_run_dir(tmp_path) / layout.PREDICTIONS)["logits"]
    assert np.array_equal(rebuilt, load_npz(_run_dir(uninterrupted()) / layout.PREDICTIONS)["logits"])


@pytest.mark.parametrize("relative, stage, remade_by", [
    ("attributions/gradcam.npz", "evaluate", "attribute"),
    (layout.RESULTS, "figures", "evaluate"),
])
def test_a_truncated_file_of_an_earlier_stage_is_named_in_one_line(tmp_path, uninterrupted, capfd, relative, stage,
                                                                   remade_by):
    path = _damaged_copy(uninterrupted(), tmp_path, relative)
    status, out, err = _cli_parts(capfd, *_args(tmp_path, "--executor", "inline", "--stage", stage, "--force"))
    assert status == 1
    line = _failed_line(out, "ArtefactError")
    assert f"{path} is truncated or unreadable" in line
    assert f"--stage {remade_by} --force --only shapes/ce/0" in line


def _torch_save_cut(real):
    def save(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        os.truncate(f, os.path.getsize(f) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")
    return save


def _savez_cut(real):
    def savez(f, **arrays):
        real(f, **arrays)
        f.truncate(f.tell() // 2)
        raise OSError(errno.ENOSPC, "No space left on device")
    return savez


def _write_text_cut(real):
    def write_text(self, text, *args, **kwargs):
        real(self, text[:len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write_text


@pytest.mark.parametrize("save, owner, name, cut, read", [
    (lambda p, k: files.save_torch(p, {"w": torch.arange(1000) * k}), torch, "save", _torch_save_cut, load_torch),
    (lambda p, k: files.save_npz(p, a=np.arange(1000) * k), np, "savez_compressed", _savez_cut, load_npz),
    (lambda p, k: files.save_text(p, "a,b\n" + f"{k},2\n" * 1000), Path, "write_text", _write_text_cut, read_csv),
])
def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch, save, owner, name, cut, read):
    path = tmp_path / "file"
    save(path, 1)
    before = path.read_bytes()
    monkeypatch.setattr(owner, name, cut(getattr(owner, name)))     # half written, then a full disk
    with pytest.raises(OSError, match="No space left"):
        save(path, 2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["file"]         # no temporary left
    read(path)


def test_a_truncated_file_is_detected_by_each_reader(tmp_path):
    files.save_torch(tmp_path / layout.MODEL, {"w": torch.arange(10_000)})
    files.save_npz(tmp_path / "attributions" / "gradcam.npz", maps=np.random.rand(8, 1, 32, 32))
    files.save_text(tmp_path / layout.RESULTS, "a,b\n" + "1,2.5\n" * 100)
    for path, read, stage in [(tmp_path / layout.MODEL, load_torch, "train"),
                              (tmp_path / "attributions" / "gradcam.npz", load_npz, "attribute"),
                              (tmp_path / layout.RESULTS, read_csv, "evaluate")]:
        read(path)
        os.truncate(path, path.stat().st_size - 3)
        with pytest.raises(ArtefactError) as e:
            read(path)
        assert e.value.stage == stage and str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_changed_byte_in_a_model_is_caught_by_its_crc(tmp_path):
    path = files.save_torch(tmp_path / layout.MODEL, {"w": torch.arange(100_000)})
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF                                  # torch.load alone reads this file
    path.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="CRC"):
        load_torch(path)


def test_a_changed_byte_in_an_array_file_is_caught_when_its_member_is_read(tmp_path):
    path = files.save_npz(tmp_path / "attributions" / "gradcam.npz", maps=np.random.rand(200, 200))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="CRC"):
        load_npz(path)


def test_only_what_damage_raises_is_called_damage(tmp_path):
    path = files.save_npz(tmp_path / "attributions" / "gradcam.npz", maps=np.zeros(3))
    with pytest.raises(KeyError):                                  # a missing array: a schema error, not damage
        load_npz(path, keys=["targets"])


def test_an_artefact_error_keeps_its_fields_across_a_process_and_a_record():
    import pickle
    from xai_utils.errors import error_from_record, error_record
    e = ArtefactError("/r/model.pt", "BadZipFile: cut", "train")
    for copy in (pickle.loads(pickle.dumps(e)), error_from_record(json.loads(json.dumps(error_record(e))))):
        assert (copy.path, copy.reason, copy.stage, str(copy)) == (e.path, e.reason, e.stage, str(e))
    assert str(e.remade_by("python -m xai_utils.pipeline --stage train --force")).endswith(
        "remake it: python -m xai_utils.pipeline --stage train --force")
    assert error_record(KeyError("x")) is None


# ----------------------------------------------------------------------------- values beyond the data

def _dry_run(capfd, tmp_path: Path, *sets: str) -> subprocess.CompletedProcess:
    args = ["--profile", "smoke", "--dry-run", "--set", f"results_root={tmp_path}"]
    for s in sets:
        args += ["--set", s]
    return _completed(capfd, *args)


# shapes (the smoke profile): train 10,000, test 2,000, 32x32x3; smoke: train_subset 2048, eval_samples 32
@pytest.mark.parametrize("sets, key", [
    (["eval_samples=100000"], "eval_samples"),                  # the test split has 2,000
    (["train_subset=70000"], "train_subset"),                   # the training split has 10,000
    (["calibration_samples=50000"], "calibration_samples"),     # 10,000 - 2,048 held out
    (["pair_samples=100000"], "pair_samples"),                  # from the 32 evaluation images
    (["features_in_step=5000"], "features_in_step"),            # 3 x 32 x 32 = 3,072 features
    (["pair_pixels_per_step=1025"], "pair_pixels_per_step"),    # 32 x 32 = 1,024 pixels
    (["faithfulness_correlation_subset=3073"], "faithfulness_correlation_subset"),
    (["pair_blur_kernel=65"], "pair_blur_kernel"),              # reflect padding 32 on a 32 px side
    (["method_options.occlusion.window=33"], "method_options.occlusion.window"),
    (["pair_method_options.conditional_occlusion.window=33"], "pair_method_options.conditional_occlusion.window"),
    (["train_subset=null", "calibration=crossfit", "batch_size=10001"], "batch_size"),
    (["calibration_samples=7953"], "calibration_samples"),      # one more than held out
    (["eval_split=train", "eval_samples=10000"], "calibration_samples"),   # every held-out image is evaluated
])
def test_a_value_beyond_the_data_is_rejected_before_any_work(tmp_path, capfd, sets, key):
    res = _dry_run(capfd, tmp_path, *sets)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'{key}'" in lines[0], res.stderr
    assert lines[0].startswith("error: run shapes/")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sets", [
    ["eval_samples=2000"], ["train_subset=10000", "calibration=crossfit"], ["calibration_samples=7952"],
    ["pair_samples=32"], ["features_in_step=3072"], ["pair_pixels_per_step=1024"],
    ["faithfulness_correlation_subset=3072"], ["pair_blur_kernel=63"], ["method_options.occlusion.window=32"],
    ["train_subset=null", "calibration=crossfit", "batch_size=10000"], ["batch_size_eval=100000"],
])
def test_a_value_at_the_bound_is_accepted(tmp_path, capfd, sets):
    res = _dry_run(capfd, tmp_path, *sets)
    assert res.returncode == 0, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_held_out_images_are_counted_as_calibration_picks_them():
    """eval_split=train: the evaluation images are not held out; the bound is what
    calibration_indices (the consumer) yields, independently computed here."""
    cfg = RunConfig(dataset="shapes", eval_split="train", eval_samples=5000, train_subset=4000,
                    calibration="heldout", metrics=["pixel_flipping_calibrated"], calibration_samples=10_000)
    sizes = split_sizes("shapes")
    held = len(calibration_indices(cfg, sizes["train"]))
    assert 6000 - 5000 < held < 6000                        # some evaluation images are among the 6,000 left
    with pytest.raises(ConfigError, match="'eval_split'"):  # the bound holds; the next check refuses
        check_sizes(dataclasses.replace(cfg, calibration_samples=held), sizes)   # the images trained on
    with pytest.raises(ConfigError, match="'calibration_samples' must be at most"):
        check_sizes(dataclasses.replace(cfg, calibration_samples=held + 1), sizes)


def test_unknown_sizes_are_not_checked():
    """Without the data (None, or a split not counted) only the image size bounds apply."""
    cfg = RunConfig(dataset="cifar10", eval_samples=10**6, train_subset=10**6, batch_size=10**5)
    check_sizes(cfg, None)
    check_sizes(cfg, {"test": 10**6})
    with pytest.raises(ConfigError, match="'train_subset'"):
        check_sizes(cfg, {"train": 50_000})
    with pytest.raises(ConfigError, match="'features_in_step'"):
        check_sizes(dataclasses.replace(cfg, features_in_step=3 * 32 * 32 + 1), None)


def test_shapes_sizes_are_those_of_the_loaded_splits():
    sizes = split_sizes("shapes")
    assert sizes == {split: len(load_dataset("shapes", split)) for split in ("train", "test")}
    assert sizes == {split: n for split, (n, _) in SHAPES_SPLITS.items()}


def test_cifar10_stand_in_sizes_are_counted_from_its_files(tmp_path):
    root = write_cifar10(tmp_path, n_train=23, n_test=7)
    sizes = split_sizes("cifar10", root)
    assert sizes == {"train": 23, "test": 7}
    assert sizes == {split: len(load_dataset("cifar10", split, root)) for split in ("train", "test")}


def test_imagenet_stand_in_sizes_are_counted_from_its_files(tmp_path):
    root = write_imagenet_s50(tmp_path, train_per_class=1, val_per_class=1)
    (root / "train" / "not_a_class").mkdir()                          # ignored by the loader, and here
    (root / "train" / "not_a_class" / "x.JPEG").write_bytes(b"")
    sizes = split_sizes("imagenet_s50", root)
    assert sizes == {"train": 50, "val": 50}
    assert sizes == {split: len(load_dataset("imagenet_s50", split, root)) for split in ("train", "val")}


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_fashion_mnist_sizes_are_read_from_the_idx_headers(tmp_path):
    rng = np.random.default_rng(0)
    for split, stem, n, ext in (("train", "train", 9, ".gz"), ("test", "t10k", 4, "")):
        _idx(tmp_path / f"{stem}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)))
        _idx(tmp_path / f"{stem}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n))
    sizes = split_sizes("fashion_mnist", tmp_path)
    assert sizes == {"train": 9, "test": 4}
    assert sizes == {split: len(load_dataset("fashion_mnist", split, tmp_path)) for split in ("train", "test")}


def test_absent_files_have_no_size(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "ALLOW_DOWNLOAD", False)
    assert split_sizes("imagenet_s50", tmp_path) is None
    assert split_sizes("cifar10", tmp_path) is None


def test_a_rehearsal_is_checked_against_its_stand_in_files(tmp_path, monkeypatch):
    """--rehearse validates after writing the stand-ins: their sizes, not the official ones."""
    monkeypatch.setattr(download, "ALLOW_DOWNLOAD", False)
    rehearsal = load_profile("cifar10", results_root=str(tmp_path / "r"), data_root=str(tmp_path / "absent")).rehearsal()
    assert rehearsal.stand_ins, "the rehearsal found CIFAR-10 files and wrote no stand-ins"
    write_stand_in_data(rehearsal.stand_ins)
    runs = list(rehearsal.runs())
    check_runs(runs, data=True)                                         # the shrunk study fits 100 / 40 images
    too_many = [dataclasses.replace(r, eval_samples=41) for r in runs]
    with pytest.raises(ConfigError, match="'eval_samples' must be at most 40"):
        check_runs(too_many, data=True)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_run_files_get_the_mode_the_umask_gives(tmp_path, umask):
    """A study on a shared filesystem: its files as readable as a plain write would make them
    (the reference: a file opened the ordinary way under the same umask)."""
    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        written = [files.save_json(tmp_path / "a.json", {"a": 1}), files.save_text(tmp_path / "b.md", "b"),
                   files.save_npz(tmp_path / "c.npz", x=np.zeros(2)), files.save_torch(tmp_path / "d.pt", {"x": 1})]
    finally:
        os.umask(old)
    plain = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert plain == 0o666 & ~umask
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [plain] * 4
