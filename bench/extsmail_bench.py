#!/usr/bin/env python3
"""extsmail_bench.py: roammail's extsmail/extsmaild side by side with the C extsmail.

Usage:
  python3 bench/extsmail_bench.py [--prefix PREFIX] [--quick] [options]

Three benchmarks, each run against both implementations in the same run
(see bench/README.md for what they measure and how to read the ratios):

1. enqueue:  wall time of one `extsmail -oi rcpt@example.org < 2 KB message`,
   ours, the C one and the bare interpreter start (`python3 -I -S -c pass`
   with the launchers' interpreter), interleaved round by round;
2. batch:    `extsmaild -m batch` over a queue of 1,000 messages, each sent
   through a null external;
3. daemon:   `extsmaild` in daemon mode, one message at a time, time from
   the enqueuing command's return to the external's start;
4. slow link: a batch of 20 messages through `ssh HOST sendmail -t` to the
   tests' sshd over slowlink.py (100 ms each way): wall time.

Everything happens in a temporary directory; every process started carries
a tag in its environment and whatever is left at the end is ended by pid.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import BenchError, median, ms, percentile, ratio, times  # noqa: E402

C_EXTSMAIL = "/usr/bin/extsmail"
C_EXTSMAILD = "/usr/bin/extsmaild"
C_HINT = "install the C extsmail with `apt-get install extsmail`"
OURS = "roammail"
C = "extsmail (C)"
FLOOR = "python floor"

RCPT = "rcpt@example.org"
MESSAGE_BYTES = 2048  # the size of the test message: a short plain-text mail
ENQUEUE_WARMUP = 3    # rounds run first and not counted (page cache, dentries)
DAEMON_WARMUP = 2     # messages per daemon not counted (the first waits for start-up)
# How long one delivery may take before the benchmark gives up: generous,
# so that a daemon which missed the inotify event is still caught by its
# 60 s poll and shows up as an outlier, not as a failure.
DELIVERY_TIMEOUT = 90.0
BATCH_TIMEOUT = 600.0
# Other processes using more CPU than this (on average) make a run noisy.
NOISY_CPUS = 0.25
EMPTY_RUNS = 5        # batch runs over an empty queue: the fixed cost
ENQUEUE_TARGET = 1.3  # ours/floor: extsmail's own work above the interpreter's start
EMPTY_TARGET = 0.030  # s: an empty-queue batch run (a cron job's usual run)

# The null external for the batch benchmark.  `/bin/cat` alone does not
# work: the stored arguments (-oi rcpt@...) are appended to the command
# and cat takes -o for an option.  Through sh they become $1, $2.
NULL_SENDMAIL = "/bin/sh -c 'exec cat >/dev/null' null-sendmail"
# The external for the daemon benchmark: `echo` is a dash builtin, so its
# line reaches the FIFO as soon as the shell runs, with no further fork;
# the harness timestamps it on arrival.  $2 is the recipient, which names
# the message.
RECORDING_SENDMAIL = "/bin/sh -c 'echo $2 >{fifo}; exec cat >/dev/null' start-recorder"


# ------------------------------------------------------------------- set-up


@dataclass
class Side:
    """One implementation: its tools, its home and spool, its environment."""

    name: str
    extsmail: list[str]
    extsmaild: list[str]
    home: Path
    spool: Path
    env: dict[str, str]
    log: Path
    daemon_pid: int | None = None
    daemon_proc: subprocess.Popen | None = None
    results: dict[str, object] = field(default_factory=dict)

    @property
    def msgs(self) -> Path:
        return self.spool / "msgs"

    def queued(self) -> int:
        return sum(1 for name in os.listdir(self.msgs) if not name.startswith("."))

    def write_externals(self, sendmail: str) -> None:
        (self.home / ".extsmail" / "externals").write_text(
            "group {\n"
            "    external bench {\n"
            f'        sendmail = "{sendmail}"\n'
            "    }\n"
            "}\n")

    def empty_spool(self) -> None:
        for name in os.listdir(self.msgs):
            os.unlink(self.msgs / name)


def make_home(root: Path) -> tuple[Path, Path]:
    """root/home with ~/.extsmail/conf naming ~/.extsmail/spool (0700, msgs/ made)."""
    home = root / "home"
    (home / ".extsmail").mkdir(parents=True)
    spool = home / ".extsmail" / "spool"
    spool.mkdir(mode=0o700)
    os.chmod(spool, 0o700)
    (spool / "msgs").mkdir(mode=0o700)
    os.chmod(spool / "msgs", 0o700)
    (home / ".extsmail" / "conf").write_text(f'spool_dir = "{spool}"\n')
    return home, spool


def test_message() -> bytes:
    """A plain-text mail of MESSAGE_BYTES bytes."""
    head = ("From: Alice Example <alice@example.org>\n"
            f"To: Bob Example <{RCPT}>\n"
            "Subject: roammail benchmark message\n"
            "Date: Mon, 03 Mar 2025 10:00:00 +0000\n"
            "Message-ID: <bench.0001@example.org>\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "\n")
    line = "The quick brown fox jumps over the lazy dog, again and again.\n"
    body = line * ((MESSAGE_BYTES - len(head)) // len(line) + 1)
    text = (head + body)[:MESSAGE_BYTES - 1] + "\n"
    return text.encode()


def v1_spool_file(args: list[bytes], message: bytes) -> bytes:
    """A v1 spool file, header made by roammail.extsmail.spool.encode_header (from lib/)."""
    sys.path.insert(0, str(common.LIB))
    try:
        from roammail.extsmail.spool import encode_header
    finally:
        sys.path.remove(str(common.LIB))
    return encode_header(args) + message


def fill_spool(side: Side, count: int, data: bytes) -> None:
    """Queue `count` copies of a spool file fast: written straight into msgs/."""
    for i in range(count):
        fd = os.open(side.msgs / f"bench{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def check_safe_path(path: Path) -> None:
    """`path` goes into an externals string and a shell word: keep it plain."""
    if any(c in str(path) for c in " \t\n'\"\\$`"):
        raise BenchError(f"the temporary directory {path} has a character that would "
                         "need quoting; set TMPDIR to a plain path")


# ------------------------------------------------------------------ enqueue


def run_timed(argv: list[str], stdin, env: dict[str, str], what: str) -> float:
    """Run argv with `stdin` rewound; the wall time in seconds; BenchError on failure."""
    os.lseek(stdin.fileno(), 0, os.SEEK_SET)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"{what}: {' '.join(argv)} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    return elapsed


def bench_enqueue(ours: Side, c: Side, floor_argv: list[str], floor_env: dict[str, str],
                  nss_env: dict[str, str], message_file: Path, rounds: int) -> dict:
    """Interleaved rounds of (ours, C, floor, /bin/true, /bin/true+nss_wrapper)."""
    args = ["-oi", RCPT]
    variants = [
        (OURS, ours.extsmail + args, ours.env),
        (C, c.extsmail + args, c.env),
        (FLOOR, floor_argv, floor_env),
        # Calibration only: what LD_PRELOAD of nss_wrapper costs every C
        # process (the C numbers include it, ours do not).
        ("/bin/true", ["/bin/true"], floor_env),
        ("/bin/true + nss_wrapper", ["/bin/true"], {**floor_env, **nss_env}),
    ]
    samples: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    with open(message_file, "rb") as stdin:
        for i in range(ENQUEUE_WARMUP + rounds):
            for name, argv, env in variants:
                elapsed = run_timed(argv, stdin, env, f"enqueue ({name})")
                if i >= ENQUEUE_WARMUP:
                    samples[name].append(elapsed)
    expected = ENQUEUE_WARMUP + rounds
    for side in (ours, c):
        if side.queued() != expected:
            raise BenchError(f"enqueue: {side.name} queued {side.queued()} messages, "
                             f"not {expected}")
    # Both must have written the same bytes: the v1 format is a contract.
    ours_file = (ours.msgs / sorted(os.listdir(ours.msgs))[0]).read_bytes()
    c_file = (c.msgs / sorted(os.listdir(c.msgs))[0]).read_bytes()
    identical = ours_file == c_file
    for side in (ours, c):
        side.empty_spool()
    return {"samples": samples, "identical": identical}


def report_enqueue(result: dict, rounds: int) -> list[list[str]]:
    s = result["samples"]
    rows = []
    print(f"\n## 1. enqueue: `extsmail -oi {RCPT} < {MESSAGE_BYTES}-byte message`, "
          f"{rounds} interleaved rounds\n")
    table = []
    for name, values in s.items():
        table.append([name, ms(min(values)), ms(median(values)), ms(percentile(values, 90)),
                      ms(max(values))])
    print(common.markdown_table(["variant", "min", "median", "p90", "max"], table))
    o_med, c_med, f_med = (median(s[k]) for k in (OURS, C, FLOOR))
    o_p90, c_p90, f_p90 = (percentile(s[k], 90) for k in (OURS, C, FLOOR))
    nss = median(s["/bin/true + nss_wrapper"]) - median(s["/bin/true"])
    print(f"\nours - floor (median): {ms(o_med - f_med)} spent in roammail itself "
          "(imports, config, spool write, fsyncs)")
    print(f"ours/floor: median {times(ratio(o_med, f_med))}, p90 "
          f"{times(ratio(o_p90, f_p90))} (target <= {ENQUEUE_TARGET:.2f}x)")
    print(f"ours/C:     median {times(ratio(o_med, c_med))}, p90 {times(ratio(o_p90, c_p90))}")
    print(f"nss_wrapper preload costs each C process about {ms(nss)} (in the C numbers)")
    print("spool files byte-identical (ours vs C): "
          + ("yes" if result["identical"] else "NO"))
    label = f"enqueue, 2 KB ({rounds} runs)"
    target_ratio = ratio(o_med, f_med)
    rows.append([label, "median", ms(o_med), ms(c_med), ms(f_med),
                 times(ratio(o_med, c_med)), times(target_ratio),
                 f"ours/floor <= {ENQUEUE_TARGET:g}x",
                 "yes" if target_ratio <= ENQUEUE_TARGET else "no"])
    rows.append([label, "p90", ms(o_p90), ms(c_p90), ms(f_p90), times(ratio(o_p90, c_p90)),
                 times(ratio(o_p90, f_p90)), "", ""])
    return rows


# -------------------------------------------------------------------- batch


def run_batch(side: Side, expect_empty: bool = True, extra: list[str] | None = None) -> float:
    # Not subprocess.run(timeout=...): with a timeout, Popen.wait() polls
    # with sleeps that double up to 50 ms, which would be measured too.  A
    # plain wait() blocks in waitpid(2); a timer thread enforces the limit.
    with open(side.log, "ab") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(side.extsmaild + ["-m", "batch", *(extra or [])],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log, env=side.env)
        watchdog = threading.Timer(BATCH_TIMEOUT, proc.kill)
        watchdog.start()
        try:
            proc.wait()
        finally:
            watchdog.cancel()
        elapsed = time.perf_counter() - t0
    if elapsed >= BATCH_TIMEOUT:
        raise BenchError(f"batch: {side.name} took longer than {BATCH_TIMEOUT:.0f} s and "
                         f"was killed; see {side.log}")
    # The C extsmaild's exit status is not reliable (1 on an empty queue):
    # the queue itself says whether everything went.
    left = side.queued()
    if expect_empty and left:
        raise BenchError(f"batch: {side.name} left {left} messages queued (exit status "
                         f"{proc.returncode}); see {side.log}")
    return elapsed


def bench_batch(ours: Side, c: Side, count: int, repeats: int) -> dict:
    data = v1_spool_file([b"-oi", RCPT.encode()], test_message())
    for side in (ours, c):
        side.write_externals(NULL_SENDMAIL)
    empty: dict[str, list[float]] = {ours.name: [], c.name: []}
    for _ in range(EMPTY_RUNS):
        for side in (ours, c):
            empty[side.name].append(run_batch(side))
    totals: dict[str, list[float]] = {ours.name: [], c.name: []}
    for r in range(repeats):
        order = (ours, c) if r % 2 == 0 else (c, ours)
        for side in order:
            fill_spool(side, count, data)
            os.sync()  # the writeback of the fill must not land in the timed run
            totals[side.name].append(run_batch(side))
    return {"empty": empty, "totals": totals}


def report_batch(result: dict, count: int, repeats: int) -> list[list[str]]:
    print(f"\n## 2. batch: `extsmaild -m batch` over {count} queued messages, null external, "
          f"{repeats} run(s) each, alternating\n")
    table = []
    for name in (OURS, C):
        totals = result["totals"][name]
        t = median(totals)
        table.append([name, ", ".join(f"{x:.3f}" for x in totals), f"{t:.3f} s",
                      f"{count / t:.0f}", ms(t / count), ms(median(result["empty"][name]))])
    print(common.markdown_table(["implementation", "runs (s)", "median total", "msgs/s",
                                 "per message", "empty-queue run"], table))
    o, c = median(result["totals"][OURS]), median(result["totals"][C])
    print(f"\nours/C time: {times(ratio(o, c))}; throughput ours/C: {times(ratio(c, o))} "
          "(target: time ratio <= 1.00x, i.e. ours at least as fast)")
    label = f"batch, {count} msgs"
    met = "yes" if o <= c else "no"
    eo, ec = median(result["empty"][OURS]), median(result["empty"][C])
    return [
        [label, "total", f"{o:.2f} s", f"{c:.2f} s", "", times(ratio(o, c)), "",
         "ours/C <= 1.0x", met],
        [label, "msgs/s", f"{count / o:.0f}", f"{count / c:.0f}", "", times(ratio(c, o)), "",
         "", ""],
        ["batch, empty queue", "one run", ms(eo), ms(ec), "", times(ratio(eo, ec)), "",
         f"ours < {EMPTY_TARGET * 1000:.0f} ms", "yes" if eo < EMPTY_TARGET else "no"],
    ]


# ------------------------------------------------------------------- daemon


class StartRecorder(threading.Thread):
    """Timestamps each line the recording external writes into a FIFO.

    The FIFO is held open read-write, so a reader never sees EOF and an
    external's open never blocks.  The thread sits in read(2) (the GIL
    released) and takes time.perf_counter() as soon as a line arrives.
    """

    QUIT = b"--quit--"

    def __init__(self, fifo: Path) -> None:
        super().__init__(daemon=True)
        os.mkfifo(fifo, 0o600)
        self.fifo = fifo
        self.fd = os.open(fifo, os.O_RDWR)
        self.events: list[tuple[float, str]] = []
        self.cond = threading.Condition()

    def run(self) -> None:
        pending = b""
        while True:
            data = os.read(self.fd, 4096)
            stamp = time.perf_counter()
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line == self.QUIT:
                    return
                with self.cond:
                    self.events.append((stamp, line.decode(errors="replace")))
                    self.cond.notify_all()

    def wait_event(self, index: int, timeout: float) -> tuple[float, str] | None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.events) > index, timeout):
                return None
            return self.events[index]

    def stop(self) -> None:
        os.write(self.fd, self.QUIT + b"\n")
        self.join(5)
        os.close(self.fd)


def start_daemons(ours: Side, c: Side, tag: str) -> None:
    with open(ours.log, "ab") as log:
        ours.daemon_proc = subprocess.Popen(
            ours.extsmaild + ["-m", "daemon", "-f"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=log, env=ours.env, start_new_session=True)
    ours.daemon_pid = ours.daemon_proc.pid
    with open(c.log, "ab") as log:
        proc = subprocess.run(c.extsmaild + ["-m", "daemon"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=log, env=c.env, timeout=30,
                              check=False)
    if proc.returncode != 0:
        raise BenchError(f"daemon: the C extsmaild -m daemon exited {proc.returncode}; "
                         f"see {c.log}")
    found: list[int] = []

    def detached() -> bool:
        found[:] = common.tagged_pids(tag, exe=os.path.realpath(C_EXTSMAILD))
        return bool(found)

    if not common.wait_for(detached, 10, 0.01):
        raise BenchError("daemon: the C extsmaild detached but no process of it is left "
                         f"(see {c.log} and syslog)")
    c.daemon_pid = found[0]
    if len(found) > 1:
        raise BenchError(f"daemon: more than one C extsmaild of this run: {found}")
    if ours.daemon_proc.poll() is not None:
        raise BenchError(f"daemon: our extsmaild exited {ours.daemon_proc.returncode}; "
                         f"see {ours.log}")


def stop_daemons(ours: Side, c: Side) -> None:
    if ours.daemon_proc is not None and ours.daemon_proc.poll() is None:
        ours.daemon_proc.terminate()
        try:
            ours.daemon_proc.wait(10)
        except subprocess.TimeoutExpired:
            ours.daemon_proc.kill()
            ours.daemon_proc.wait()
    if c.daemon_pid is not None:
        common.end_pids([c.daemon_pid])
        c.daemon_pid = None


def bench_daemon(ours: Side, c: Side, root: Path, count: int, tag: str,
                 message_file: Path) -> dict:
    recorders = {}
    for side, slug in ((ours, "ours"), (c, "c")):
        fifo = root / f"starts-{slug}.fifo"
        recorders[side.name] = StartRecorder(fifo)
        side.write_externals(RECORDING_SENDMAIL.format(fifo=fifo))
    for recorder in recorders.values():
        recorder.start()
    latency: dict[str, list[float]] = {ours.name: [], c.name: []}
    enqueue: dict[str, list[float]] = {ours.name: [], c.name: []}
    try:
        start_daemons(ours, c, tag)
        with open(message_file, "rb") as stdin:
            for i in range(DAEMON_WARMUP + count):
                for side, slug in ((ours, "ours"), (c, "c")):
                    recorder = recorders[side.name]
                    rcpt = f"rcpt-{slug}-{i}@example.org"
                    index = len(recorder.events)
                    os.lseek(stdin.fileno(), 0, os.SEEK_SET)
                    t0 = time.perf_counter()
                    run_timed(side.extsmail + ["-oi", rcpt], stdin, side.env,
                              f"daemon enqueue ({side.name})")
                    t1 = time.perf_counter()
                    event = recorder.wait_event(index, DELIVERY_TIMEOUT)
                    if event is None:
                        raise BenchError(f"daemon: {side.name} did not start the external "
                                         f"within {DELIVERY_TIMEOUT:.0f} s of message {i}; "
                                         f"see {side.log}")
                    stamp, line = event
                    if line != rcpt:
                        raise BenchError(f"daemon: {side.name} delivered {line!r}, expected "
                                         f"{rcpt!r}")
                    if not common.wait_for(lambda s=side: s.queued() == 0, DELIVERY_TIMEOUT,
                                           0.001):
                        raise BenchError(f"daemon: {side.name} started the external but "
                                         f"did not remove message {i}; see {side.log}")
                    if i >= DAEMON_WARMUP:
                        latency[side.name].append(stamp - t1)
                        enqueue[side.name].append(t1 - t0)
    finally:
        stop_daemons(ours, c)
        for recorder in recorders.values():
            recorder.stop()
    return {"latency": latency, "enqueue": enqueue}


def report_daemon(result: dict, count: int) -> list[list[str]]:
    print(f"\n## 3. daemon: {count} messages one at a time, from the enqueuing "
          "command's return to the external's start\n")
    table = []
    for name in (OURS, C):
        lat = result["latency"][name]
        enq = result["enqueue"][name]
        table.append([name, ms(min(lat)), ms(median(lat)), ms(percentile(lat, 99)),
                      ms(max(lat)), ms(median(enq)), ms(median([a + b for a, b in
                                                                zip(enq, lat)]))])
    print(common.markdown_table(["implementation", "min", "median", "p99", "max",
                                 "enqueue (median)", "enqueue start -> external"], table))
    print("\n(negative: the daemon started the external before the enqueuing "
          "process had exited)")
    o_med, c_med = median(result["latency"][OURS]), median(result["latency"][C])
    o_p99, c_p99 = percentile(result["latency"][OURS], 99), percentile(result["latency"][C], 99)
    o_e2e = median([a + b for a, b in zip(result["enqueue"][OURS], result["latency"][OURS])])
    c_e2e = median([a + b for a, b in zip(result["enqueue"][C], result["latency"][C])])
    print(f"ours median {ms(o_med)} (target < 100 ms), ours/C median "
          f"{signed_ratio(o_med, c_med)}; from the start of the enqueue: ours/C "
          f"{signed_ratio(o_e2e, c_e2e)}")
    label = f"daemon latency ({count} msgs)"
    return [
        [label, "median", ms(o_med), ms(c_med), "", signed_ratio(o_med, c_med), "",
         "ours < 100 ms", "yes" if o_med < 0.1 else "no"],
        [label, "p99", ms(o_p99), ms(c_p99), "", signed_ratio(o_p99, c_p99), "", "", ""],
        [label, "enqueue start->ext., median", ms(o_e2e), ms(c_e2e), "",
         signed_ratio(o_e2e, c_e2e), "", "", ""],
    ]


def signed_ratio(a: float, b: float) -> str:
    """A ratio only where both are positive; a latency can be negative."""
    return times(ratio(a, b)) if a > 0 and b > 0 else "n/a"


# ---------------------------------------------------------------- slow link

SLOW_DELAY_MS = 100  # each way: a phone or a hotel's link
SLOW_MBIT = 100
NULL_REMOTE_SENDMAIL = "#!/bin/sh\nexec cat >/dev/null\n"


def bench_slow_link(ours: Side, c: Side, root: Path, count: int, repeats: int,
                    sequential_too: bool) -> dict:
    """`extsmaild -m batch` over `count` messages through ssh to the tests'
    sshd over a slow link, each side alternately; ours also with -j 1."""
    SshServer = common.import_test_peer("peers.sshd").SshServer
    server = SshServer.start(root / "sshd")
    try:
        ssh = common.slow_ssh(server, root / "slow-bin", SLOW_DELAY_MS, SLOW_MBIT)
        sink = root / "null-sendmail"
        sink.write_text(NULL_REMOTE_SENDMAIL)
        sink.chmod(0o755)
        sendmail = f"{ssh} {server.host_alias} {sink} -t"
        for side in (ours, c):
            side.write_externals(sendmail)
        data = v1_spool_file([b"-oi", RCPT.encode()], test_message())
        variants = [(ours, []), (c, [])] + ([(ours, ["-j", "1"])] if sequential_too else [])
        times_: dict[str, list[float]] = {}
        logins: dict[str, list[int]] = {}
        for r in range(repeats):
            for side, extra in (variants if r % 2 == 0 else variants[::-1]):
                label = side.name + (" -j 1" if extra else "")
                fill_spool(side, count, data)
                before = server.count_accepted()
                times_.setdefault(label, []).append(run_batch(side, extra=extra))
                logins.setdefault(label, []).append(server.count_accepted() - before)
        return {"times": times_, "logins": logins}
    finally:
        server.stop()


def report_slow_link(result: dict, count: int, repeats: int) -> list[list[str]]:
    print(f"\n## 4. slow link: `extsmaild -m batch` over {count} messages through "
          f"`ssh HOST sendmail -t`, {SLOW_DELAY_MS} ms each way, {repeats} run(s) each\n")
    table = []
    for label, values in result["times"].items():
        table.append([label, ", ".join(f"{x:.2f}" for x in values), f"{median(values):.2f} s",
                      f"{median(values) / count:.2f} s",
                      str(round(median(result["logins"][label])))])
    print(common.markdown_table(["implementation", "runs (s)", "median total", "per message",
                                 "ssh logins"], table))
    o, c = median(result["times"][OURS]), median(result["times"][C])
    print(f"\nours/C time: {times(ratio(o, c))} (target <= 0.50x: one shared connection "
          "and four sessions at once against a connection per message)")
    rows = [[f"slow link, {count} msgs via ssh", "total", f"{o:.2f} s", f"{c:.2f} s", "",
             times(ratio(o, c)), "", "ours/C <= 0.5x", "yes" if o <= 0.5 * c else "no"]]
    if f"{OURS} -j 1" in result["times"]:
        s = median(result["times"][f"{OURS} -j 1"])
        rows.append([f"slow link, {count} msgs via ssh", "total, ours -j 1", f"{s:.2f} s",
                     f"{c:.2f} s", "", times(ratio(s, c)), "", "", ""])
    return rows


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark roammail's extsmail/extsmaild against the C extsmail.")
    parser.add_argument("--prefix", help="where roammail is installed [default: "
                        f"${common.PREFIX_ENV}, else {common.DEFAULT_PREFIX}]")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds: 30 enqueues, 200 batch messages, 20 daemon "
                        "messages, one batch run each")
    parser.add_argument("--rounds", type=int, help="enqueue rounds [200; quick 30]")
    parser.add_argument("--messages", type=int, help="batch queue size [1000; quick 200]")
    parser.add_argument("--batch-repeats", type=int,
                        help="batch runs per implementation [3; quick 1]")
    parser.add_argument("--daemon-messages", type=int, help="daemon messages [100; quick 20]")
    parser.add_argument("--slow-messages", type=int,
                        help="messages over the slow link [20; quick 10]")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs, spools)")
    common.add_summary_option(parser)
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (30 if quick else 200)
    args.messages = args.messages or (200 if quick else 1000)
    args.batch_repeats = args.batch_repeats or (1 if quick else 3)
    args.daemon_messages = args.daemon_messages or (20 if quick else 100)
    args.slow_messages = args.slow_messages or (10 if quick else 20)
    for name in ("rounds", "messages", "batch_repeats", "daemon_messages", "slow_messages"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(args: argparse.Namespace) -> int:
    prefix = common.resolve_prefix(args.prefix)
    tools = common.installed_tools(prefix, ["extsmail", "extsmaild"])
    interpreter = common.launcher_interpreter(tools["extsmail"])[0]
    common.require_executable(C_EXTSMAIL, C_HINT)
    common.require_executable(C_EXTSMAILD, C_HINT)
    nss_lib = common.find_nss_wrapper()

    print("# extsmail benchmark: roammail vs the C extsmail\n")
    print("```")
    for line in common.environment_lines(interpreter):
        print(line)
    version = subprocess.run([str(tools["extsmaild"]), "--version"], capture_output=True,
                             text=True, check=False).stdout.strip()
    c_version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "extsmail"],
                               capture_output=True, text=True, check=False).stdout.strip()
    print(f"roammail:       {version or '?'} ({prefix})")
    print(f"C extsmail:     {c_version or '?'} ({C_EXTSMAIL}, {C_EXTSMAILD}), "
          f"under {os.path.basename(nss_lib)}")
    mode = "quick" if args.quick else "full"
    print(f"mode:           {mode}: {args.rounds} enqueue rounds, {args.messages} batch "
          f"messages x {args.batch_repeats}, {args.daemon_messages} daemon messages, "
          f"{args.slow_messages} over the slow link")
    print("```")
    sys.stdout.flush()

    tag = common.new_tag()
    root = Path(tempfile.mkdtemp(prefix="roammail-bench-"))
    ours = c = None
    try:
        check_safe_path(root)
        ours_home, ours_spool = make_home(root / "ours")
        ours = Side(OURS, [str(tools["extsmail"])], [str(tools["extsmaild"])], ours_home,
                    ours_spool, common.base_env(tag, ours_home), root / "ours" / "log")
        c_home, c_spool = make_home(root / "c")
        nss_env = common.nss_wrapper_env(nss_lib, root / "c", c_home)
        c = Side(C, [C_EXTSMAIL], [C_EXTSMAILD], c_home, c_spool,
                 common.base_env(tag, c_home, **nss_env), root / "c" / "log")
        floor_home = root / "floor"
        floor_home.mkdir()
        floor_env = common.base_env(tag, floor_home)
        floor_argv = [interpreter, "-I", "-S", "-c", "pass"]
        for side in (ours, c):
            side.write_externals(NULL_SENDMAIL)
        message_file = root / "message.eml"
        message_file.write_bytes(test_message())

        rows = []
        others = common.OtherLoad()
        result = bench_enqueue(ours, c, floor_argv, floor_env, nss_env, message_file,
                               args.rounds)
        rows += report_enqueue(result, args.rounds)
        sys.stdout.flush()
        result = bench_batch(ours, c, args.messages, args.batch_repeats)
        rows += report_batch(result, args.messages, args.batch_repeats)
        sys.stdout.flush()
        result = bench_daemon(ours, c, root, args.daemon_messages, tag, message_file)
        rows += report_daemon(result, args.daemon_messages)
        sys.stdout.flush()
        result = bench_slow_link(ours, c, root, args.slow_messages,
                                 1 if args.quick else 2, sequential_too=not args.quick)
        rows += report_slow_link(result, args.slow_messages, 1 if args.quick else 2)

        busy = others.cpus()
        print(f"\nother processes used {busy:.2f} of {os.cpu_count()} CPUs on average "
              "during the run")
        if busy > NOISY_CPUS:
            print(f"WARNING: more than {NOISY_CPUS} CPUs of other load: the numbers are "
                  "noisy; rerun on a quiet machine before quoting them")
        print(f"\n## Summary ({mode} run)\n")
        headers = ["benchmark", "metric", "roammail", "extsmail 2.5 (C)", "python floor",
                   "ours/C", "ours/floor", "target", "met"]
        print(common.markdown_table(headers, rows))
        common.write_summary(args.summary, common.summary_rows(
            "extsmail", headers, rows, metric=["benchmark", "metric"], ours="roammail",
            peer="extsmail 2.5 (C)", ratio="ours/C", target="target", met="met",
            note=["python floor", "ours/floor"]))
        return 0
    finally:
        if ours is not None and c is not None:
            stop_daemons(ours, c)
        common.clean_up(tag, root, args.keep)


def main(argv: list[str] | None = None) -> int:
    return common.run_main("extsmail_bench", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
