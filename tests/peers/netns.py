"""A network namespace of a test's own, with a veth pair: v0 inside, its
peer v1 (up, so that v0 has a carrier once up) in the same namespace.

`namespace(name, subnet)` makes it, with /etc/netns/NAME/resolv.conf
(which `ip netns exec` mounts over /etc/resolv.conf), yields a Netns and
removes both at the end, whatever the test did.  `netns.ip(...)` runs
`ip -n NAME ...`, `netns.sh(script)` a shell script inside it, and
`netns.go_online()` gives v0 an address on SUBNET.2/24 and a default route
via SUBNET.1 (SUBNET.3 is a second gateway on the same network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from peers.require import require_program, require_root

IP_TIMEOUT = 10  # s for one ip(8) command


class Netns:
    def __init__(self, name: str, subnet: str) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name
        self.resolv_conf = self.etc / "resolv.conf"
        self.ADDRESS = f"{subnet}.2/24"
        self.GATEWAY = f"{subnet}.1"
        self.OTHER_GATEWAY = f"{subnet}.3"
        self.NAMESERVER = f"{subnet}.53"

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, timeout=IP_TIMEOUT,
                       stdout=subprocess.DEVNULL)

    def sh(self, script: str) -> None:
        """Run a shell script inside the namespace (quick bursts of ip)."""
        subprocess.run(["ip", "netns", "exec", self.name, "sh", "-ec", script],
                       check=True, timeout=30)

    def go_online(self, gateway: str | None = None) -> None:
        self.ip("address", "add", self.ADDRESS, "dev", "v0")
        self.ip("link", "set", "v0", "up")
        self.ip("route", "add", "default", "via", gateway or self.GATEWAY, "dev", "v0")


@contextmanager
def namespace(name: str, subnet: str) -> Iterator[Netns]:
    require_root("network namespaces")
    require_program("ip")
    ns = Netns(f"{name}-{os.getpid()}", subnet)
    subprocess.run(["ip", "netns", "del", ns.name], stderr=subprocess.DEVNULL, check=False,
                   timeout=IP_TIMEOUT)
    subprocess.run(["ip", "netns", "add", ns.name], check=True, timeout=IP_TIMEOUT)
    try:
        ns.etc.mkdir(parents=True, exist_ok=True)
        ns.resolv_conf.write_text(f"nameserver {ns.NAMESERVER}\n")
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "set", "v1", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=False, timeout=IP_TIMEOUT)
        shutil.rmtree(ns.etc, ignore_errors=True)
