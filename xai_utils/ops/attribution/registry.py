"""The registry of attribution methods (:data:`METHODS`), their options, and the one call
that runs any of them on a batch (:func:`attribute`)."""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from ...registry import Registry
from ..contract import Explainable
from ..devices import ieee_float32

Method = Callable[..., Tensor]
METHODS: Registry[Method] = Registry("attribution method")


def register_method(name: str, label: str, class_agnostic: bool = False,
                    choices: Optional[dict[str, Sequence[str]]] = None,
                    check: Optional[Callable[[dict[str, Any]], None]] = None,
                    override: bool = False) -> Callable[[Method], Method]:
    """Register ``fn(model, x, target, *, **options) -> [N, 1, H, W]`` under ``name``.

    ``label``: the name tables and figures show. ``class_agnostic``: the map ignores
    ``target`` (e.g. contrastivity is undefined for such a method). ``choices``: the allowed
    values of options that take a name (checked with the run's configuration). ``check``: a
    rule between options, ``check(options)`` raising ValueError (checked with the run's
    configuration too). All are stored on the function (``fn.label``, ``fn.class_agnostic``,
    ``fn.choices``, ``fn.check``); the
    options themselves are the function's keyword-only arguments and their defaults. A name
    already registered is refused unless ``override``.
    """
    def wrap(fn: Method) -> Method:
        fn.label = label  # type: ignore[attr-defined]
        fn.class_agnostic = class_agnostic  # type: ignore[attr-defined]
        fn.choices = {k: tuple(v) for k, v in (choices or {}).items()}  # type: ignore[attr-defined]
        fn.check = check  # type: ignore[attr-defined]
        return METHODS.register(name, fn, override)
    return wrap


def is_class_agnostic(name: str) -> bool:
    """The method's map does not depend on the class explained (its registry flag)."""
    return bool(getattr(METHODS.get(name), "class_agnostic", False))


def check_method_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError for an unknown method or option, an option value whose type differs
    from its default's, or a name outside the option's registered choices."""
    method = get_method(name)
    check_options(method, f"method '{name}'", options)
    if getattr(method, "check", None) is not None:
        method.check(options)


def keyword_options(fn: Callable, what: str, **options: Any) -> dict[str, Any]:
    """The keyword-only options of ``fn`` with their defaults, updated by ``options``
    (an unknown name is an error naming ``what``)."""
    params = inspect.signature(fn).parameters
    valid = {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"{what} has no option(s) {bad}; valid options: {', '.join(valid) or 'none'}")
    return {**valid, **options}


def check_options(fn: Callable, what: str, options: dict[str, Any]) -> None:
    """Check ``options`` of a registered function: known names, values of their default's
    type (ints for floats allowed), names within the registered ``fn.choices``."""
    defaults = keyword_options(fn, what)
    keyword_options(fn, what, **options)
    for k, v in options.items():
        allowed = getattr(fn, "choices", {}).get(k)
        if allowed is not None and v not in allowed:
            raise ValueError(f"{what} option '{k}' must be one of {', '.join(allowed)}, got {v!r}")
        d = defaults[k]
        numeric = isinstance(d, (int, float)) and not isinstance(d, bool)
        if d is not None and not (numeric and isinstance(v, (int, float)) and not isinstance(v, bool)) \
                and not isinstance(v, type(d)):
            raise ValueError(f"{what} option '{k}' must be a {type(d).__name__} "
                             f"like its default {d!r}, got {v!r}")


def get_method(name: str) -> Method:
    """The registered method (an unknown name: :class:`~xai_utils.errors.UnknownNameError`)."""
    return METHODS[name]


def check_methods(methods: Sequence[str]) -> list[str]:
    """Validate a list of method names at once (one error listing all unknown names)."""
    return METHODS.check(methods)


def resolve_options(name: str, **options: Any) -> dict[str, Any]:
    """The method's options: its defaults updated by ``options`` (unknown names are an error)."""
    return keyword_options(get_method(name), f"method '{name}'", **options)


# ----------------------------------------------------------------------------- model state

@contextlib.contextmanager
def explaining(model: Explainable, out_of_place: bool = False) -> Iterator[Explainable]:
    """Run with ``model`` in eval mode (and, if asked, no in-place activations); restore after.

    Captum's guided backprop replaces ReLU gradients with hooks on ``nn.ReLU`` modules; timm
    ResNets use ``nn.ReLU(inplace=True)``, whose in-place write can defeat tensor hooks on
    some torch versions. Switching ``inplace`` off is numerically identical and is undone here.
    """
    training = {m: m.training for m in model.modules()}
    inplace = [m for m in model.modules() if isinstance(getattr(m, "inplace", None), bool) and m.inplace]
    model.eval()
    if out_of_place:
        for m in inplace:
            m.inplace = False
    try:
        yield model
    finally:
        for m in inplace:
            m.inplace = True
        for m, flag in training.items():
            m.training = flag


def attribute(model: Explainable, x: Tensor, target: Union[Tensor, Sequence[int]], method: str,
              **options: Any) -> Tensor:
    """Attribution maps float32 [N, 1, H, W] on ``x.device`` for the whole batch ``x``, computed
    in IEEE float32 (no autocast, no TF32) whatever the caller's context.

    ``target``: class index per image (int64 [N]). ``options``: the method's keyword options
    (see its docstring; :func:`resolve_options` lists them with their defaults).
    """
    fn = get_method(method)
    resolve_options(method, **options)                # clear error for a wrong option name
    if x.dim() != 4:
        raise ValueError(f"x must be a batch [N, C, H, W], got shape {tuple(x.shape)}")
    dev = next(model.parameters()).device
    if dev != x.device:
        raise ValueError(f"x is on {x.device} but the model is on {dev}; move one of them")
    target = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
    if target.numel() != x.shape[0]:
        raise ValueError(f"target must have one class per image ({x.shape[0]}), got {target.numel()}")
    x = x.float()
    with explaining(model, out_of_place=method == "guided_backprop"), ieee_float32(x.device):
        maps = fn(model, x, target, **options)
    return maps.detach().float().contiguous()


def per_batch_logits(model: Explainable, x: Tensor, read: Callable[[Tensor, slice], Any],
                     batch_size: int = 256) -> list[Any]:
    """``read(logits, rows)`` of each batch of ``x`` (``rows``: the batch's slice of ``x``): the
    model's logits on its device, in eval mode, IEEE float32, without gradients. The one
    forward pass over a whole split that predictions and interventions share."""
    dev = next(model.parameters()).device
    with explaining(model), torch.no_grad(), ieee_float32(dev):
        return [read(model(x[rows].to(dev).float()), rows)
                for rows in (slice(s, s + batch_size) for s in range(0, x.shape[0], batch_size))]


def predict(model: Explainable, x: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted class per image (int64 [N] on ``x.device``), in eval mode, batch by batch."""
    out = per_batch_logits(model, x, lambda logits, rows: logits.argmax(dim=1).to(x.device), batch_size)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


TARGET_KINDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "pred": lambda preds, labels: preds,
    "true": lambda preds, labels: labels,
}


def targets_for(model: Explainable, x: Tensor, labels: Tensor, kind: str,
                preds: Optional[Tensor] = None) -> Tensor:
    """Classes to explain: ``"pred"`` (the model's prediction) or ``"true"`` (the label)."""
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target kind '{kind}'; use one of: {', '.join(TARGET_KINDS)}")
    if kind == "pred" and preds is None:
        preds = predict(model, x)
    return TARGET_KINDS[kind](preds, labels.to(x.device)).long()
