#!/usr/bin/env python3
"""watch_bench.py: roammail's watch-maildirs side by side with inotifywait.

Usage:
  python3 bench/watch_bench.py [--prefix PREFIX] [--quick] [--keep] [--summary FILE]

The peer is what users script instead of watch_maildirs:
  inotifywait -m -r -e moved_to,create,delete,moved_from,close_write --format %w DIR
(inotify-tools, C), run on the same tree and measured the same way.

1. latency: a message renamed from tmp/ into new/ of one of 100 folders,
   one change at a time, 1,000 changes (--quick: 100); from a timestamp
   taken just before rename(2) to the moment the harness's reader gets the
   line naming that folder (ours: the folder name; inotifywait: the path of
   its new/).  Median and p99.  The two run in alternating blocks, each
   alone on the tree.  Folders are taken in turn, so no change falls into
   the coalescing window of the one before (that is measured by 2).
2. bursts: 100 renames into one folder as fast as the harness can make
   them; lines written per burst, and the time from the last rename to the
   last line that follows it: the "never later than 50 ms" contract of
   watch-maildirs (inotifywait writes one line per event).
3. start-up and memory with 10,000 folders: from the start of the process
   to ready (ours: its empty line; inotifywait: "Watches established." on
   stderr), and the peak resident set (VmHWM of /proc/PID/status, read
   once ready), and the number of inotify watches each placed.

Everything happens in a temporary directory; every process started carries
a tag in its environment, and whatever is left at the end is ended by pid.
"""

from __future__ import annotations

import argparse
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import BenchError, median, ms, percentile, ratio, times  # noqa: E402

OURS = "watch-maildirs"
PEER = "inotifywait"
PEER_HINT = "install inotify-tools (apt-get install inotify-tools)"
PEER_EVENTS = "moved_to,create,delete,moved_from,close_write"

LATENCY_FOLDERS = 100
LATENCY_BLOCKS = 5       # alternating blocks per side (quick: 2)
LATENCY_GAP = 0.003      # s between one change's line and the next change
BURST_SIZE = 100
BURSTS = 20              # quick: 5
BURST_QUIET = 0.2        # s without a line that ends a burst's collection
BIG_FOLDERS = 10_000
STARTUP_RUNS = 3         # per side, after one warm-up each (quick: 1)
LINE_TIMEOUT = 10.0      # s: a change not reported by then is a failure
READY_TIMEOUT = 300.0
CONTRACT = 0.050         # s: watch-maildirs' promise for any change
LATENCY_TARGET = 2.0     # ours/inotifywait median latency
NOISY_CPUS = 0.25


# ------------------------------------------------------------------ the tree


def make_tree(base: Path, folders: int) -> list[str]:
    """A Maildir++ tree: INBOX and `folders` folders f00000...; their names."""
    names = [f"f{i:05d}" for i in range(folders)]
    for sub in ("cur", "new", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        folder = base / f".{name}"
        folder.mkdir()
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir()
    return names


def folder_dir(base: Path, name: str) -> Path:
    return base if name == "INBOX" else base / f".{name}"


_serial = 0


def staged(base: Path, name: str) -> tuple[Path, Path]:
    """A message written in `name`'s tmp/ (before any clock runs); (tmp, new) paths."""
    global _serial
    _serial += 1
    leaf = f"{_serial}.bench"
    tmp = folder_dir(base, name) / "tmp" / leaf
    tmp.write_bytes(b"Subject: bench\n\nx\n")
    return tmp, folder_dir(base, name) / "new" / leaf


# ------------------------------------------------------------------ watchers


class Watcher:
    """One running watcher and a reader thread timestamping its lines."""

    def __init__(self, kind: str, argv: list[str], env: dict[str, str], base: Path) -> None:
        self.kind = kind
        self.base = base
        self.lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.ready_at: float | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _lines_of(self, fd: int):
        buffer = b""
        while not self._stop.is_set():
            if not select.select([fd], [], [], 0.1)[0]:
                continue
            chunk = os.read(fd, 65536)
            now = time.perf_counter()
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                yield now, raw.decode("utf-8", "replace")

    def _read_stdout(self) -> None:
        for now, line in self._lines_of(self.proc.stdout.fileno()):
            if self.kind == OURS and self.ready_at is None and line == "":
                self.ready_at = now
                self._ready.set()
                continue
            self.lines.put((now, line))
        self.lines.put((time.perf_counter(), None))

    def _read_stderr(self) -> None:
        self.stderr: list[str] = []
        for now, line in self._lines_of(self.proc.stderr.fileno()):
            self.stderr.append(line)
            if self.kind == PEER and self.ready_at is None and \
                    line.startswith("Watches established"):
                self.ready_at = now
                self._ready.set()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Seconds from the start of the process to its ready signal."""
        if not self._ready.wait(timeout):
            raise BenchError(f"{self.kind} not ready after {timeout:.0f} s; exit "
                             f"{self.proc.poll()}, stderr {getattr(self, 'stderr', [])[-3:]}")
        return self.ready_at - self.started

    def matches(self, line: str, name: str) -> bool:
        if self.kind == OURS:
            return line == name
        return line == f"{folder_dir(self.base, name)}/new/"

    def line(self, timeout: float) -> tuple[float, str]:
        try:
            when, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.kind}: no line in {timeout} s") from None
        if line is None:
            raise BenchError(f"{self.kind} ended early: exit {self.proc.poll()}, "
                             f"stderr {getattr(self, 'stderr', [])[-3:]}")
        return when, line

    def drain(self) -> list[tuple[float, str]]:
        got = []
        while True:
            try:
                when, line = self.lines.get_nowait()
            except queue.Empty:
                return got
            if line is not None:
                got.append((when, line))

    def peak_rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise BenchError(f"no VmHWM for {self.kind}")

    def watch_count(self) -> int:
        count = 0
        fdinfo = f"/proc/{self.proc.pid}/fdinfo"
        for fd in os.listdir(fdinfo):
            try:
                with open(f"{fdinfo}/{fd}", encoding="ascii", errors="replace") as f:
                    count += sum(1 for line in f if line.startswith("inotify wd:"))
            except OSError:
                continue
        return count

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


@dataclass
class Sides:
    ours_argv: list[str]
    peer_argv: list[str]
    env: dict[str, str]

    def start(self, kind: str, base: Path) -> Watcher:
        if kind == OURS:
            argv = [*self.ours_argv, "-m", str(base)]
        else:
            argv = [*self.peer_argv, "-m", "-r", "-e", PEER_EVENTS, "--format", "%w",
                    str(base)]
        return Watcher(kind, argv, self.env, base)


# --------------------------------------------------------------- benchmarks


def bench_latency(sides: Sides, base: Path, names: list[str], changes: int,
                  blocks: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {OURS: [], PEER: []}
    per_block = max(1, changes // blocks)
    turn = 0
    for block in range(blocks):
        order = (OURS, PEER) if block % 2 == 0 else (PEER, OURS)
        for kind in order:
            watcher = sides.start(kind, base)
            try:
                watcher.wait_ready()
                for _ in range(per_block):
                    name = names[turn % len(names)]
                    turn += 1
                    tmp, new = staged(base, name)
                    watcher.drain()  # the tmp/ write, for inotifywait
                    t0 = time.perf_counter()
                    os.rename(tmp, new)
                    while True:
                        when, line = watcher.line(LINE_TIMEOUT)
                        if watcher.matches(line, name):
                            break
                    samples[kind].append(when - t0)
                    time.sleep(LATENCY_GAP)
            finally:
                watcher.stop()
    return samples


@dataclass
class Burst:
    lines: list[int]
    tails: list[float]  # last rename -> last line after it (0 if none came after)


def bench_bursts(sides: Sides, base: Path, bursts: int) -> dict[str, Burst]:
    results = {OURS: Burst([], []), PEER: Burst([], [])}
    name = "INBOX"
    for kind in (OURS, PEER):
        watcher = sides.start(kind, base)
        try:
            watcher.wait_ready()
            for _ in range(bursts):
                messages = [staged(base, name) for _ in range(BURST_SIZE)]
                time.sleep(0.05)
                watcher.drain()
                for tmp, new in messages:
                    os.rename(tmp, new)
                last = time.perf_counter()
                got: list[tuple[float, str]] = []
                while True:
                    try:
                        got.append(watcher.line(BURST_QUIET))
                    except BenchError:
                        break
                mine = [when for when, line in got if watcher.matches(line, name)]
                if not mine:
                    raise BenchError(f"{kind}: a burst of {BURST_SIZE} renames gave no line")
                results[kind].lines.append(len(mine))
                results[kind].tails.append(max(0.0, mine[-1] - last))
        finally:
            watcher.stop()
    return results


@dataclass
class Startup:
    ready: list[float]
    rss_kib: list[int]
    watches: int = 0


def bench_startup(sides: Sides, base: Path, runs: int) -> dict[str, Startup]:
    results = {OURS: Startup([], []), PEER: Startup([], [])}
    for run in range(runs + 1):  # run 0 warms the dentry and inode caches
        order = (OURS, PEER) if run % 2 == 0 else (PEER, OURS)
        for kind in order:
            watcher = sides.start(kind, base)
            try:
                ready = watcher.wait_ready()
                rss = watcher.peak_rss_kib()
                results[kind].watches = watcher.watch_count()
            finally:
                watcher.stop()
            if run > 0:
                results[kind].ready.append(ready)
                results[kind].rss_kib.append(rss)
    return results


# ------------------------------------------------------------------- report


def duration(seconds: float) -> str:
    """Microseconds below 10 ms (the latencies), else common.ms."""
    return f"{seconds * 1e6:.0f} us" if seconds < 0.01 else ms(seconds)


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def row(metric: str, ours: float, peer: float, fmt, target: str = "", met: str = "") -> list:
    return [metric, fmt(ours), fmt(peer), times(ratio(ours, peer)), target, met]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark watch-maildirs against inotifywait -m -r.")
    parser.add_argument("--prefix", help="where roammail is installed [default: "
                        f"${common.PREFIX_ENV}, else {common.DEFAULT_PREFIX}]")
    parser.add_argument("--quick", action="store_true",
                        help="100 changes, 5 bursts, one start-up run per side")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    common.add_summary_option(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    prefix = common.resolve_prefix(args.prefix)
    tools = common.installed_tools(prefix, [OURS])
    interpreter = common.launcher_interpreter(tools[OURS])[0]
    peer = shutil.which(PEER)
    if peer is None:
        raise BenchError(f"{PEER} is not installed: {PEER_HINT}")
    changes = 100 if args.quick else 1000
    blocks = 2 if args.quick else LATENCY_BLOCKS
    bursts = 5 if args.quick else BURSTS
    runs = 1 if args.quick else STARTUP_RUNS

    print("# watch-maildirs benchmark: roammail vs inotifywait\n")
    print("```")
    for line in common.environment_lines(interpreter):
        print(line)
    version = subprocess.run([str(tools[OURS]), "--version"], capture_output=True,
                             text=True, check=False).stdout.strip()
    peer_version = subprocess.run([peer, "--help"], capture_output=True, text=True,
                                  check=False).stdout.splitlines()[:1]
    print(f"roammail:       {version or '?'} ({prefix})")
    print(f"peer:           {(peer_version or ['?'])[0]} ({peer} -m -r -e {PEER_EVENTS} "
          "--format %w)")
    mode = "quick" if args.quick else "full"
    print(f"mode:           {mode}: {changes} changes over {LATENCY_FOLDERS} folders in "
          f"{blocks} blocks per side, {bursts} bursts of {BURST_SIZE}, start-up with "
          f"{BIG_FOLDERS:,} folders x {runs}")
    print("```")
    sys.stdout.flush()

    tag = common.new_tag()
    root = Path(tempfile.mkdtemp(prefix="roammail-watch-bench-"))
    try:
        home = root / "home"
        home.mkdir()
        sides = Sides([str(tools[OURS])], [peer], common.base_env(tag, home))
        others = common.OtherLoad()

        small = root / "small" / "Maildir"
        names = make_tree(small, LATENCY_FOLDERS)
        latency = bench_latency(sides, small, names, changes, blocks)
        burst = bench_bursts(sides, small, bursts)
        big = root / "big" / "Maildir"
        make_tree(big, BIG_FOLDERS)
        startup = bench_startup(sides, big, runs)

        o_lat, p_lat = latency[OURS], latency[PEER]
        o_med, p_med = median(o_lat), median(p_lat)
        lat_ratio = ratio(o_med, p_med)
        tail_max = max(burst[OURS].tails)
        rows = [
            row(f"latency, median ({len(o_lat)} changes)", o_med, p_med, duration,
                f"<= {LATENCY_TARGET:.0f}x", "yes" if lat_ratio <= LATENCY_TARGET else "NO"),
            row("latency, p99", percentile(o_lat, 99), percentile(p_lat, 99), duration),
            row("latency, max", max(o_lat), max(p_lat), duration,
                f"ours <= {CONTRACT * 1000:.0f} ms",
                "yes" if max(o_lat) <= CONTRACT else "NO"),
            row(f"burst of {BURST_SIZE} renames: lines, median",
                median(burst[OURS].lines), median(burst[PEER].lines), lambda x: f"{x:.0f}"),
            row("burst: last rename -> last line, median", median(burst[OURS].tails),
                median(burst[PEER].tails), duration),
            row("burst: last rename -> last line, max", tail_max, max(burst[PEER].tails), duration,
                f"ours <= {CONTRACT * 1000:.0f} ms", "yes" if tail_max <= CONTRACT else "NO"),
            row(f"start-up to ready, {BIG_FOLDERS:,} folders, median",
                median(startup[OURS].ready), median(startup[PEER].ready), ms),
            row(f"peak RSS (VmHWM), {BIG_FOLDERS:,} folders, median",
                median(startup[OURS].rss_kib), median(startup[PEER].rss_kib), mib),
            row(f"inotify watches, {BIG_FOLDERS:,} folders", startup[OURS].watches,
                startup[PEER].watches, lambda x: f"{x:,}"),
        ]
        busy = others.cpus()
        print(f"\nother processes used {busy:.2f} of {os.cpu_count()} CPUs on average "
              "during the run")
        if busy > NOISY_CPUS:
            print(f"WARNING: more than {NOISY_CPUS} CPUs of other load: the numbers are "
                  "noisy; rerun on a quiet machine before quoting them")
        print(f"\n## Summary ({mode} run)\n")
        headers = ["metric", "watch-maildirs", "inotifywait", "ours/peer", "target", "met"]
        print(common.markdown_table(headers, rows))
        common.write_summary(args.summary, common.summary_rows(
            "watch", headers, rows, metric="metric", ours="watch-maildirs", peer="inotifywait",
            ratio="ours/peer", target="target", met="met"))
        return 0
    finally:
        common.clean_up(tag, root, args.keep)


def main(argv: list[str] | None = None) -> int:
    return common.run_main("watch_bench", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
