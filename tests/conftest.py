"""Shared test settings: CPU only, headless matplotlib, no network; under pytest-xdist (as
`make test` runs the suite), one thread per worker and the longest modules started first."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one worker per core: each, and every process it starts (a command line, a notebook's
    # kernel), computes on one thread (torch reads this at import)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch

# Modules by the time they take (worker seconds, measured with two workers on two cores), longest
# first: `make test` hands whole modules to the workers in this order (--dist loadfile
# --no-loadscope-reorder), so that no long module starts last while the other worker idles.
LONGEST_FIRST = ("test_rehearsal", "test_pipeline", "test_faults", "test_train", "test_excon",
                 "test_executors", "test_own_models", "test_cgc", "test_claim")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def order(item) -> int:
        module = getattr(getattr(item, "module", None), "__name__", "")
        return rank.get(module.rpartition(".")[2], len(rank))

    items.sort(key=order)                     # stable: the order within a module stays


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny tensors: faster, and far faster when the two
    cores are shared with another process. Restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
