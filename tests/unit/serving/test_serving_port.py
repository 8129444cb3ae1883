"""One server per port: ``claim_port`` against real sockets of this process.

Every case binds real sockets on a free loopback port; the "other server" is a socket this test
holds, so the process named is this one.
"""

from __future__ import annotations

import os
import socket

import pytest

from serving.online import server as srv
from tests.support.processes import free_port


def _close(socks):
    for sock in socks:
        sock.close()


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "SO_REUSEPORT"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_someone_listens_on_is_refused_naming_the_holder(reuse_port, workers):
    port = free_port()
    other = srv.bind_socket("127.0.0.1", port, reuse_port=reuse_port)
    try:
        with pytest.raises(srv.PortInUse) as refused:
            srv.claim_port("127.0.0.1", port, workers)
    finally:
        other.close()
    assert refused.value.strerror.startswith(
        f"address already in use by process {os.getpid()} (")


def test_a_free_port_is_claimed_once():
    port = free_port()
    socks = srv.claim_port("127.0.0.1", port, 2)
    try:
        assert len(socks) == 2
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        for workers in (1, 2):
            with pytest.raises(srv.PortInUse):
                srv.claim_port("127.0.0.1", port, workers)
    finally:
        _close(socks)
    _close(srv.claim_port("127.0.0.1", port, 2))  # free again once closed


def test_a_server_that_joins_between_the_probe_and_the_binds_is_caught(monkeypatch):
    """The race: another server's SO_REUSEPORT socket lands right after the probe closed."""
    port = free_port()
    bind = srv.bind_socket
    intruder = []

    def bind_after_intruder(host, port_, reuse_port, listen=True):
        if reuse_port and not intruder:
            intruder.append(bind(host, port_, reuse_port=True))
        return bind(host, port_, reuse_port, listen)

    monkeypatch.setattr(srv, "bind_socket", bind_after_intruder)
    try:
        with pytest.raises(srv.PortInUse):
            srv.claim_port("127.0.0.1", port, 2)
    finally:
        _close(intruder)
    assert intruder  # the race happened: both would have shared the port
