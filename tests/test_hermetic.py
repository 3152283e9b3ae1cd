"""The test run is hermetic (tests/conftest.py): the network guard fails a test, and a process it
starts, that reaches beyond the loopback, naming the test; data already in the user's cache is
never read; no GPU; one thread."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import netguard
from xai_utils.study.data.generated import write_cifar10

PROBE = ("from xai_utils.settings import load_profile; "
         "print(sorted(load_profile('cifar10', results_root={out!r}).rehearsal().stand_ins))")


@pytest.fixture
def own_log(tmp_path, monkeypatch):
    """The guard writes to this test's own log, so the run's log stays empty."""
    log = tmp_path / "network.log"
    monkeypatch.setenv("XAI_UTILS_TEST_NETLOG", str(log))
    return log


def test_a_connection_beyond_the_loopback_fails_naming_the_test(own_log):
    with pytest.raises(netguard.NetworkAccess, match="test_a_connection_beyond_the_loopback_fails_naming_the_test"):
        socket.create_connection(("www.cs.toronto.edu", 443), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as raw:      # no lookup: the connect itself
        with pytest.raises(netguard.NetworkAccess, match="connection to '192.0.2.1'"):
            raw.connect(("192.0.2.1", 80))
    assert len(own_log.read_text().splitlines()) == 2
    assert not isinstance(netguard.NetworkAccess("x"), OSError)   # 'offline' handlers cannot hide it


def test_the_loopback_stays_open(own_log):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("localhost", port), timeout=5):
            conn, _ = server.accept()
            conn.close()
    assert not own_log.exists()


def test_a_process_started_by_a_test_is_guarded_too(own_log):
    code = "import socket\ntry:\n    socket.getaddrinfo('example.org', 80)\nexcept Exception:\n    pass\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0                                  # the child swallowed the error...
    line, = own_log.read_text().splitlines()                      # ...and the attempt is on record
    assert "test_a_process_started_by_a_test_is_guarded_too" in line and "'example.org'" in line


def test_no_gpu_one_thread_no_download():
    from xai_utils.study.data import download

    assert not torch.cuda.is_available() and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert torch.get_num_threads() == 1
    assert not download.ALLOW_DOWNLOAD
    assert not str(download.DEFAULT_ROOT).startswith(str(Path.home() / ".cache"))


def test_cifar10_in_the_users_cache_is_not_read(tmp_path):
    """A CIFAR-10 planted in ~/.cache/xai_utils (in a stand-in HOME): a process of the test run
    still rehearses on generated files; the same process outside the test settings finds it."""
    home = tmp_path / "home"
    write_cifar10(home / ".cache" / "xai_utils", n_train=10, n_test=5)
    env = {**os.environ, "HOME": str(home)}
    probe = [sys.executable, "-c", PROBE.format(out=str(tmp_path / "out"))]
    inside = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert inside.stdout.split() == ["['cifar10']"]                      # stand-ins: the plant is not seen
    outside = {k: v for k, v in env.items() if k != "XAI_UTILS_DATA"}
    control = subprocess.run(probe, env=outside, capture_output=True, text=True, timeout=120, check=True)
    assert control.stdout.split() == ["[]"]                              # without the setting it would be
