"""Loaded by every Python process the test suite starts (tests/conftest.py puts this folder on
PYTHONPATH): the socket guard of the test run, so a command line or a notebook kernel started by
a test is kept off the network as the test process itself is."""
import os

if os.environ.get("XAI_UTILS_TEST_NETLOG"):
    import netguard

    netguard.install()
