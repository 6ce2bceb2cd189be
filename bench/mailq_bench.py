#!/usr/bin/env python3
"""mailq_bench.py: listing a large queue, `extsmail -bp` (mailq) and
`extsmaild --list`, over 10,000 queued messages.

Usage:
  python3 bench/mailq_bench.py [--prefix PREFIX] [--quick] [--messages N]
                               [--rounds N] [--summary FILE] [--keep]

The spool is written directly in the v1 format (as extsmail writes it:
sendmail arguments, then the message): a third of the subjects are RFC 2047
encoded, a tenth of the messages carry a last-error note, half use -t.
Each listing runs --rounds times; the median wall time is reported, with
the target for mailq (< 0.5 s for 10,000 messages).

Peers: the C extsmail has no listing at all ("none").  nullmailer's mailq
cannot be installed beside the system's MTA (its package conflicts with
mail-transport-agent), and the MTA's own mailq lists the system queue, not
a user's spool: neither is run.
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
from common import BenchError, median, ms  # noqa: E402

MESSAGES = 10_000
QUICK_MESSAGES = 10_000  # the target is about this size: --quick runs fewer rounds
ROUNDS = 7
QUICK_ROUNDS = 3
MAILQ_TARGET = 0.5  # s, for 10,000 messages
RUN_TIMEOUT = 120.0
NO_PEER = "none (the C extsmail has no listing)"
NULLMAILER = "not run: nullmailer conflicts with the installed MTA"


def v1(args: list[bytes], message: bytes) -> bytes:
    parts = [b"v1\n", b"%d\n" % len(args)]
    parts += [b"%d\n%s\n" % (len(arg), arg) for arg in args]
    return b"".join(parts) + message


def fill_spool(spool: Path, count: int) -> None:
    msgs = spool / "msgs"
    errors = spool / "errors"
    msgs.mkdir(parents=True, mode=0o700)
    errors.mkdir(mode=0o700)
    now = time.time()
    for n in range(count):
        subject = (b"=?UTF-8?B?w6l0w6kgcmVwb3J0?= %d" % n if n % 3 == 0
                   else b"weekly report %d" % n)
        message = (b"From: Ann Example <ann@example.org>\n"
                   b"To: bob%d@example.org,\n carol@example.org\n"
                   b"Subject: %s\nMessage-ID: <%d@example.org>\n\n" % (n, subject, n)
                   + b"Hello.\n" * 40)
        args = [b"-oi", b"-t"] if n % 2 else [b"-oi", b"-f", b"ann@example.org", b"--",
                                              b"bob%d@example.org" % n]
        name = f"{int(now) - count + n}.M{n}P1Q{n}R{n:016x}.bench"
        path = msgs / name
        path.write_bytes(v1(args, message))
        os.chmod(path, 0o600)
        os.utime(path, (now - count + n, now - count + n))
        if n % 10 == 0:
            (errors / name).write_text("2026-01-01 00:00:00 via home: exit status 255\n"
                                       "ssh: connect to host home: Network is unreachable\n")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    start = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, env=env, timeout=RUN_TIMEOUT)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {res.returncode}: "
                         f"{res.stderr.decode(errors='replace').strip()}")
    return elapsed, res.stdout


def run(args) -> int:
    prefix = common.resolve_prefix(args.prefix)
    tools = common.installed_tools(prefix, ["extsmail", "extsmaild"])
    count = args.messages or (QUICK_MESSAGES if args.quick else MESSAGES)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    tag = common.new_tag()
    root = Path(tempfile.mkdtemp(prefix="mailq-bench-"))
    try:
        home = root / "home"
        (home / ".extsmail").mkdir(parents=True)
        spool = home / ".extsmail" / "spool"
        spool.mkdir(mode=0o700)
        (home / ".extsmail" / "conf").write_text(f'spool_dir = "{spool}"\n')
        fill_spool(spool, count)
        env = common.base_env(tag, home)
        commands = {"extsmail -bp (mailq)": [str(tools["extsmail"]), "-bp"],
                    "extsmaild --list": [str(tools["extsmaild"]), "--list"]}
        results: dict[str, list[float]] = {name: [] for name in commands}
        timed(commands["extsmail -bp (mailq)"], env)  # warm the page cache
        for _ in range(rounds):
            for name, argv in commands.items():
                elapsed, out = timed(argv, env)
                results[name].append(elapsed)
        listed = out.decode().count(" file ")
        if listed != count:
            raise BenchError(f"--list showed {listed} messages, not {count}")
        print(f"{count} queued messages, {rounds} rounds (median wall time)\n")
        headers = ["metric", "ours", "C extsmail", "nullmailer", "target", "met"]
        rows = []
        for name, values in results.items():
            value = median(values)
            target = f"< {ms(MAILQ_TARGET)}" if "mailq" in name else ""
            met = ("yes" if value < MAILQ_TARGET else "no") if target else ""
            rows.append([f"{name}, {count} msgs", ms(value), NO_PEER, NULLMAILER, target, met])
        print(common.markdown_table(headers, rows))
        common.write_summary(args.summary, [
            common.summary_row("mailq", row[0], row[1], "none", "", row[4], row[5],
                               "the C extsmail has no listing; nullmailer not installable")
            for row in rows])
        return 0
    finally:
        common.clean_up(tag, root, args.keep)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", help="where roammail is installed")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--messages", type=int, help=f"queue size [default: {MESSAGES}]")
    parser.add_argument("--rounds", type=int, help=f"runs of each [default: {ROUNDS}]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    common.add_summary_option(parser)
    return common.run_main("mailq_bench", run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
