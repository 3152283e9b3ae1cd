"""xai_utils: the logic behind the notebooks of the SCL feature-attribution companion.

The package is built in layers; each imports only from the layers below it (an import-linter
contract in ``pyproject.toml`` says so, and ``make test`` checks it):

6. :mod:`.pipeline`  — orchestration: a study as notebook jobs, executors, the command line;
   :mod:`.reproduction` — a reproduction's tables and verdicts compared with the committed ones
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
