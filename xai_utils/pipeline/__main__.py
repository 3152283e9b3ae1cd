"""``python -m xai_utils.pipeline``: the command line (:mod:`xai_utils.pipeline.cli`)."""
import sys

from .cli import main

sys.exit(main())
