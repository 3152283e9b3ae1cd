"""xai_utils: the logic behind the notebooks of the SCL feature-attribution companion.

Modules, in the order of the study: ``config`` (profiles), ``data`` (datasets),
``augment`` (batched augmentations), ``models``, ``losses``, ``train``, ``attribution``,
``metrics``, ``evaluate``, ``stats``, ``report`` (tables), ``plots`` (figures),
``pipeline`` (Papermill runner). ``runs`` holds the on-disk layout of a run.
"""
__version__ = "0.1.0"
