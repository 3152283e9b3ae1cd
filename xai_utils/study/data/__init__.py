"""Datasets of the study, all returned in one in-memory format (:class:`ImageDataset`).

Modules: :mod:`.registry` (the registry and :func:`load_dataset`), :mod:`.base` (the
in-memory dataset, fixed index subsets), one module per dataset (:mod:`.shapes`,
:mod:`.fashion_mnist`, :mod:`.cifar10`, :mod:`.imagenet`, :mod:`.planted`), :mod:`.download` (where files
are looked for), :mod:`.imagefiles` and :mod:`.streaming` (image files decoded in loader
workers, the streamed ImageNet-S50 train split), :mod:`.generated` (stand-in files in a
dataset's real format, for rehearsals and tests).

``load_dataset(name, split, root=None)`` looks the name up in :data:`DATASETS` (a registry,
name -> :class:`DatasetSpec`: loader, splits, split sizes, masks, file check);
``split_sizes(name, root=None)`` counts each split's images without loading them (for the
size checks of :mod:`xai_utils.settings.validation`; stand-in files are counted as they are):

===============  ===============================  ==========================================
name             splits                           source
===============  ===============================  ==========================================
``shapes``       train (10,000) / test (2,000)    synthetic, generated from a seed, exact
                                                  object masks (offline stand-in for the
                                                  ImageNet-S50 masks; the data of the tests)
``fashion_mnist`` train (60,000) / test (10,000)  IDX files: ``root``, Debian's package
                                                  ``dataset-fashion-mnist``, or torchvision
``cifar10``      train (50,000) / test (10,000)   torchvision's ``cifar-10-batches-py``
``imagenet_s50`` train (streamed) / val (+masks)  a folder the user supplies (see
                                                  :func:`~.imagenet.load_imagenet_s50`)
``planted_<base> train / test, test_absent,       Fashion-MNIST or CIFAR-10 (``<base>``) with a
_<rate>``        test_swapped (+cue masks)        class-linked cue drawn in, in ``<rate>`` % of
                                                  the training images (000, 025, 050, 075,
                                                  100; :mod:`.planted`)
a profile's      train (optional) / test (+masks) a folder of images in torchvision's
``data:`` name                                    ImageFolder layout (:mod:`.imagefolder`,
                                                  :func:`register_imagefolder`)
===============  ===============================  ==========================================

``test`` and ``val`` both name the held-out evaluation split of every dataset (so a profile's
``eval_split: val`` works on CIFAR and ``test`` works on ImageNet-S50).

Images are stored as uint8 ``[N, 3, H, W]`` (3 channels everywhere, so one model family fits
all datasets); :meth:`ImageDataset.batch` turns an index set into float pixels in [0, 1] on a
device. Models normalise internally with the dataset's ``mean``/``std``.

Loaded datasets are cached in-process (``functools.lru_cache`` on ``(name, split, root)``):
a second call costs one memory copy, because every call returns *fresh copies* of the cached
tensors — a caller that edits its images in place cannot corrupt what the next caller gets.
Missing data raises one :class:`DatasetNotFoundError` that lists every place looked at and
how to get the data; nothing is written to disk on failure.
"""
from ...errors import DatasetNotFoundError
from .base import ImageDataset, Index, PathLike, eval_indices, file_digest, train_indices, train_permutation
from .imagenet import IMAGENET_S50_INDICES, imagenet_s50_classes
from .registry import (DATA_KINDS, DATASETS, DatasetSpec, check_available, register_imagefolder, dataset_label, files_present, has_masks,
                       is_planted, load_dataset, resolve_split, split_sizes, write_stand_in_data)
from .shapes import SHAPE_CLASSES, SHAPES_MEAN, SHAPES_SPLITS, SHAPES_STD, make_shapes, shapes_params
from .streaming import StreamingImageDataset
