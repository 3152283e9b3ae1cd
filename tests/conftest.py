"""Shared test settings: CPU only, headless matplotlib, no network."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny tensors: faster, and far faster when the two
    cores are shared with another process. Restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
