"""Layer 5 — analysis of saved results: statistics, the claim, tables and figures. Nothing here
loads a model; everything reads the files of the stages (:mod:`xai_utils.settings.layout`), read through :mod:`xai_utils.stages.artefacts`.

:mod:`.names` (labels, colours, order), :mod:`.stats` (aggregation, paired tests),
:mod:`.tables`, :mod:`.claim` (does "SCL explains better than CE" hold), :mod:`.plotting`
(style and primitives), :mod:`.run_figures` (one run), :mod:`.study_figures` (a study),
:mod:`.pair_figures` (the pair analysis), :mod:`.report` (:func:`~.report.build_all`:
every table and figure of a study), :mod:`.reproduction` (two figures folders compared, cell
by cell, with tolerances from the seed variation) and :mod:`.reproduction_report` (its report).
"""
