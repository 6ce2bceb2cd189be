#!/usr/bin/env python3
"""syncmail_bench.py: syncmail vs the blog's rsync command, over ssh to 127.0.0.1.

    python3 bench/syncmail_bench.py [--prefix P] [--quick] [--messages N]
                                    [--rounds N] [--dir DIR] [--link MS,MBIT]
                                    [--baseline P2] [--empty-runs N]

Starts a private sshd (tests/peers/sshd.py's SshServer), fills a "server"
maildir with N messages of 4 KB (10,000; --quick: 1,000) and moves them
to an empty local maildir with, in one run and in turn:
  - syncmail (installed under the prefix; fsyncs every message),
  - rsync --ignore-existing --remove-source-files --partial-dir=tmp
    --safe-links --one-file-system --recursive --times host:Maildir/new/ new/
    (the blog's command: no fsync),
  - the same with --fsync (rsync >= 3.2.3).
--rounds N times each (1; --quick: 3).
Then, once every contender has moved its messages, runs that find
nothing new: --empty-runs N of them (5) per contender and round, the
contenders in turn.  Prints median wall times and ratios.  Targets:
faster than rsync --fsync; within 1.2x of plain rsync moving everything,
and no slower than plain rsync when nothing is new.

--baseline P2 runs the syncmail installed under P2 too, in turn with the
others (right after syncmail), to compare two versions in one run.

--dir DIR puts both maildirs (and the sshd's files) on DIR's file system
instead of $TMPDIR's.  --link MS,MBIT sends every ssh connection through
slowlink.py (as ProxyCommand): MS milliseconds each way, MBIT megabits a
second, like a laptop's hotel or phone link.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    BenchError,
    add_summary_option,
    environment_lines,
    import_test_peer,
    installed_tools,
    markdown_table,
    median,
    resolve_prefix,
    slow_ssh,
    summary_row,
    write_summary,
)

RSYNC_ARGS = ["--ignore-existing", "--remove-source-files", "--partial-dir=tmp",
              "--safe-links", "--one-file-system", "--recursive", "--times"]
MESSAGE_BYTES = 4096


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def fill(server: Path, count: int) -> None:
    body = (b"x" * 75 + b"\n") * (MESSAGE_BYTES // 76 + 1)
    for i in range(count):
        head = f"From: a{i}@example.org\nSubject: {i}\n\n".encode()
        data = (head + body)[:MESSAGE_BYTES]
        name = f"{1_700_000_000 + i}.M{i}P1Q{i}.bench.host"
        (server / "new" / name).write_bytes(data)
        os.utime(server / "new" / name, (1_700_000_000 + i,) * 2)


def file_system_of(path: Path) -> str:
    """"ext4 without a journal, mounted with discard" and the like, for the
    report: the file system decides much of what creating and removing
    10,000 files costs."""
    fields = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--target",
                             str(path)], capture_output=True, text=True).stdout.split()
    if len(fields) < 3:
        return "an unknown file system"
    kind, source, options = fields[:3]
    if kind.startswith("ext"):
        device = os.path.basename(os.path.realpath(source))
        journals = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
        has = any(name.startswith(device + "-") for name in journals)
        kind += " with a journal" if has else " without a journal"
    if "discard" in options.split(","):
        kind += ", mounted with discard"
    return kind


def rsync_supports_fsync(rsync: str) -> bool:
    out = subprocess.run([rsync, "--help"], capture_output=True, text=True).stdout
    return "--fsync" in out


def timed(argv: list[str], env: dict, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise BenchError(f"{argv[0]} failed ({res.returncode}): {res.stderr.decode()[-400:]}")
    return elapsed


# (contender, what): the highest ratio syncmail / contender that meets the target.
TARGETS = {("rsync", "move all"): 1.2, ("rsync", "nothing new"): 1.0,
           ("rsync --fsync", "move all"): 1.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--rounds", type=int,
                        help="rounds, each moving everything once per contender [1; --quick: 3]")
    parser.add_argument("--dir", help="where the maildirs are (default: $TMPDIR)")
    parser.add_argument("--link", help="MS,MBIT: a slow link (slowlink.py)")
    parser.add_argument("--baseline", help="another prefix whose syncmail runs too")
    parser.add_argument("--empty-runs", type=int, default=5,
                        help="runs finding nothing new, per contender and round [5]")
    add_summary_option(parser)
    opts = parser.parse_args()
    link = None
    if opts.link:
        try:
            delay_ms, mbit = (float(x) for x in opts.link.split(","))
        except ValueError:
            raise BenchError(f"--link wants MS,MBIT (25,20), not {opts.link!r}") from None
        link = (delay_ms, mbit)
    count = opts.messages or (1000 if opts.quick else 10_000)
    # A quick run is short: one sample each could not tell 10% apart.
    opts.rounds = opts.rounds or (3 if opts.quick else 1)
    prefix = resolve_prefix(opts.prefix)
    syncmail = str(installed_tools(prefix, ["syncmail"])["syncmail"])
    baseline = None
    if opts.baseline:
        baseline = str(installed_tools(resolve_prefix(opts.baseline), ["syncmail"])["syncmail"])
    rsync = shutil.which("rsync")
    if rsync is None:
        raise BenchError("rsync is not installed (apt-get install rsync)")
    with_fsync = rsync_supports_fsync(rsync)

    SshServer = import_test_peer("peers.sshd").SshServer

    work = Path(tempfile.mkdtemp(prefix="syncmail-bench-", dir=opts.dir))
    server = SshServer.start(work / "sshd")
    try:
        env = server.client_env(home=work / "home")
        (work / "home").mkdir()
        env["XDG_STATE_HOME"] = str(work / "home" / "state")
        env["XDG_CONFIG_HOME"] = str(work / "home" / "config")
        ssh_wrapper = str(server.client_bin / "ssh")
        if link is not None:
            ssh_wrapper = str(slow_ssh(server, work / "link-bin", *link))
            env["PATH"] = f"{work / 'link-bin'}{os.pathsep}{env['PATH']}"
        contenders = {
            "syncmail": lambda remote, local: [syncmail, f"testhost:{remote}", str(local)],
        }
        if baseline is not None:
            contenders["syncmail baseline"] = lambda remote, local: [
                baseline, f"testhost:{remote}", str(local)]
        contenders["rsync"] = lambda remote, local: [rsync, "-e", ssh_wrapper, *RSYNC_ARGS,
                                                     f"testhost:{remote}/new/", f"{local}/new/"]
        if with_fsync:
            contenders["rsync --fsync"] = lambda remote, local: [
                rsync, "-e", ssh_wrapper, "--fsync", *RSYNC_ARGS,
                f"testhost:{remote}/new/", f"{local}/new/"]
        full: dict[str, list[float]] = {k: [] for k in contenders}
        empty: dict[str, list[float]] = {k: [] for k in contenders}
        for rnd in range(opts.rounds):
            dirs = {}
            for name, argv_of in contenders.items():
                tag = name.replace(" ", "").replace("-", "")
                remote = make_maildir(work / f"server-{tag}-{rnd}")
                local = make_maildir(work / f"local-{tag}-{rnd}")
                dirs[name] = (remote, local)
                fill(remote, count)
                subprocess.run(["sync"], check=False)
                full[name].append(timed(argv_of(remote, local), env))
                moved = len(os.listdir(local / "new"))
                left = len(os.listdir(remote / "new"))
                if moved != count or left != 0:
                    raise BenchError(f"{name}: moved {moved} of {count}, left {left}")
            # A run that finds nothing new is mostly the ssh login, whose
            # time varies by tens of ms from one login to the next: several
            # runs a round, the contenders in turn, each on its own maildirs
            # (the messages just moved are still in its local one).
            subprocess.run(["sync"], check=False)
            for _ in range(opts.empty_runs):
                for name, argv_of in contenders.items():
                    empty[name].append(timed(argv_of(*dirs[name]), env))
            for remote, local in dirs.values():
                shutil.rmtree(remote)
                shutil.rmtree(local)
        print("\n".join(environment_lines()))
        where = f"maildirs on {file_system_of(work)}"
        over = (f", through a {link[0]:g} ms / {link[1]:g} Mbit/s link" if link else "")
        print(f"\n{count} messages of {MESSAGE_BYTES} bytes over ssh to 127.0.0.1{over}, "
              f"{where}, {opts.rounds} round(s), median wall time "
              f"(nothing new: {opts.rounds * opts.empty_runs} runs each)\n")
        if baseline is not None:
            print(f"syncmail baseline: {baseline}\n")
        base = median(full["syncmail"])
        base_empty = median(empty["syncmail"])
        rows = []
        for name in contenders:
            f, e = median(full[name]), median(empty[name])
            rows.append([name, f"{f:.2f} s", f"{count / f:.0f}/s", f"{base / f:.2f}",
                         f"{e * 1000:.0f} ms", f"{base_empty / e:.2f}"])
        print(markdown_table(["tool", "move all", "messages/s", "syncmail / this",
                              "nothing new", "syncmail / this"], rows))
        print("\ntargets (syncmail / this): " + "; ".join(
            f"{what} vs {name} <= {limit:.2f}" for (name, what), limit in TARGETS.items()))
        summary = []
        for row in rows[1:]:
            for what, cells in (("move all", (row[1], row[3])), ("nothing new", (row[4], row[5]))):
                limit = TARGETS.get((row[0], what))
                summary.append(summary_row(
                    "syncmail", f"{what} {count if what == 'move all' else ''}".rstrip()
                    + f", vs {row[0]}", rows[0][1 if what == "move all" else 4], cells[0],
                    cells[1], "" if limit is None else f"<= {limit:.2f}",
                    "" if limit is None else ("yes" if float(cells[1]) <= limit else "no")))
        write_summary(opts.summary, summary)
        if not with_fsync:
            print("\nrsync has no --fsync (needs >= 3.2.3): that row is missing")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"syncmail_bench: {exc}", file=sys.stderr)
        sys.exit(1)
