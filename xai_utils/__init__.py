"""xai_utils: the logic behind the notebooks of the SCL feature-attribution companion.

The package is built in layers; each imports only from the layers below it (an import-linter
contract in ``pyproject.toml`` says so, and ``make test`` checks it):

7. :mod:`.reference` — the API reference (docs/api.md), made from every module below
6. :mod:`.pipeline`  — orchestration: a study as notebook jobs, executors, the command line;
   :mod:`.reproduction` — a reproduction's tables and verdicts compared with the committed ones;
   :mod:`.api` — the protocol on a model and images a user brings (``xai_utils.evaluate``,
   ``xai_utils.attribute``)
5. :mod:`.analysis`  — statistics, the claim, tables and figures, from saved results
4. :mod:`.stages`    — train, attribute, calibrate, evaluate: each reads and writes a run folder
3. :mod:`.settings`  — RunConfig, profiles, stage hashes, validation against the registries
2. :mod:`.study`     — the things a study is made of: datasets, models, objectives, training
1. :mod:`.ops`       — computations on tensors: augmentations, losses, attribution methods,
   metrics, pair analysis, calibration (no files, no settings)
0. :mod:`.registry` — the one registry type; :mod:`.errors` — the errors every layer raises

docs/architecture.md says where a new metric, method, objective, dataset, setting, stage or
figure goes.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    """``xai_utils.evaluate`` and ``xai_utils.attribute`` (:mod:`.api`), loaded on first use so
    that importing one layer does not load them all."""
    if name in ("evaluate", "attribute"):
        from . import api   # reason: the top layer, loaded only when its functions are asked for
        return getattr(api, name)
    raise AttributeError(f"module 'xai_utils' has no attribute {name!r}")
