"""Ports for test servers: never one the kernel may hand out on its own, never one twice."""

from __future__ import annotations

import socket

from rtdetr_edge.dev import ports
from rtdetr_edge.dev.ports import free_port


def test_ports_are_distinct_and_outside_the_ephemeral_range():
    low, high = (int(part) for part in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    handed = [free_port() for _ in range(300)]
    assert len(set(handed)) == len(handed)
    assert not any(low <= port <= high for port in handed)


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch):
    with socket.socket() as listener, socket.socket() as probe:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        probe.bind(("127.0.0.1", 0))
        taken, free = listener.getsockname()[1], probe.getsockname()[1]
        probe.close()
        monkeypatch.setattr(ports, "_candidates", lambda: [taken, free] * 500)
        assert free_port() == free
