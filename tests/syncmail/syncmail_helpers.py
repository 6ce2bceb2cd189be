"""Message makers and checks shared by the syncmail tests."""

from __future__ import annotations

import os
import random
from pathlib import Path

BASE_MTIME = 1_700_000_000  # tar keeps whole seconds: test mtimes are whole


def message(i: int, size: int, headers: str = "") -> bytes:
    head = f"From: sender{i}@example.org\nSubject: message {i}\n{headers}\n".encode()
    if size <= 0:
        return b""
    body = (f"line of message {i} " * 8 + "\n").encode()
    data = head + body * (size // len(body) + 1)
    return data[:max(size, 0)] if size >= len(head) else head[:size]


def assorted_sizes(count: int, seed: int = 1) -> list[int]:
    """Empty to 20 MB: mostly small, some large, one 20 MB."""
    rng = random.Random(seed)
    sizes = [0, 1, 20 * 1024 * 1024, 5 * 1024 * 1024]
    while len(sizes) < count:
        sizes.append(rng.choice([rng.randint(10, 4096), rng.randint(4096, 65536),
                                 rng.randint(65536, 600_000)]))
    return sizes[:count]


def fill_server(world, count: int, sizes: list[int] | None = None, prefix: str = "m",
                seed: int = 1) -> dict[str, tuple[bytes, int]]:
    """Deliver `count` messages into the server's new/; return name -> (data, mtime)."""
    sizes = sizes or assorted_sizes(count, seed)
    made = {}
    for i, size in enumerate(sizes):
        name = f"{BASE_MTIME + i}.M{i}P{seed}Q{i}.{prefix}.server"
        data = message(i, size)
        mtime = BASE_MTIME + i
        world.deliver_remote(name, data, mtime)
        made[name] = (data, mtime)
    return made


def check_all_local(world, made: dict[str, tuple[bytes, int]]) -> None:
    local = world.local_messages()
    for name, (data, mtime) in made.items():
        assert name in local, f"{name} missing locally"
        path = local[name]
        assert path.read_bytes() == data, f"{name}: bytes differ"
        assert int(os.stat(path).st_mtime) == mtime, f"{name}: mtime differs"


def check_nothing_lost(world, made: dict[str, tuple[bytes, int]]) -> set[str]:
    """Every message is on the server or whole on the laptop; return the
    names in both places."""
    local = world.local_messages()
    server = world.server_new()
    both = set()
    for name, (data, _) in made.items():
        here = name in local
        there = name in server
        assert here or there, f"{name} lost"
        if here:
            assert Path(local[name]).read_bytes() == data, f"{name} stored damaged"
        if here and there:
            both.add(name)
    # No stray half-written files under a message name.
    for sub in ("new", "cur"):
        for entry in os.listdir(world.local / sub):
            assert not entry.startswith(".tmp."), entry
    return both
