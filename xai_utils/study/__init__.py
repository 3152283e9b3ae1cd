"""Layer 2 — the things a study is made of: datasets (:mod:`.data`), models (:mod:`.models`),
training objectives (:mod:`.objectives`) and the training machinery (:mod:`.training`).

Nothing here reads or writes a run folder; code here takes a run's settings where it needs
them (an :class:`xai_utils.settings.RunConfig`, read by attribute).
"""
