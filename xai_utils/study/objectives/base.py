"""The objective interface and its registry, the single source of objective names and properties.

Each objective is an :class:`Objective` subclass registered under its name
(``@register_objective("scl")``). Its class attributes say everything the rest of the
companion needs to know about it:

* ``label``, ``color``: how tables and figures name and draw it (Okabe & Ito colours);
* ``views``: augmented views per image in a training step; ``augmentation``: the recipe
  that ``augmentation: auto`` means for it; ``min_batch``: the smallest batch it can use;
  ``random_views``: how often its step calls ``batch.view()`` (default ``views``; the
  streamed ImageNet-S50 loader crops that many views of each image);
* ``uses_clean_view``: its step calls ``batch.clean()`` (the streamed ImageNet-S50 loader
  decodes the clean view only for such an objective);
* ``needs_probe``: a linear probe on frozen, L2-normalised features becomes its classifier;
* ``normalize_features``: the explained model L2-normalises the pooled features before
  its linear head (true exactly when the head is that probe);
* ``in_paper``: one of the paper's three objectives (a profile that lists no objectives
  runs these);
* ``settings``: the configuration keys only this objective reads (SCL's temperature, ...).
  They are in the training hash of its runs only, so a change retrains exactly the runs it
  affects and a new objective's keys leave every other run as it was.

The order of :data:`OBJECTIVES` is the order of columns in every table and figure.

A training step is :meth:`Objective.step`: it receives the batch (:class:`TrainBatch`: the
uint8 images, labels, the epoch, the run's seeded generator and its augmentation), the
explained model and the training engine, and returns a :class:`StepOutput` (the loss, logits
for the training accuracy when there are any, and every term to log). The default step
draws ``views`` augmented views and hands their pooled features to :meth:`Objective.forward`;
an objective that needs more (extra views, a Grad-CAM of its inputs, masked images) overrides
:meth:`Objective.step`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ...registry import Registry
from ..models import ExplainedModel, build_model

# A run's settings: an :class:`xai_utils.settings.RunConfig` (this layer sits below the settings
# and reads only the keys it needs: an objective its own ``settings``, ``run_id`` in messages).
RunSettings = Any


@dataclass
class StreamedViews:
    """The images of a streamed batch (ImageNet-S50), cropped in the loader's workers: the
    random resized crops of each image, taken from the whole decoded image, and its clean view."""

    crops: torch.Tensor                        # uint8 [B, V, C, S, S]: V random crops per image
    clean: Optional[torch.Tensor]              # uint8 [B, C, S, S]: shorter side 256, centre crop;
                                               # None unless the objective uses_clean_view


@dataclass
class TrainBatch:
    """One training batch as an objective sees it.

    In-memory datasets pass uint8 ``images`` and every :meth:`view` augments them afresh.
    Streamed datasets pass :class:`StreamedViews`: ``images`` becomes their clean view and
    ``crops`` their V pre-cropped views; the k-th :meth:`view` is crop k through the rest of
    the recipe (flip, colour), so a step may draw at most V views (the objective's
    ``random_views``, which the loader crops)."""

    images: torch.Tensor | StreamedViews | None  # uint8 [B, C, H, W] on the training device
    labels: torch.Tensor                       # int64 [B]
    epoch: int                                 # 0-based
    generator: torch.Generator                 # the run's generator for this epoch (seeded)
    augment: Callable[..., torch.Tensor]       # the run's augmentation recipe
    clean_view: Callable[..., torch.Tensor]    # un-augmented float view (ImageNet: centre crop)
    crops: Optional[torch.Tensor] = None       # streamed: uint8 [B, V, C, S, S], else None
    views_drawn: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.images, StreamedViews):
            self.images, self.crops = self.images.clean, self.images.crops

    def view(self) -> torch.Tensor:
        """A new augmented view of every image (float [0, 1]), drawn from the run's generator
        (streamed: the next pre-cropped view, through the rest of the recipe)."""
        if self.crops is None:
            return self.augment(self.images, self.generator)
        k, available = self.views_drawn, self.crops.shape[1]
        if k >= available:
            raise RuntimeError(f"TrainBatch.view() called {k + 1} times, but the streamed batch holds "
                               f"{available} pre-cropped view(s): set the objective's random_views")
        self.views_drawn += 1
        return self.augment(self.crops[:, k], self.generator)

    def clean(self) -> torch.Tensor:
        """The un-augmented images, float [0, 1] (streamed: the loader's centre crop 224)."""
        if self.images is None:
            raise RuntimeError("TrainBatch.clean(): the streamed loader did not decode the clean view; "
                               "set the objective's uses_clean_view = True")
        return self.clean_view(self.images)


@dataclass
class StepOutput:
    loss: torch.Tensor                         # what the optimiser minimises
    logits: Optional[torch.Tensor] = None      # class logits of the batch, for the training accuracy
    terms: dict[str, torch.Tensor] = field(default_factory=dict)   # detached scalars, averaged per epoch


class Objective(nn.Module):
    """What a training step optimises, given pooled backbone features of all views.

    Subclasses own any extra trainable module (the SCL projection head), which is saved in
    the checkpoint; the projection head is also kept in ``model.pt`` (for the pair analysis
    in its space), outside the explained model.
    """

    name: str = ""
    label: str = ""
    color: str = "#000000"
    views: int = 1
    random_views: Optional[int] = None   # batch.view() calls per step; None: ``views``
    augmentation: str = "ce"
    min_batch: int = 1
    uses_clean_view: bool = False    # the step calls batch.clean()
    needs_probe: bool = False
    normalize_features: bool = False
    in_paper: bool = False
    uncompiled_reason: str = ""      # why the step cannot run under torch.compile (then it runs eagerly)
    settings: tuple[str, ...] = ()   # RunConfig keys only this objective (and its kin) reads

    def __init__(self, cfg: RunSettings, model: ExplainedModel):
        super().__init__()

    @classmethod
    def check(cls, cfg: RunSettings) -> None:
        """Raise ConfigError for a setting this objective cannot use (called by the validation)."""

    @classmethod
    def random_view_count(cls) -> int:
        """How many random views a step draws (``batch.view()`` calls): the number of crops a
        streamed loader takes of each image."""
        return cls.views if cls.random_views is None else cls.random_views

    def trainable(self, model: ExplainedModel) -> list[nn.Parameter]:
        """Parameters the optimiser updates (the backbone, plus what the objective uses)."""
        return list(model.backbone.parameters()) + list(self.parameters())

    def step(self, batch: TrainBatch, model: ExplainedModel, engine: Any) -> StepOutput:
        """One training step: ``views`` augmented views -> pooled features -> :meth:`forward`."""
        x = torch.cat([batch.view() for _ in range(self.views)])
        loss, logits = self(engine.features(x), batch.labels, model)
        return StepOutput(loss, logits)

    def forward(self, h: torch.Tensor, y: torch.Tensor, model: ExplainedModel
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``h``: features [views * B, d] (view-major), ``y``: labels [B] -> (loss, logits or None)."""
        raise NotImplementedError


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register_objective(name: str, label: str, color: str, in_paper: bool = False, override: bool = False
                       ) -> Callable[[type[Objective]], type[Objective]]:
    """Register an :class:`Objective` subclass under ``name`` with its display label and colour
    (a name already registered is refused unless ``override``)."""
    def wrap(cls: type[Objective]) -> type[Objective]:
        cls.name, cls.label, cls.color, cls.in_paper = name, label, color, in_paper
        if cls.needs_probe != cls.normalize_features:
            raise TypeError(f"objective {name!r}: the explained model normalises its features "
                            f"exactly when a linear probe (trained on normalised features) is its head")
        return OBJECTIVES.register(name, cls, override)
    return wrap


def get_objective(name: str) -> type[Objective]:
    """The registered objective (an unknown name: :class:`~xai_utils.errors.UnknownNameError`)."""
    return OBJECTIVES[name]


def objective_label(name: str) -> str:
    """Display name (``CE``); an unregistered name (a brought model's label) is shown as it is."""
    return OBJECTIVES[name].label if name in OBJECTIVES else str(name)


def objective_color(name: str) -> str:
    """Colour of an objective in every figure; unregistered names get a fixed spare colour."""
    if name in OBJECTIVES:
        return OBJECTIVES[name].color
    spare = ("#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
    return spare[sum(map(ord, str(name))) % len(spare)]


def foreign_settings(objective: str) -> set[str]:
    """Configuration keys that only *other* objectives read (not in this one's hashes)."""
    own = set(OBJECTIVES[objective].settings) if objective in OBJECTIVES else set()
    return {k for name, cls in OBJECTIVES.items() if name != objective for k in cls.settings} - own


def paper_objectives() -> list[str]:
    """The paper's objectives (CE, SCL, TL), in registry order."""
    return [name for name, cls in OBJECTIVES.items() if cls.in_paper]


def order_objectives(values) -> list[str]:
    """Registered objectives in registry order, then any others alphabetically."""
    vals = list(dict.fromkeys(str(v) for v in values))
    return [o for o in OBJECTIVES if o in vals] + sorted(o for o in vals if o not in OBJECTIVES)


def explained_model(cfg: RunSettings, num_classes: int, mean: Any, std: Any) -> ExplainedModel:
    """The explained model of a run: its backbone (``arch``, ``widths``) and a linear head on
    features L2-normalised exactly when the objective's registry entry says so (its head is
    then the linear probe trained on them)."""
    return build_model(cfg.arch, cfg.widths, num_classes, mean, std,
                       normalize_features=get_objective(cfg.objective).normalize_features)
