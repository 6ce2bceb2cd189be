#!/usr/bin/env python3
"""mswatch_bench.py: mswatch against the hand-made peer, side by side.

The peer is what people write instead of mswatch:

    inotifywait -m -r -e moved_to,create MAILDIR | while read x; do SYNC; done

Both run the same "sync": a tiny script that appends its start time and
arguments to a file, so the numbers measure the scheduling, not mbsync.
mswatch runs with base_delay 0 and inter_delay 0 (its fastest setting).

1. latency: 100 deliveries (--quick 30), one every 0.2 s; for each, the
   time from the rename into new/ to the start of the next sync; the median
   and p90.
2. batching: 10 bursts (--quick 5) of 100 deliveries (as fast as they go),
   1 s apart; how many syncs ran for the 1,000 (500) deliveries.

Usage: python3 bench/mswatch_bench.py [--prefix DIR] [--quick] [--deliveries N]
                                      [--summary FILE]
Nothing is left running: every process carries a tag and is swept at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import BenchError  # noqa: E402

SYNC_SCRIPT = '#!/bin/sh\necho "$(date +%s.%N) $*" >> {log}\n'
SETTLE = 1.5  # s to wait after the last delivery for the last sync to start
BURST_SIZE = 100


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def deliver(maildir: Path, n: int) -> float:
    """Write one message through tmp/; return the time of the rename (epoch)."""
    name = f"{time.time():.6f}.{os.getpid()}_{n}.bench"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(b"Subject: bench\n\nhello\n")
    now = time.time()
    os.rename(tmp, maildir / "new" / name)
    return now


def sync_starts(log: Path) -> list[float]:
    if not log.exists():
        return []
    return [float(line.split(" ", 1)[0]) for line in log.read_text().splitlines() if line]


class Variant:
    def __init__(self, name: str, work: Path, tag: str, prefix: Path) -> None:
        self.name = name
        self.work = work
        self.tag = tag
        self.prefix = prefix
        self.maildir = make_maildir(work / "A")
        self.other = make_maildir(work / "B")
        self.log = work / "syncs.log"
        self.sync = work / "sync"
        self.sync.write_text(SYNC_SCRIPT.format(log=self.log))
        self.sync.chmod(0o755)
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return common.base_env(self.tag, self.work,
                               PATH=f"{self.prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin")

    def start(self) -> None:
        if self.name == "mswatch":
            rc = self.work / "mswatchrc"
            rc.write_text(f"base_delay 0\ninter_delay 0\npoll_period 0\nsync {self.sync}\n"
                          f"store a {{ watch watch-maildirs -m {self.maildir} }}\n"
                          f"store b {{ watch watch-maildirs -m {self.other} }}\n")
            argv = [str(self.prefix / "bin" / "mswatch"), "-f", "-q", "-c", str(rc),
                    "--pid-file", str(self.work / "pid"), "--hooks", str(self.work / "hooks")]
        else:
            argv = ["/bin/sh", "-c", f"inotifywait -q -m -r -e moved_to,create {self.maildir} "
                    f"| while read x; do {self.sync}; done"]
        self.proc = subprocess.Popen(argv, env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        if self.name == "mswatch":
            ok = common.wait_for(lambda: sync_starts(self.log), 20, 0.01)  # the start sync
        else:
            time.sleep(1.0)  # inotifywait prints "Watches established" on stderr only
            ok = True
        if not ok:
            raise BenchError(f"{self.name} did not start")
        time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def latency(self, count: int = 100, spacing: float = 0.2) -> list[float]:
        values = []
        for i in range(count):
            before = len(sync_starts(self.log))
            t = deliver(self.maildir, i)
            if not common.wait_for(lambda n=before: len(sync_starts(self.log)) > n, 5, 0.0005):
                raise BenchError(f"{self.name}: no sync after delivery {i}")
            values.append(sync_starts(self.log)[before] - t)
            time.sleep(spacing)
        return values

    def bursts(self, bursts: int = 10, size: int = BURST_SIZE) -> int:
        time.sleep(SETTLE)
        before = len(sync_starts(self.log))
        for b in range(bursts):
            for i in range(size):
                deliver(self.maildir, 10000 + b * size + i)
            time.sleep(1.0)
        time.sleep(SETTLE)
        # The peer may still be working through its backlog of events.
        last = -1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = len(sync_starts(self.log))
            if n == last:
                break
            last = n
            time.sleep(1.0)
        return len(sync_starts(self.log)) - before


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", help="where roammail is installed [default: "
                        f"${common.PREFIX_ENV}, else {common.DEFAULT_PREFIX}]")
    parser.add_argument("--quick", action="store_true",
                        help="30 deliveries and 5 bursts instead of 100 and 10")
    parser.add_argument("--deliveries", type=int,
                        help="deliveries of the latency part [100; quick 30]")
    common.add_summary_option(parser)
    opts = parser.parse_args(argv)
    opts.deliveries = opts.deliveries or (30 if opts.quick else 100)
    opts.bursts = 5 if opts.quick else 10
    return opts


def run(opts: argparse.Namespace) -> int:
    prefix = common.resolve_prefix(opts.prefix)
    common.installed_tools(prefix, ["mswatch", "watch-maildirs"])
    import shutil

    common.require_executable(shutil.which("inotifywait") or "inotifywait",
                              "apt-get install inotify-tools")
    tag = common.new_tag()
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="mswatch-bench-") as top:
            for name in ("mswatch", "inotifywait|while read"):
                work = Path(top) / name.split("|")[0]
                work.mkdir()
                v = Variant(name, work, tag, prefix)
                v.start()
                try:
                    lat = v.latency(opts.deliveries)
                    syncs = v.bursts(opts.bursts)
                finally:
                    v.stop()
                results[name] = (lat, syncs)
    finally:
        left = common.sweep(tag)
        if left:
            print(f"(ended {left} leftover processes)", file=sys.stderr)
    print("\n".join(common.environment_lines()))
    print()
    ours, peer = results["mswatch"], results["inotifywait|while read"]
    rows = [
        ["delivery -> sync start, median", common.ms(common.median(ours[0])),
         common.ms(common.median(peer[0])),
         common.times(common.ratio(common.median(ours[0]), common.median(peer[0])))],
        ["delivery -> sync start, p90", common.ms(common.percentile(ours[0], 90)),
         common.ms(common.percentile(peer[0], 90)),
         common.times(common.ratio(common.percentile(ours[0], 90),
                                   common.percentile(peer[0], 90)))],
        [f"syncs per {opts.bursts * BURST_SIZE:,} deliveries ({opts.bursts} bursts)",
         str(ours[1]), str(peer[1]), common.times(common.ratio(ours[1], peer[1]))],
    ]
    mode = "quick" if opts.quick else "full"
    print(f"## Summary ({mode} run: {opts.deliveries} deliveries, {opts.bursts} bursts)\n")
    headers = ["measure", "mswatch (base_delay 0)", "inotifywait + while read", "ours / peer"]
    print(common.markdown_table(headers, rows))
    common.write_summary(opts.summary, common.summary_rows(
        "mswatch", headers, rows, metric="measure", ours="mswatch (base_delay 0)",
        peer="inotifywait + while read", ratio="ours / peer"))
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run_main("mswatch_bench", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
