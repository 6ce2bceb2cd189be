#!/usr/bin/env python3
"""offline_bench.py: half an hour offline, as cron and the systemd timer see it.

    python3 bench/offline_bench.py [--prefix P] [--quick] [--runs N]

A laptop offline for 30 minutes runs its mail fetch every 5 minutes: 6
runs (--runs N).  "Offline" is real: every run is inside a network
namespace of its own that has only a loopback, so the server
(192.0.2.1, TEST-NET-1) has no route, as on a laptop with no Wi-Fi; no
packet leaves the machine.  For each contender, in one run and in turn:

  - syncmail as the shipped syncmail.service runs it (its ExecStart line,
    read from systemd/syncmail.service: `syncmail -q --offline-ok`),
    with the installed mail-on-failure hook as its post-pull hook;
  - syncmail -q, the same without --offline-ok, as a unit or crontab
    line written before the option existed;
  - the blog's rsync cron line (rsync ... --remove-source-files
    host:Maildir/new/ ~/Maildir/new/), the usual do-it-yourself fetch.

it counts what reaches the user: lines of output (cron mails a run's
output: a run with output is one mail), the runs systemd would mark
failed (exit status neither 0 nor in the unit's SuccessExitStatus=), and
the notices mail-on-failure delivered (into a maildir, through
MAIL_ON_FAILURE_MAILDIR).  Targets: 0 lines, 0 failed runs, 0 mails for
the shipped unit.  Needs root (ip netns) and rsync for the peer.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    BenchError,
    add_summary_option,
    environment_lines,
    installed_tools,
    markdown_table,
    resolve_prefix,
    run_main,
    summary_row,
    write_summary,
)

BENCH = "offline"
REPO = HERE.parent
UNIT = REPO / "systemd" / "syncmail.service"
SERVER = "192.0.2.1"  # TEST-NET-1: no route to it from the namespace
RUN_TIMEOUT = 60.0    # s for one run (an offline run fails at once)
RSYNC = ["rsync", "--ignore-existing", "--remove-source-files", "--partial-dir=tmp",
         "--safe-links", "--one-file-system", "--recursive", "--times"]


@dataclass
class Tally:
    name: str
    lines: int = 0
    runs_with_output: int = 0
    failed: int = 0
    notices: int = 0

    @property
    def mails(self) -> int:
        """What lands in the user's mailbox: cron's mail of each run's
        output, and the hook's notices."""
        return self.runs_with_output + self.notices


def unit_command(bindir: Path) -> tuple[list[str], set[int]]:
    """The shipped unit's ExecStart (its words) and SuccessExitStatus."""
    text = UNIT.read_text()
    start = re.search(r"^ExecStart=(.*)$", text, re.M)
    if not start:
        raise BenchError(f"{UNIT}: no ExecStart= line")
    words = start.group(1).replace("@BINDIR@", str(bindir)).split()
    success = {0}
    for match in re.finditer(r"^SuccessExitStatus=(.*)$", text, re.M):
        success.update(int(w) for w in match.group(1).split() if w.isdigit())
    return words, success


def make_netns() -> str:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise BenchError("needs root and ip(8): every run is in a network namespace")
    name = f"roammail-bench-offline-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                          timeout=30)
    if made.returncode != 0:
        raise BenchError(f"cannot make a network namespace: {made.stderr.strip()}")
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
    return name


def maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def run_offline(netns: str, argv: list[str], env: dict[str, str], success: set[int],
                tally: Tally) -> None:
    result = subprocess.run(["ip", "netns", "exec", netns, *argv], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
    output = result.stdout + result.stderr
    lines = len(output.splitlines())
    tally.lines += lines
    tally.runs_with_output += 1 if lines else 0
    tally.failed += 0 if result.returncode in success else 1


CONTENDERS = ["syncmail.service (shipped)", "syncmail -q (no --offline-ok)", "rsync cron line"]


def command(name: str, home: Path, bindir: Path) -> tuple[list[str], set[int]]:
    """What contender `name` runs in `home`, and the exit statuses that are
    not a failed unit."""
    hooks = str(home / "hooks")
    if name == CONTENDERS[0]:
        argv, success = unit_command(bindir)
        return [*argv, "--hooks", hooks], success
    if name == CONTENDERS[1]:
        return [str(bindir / "syncmail"), "-q", "--hooks", hooks], {0}
    return [*RSYNC, f"{SERVER}:Maildir/new/", f"{home / 'Maildir' / 'new'}/"], {0}


def run(args) -> int:
    prefix = resolve_prefix(args.prefix)
    tools = installed_tools(prefix, ["syncmail"])
    bindir = tools["syncmail"].parent
    hook = prefix / "share" / "roammail" / "hooks" / "mail-on-failure"
    if not hook.exists():
        raise BenchError(f"{hook} is missing: install roammail under {prefix}")
    if shutil.which("rsync") is None:
        raise BenchError("rsync is missing (the peer): apt-get install rsync")
    runs = args.runs or 6
    root = Path(tempfile.mkdtemp(prefix="roammail-offline-bench."))
    netns = make_netns()
    tallies: list[Tally] = []
    try:
        for name in CONTENDERS:
            home = root / re.sub(r"\W+", "-", name).strip("-")
            argv, success = command(name, home, bindir)
            (home / ".ssh").mkdir(parents=True)
            local = maildir(home / "Maildir")
            notices = maildir(home / "Notices")
            hooks = home / "hooks" / "post-pull.d"
            hooks.mkdir(parents=True)
            (hooks / "mail-on-failure").symlink_to(hook)
            config = home / ".config" / "roammail"
            config.mkdir(parents=True)
            (config / "syncmail.conf").write_text(
                f'source laptop {{\n    host = "{SERVER}"\n    remote = "Maildir"\n'
                f'    local = "{local}"\n}}\n')
            env = {"HOME": str(home), "PATH": f"{bindir}:/usr/bin:/bin", "LANG": "C.UTF-8",
                   "USER": os.environ.get("USER", "root"),
                   "XDG_CONFIG_HOME": str(home / ".config"),
                   "XDG_STATE_HOME": str(home / ".local" / "state"),
                   "MAIL_ON_FAILURE_MAILDIR": str(notices)}
            tally = Tally(name)
            for _ in range(runs):
                run_offline(netns, argv, env, success, tally)
            tally.notices = len(os.listdir(notices / "new"))
            tallies.append(tally)
    finally:
        subprocess.run(["ip", "netns", "del", netns], timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    print("\n".join(environment_lines()))
    print(f"\n{runs} runs offline (every 5 minutes for {runs * 5} minutes), "
          f"server {SERVER} unrouted:\n")
    headers = ["contender", "lines of output", "runs with output (cron mails)",
               "failed unit runs", "mail-on-failure notices", "mails in all"]
    print(markdown_table(headers, [[t.name, str(t.lines), str(t.runs_with_output),
                                    str(t.failed), str(t.notices), str(t.mails)]
                                   for t in tallies]))
    ours, before, peer = tallies
    rows = [
        ["lines of output, 30 min offline", ours.lines, peer.lines, "0"],
        ["failed unit runs, 30 min offline", ours.failed, peer.failed, "0"],
        ["mails to the user, 30 min offline", ours.mails, peer.mails, "0"],
    ]
    summary = []
    table = []
    for metric, o, p, target in rows:
        met = "yes" if o == int(target) else "no"
        cells = [metric, str(o), str(p), f"{o} vs {p}", target, met]
        table.append(cells)
        summary.append(summary_row(BENCH, metric, str(o), str(p), f"{o} vs {p}", target, met,
                                   note=f"peer: {peer.name}"))
    print("\nsummary (ours: the shipped syncmail.service; peer: the rsync cron line)\n")
    print(markdown_table(["metric", "ours", "peer", "ours vs peer", "target", "met"], table))
    print(f"\nwithout --offline-ok: {before.lines} lines, {before.failed} failed runs, "
          f"{before.mails} mails")
    write_summary(args.summary, summary)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prefix", help="where roammail is installed (./install.sh --prefix)")
    parser.add_argument("--quick", action="store_true", help="the same: it takes seconds")
    parser.add_argument("--runs", type=int, default=0, help="runs offline (default 6)")
    add_summary_option(parser)
    return run_main("offline_bench", run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
