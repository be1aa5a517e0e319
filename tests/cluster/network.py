"""Pod networking for the test cluster: one Linux bridge per cluster, one network namespace
per pod with its own IP on that bridge (what a CNI bridge plugin does).

Every pod can bind 0.0.0.0:8080 like in a real cluster, gets a routable, non-loopback
``podIP`` (EndpointSlices reject loopback addresses), and reaches the API server at the
bridge's gateway address, where the control plane listens. Needs root (CAP_NET_ADMIN) and
iproute2's ``ip``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass, field

SUBNETS = ipaddress.ip_network("10.213.0.0/16")
PREFIX = "rtd"


def ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["ip", *(("-n", namespace) if namespace else ()), *args]
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
    """Bridges and namespaces left by test clusters whose process died (kill -9, a crash)."""
    owner = re.compile(rf"^{PREFIX}(\d+)")
    for line in ip("-o", "link", "show", "type", "bridge").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        match = owner.match(name)
        if match and not alive(int(match.group(1))):
            ip("link", "delete", name, check=False)
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0]
        match = owner.match(name)
        if match and not alive(int(match.group(1))):
            ip("netns", "delete", name, check=False)


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
class PodNetwork:
    """A bridge ``rtd<pid>`` with a /24 of 10.213.0.0/16; pods get .2 … .254."""

    bridge: str = ""
    subnet: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.ip_network("10.213.0.0/24"))
    gateway: str = ""
    _next_host: int = 2
    _attached: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls) -> PodNetwork:
        if os.geteuid() != 0:
            raise RuntimeError("the test pod runner needs root for pod network namespaces (ip netns, veth, bridge)")
        remove_stale()
        subnet = free_subnet()
        network = cls(bridge=f"{PREFIX}{os.getpid()}", subnet=subnet, gateway=str(subnet.network_address + 1))
        ip("link", "add", network.bridge, "type", "bridge")
        ip("addr", "add", f"{network.gateway}/{subnet.prefixlen}", "dev", network.bridge)
        ip("link", "set", network.bridge, "up")
        return network

    def attach(self, key: str) -> tuple[str, str]:
        """A fresh namespace for pod ``key`` → (namespace name, pod IP)."""
        if self._next_host > 254:
            raise RuntimeError(f"pod network {self.subnet} is full")
        host = self._next_host
        self._next_host += 1
        namespace = f"{self.bridge}-{host}"
        address = str(self.subnet.network_address + host)
        outer, inner = f"{self.bridge}h{host}"[-15:], f"{self.bridge}p{host}"[-15:]
        ip("netns", "add", namespace)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", namespace)
        ip("link", "set", outer, "master", self.bridge)
        ip("link", "set", outer, "up")
        ip("link", "set", "lo", "up", namespace=namespace)
        ip("link", "set", inner, "name", "eth0", namespace=namespace)
        ip("addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0", namespace=namespace)
        ip("link", "set", "eth0", "up", namespace=namespace)
        ip("route", "add", "default", "via", self.gateway, namespace=namespace)
        self._attached[key] = namespace
        return namespace, address

    def detach(self, key: str) -> None:
        namespace = self._attached.pop(key, None)
        if namespace is not None:
            ip("netns", "delete", namespace, check=False)  # takes its veth pair along

    def close(self) -> None:
        for key in list(self._attached):
            self.detach(key)
        if self.bridge:
            ip("link", "delete", self.bridge, check=False)
