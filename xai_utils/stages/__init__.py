"""Layer 4 — the stages of a run, each reading and writing the run folder.

:mod:`.layout` (file names, atomic writes), :mod:`.fingerprint` (the machine and software each
stage ran on), :mod:`.model_io` (``model.pt``), :mod:`.train`
(:func:`train_run`), :mod:`.attribute` (:func:`attribute_run`), :mod:`.calibrate`
(:func:`calibrate_run`), :mod:`.evaluate` (:func:`evaluate_run`) and :mod:`.pairs` (the pair
analysis inside the attribution and evaluation stages). Each notebook of ``notebooks/`` runs
one of them for one run.
"""
from .attribute import attribute_run
from .calibrate import calibrate_run
from .evaluate import evaluate_run
from .train import train_run
