"""One registry type for every named concept: a taken name is refused unless overridden, an
unknown name says what is available and what was meant, names filter by pattern."""
from __future__ import annotations

import pytest

from xai_utils.errors import ConfigError, UnknownNameError
from xai_utils.ops.attribution import METHODS, register_method
from xai_utils.ops.metrics import METRICS, register_metric
from xai_utils.ops.pairs import PAIR_METHODS, PAIR_METRICS
from xai_utils.ops.pairs.methods import register_pair_method
from xai_utils.ops.pairs.metrics import register_pair_metric
from xai_utils.registry import Registry
from xai_utils.study.models import BACKBONES, register_backbone
from xai_utils.study.objectives import OBJECTIVES
from xai_utils.study.objectives.base import register_objective


def _fn(*args, **kwargs):
    return None


def test_a_registry_is_a_mapping_in_registration_order():
    r = Registry("thing")
    r.register("b", 2)
    r.register("a", 1)
    assert list(r) == ["b", "a"] and len(r) == 2 and "a" in r and "c" not in r
    assert r["a"] == 1 and r.get("c") is None and dict(r.items()) == {"b": 2, "a": 1}
    assert r.list("*") == ["b", "a"] and r.list("a*") == ["a"]


def test_a_taken_name_is_refused_unless_overridden():
    r = Registry("thing")
    r.register("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered; pass override=True"):
        r.register("a", 2)
    assert r["a"] == 1
    r.register("a", 2, override=True)
    assert r["a"] == 2


def test_an_unknown_name_says_what_is_available_and_what_was_meant():
    r = Registry("attribution method")
    for name in ("gradcam", "eigencam", "saliency"):
        r.register(name, name)
    with pytest.raises(UnknownNameError) as e:
        r["gradcm"]
    assert str(e.value) == ("unknown attribution method 'gradcm'; available: gradcam, eigencam, saliency; "
                            "did you mean 'gradcam'?")
    assert isinstance(e.value, ConfigError) and isinstance(e.value, KeyError)
    with pytest.raises(UnknownNameError, match=r"\['eigncam', 'zzz'\]; available: .*; did you mean 'eigencam'\?$"):
        r.check(["gradcam", "eigncam", "zzz"])
    assert r.check(("saliency", "gradcam")) == ["saliency", "gradcam"]


def _registering(kind: str):
    """(the registry, a name it holds, a call registering a new entry under that name)."""
    if kind == "attribution method":
        return METHODS, "gradcam", lambda override: register_method("gradcam", "x", override=override)(_fn)
    if kind == "pair method":
        return PAIR_METHODS, "pair_gradcam", \
            lambda override: register_pair_method("pair_gradcam", "x", override=override)(_fn)
    if kind == "metric":
        return METRICS, "complexity", \
            lambda override: register_metric("complexity", "x", "complexity", override=override)(_fn)
    if kind == "pair metric":
        return PAIR_METRICS, "pair_deletion", \
            lambda override: register_pair_metric("pair_deletion", "x", True, override=override)(_fn)
    if kind == "objective":
        subclass = type("AnotherCE", (OBJECTIVES["ce"],), {})      # the registered class stays untouched
        return OBJECTIVES, "ce", lambda override: register_objective("ce", "x", "#000000", override=override)(subclass)
    return BACKBONES, "resnet18", lambda override: register_backbone("resnet18", override=override)(_fn)


@pytest.mark.parametrize("kind", ["attribution method", "pair method", "metric", "pair metric", "objective",
                                  "backbone"])
def test_every_registry_refuses_a_taken_name_unless_overridden(kind):
    registry, name, register = _registering(kind)
    original = registry[name]
    with pytest.raises(ValueError, match=f"'{name}' is already registered"):
        register(False)
    assert registry[name] is original
    try:
        register(True)
        assert registry[name] is not original
    finally:
        registry.register(name, original, override=True)
    assert registry[name] is original
