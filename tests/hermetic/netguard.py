"""The socket guard of the test run: any connection or name lookup beyond the loopback raises
:class:`NetworkAccess` naming the test, and is written to the file ``XAI_UTILS_TEST_NETLOG``,
so an attempt that code under test swallows (``except Exception``) still fails the run."""
from __future__ import annotations

import ipaddress
import os
import socket

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}
_installed = False


class NetworkAccess(RuntimeError):
    """A test reached for the network. Not an OSError: code that treats an OSError as 'offline'
    must not hide it."""


def _local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False                            # a name other than localhost: a lookup
    return address.is_loopback or address.is_unspecified


def _refuse(what: str, host) -> None:
    test = os.environ.get("PYTEST_CURRENT_TEST", "<no test running>").split(" (")[0]
    line = f"{test}: {what} {host!r} beyond the loopback"
    log = os.environ.get("XAI_UTILS_TEST_NETLOG")
    if log:
        with open(log, "a") as f:
            f.write(line + "\n")
    raise NetworkAccess(line)


def install() -> None:
    """Patch the socket module of this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
    gethostbyname = socket.gethostbyname

    def _host(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            return address[0]
        return None                             # unix sockets and the like stay local

    def guarded_connect(self, address):
        host = _host(self, address)
        if not _local(host):
            _refuse("connection to", host)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        host = _host(self, address)
        if not _local(host):
            _refuse("connection to", host)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            _refuse("name lookup of", host)
        return getaddrinfo(host, *args, **kwargs)

    def guarded_gethostbyname(host):
        if not _local(host):
            _refuse("name lookup of", host)
        return gethostbyname(host)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo
    socket.gethostbyname = guarded_gethostbyname
