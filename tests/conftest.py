"""Shared test settings. The whole run is hermetic, with or without pytest-xdist: no download,
a data folder of its own (a CIFAR-10 in ``~/.cache/xai_utils`` is never read), no GPU, one
thread per process, headless matplotlib, and a socket guard (``tests/hermetic``) that fails any
test, or any process a test starts, that reaches beyond the loopback. The longest modules start
first."""
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERMETIC = Path(__file__).resolve().parent / "hermetic"

if not os.environ.get("XAI_UTILS_TEST_NETLOG"):
    # set once, by the process that starts the run: xdist workers, command lines and notebook
    # kernels inherit it (torch and xai_utils read these at import, after this file)
    _scratch = Path(tempfile.mkdtemp(prefix="xai-tests-"))
    atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    (_scratch / "data").mkdir()
    os.environ.update({
        "XAI_UTILS_NO_DOWNLOAD": "1",
        "XAI_UTILS_DATA": str(_scratch / "data"),
        "XAI_UTILS_TEST_NETLOG": str(_scratch / "network.log"),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERMETIC), os.environ.get("PYTHONPATH")])),
    })
sys.path.insert(0, str(HERMETIC))
import netguard  # noqa: E402

netguard.install()

import pytest  # noqa: E402
import torch  # noqa: E402

# Modules by the time they take (worker seconds, measured with two workers on two cores), longest
# first: `make test` hands whole modules to the workers in this order (--dist loadfile
# --no-loadscope-reorder), so that no long module starts last while the other worker idles.
# test_slurm spends most of its time waiting for its cluster's jobs (a time limit takes at least
# a minute to pass): started first, it waits while the other worker goes on.
LONGEST_FIRST = ("test_slurm", "test_rehearsal", "test_pipeline", "test_faults", "test_train", "test_excon",
                 "test_executors", "test_notebooks", "test_own_models", "test_cgc", "test_claim", "test_lab")


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


@pytest.fixture(scope="session", autouse=True)
def hermetic():
    """Fails the run when any process of it reached for the network, even where the code under
    test swallowed the guard's error; checks the settings above held for this process."""
    from xai_utils.study.data import download

    assert not download.ALLOW_DOWNLOAD and download.DEFAULT_ROOT == Path(os.environ["XAI_UTILS_DATA"])
    assert not torch.cuda.is_available() and torch.get_num_threads() == 1
    yield
    log = Path(os.environ["XAI_UTILS_TEST_NETLOG"])
    attempts = log.read_text().splitlines() if log.exists() else []
    assert not attempts, "reached for the network:\n" + "\n".join(attempts[:10])
