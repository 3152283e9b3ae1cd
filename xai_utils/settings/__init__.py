"""Layer 3 — settings: what a run is asked to do, checked before any work.

:mod:`.run_config` (:class:`RunConfig`, every key with its default; the evaluation protocols),
:mod:`.hashing` (which keys each stage depends on: :func:`stage_hash`), :mod:`.validation`
(every value against the registries of the layers below: :func:`check_run`) and
:mod:`.profiles` (a study: ``configs/<name>.yaml``, :func:`load_profile`).
"""
from ..errors import ConfigError
from .hashing import NO_RESULT_KEYS, STAGE_KEYS, STAGE_ORDER, stage_hash, stage_keys
from .profiles import CONFIG_DIR, PROFILE_KEYS, Profile, available_profiles, load_profile
from .run_config import PROTOCOLS, RUN_KEYS, RunConfig, merge_settings
from .validation import check_run, check_runs
