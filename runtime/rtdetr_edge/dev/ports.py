"""Ports for the servers the bench and the tests start.

Asking the kernel for port 0 and closing the socket hands out a port from the
ephemeral range: until the server binds it, any outgoing connection on the
machine may take it as its local port, and two asks in a row may return the
same port. A CI run lost its whole cluster tier that way (etcd: "bind: address
already in use"). So ports come from below the ephemeral range, which the kernel
never hands out by itself, and one process never hands out a port twice.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000
_handed_out: set[tuple[str, int]] = set()
_lock = threading.Lock()


def _candidates() -> range:
    """Ports outside the kernel's ephemeral range (the larger side of it)."""
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default; the file is missing only off Linux
    below, above = range(_LOWEST, low), range(high + 1, 65536)
    return below if len(below) >= len(above) else above


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` no one listens on, not handed out before by this process."""
    candidates = _candidates()
    if len(candidates) < 1000:
        raise RuntimeError(f"the ephemeral port range ({_EPHEMERAL_RANGE}) leaves too few ports for test servers")
    with _lock:
        for _ in range(200):
            port = random.choice(candidates)
            if (host, port) in _handed_out:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            _handed_out.add((host, port))
            return port
    raise RuntimeError(f"no free port on {host} after 200 tries")
