"""Mail delivered on the server during runs is moved exactly once."""

from __future__ import annotations

import os
import threading
import time

RUNS = 20


def test_writer_during_20_runs(world):
    world.basic_config()
    world.batch = 16  # several batches a run, overlapping the writer
    delivered: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            name = f"{int(time.time())}.R{i}.race.host"
            world.deliver_remote(name, f"Subject: {i}\n\n{'x' * (i % 5000)}\n".encode())
            delivered.append(name)
            i += 1
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(RUNS):
            result = world.run()
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        thread.join()
    final = world.run()
    assert final.returncode == 0, final.stderr
    assert world.server_new() == set()
    names = [n.split(":")[0] for sub in ("new", "cur") for n in os.listdir(world.local / sub)]
    assert sorted(names) == sorted(delivered)
    assert len(delivered) > 100
