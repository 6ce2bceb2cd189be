"""Fixtures for watch-network tests: a network namespace of the test's own
with a veth pair, and the INSTALLED tool run inside it with `ip netns exec`.

`netns` makes the namespace (and /etc/netns/NAME/resolv.conf, which
`ip netns exec` mounts over /etc/resolv.conf) and removes both at the end;
`netns.ip(...)` runs `ip -n NAME ...`; `netns.go_online()` brings v0 up
with a global address and a default route.  `watcher(*args)` starts
`watch-network ARGS...` in the namespace and kills it in teardown.  The
tool's system D-Bus is a path that does not exist unless a test says
otherwise: the host's bus plays no part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from peers.require import require_program
from peers.watchers import WatcherProcess

ADDRESS = "10.77.0.2/24"
GATEWAY = "10.77.0.1"


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name
        self.resolv_conf = self.etc / "resolv.conf"

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, timeout=10,
                       stdout=subprocess.DEVNULL)

    def sh(self, script: str) -> None:
        """Run a shell script inside the namespace (quick bursts of ip)."""
        subprocess.run(["ip", "netns", "exec", self.name, "sh", "-ec", script],
                       check=True, timeout=30)

    def go_online(self, gateway: str = GATEWAY) -> None:
        self.ip("address", "add", ADDRESS, "dev", "v0")
        self.ip("link", "set", "v0", "up")
        self.ip("route", "add", "default", "via", gateway, "dev", "v0")


@pytest.fixture
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    require_program("ip")
    ns = Netns(f"roammail-test-{os.getpid()}")
    subprocess.run(["ip", "netns", "del", ns.name], stderr=subprocess.DEVNULL, check=False)
    subprocess.run(["ip", "netns", "add", ns.name], check=True, timeout=10)
    try:
        ns.etc.mkdir(parents=True, exist_ok=True)
        ns.resolv_conf.write_text("nameserver 10.77.0.53\n")
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "set", "v1", "up")  # so that v0 has a carrier once up
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=False, timeout=10)
        shutil.rmtree(ns.etc, ignore_errors=True)


@pytest.fixture
def tool_env(installed, tmp_path: Path) -> dict[str, str]:
    env = installed.env(DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus")
    env.pop("ROAMMAIL_DEBUG", None)
    return env


@pytest.fixture
def watcher(installed, netns: Netns, tool_env) -> Iterator[Callable[..., WatcherProcess]]:
    started: list[WatcherProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WatcherProcess:
        argv = ["ip", "netns", "exec", netns.name, installed.tool("watch-network"), *args]
        proc = WatcherProcess(argv, env or tool_env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
