"""The host side of the test cluster's network: one Linux bridge per cluster, its address the
one the control plane listens on (EndpointSlices reject loopback addresses, and pods must reach
the API server), its /24 the one the node's CNI bridge plugin gives pods their IPs from.
Needs root (CAP_NET_ADMIN) and iproute2's ``ip``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass

SUBNETS = ipaddress.ip_network("10.213.0.0/16")
PREFIX = "rtd"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["ip", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """Bridges left by test clusters whose process died (kill -9, a crash)."""
    owner = re.compile(rf"^{PREFIX}(\d+)")
    for line in ip("-o", "link", "show", "type", "bridge").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        match = owner.match(name)
        if match and not alive(int(match.group(1))):
            ip("link", "delete", name, check=False)


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for line in ip("-o", "-4", "addr", "show").stdout.splitlines():
        address = line.split()[3]
        used.append(ipaddress.ip_interface(address).network)
    return used


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no interface of this machine is on."""
    used = _used_networks()
    return next(s for s in SUBNETS.subnets(new_prefix=24) if not any(s.overlaps(u) for u in used))


@dataclass
class ClusterBridge:
    """A bridge ``rtd<pid>`` with a free /24 of 10.213.0.0/16; the host is its ``.1``."""

    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: str

    @classmethod
    def create(cls) -> ClusterBridge:
        if os.geteuid() != 0:
            raise RuntimeError("the test cluster needs root for its network (a bridge, pods' namespaces)")
        remove_stale()
        subnet = free_subnet()
        made = cls(bridge=f"{PREFIX}{os.getpid()}", subnet=subnet, gateway=str(subnet.network_address + 1))
        ip("link", "add", made.bridge, "type", "bridge")
        ip("addr", "add", f"{made.gateway}/{subnet.prefixlen}", "dev", made.bridge)
        ip("link", "set", made.bridge, "up")
        return made

    def close(self) -> None:
        ip("link", "delete", self.bridge, check=False)
