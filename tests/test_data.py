"""Datasets: synthetic shapes (exact masks), Fashion-MNIST (Debian files), CIFAR-10 and
ImageNet-S50 (tiny files in the real formats), fixed index subsets, errors."""
from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xai_utils.study import data as D
from xai_utils.study.data import download, fashion_mnist, imagefiles, shapes
from xai_utils.study.data import streaming as S
from xai_utils.study.data import cifar10
from xai_utils.study.data.cifar10 import STAND_IN

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- shapes


def test_shapes_deterministic_and_seeded():
    a = D.make_shapes(300, seed=7)
    b = D.make_shapes(300, seed=7)
    c = D.make_shapes(300, seed=8)
    for t, u in zip(a, b):
        assert torch.equal(t, u)
    assert not torch.equal(a[0], c[0])
    d1, d2 = D.load_dataset("shapes", "test"), D.load_dataset("shapes", "test")
    assert torch.equal(d1.images, d2.images) and torch.equal(d1.masks, d2.masks)
    tr = D.load_dataset("shapes", "train")
    assert not torch.equal(tr.images[:len(d1)], d1.images)          # different seeds per split


def test_shapes_format_classes_and_masks():
    ds = D.load_dataset("shapes", "train")
    n = len(ds)
    assert n == 10_000 and len(D.load_dataset("shapes", "test")) == 2_000
    assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.masks.shape == (n, 1, 32, 32)
    assert ds.masks.dtype == torch.bool
    assert ds.num_classes == 10 and len(ds.class_names) == 10
    assert torch.bincount(ds.labels, minlength=10).tolist() == [1000] * 10
    area = ds.masks.flatten(1).sum(1).float()
    assert area.min() > 0                                           # every mask non-empty
    assert area.std() > 30 and area.max() > 3 * area.min()          # sizes vary
    ys = torch.arange(32).float().view(1, 32, 1)
    xs = torch.arange(32).float().view(1, 1, 32)
    m = ds.masks[:, 0].float()
    cy, cx = (m * ys).sum((1, 2)) / area, (m * xs).sum((1, 2)) / area
    for c in (cx, cy):                                              # positions vary
        assert c.min() < 10 and c.max() > 22 and c.std() > 3
    # colour does not give the class away: mean object colour per class close to the average
    obj = (ds.images.float() * ds.masks).sum((2, 3)) / area.view(-1, 1) / 255
    per_class = torch.stack([obj[ds.labels == k].mean(0) for k in range(10)])
    assert (per_class - obj.mean(0)).abs().max() < 0.05
    # ... and the object is always visible: lighter than its background in every channel
    back = (ds.images.float() * ~ds.masks).sum((2, 3)) / (32 * 32 - area).view(-1, 1) / 255
    assert (obj - back).min() > 0.15


def test_shapes_image_is_object_inside_mask_background_outside():
    n, seed = D.SHAPES_SPLITS["test"]
    p = D.shapes_params(n, seed)
    background = shapes.render_shapes_background(p)
    objects, masks = shapes.render_shapes_objects(p)
    ds = D.load_dataset("shapes", "test")
    assert torch.equal(ds.masks, masks) and torch.equal(ds.labels, p.labels)
    m = masks.expand_as(background)
    assert torch.equal(ds.images[m], objects[m])
    assert torch.equal(ds.images[~m], background[~m])
    # the object is visibly different from the background under its mask
    diff = (objects.float() - background.float()).abs().amax(1, keepdim=True)   # [N,1,H,W]
    mean_diff = (diff * masks).sum((1, 2, 3)) / masks.sum((1, 2, 3))
    assert mean_diff.min() > 40


def _literal_inside(name: str, u: float, v: float) -> bool:
    """The shapes of SHAPE_CLASSES written out independently (u right, v down, in units of
    the half-extent; a pixel belongs to the object when its centre does)."""
    r2, a, b = u * u + v * v, abs(u), abs(v)
    return {
        "circle": r2 <= 1,
        "square": max(a, b) <= 0.8,
        "triangle": -0.9 <= v <= 0.8 and a <= 0.95 * (v + 0.9) / 1.7,
        "x_cross": (abs(u - v) <= 0.35 or abs(u + v) <= 0.35) and max(a, b) <= 0.85,
        "ring": 0.55 ** 2 <= r2 <= 1,
        "diamond": a + b <= 1,
        "h_bar": a <= 1 and b <= 0.3,
        "v_bar": a <= 0.3 and b <= 1,
        "plus": (a <= 0.25 and b <= 1) or (b <= 0.25 and a <= 1),
        "frame": 0.5 <= max(a, b) <= 0.85,
    }[name]


def test_shape_masks_match_literal_geometry():
    p = D.shapes_params(60, seed=3)
    masks = shapes.shape_masks(p.labels, p.cx, p.cy, p.half)
    mismatches = 0
    for i in range(60):
        name = D.SHAPE_CLASSES[int(p.labels[i])]
        cx, cy, h = float(p.cx[i]), float(p.cy[i]), float(p.half[i])
        for y in range(32):
            for x in range(32):
                inside = _literal_inside(name, (x + 0.5 - cx) / h, (y + 0.5 - cy) / h)
                mismatches += inside != bool(masks[i, 0, y, x])
    # float32 vs float64 may disagree on a pixel centre exactly on an edge: allow a handful
    assert mismatches <= 3
    assert set(p.labels.tolist()) == set(range(10))


def test_shapes_mean_std_recomputed():
    ds = D.load_dataset("shapes", "train")
    x = ds.images.double() / 255
    assert np.allclose(x.mean((0, 2, 3)).numpy(), ds.mean, atol=1e-3)
    assert np.allclose(x.std((0, 2, 3)).numpy(), ds.std, atol=1e-3)
    assert D.load_dataset("shapes", "test").mean == ds.mean


def test_batch_and_cache_copies():
    ds = D.load_dataset("shapes", "test")
    idx = np.array([5, 0, 17])
    x, y = ds.batch(idx)
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32)
    assert torch.equal(x, ds.images[[5, 0, 17]].float() / 255)
    assert torch.equal(y, ds.labels[[5, 0, 17]])
    x2, _ = ds.batch(torch.tensor([5, 0, 17]), device="cpu")
    assert torch.equal(x, x2)
    assert torch.equal(ds.mask_batch([1, 2]), ds.masks[1:3])
    before = ds.images[0].clone()
    ds.images[0].zero_()                       # a careless caller ...
    ds.labels[0] = 99
    again = D.load_dataset("shapes", "test")   # ... does not corrupt the next one
    assert torch.equal(again.images[0], before) and again.labels[0] != 99


# ----------------------------------------------------------------------------- indices


def test_eval_indices():
    a = D.eval_indices(1000, 100, seed=0)
    assert a.dtype == np.int64 and len(a) == 100 and len(np.unique(a)) == 100
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 1000
    assert np.array_equal(a, D.eval_indices(1000, 100, seed=0))
    assert not np.array_equal(a, D.eval_indices(1000, 100, seed=1))
    assert a.max() > 800 and a.min() < 200                       # spread, not a prefix
    assert np.array_equal(D.eval_indices(50, 100), np.arange(50))
    assert np.array_equal(D.eval_indices(50, None), np.arange(50))
    with pytest.raises(ValueError):
        D.eval_indices(10, -1)


def test_train_indices():
    a = D.train_indices(500, 100, seed=0)
    assert a.dtype == np.int64 and len(np.unique(a)) == 100 and a.max() < 500
    assert not np.all(np.diff(a) > 0)                            # a permutation, not sorted
    assert np.array_equal(D.train_indices(500, 200)[:100], a)    # smaller subset is a prefix
    assert np.array_equal(D.train_indices(500, None), np.arange(500))
    assert not np.array_equal(a, D.train_indices(500, 100, seed=1))


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as e:
        D.load_dataset("mnist", "train")
    assert all(name in str(e.value) for name in ("cifar10", "fashion_mnist", "imagenet_s50", "shapes"))
    with pytest.raises(ValueError, match="train, test"):
        D.load_dataset("shapes", "validation")
    # 'val' is the held-out split everywhere
    assert torch.equal(D.load_dataset("shapes", "val").images, D.load_dataset("shapes", "test").images)


# ----------------------------------------------------------------------------- Fashion-MNIST


def _read_idx_reference(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


@pytest.mark.parametrize("split,n,stem", [("test", 10_000, "t10k"), ("train", 60_000, "train")])
def test_fashion_mnist_from_debian(split, n, stem):
    ds = D.load_dataset("fashion_mnist", split)
    assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.masks is None
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert int(ds.images[:, :, border].max()) == 0
    assert torch.equal(ds.images[:, 0], ds.images[:, 1]) and torch.equal(ds.images[:, 0], ds.images[:, 2])
    raw = _read_idx_reference(DEBIAN / f"{stem}-images-idx3-ubyte.gz")
    labels = _read_idx_reference(DEBIAN / f"{stem}-labels-idx1-ubyte.gz")
    assert np.array_equal(ds.images[:, 0, 2:30, 2:30].numpy(), raw)
    assert np.array_equal(ds.labels.numpy(), labels.astype(np.int64))
    assert torch.bincount(ds.labels, minlength=10).tolist() == [n // 10] * 10
    if split == "train":
        x = ds.images[:, 0].double() / 255                 # channels are equal
        assert abs(x.mean().item() - ds.mean[0]) < 1e-3 and abs(x.std().item() - ds.std[0]) < 1e-3
        assert len(set(ds.mean)) == 1 and len(set(ds.std)) == 1


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_fashion_mnist_root_comes_first(tmp_path, layout):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (5, 28, 28)), np.array([3, 1, 4, 1, 5])
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if layout == "torchvision" else ""          # both are accepted
    _write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", imgs)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels)
    ds = D.load_dataset("fashion_mnist", "test", root=tmp_path)
    assert len(ds) == 5 and ds.labels.tolist() == [3, 1, 4, 1, 5]
    assert np.array_equal(ds.images[:, 2, 2:30, 2:30].numpy(), imgs.astype(np.uint8))


def test_fashion_mnist_missing_gives_one_clear_error(tmp_path, monkeypatch):
    missing_debian = tmp_path / "no-debian"
    root = tmp_path / "data"
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", missing_debian)
    monkeypatch.setattr(download, "ALLOW_DOWNLOAD", True)
    monkeypatch.setattr(download, "_online", lambda host, timeout=3.0: True)

    def failing_download(name, where):                 # starts writing, then the network fails
        (Path(where) / "FashionMNIST" / "raw").mkdir(parents=True)
        (Path(where) / "FashionMNIST" / "raw" / "partial.gz").write_bytes(b"x")
        raise OSError("network unreachable")

    monkeypatch.setattr(download, "download_with_torchvision", failing_download)
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load_dataset("fashion_mnist", "test", root=root)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(root / "FashionMNIST" / "raw") in msg and str(missing_debian) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg
    assert "network unreachable" in msg
    assert not root.exists() and sorted(tmp_path.iterdir()) == []     # nothing left behind


def test_fashion_mnist_download_disabled_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nope")
    monkeypatch.setattr(download, "ALLOW_DOWNLOAD", False)

    def no_network(*a, **k):
        raise AssertionError("network touched")

    monkeypatch.setattr(download, "_online", no_network)
    monkeypatch.setattr(download, "download_with_torchvision", no_network)
    with pytest.raises(D.DatasetNotFoundError, match="download disabled"):
        D.load_dataset("fashion_mnist", "train", root=tmp_path / "r")
    assert sorted(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- CIFAR-10


def _write_cifar(folder: Path, rng: np.random.Generator, stand_in: bool = True):
    """CIFAR-10's format with random pixels; marked as stand-in files unless ``stand_in`` is False."""
    folder.mkdir(parents=True)
    if stand_in:
        (folder / STAND_IN).write_text("not CIFAR-10")
    expected = {}
    for name, n in [("data_batch_1", 4), ("data_batch_2", 3), ("test_batch", 5)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f)
        expected[name] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}, f)
    return expected


def test_cifar10_round_trip(tmp_path):
    exp = _write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(1))
    tr = D.load_dataset("cifar10", "train", root=tmp_path)
    te = D.load_dataset("cifar10", "test", root=tmp_path)
    data = np.concatenate([exp["data_batch_1"][0], exp["data_batch_2"][0]])
    labels = exp["data_batch_1"][1] + exp["data_batch_2"][1]
    assert tr.images.shape == (7, 3, 32, 32) and tr.images.dtype == torch.uint8
    # the row layout is 1024 R, then 1024 G, then 1024 B values, each row-major
    for i in range(7):
        for c in range(3):
            assert np.array_equal(tr.images[i, c].numpy(), data[i, 1024 * c:1024 * (c + 1)].reshape(32, 32))
    assert tr.labels.tolist() == labels and tr.labels.dtype == torch.int64
    assert te.labels.tolist() == exp["test_batch"][1] and len(te) == 5
    assert te.images[4, 2, 31, 31].item() == exp["test_batch"][0][4, 3071]
    assert tr.class_names[1] == "automobile" and tr.num_classes == 10
    assert tr.mean == (0.4914, 0.4822, 0.4465) and tr.std == (0.2470, 0.2435, 0.2616)
    # root may also be the batches folder itself
    again = D.load_dataset("cifar10", "test", root=tmp_path / "cifar-10-batches-py")
    assert torch.equal(again.images, te.images)


def test_cifar10_files_are_checked_against_the_published_md5(tmp_path, monkeypatch):
    """Unmarked files must be CIFAR-10's as published: another file is refused in one line,
    before it is unpickled; the same files with their sums as the published ones are read."""
    folder = tmp_path / "cifar-10-batches-py"
    exp = _write_cifar(folder, np.random.default_rng(2), stand_in=False)
    with pytest.raises(D.DatasetNotFoundError, match="is not CIFAR-10's published test_batch") as err:
        D.load_dataset("cifar10", "test", root=tmp_path)
    assert len(str(err.value).splitlines()) == 1 and "expected 40351d587109b95175f43aff81a1287e" in str(err.value)
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", sums)
    assert D.load_dataset("cifar10", "test", root=tmp_path).labels.tolist() == exp["test_batch"][1]


class _RunsCode:
    """Unpickling this calls ``Path.touch``: what a tampered batch file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_cifar10_file_that_would_run_code_is_not_read(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, np.random.default_rng(3))          # stand-ins: no MD5 to match
    marker = tmp_path / "code_ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _RunsCode(marker)}, f)
    with pytest.raises(D.DatasetNotFoundError, match="pathlib.*Path.touch, which a CIFAR-10 batch never does"):
        D.load_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()


def test_cifar10_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "ALLOW_DOWNLOAD", False)
    with pytest.raises(D.DatasetNotFoundError, match="cifar-10-batches-py") as err:
        D.load_dataset("cifar10", "test", root=tmp_path / "x")
    assert "torchvision.datasets.CIFAR10" in str(err.value)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- ImageNet-S50


def _imagenet_wnid(index: int) -> str:
    from timm.data import ImageNetInfo
    return ImageNetInfo().index_to_label_name(index)


def _mask_png(path: Path, ids: np.ndarray):
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


@pytest.fixture()
def imagenet_root(tmp_path):
    root = tmp_path / "ins50"
    w_goldfish, w_shark, w_other = _imagenet_wnid(1), _imagenet_wnid(3), _imagenet_wnid(0)
    W, H = 400, 300
    left = np.zeros((H, W, 3), np.uint8)
    left[:, : W // 2] = (250, 10, 10)           # red left half, blue right half
    left[:, W // 2:] = (10, 10, 250)
    for split in ("train", "val"):
        for wnid in (w_goldfish, w_shark, w_other):
            (root / split / wnid).mkdir(parents=True)
        Image.fromarray(left).save(root / split / w_goldfish / "a.JPEG", quality=95)
        Image.fromarray(left[::-1, ::-1].copy()).save(root / split / w_shark / "b.JPEG", quality=95)
        Image.fromarray(left[:100, :80].copy()).convert("L").save(root / split / w_shark / "c.jpg")
        Image.fromarray(left).save(root / split / w_other / "d.JPEG")      # not an S50 class
    (root / "masks" / w_goldfish).mkdir(parents=True)
    (root / "masks" / w_shark).mkdir(parents=True)
    ids = np.zeros((H, W), np.int64)
    ids[:, : W // 2] = 1                         # left half: class 1 of ImageNet-S50
    ids[:20, :] = 1000                           # a band of 'ignored' pixels at the top
    _mask_png(root / "masks" / w_goldfish / "a.png", ids)
    _mask_png(root / "masks" / w_shark / "b.png", np.where(ids == 1, 2, 0)[::-1, ::-1].copy())
    return root                                  # c.jpg has no mask


def test_imagenet_s50_val(imagenet_root):
    ds = D.load_dataset("imagenet_s50", "val", root=imagenet_root)
    assert len(ds) == 3 and ds.num_classes == 50 and ds.class_names[0] == "goldfish"
    assert ds.labels.tolist() == [0, 1, 1]       # ImageNet 1 -> 0, 3 -> 1; class 0 ignored
    assert ds.images.shape == (3, 3, 224, 224) and ds.images.dtype == torch.uint8
    assert ds.masks.shape == (3, 1, 224, 224) and ds.masks.dtype == torch.bool
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
    # 400x300 -> shorter side 256: 341x256, crop 224 starts at column (341-224)/2 ~ 58;
    # the original column 200 lands at 200*341/400 - 58 ~ 112.5
    m = ds.masks[0, 0]
    edge = 200 * (256 * 400 // 300) / 400 - round((256 * 400 // 300 - 224) / 2)
    assert m[40:, : math.floor(edge) - 1].all() and not m[:, math.ceil(edge) + 1:].any()
    # ignored band (rows < 20 of 300 -> < ~17 of 256, minus the 16-row crop offset) is background
    assert not m[0, :100].any()
    # the image is aligned with its mask: red where the mask is, blue where it is not
    img = ds.images[0].int()
    assert (img[0][m] > 200).all() and (img[2][m] < 60).all()
    assert (img[2][40:, 120:] > 200).all()
    # the flipped image/mask pair stays aligned too (mask on the right)
    assert ds.masks[1, 0, :150, 120:].all() and not ds.masks[1, 0, :, :105].any()
    assert not ds.masks[2].any()                 # no mask file -> all False


def test_imagenet_s50_no_mask_folder(imagenet_root):
    import shutil
    shutil.rmtree(imagenet_root / "masks")
    ds = D.load_dataset("imagenet_s50", "val", root=imagenet_root)
    assert ds.masks is None and len(ds) == 3


def test_imagenet_s50_streamed_train(imagenet_root):
    ds = D.load_dataset("imagenet_s50", "train", root=imagenet_root)
    assert not hasattr(ds, "images") and len(ds) == 3 and ds.num_classes == 50
    batches = list(ds.loader(batch_size=2, shuffle=False, num_workers=0, drop_last=False))
    assert [b[0].shape for b in batches] == [(2, 3, 224, 224), (1, 3, 224, 224)]
    assert batches[0][0].dtype == torch.uint8 and batches[0][1].dtype == torch.int64
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 1, 1]
    # the un-augmented pass (the probe's) is the val transform: shorter side 256, centre crop 224
    val = D.load_dataset("imagenet_s50", "val", root=imagenet_root)   # the same files
    assert torch.equal(torch.cat([b[0] for b in batches]), val.images)
    x = batches[0][0][0].int()                   # 341x256 -> crop 224: left red, right blue
    assert (x[0, :, :100] > 200).all() and (x[2, :, 125:] > 200).all()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    l1 = [b[1].tolist() for b in ds.loader(1, shuffle=True, generator=g1, num_workers=0)]
    l2 = [b[1].tolist() for b in ds.loader(1, shuffle=True, generator=g2, num_workers=0)]
    assert l1 == l2 and len(l1) == 3
    sub = list(ds.loader(4, shuffle=False, num_workers=0, drop_last=False, indices=[2]))
    assert sub[0][0].shape == (1, 3, 224, 224)


@pytest.mark.parametrize("size", [(500, 375), (300, 600), (224, 224), (1000, 40)])
def test_crop_box_is_torchvision_get_params(size):
    # same draws in the same order: one seed gives torchvision's box ((1000, 40): its fallback)
    from torchvision.transforms import RandomResizedCrop
    img = Image.new("RGB", size)
    with torch.random.fork_rng(devices=[]):
        for seed in range(300):
            torch.manual_seed(seed)
            ref = RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
            assert S.sample_crop_box(*size, torch.Generator().manual_seed(seed)) == ref, seed


def test_random_resized_crop_pixels_are_torchvision():
    from torchvision.transforms import RandomResizedCrop
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 300, 3), dtype=np.uint8))
    with torch.random.fork_rng(devices=[]):
        for seed in range(4):
            torch.manual_seed(seed)
            ref = RandomResizedCrop(224)(img)            # bilinear, antialiased
            ours = S.random_resized_crop(img, torch.Generator().manual_seed(seed))
            assert ours.size == (224, 224) and np.array_equal(np.asarray(ours), np.asarray(ref))


def _banded_portrait(path: Path) -> Path:
    """300 x 600 (w x h): red rows 0-99, blue rows 500-599, green between. The old 256 centre
    square (rows 150-449 of the original) holds green only."""
    a = np.zeros((600, 300, 3), np.uint8)
    a[:, :] = (10, 250, 10)
    a[:100] = (250, 10, 10)
    a[500:] = (10, 10, 250)
    Image.fromarray(a).save(path)
    return path


def test_train_crops_come_from_the_whole_image(tmp_path):
    path = _banded_portrait(tmp_path / "portrait.png")
    boxes = [S.sample_crop_box(300, 600, torch.Generator().manual_seed(s)) for s in range(400)]
    assert any(t < 150 or t + h > 450 for t, _, h, _ in boxes)      # beyond the centre square
    assert any(w == 300 for _, _, _, w in boxes)                       # the full width
    assert min(t for t, *_ in boxes) == 0 and max(t + h for t, _, h, _ in boxes) == 600
    ds = S.RandomCropFiles([path], [7], views=4)
    items = [ds[(0, seed)] for seed in range(12)]
    crops, clean, label = items[0]
    assert crops.shape == (4, 3, 224, 224) and crops.dtype == torch.uint8
    assert clean.shape == (3, 224, 224) and int(label) == 7
    assert not torch.equal(crops[0], crops[1])                          # independent boxes
    assert torch.equal(ds[(0, 0)][0], crops) and not torch.equal(items[1][0], crops)
    with Image.open(path) as im:                                        # clean = the val transform
        assert torch.equal(clean, torch.from_numpy(np.array(imagefiles.resize_crop(im.convert("RGB"), 224))
                                                   ).permute(2, 0, 1))
    red = lambda x: (x[..., 0, :, :] > 200) & (x[..., 1, :, :] < 60)    # noqa: E731
    blue = lambda x: (x[..., 2, :, :] > 200) & (x[..., 1, :, :] < 60)   # noqa: E731
    all_crops = torch.cat([c for c, _, _ in items]).int()
    assert red(all_crops).any() and blue(all_crops).any()              # top and bottom bands
    assert not red(clean.int()).any() and not blue(clean.int()).any()


def test_epoch_sampler_order_and_crop_seeds():
    from xai_utils.ops.seeds import epoch_seed
    sampler = S.EpochSampler([5, 7, 9, 11, 13], seed=3)
    sampler.set_epoch(2)
    pairs = list(sampler)
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(epoch_seed(3, 2))).tolist()
    assert [i for i, _ in pairs] == [[5, 7, 9, 11, 13][k] for k in perm]     # the in-memory shuffling
    assert all(s == S.item_seed(3, 2, i) for i, s in pairs) and len(sampler) == 5
    assert list(sampler) == pairs                                       # a function of (seed, epoch)
    sampler.set_epoch(3)
    assert {s for _, s in sampler}.isdisjoint({s for _, s in pairs})
    assert S.item_seed(3, 2, 5) != S.item_seed(4, 2, 5) != S.item_seed(3, 2, 7)


def _epoch_batches(loader, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    loader.sampler.set_epoch(epoch)
    return [tuple(t.clone() for t in b) for b in loader]


def test_train_loader_same_batches_with_any_worker_count(imagenet_root):
    ds = D.load_dataset("imagenet_s50", "train", root=imagenet_root)
    serial = ds.train_loader(1, views=2, seed=5, num_workers=0)
    parallel = ds.train_loader(1, views=2, seed=5, num_workers=2)
    epochs = []
    for epoch in (0, 1):
        a, b = _epoch_batches(serial, epoch), _epoch_batches(parallel, epoch)
        assert len(a) == len(b) == 3
        for x, y in zip(a, b):
            assert all(torch.equal(s, t) for s, t in zip(x, y))
        epochs.append(a)
    crops, clean, labels = epochs[0][0]
    assert crops.shape == (1, 2, 3, 224, 224) and clean.shape == (1, 3, 224, 224)
    assert crops.dtype == clean.dtype == torch.uint8 and labels.dtype == torch.int64
    assert _epoch_batches(serial, 0)[0][0].equal(crops)                 # replayed (a resume)
    first, second = (torch.cat([b[0] for b in e]) for e in epochs)
    assert not torch.equal(first, second)                               # new crops each epoch


def test_train_loader_workers_persist_across_epochs(imagenet_root):
    ds = D.load_dataset("imagenet_s50", "train", root=imagenet_root)
    loader = ds.train_loader(2, views=1, seed=0, num_workers=2)
    assert loader.persistent_workers and S.loader_worker_pids(loader) == ()
    _epoch_batches(loader, 0)
    pids, iterator = S.loader_worker_pids(loader), loader._iterator
    _epoch_batches(loader, 1)
    assert len(pids) == 2 and S.loader_worker_pids(loader) == pids and loader._iterator is iterator
    assert S.loader_worker_pids(ds.train_loader(2, views=1, seed=0, num_workers=0)) == ()


def test_imagenet_s50_missing(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="image-net.org") as err:
        D.load_dataset("imagenet_s50", "val", root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "val") in str(err.value)
    assert not (tmp_path / "nowhere").exists()


def test_a_files_digest_is_hashlibs_and_follows_the_file(tmp_path):
    """file_digest (the CIFAR-10 batches' MD5, a checkpoint's SHA-256) equals hashlib's, is read
    once for an unchanged file, and again once the file changes."""
    import hashlib
    import os
    from xai_utils.study.data import file_digest
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x" * 3_000_000)
    for algorithm in ("md5", "sha256"):
        assert file_digest(path, algorithm) == hashlib.new(algorithm, path.read_bytes()).hexdigest()
    first, stat = file_digest(path), path.stat()
    path.write_bytes(b"z" * 3_000_000)                       # same size, mtime put back: not read again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_digest(path) == first
    path.write_bytes(b"y" * 3_000_001)
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    assert file_digest(path) == hashlib.sha256(b"y" * 3_000_001).hexdigest()
