#!/usr/bin/env python3
"""smtpdcheck_bench.py: smtpdcheck probing in parallel, side by side with
the original's sequential walk and with swaks.

Usage:
  .venv-test/bin/python3 bench/smtpdcheck_bench.py [--prefix PREFIX] [--quick] [options]

It runs with the test virtualenv's interpreter (./test.sh creates it): the
SMTP listeners are the tests' peers, which import aiosmtpd.

Two benchmarks, each run against its peer in the same run (rounds
interleaved), on SMTP listeners this script starts on loopback addresses
(tests/smtpdcheck/smtpdcheck_peers.py: one port shared by 127.0.0.101-105,
since smtpdcheck has one --port for all servers):

1. slow primaries: five candidates, the first four accept the connection
   and never greet, the fifth greets 220; --timeout 2.  Wall time of
   `smtpdcheck` (all probes at once: target under 1.2x one timeout) and of
   `smtpdcheck --sequential` (Mail Avenger's algorithm: one timeout per
   server, so about 4x); also ours with a warm cache of the four found down.
2. all up: the same five servers all greet 220.  Time to the answer of
   `smtpdcheck` over the five, and over the first alone, against
   `swaks --quit-after banner --server 127.0.0.101:PORT` (connect, read the
   banner, QUIT) on the first server; with the bare start of the
   launchers' interpreter (`python3 -I -S -c pass`) as the floor.

Every run's answer is checked (exit 1 and the fifth, resp. first, server).
The caches of ours are in a temporary directory; --no-cache everywhere but
in the warm-cache row.  Every process carries a tag in its environment and
whatever is left at the end is ended by pid.

How to read it: ratios of one run only.  "vs timeout" is wall time over
--timeout: the parallel probe cannot be below 1.00 (the four silent
servers must be given their whole timeout before the fifth, which greeted
at once, can be the answer) and the rest is start-up and the QUIT
exchange.  ours/swaks compares two programs doing nearly the same network
work (one connection, banner, QUIT, 221); on loopback the difference is
mostly the start-up of each (Perl and its modules for swaks, Python and
roammail's imports for ours: ours - floor).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import BenchError, median, ms, ratio, times  # noqa: E402

ADDRESSES = [f"127.0.0.{101 + i}" for i in range(5)]
TIMEOUT_S = 2.0
TARGET_VS_TIMEOUT = 1.2   # ours, parallel, slow primaries: < 1.2x one timeout
NOISY_CPUS = 0.25         # other processes using more CPU than this: a noisy run
RUN_LIMIT_S = 120.0       # the bound on one run of any tool
SWAKS = "swaks"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="smtpdcheck_bench.py",
        description="smtpdcheck (parallel) vs smtpdcheck --sequential and swaks.")
    parser.add_argument("--prefix", help="where roammail is installed "
                        "(default $ROAMMAIL_PREFIX, else .test-prefix)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about 30 s)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help=f"--timeout of the slow-primaries runs (default {TIMEOUT_S})")
    parser.add_argument("--slow-rounds", type=int, help="parallel runs (default 5, quick 3)")
    parser.add_argument("--sequential-rounds", type=int,
                        help="--sequential runs (default 3, quick 1)")
    parser.add_argument("--up-rounds", type=int, help="all-up rounds (default 30, quick 10)")
    common.add_summary_option(parser)
    args = parser.parse_args(argv)
    quick = args.quick
    args.slow_rounds = args.slow_rounds or (3 if quick else 5)
    args.sequential_rounds = args.sequential_rounds or (1 if quick else 3)
    args.up_rounds = args.up_rounds or (10 if quick else 30)
    return args


class Timer:
    """Runs one command and checks its answer; keeps the wall times."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str],
                 status: int, out: str | None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.status = status
        self.out = out
        self.seconds: list[float] = []

    def once(self) -> float:
        started = time.perf_counter()
        proc = subprocess.run(self.argv, env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=RUN_LIMIT_S)
        elapsed = time.perf_counter() - started
        if proc.returncode != self.status or (self.out is not None and proc.stdout != self.out):
            raise BenchError(f"{self.name}: `{' '.join(self.argv)}` exited "
                             f"{proc.returncode} with {proc.stdout!r} {proc.stderr.strip()!r}; "
                             f"expected {self.status} and {self.out!r}")
        self.seconds.append(elapsed)
        return elapsed

    @property
    def median(self) -> float:
        return median(self.seconds)


def interleave(timers: list[Timer], rounds: int, warmup: int = 1) -> None:
    """Round by round, each timer once per round; `warmup` rounds uncounted."""
    for n in range(warmup + rounds):
        for timer in timers:
            timer.once()
            if n < warmup:
                timer.seconds.pop()


def run(args: argparse.Namespace) -> int:
    prefix = common.resolve_prefix(args.prefix)
    tool = str(common.installed_tools(prefix, ["smtpdcheck"])["smtpdcheck"])
    interpreter = common.launcher_interpreter(Path(tool))
    swaks = shutil.which(SWAKS)
    if swaks is None:
        raise BenchError("swaks is not installed: apt-get install swaks")
    cluster = common.import_test_peer("smtpdcheck_peers", under="smtpdcheck").Cluster
    tag = common.new_tag()
    load = common.OtherLoad()
    print("\n".join(common.environment_lines(interpreter[0])))
    print(f"roammail:       {tool}")
    print(f"peer:           {swaks}")
    print()
    with tempfile.TemporaryDirectory(prefix="smtpdcheck-bench.") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        env = common.base_env(tag, home, XDG_CACHE_HOME=str(root / "xdg-cache"))
        try:
            slow = bench_slow_primaries(args, cluster, tool, env, root)
            up = bench_all_up(args, cluster, tool, swaks, interpreter, env)
        finally:
            left = common.sweep(tag)
            if left:
                print(f"(ended {left} leftover processes)")
    others = load.cpus()
    summary(args, slow, up)
    if others > NOISY_CPUS:
        print(f"\nwarning: other processes used {others:.2f} CPUs on average during the "
              "run: the numbers are noisy, run again on a quiet machine")
    return 0


def bench_slow_primaries(args: argparse.Namespace, cluster, tool: str, env: dict[str, str],
                         root: Path) -> dict[str, Timer]:
    timeout = args.timeout
    base = [tool, "--timeout", f"{timeout:g}"]
    with cluster.start({**{a: "silent" for a in ADDRESSES[:4]},
                        ADDRESSES[4]: "up"}) as peers:
        tail = ["--port", str(peers.port), *ADDRESSES]
        expected = ADDRESSES[4] + "\n"
        parallel = Timer("ours", [*base, "--no-cache", *tail], env, 1, expected)
        sequential = Timer("ours --sequential", [*base, "--no-cache", "--sequential", *tail],
                           env, 1, expected)
        cache = root / "warm-cache"
        warm = Timer("ours, warm cache", [*base, "--cache", str(cache), "--cache-ttl", "3600",
                                          *tail], env, 1, expected)
        print(f"1. slow primaries: 4 silent + 1 up, --timeout {timeout:g} "
              f"({args.slow_rounds} parallel runs, {args.sequential_rounds} sequential)")
        for _ in range(args.slow_rounds):
            parallel.once()
        for _ in range(args.sequential_rounds):
            sequential.once()
        warm.once()  # fills the cache with the four silent servers
        warm.seconds.clear()
        interleave([warm], args.slow_rounds, warmup=0)
    rows = []
    for timer in (parallel, sequential, warm):
        rows.append([timer.name, f"{timer.median:.3f} s", f"{max(timer.seconds):.3f} s",
                     times(ratio(timer.median, timeout)),
                     times(ratio(timer.median, parallel.median))])
    print(common.markdown_table(["variant", "median", "max", "vs timeout", "vs ours"], rows))
    print()
    return {"parallel": parallel, "sequential": sequential, "warm": warm}


def bench_all_up(args: argparse.Namespace, cluster, tool: str, swaks: str,
                 interpreter: list[str], env: dict[str, str]) -> dict[str, Timer]:
    with cluster.start({a: "up" for a in ADDRESSES}) as peers:
        port = str(peers.port)
        first = ADDRESSES[0]
        five = Timer("ours, 5 servers", [tool, "--no-cache", "--port", port, *ADDRESSES],
                     env, 1, first + "\n")
        one = Timer("ours, 1 server", [tool, "--no-cache", "--port", port, first],
                    env, 1, first + "\n")
        peer = Timer("swaks --quit-after banner", [swaks, "--quit-after", "banner",
                                                   "--server", f"{first}:{port}"],
                     env, 0, None)
        floor = Timer("python floor", [interpreter[0], "-I", "-S", "-c", "pass"], env, 0, "")
        print(f"2. all up: time to the answer ({args.up_rounds} interleaved rounds)")
        interleave([five, one, peer, floor], args.up_rounds, warmup=2)
        quits = peers[first].quits
    rows = []
    for timer in (five, one, peer, floor):
        rows.append([timer.name, ms(timer.median), ms(sorted(timer.seconds)[-1]),
                     times(ratio(timer.median, peer.median))])
    print(common.markdown_table(["variant", "median", "max", "vs swaks"], rows))
    print(f"(the first server saw {quits} QUIT commands)")
    print()
    return {"five": five, "one": one, "swaks": peer, "floor": floor}


def summary(args: argparse.Namespace, slow: dict[str, Timer], up: dict[str, Timer]) -> None:
    timeout = args.timeout
    parallel = slow["parallel"].median
    rows = [
        ["slow primaries, wall time", f"{parallel:.3f} s",
         f"{slow['sequential'].median:.3f} s (--sequential)",
         times(ratio(parallel, slow["sequential"].median)),
         f"{times(ratio(parallel, timeout))} of timeout",
         f"< {TARGET_VS_TIMEOUT:.2f}x timeout",
         "yes" if parallel < TARGET_VS_TIMEOUT * timeout else "NO"],
        ["slow primaries, warm cache", f"{slow['warm'].median:.3f} s",
         f"{slow['sequential'].median:.3f} s (--sequential)",
         times(ratio(slow["warm"].median, slow["sequential"].median)),
         f"{times(ratio(slow['warm'].median, timeout))} of timeout", "", ""],
        ["all up, 5 servers: answer", ms(up["five"].median), ms(up["swaks"].median) + " (swaks)",
         times(ratio(up["five"].median, up["swaks"].median)),
         f"floor {ms(up['floor'].median)}", "", ""],
        ["all up, 1 server: answer", ms(up["one"].median), ms(up["swaks"].median) + " (swaks)",
         times(ratio(up["one"].median, up["swaks"].median)),
         f"floor {ms(up['floor'].median)}", "", ""],
    ]
    headers = ["benchmark", "roammail", "peer", "ours/peer", "context", "target", "met"]
    print("Summary")
    print(common.markdown_table(headers, rows))
    common.write_summary(args.summary, common.summary_rows(
        "smtpdcheck", headers, rows, metric="benchmark", ours="roammail", peer="peer",
        ratio="ours/peer", target="target", met="met", note=["context"]))


def main(argv: list[str] | None = None) -> int:
    return common.run_main("smtpdcheck_bench", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
