"""Duplicates after N deliveries cut off mid-way, with and without dedup-sendmail.

Each message goes through the real test sshd to a far-side sendmail that
keeps the whole message and then hangs, the first time it sees it, until
extsmaild's stall timeout cuts the connection: every first try is
uncertain.  A second pass sends every message again.  Printed: the
copies the far side kept, and so the duplicates, with the dedup-sendmail
wrapper (dedup = "yes") and without it.

    .venv-test/bin/python3 bench/uncertain_bench.py [--prefix P] [--quick] [N]
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import import_test_peer  # noqa: E402

SshServer = import_test_peer("peers.sshd").SshServer

FAR = """#!/bin/sh
n=$(date +%s%N)-$$
cat > {store}/$n.tmp && mv {store}/$n.tmp {store}/$n.msg
mid=$(sed -n 's/^Message-ID: <\\(.*\\)>$/\\1/p' {store}/$n.msg)
if [ ! -e {seen}/"$mid" ]; then : > {seen}/"$mid"; sleep 1; fi
exit 0
"""


def run(prefix: Path, sshd: SshServer, count: int, dedup: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix="uncertain-"))
    home, store, seen = root / "home", root / "store", root / "seen"
    for d in (home / ".extsmail", store, seen, root / "far"):
        d.mkdir(parents=True)
    (home / ".extsmail" / "spool").mkdir(mode=0o700)
    (home / ".extsmail" / "conf").write_text('spool_dir = "~/.extsmail/spool"\n')
    far = root / "far-sendmail"
    far.write_text(FAR.format(store=store, seen=seen))
    far.chmod(0o755)
    wrapper = prefix / "share" / "roammail" / "dedup-sendmail"
    ssh = shlex.join(sshd.ssh_command(remote_home=root / "far"))
    command = f"{wrapper} {far}" if dedup else str(far)
    (home / ".extsmail" / "externals").write_text(
        f'group {{ external far {{ sendmail = "{ssh} {sshd.host_alias} {command}" '
        f'dedup = "{"yes" if dedup else "no"}" }} }}\n')
    env = dict(os.environ, HOME=str(home))
    for i in range(count):
        msg = f"From: a@example.org\nTo: b@example.org\nMessage-ID: <m{i}@example.org>\n\nx\n"
        subprocess.run([prefix / "bin" / "extsmail", "b@example.org"], input=msg.encode(),
                       env=env, check=True, timeout=30)
    daemon = prefix / "bin" / "extsmaild"
    # A cut external is not tried again in the same pass: one cut a pass,
    # and each pass first sends the message cut in the one before again.
    for _ in range(count + 5):
        done = subprocess.run([daemon, "-m", "batch", "-j", "1", "--stall-timeout", "0.5"],
                              env=env, capture_output=True, timeout=60)
        if done.returncode == 0:
            break
    states = json.loads(subprocess.run([daemon, "--status", "--json"], env=env,
                                       capture_output=True, timeout=30).stdout)
    cut = sum(bool(s["uncertain_via"]) for s in states)
    copies = len(list(store.glob("*.msg")))
    return {"dedup": dedup, "messages": count, "cut after the whole message": cut,
            "sent": sum(s["state"] == "sent" for s in states),
            "flagged duplicate": sum(bool(s["duplicate"]) for s in states),
            "copies kept": copies, "duplicates": copies - count}


def main() -> int:
    import argparse

    from common import (
        add_summary_option,
        markdown_table,
        resolve_prefix,
        summary_row,
        write_summary,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("count", nargs="?", type=int, default=50,
                        help="deliveries cut off mid-way (default 50)")
    parser.add_argument("--prefix", help="where roammail is installed (./install.sh --prefix)")
    parser.add_argument("--quick", action="store_true", help="10 deliveries, not 50")
    add_summary_option(parser)
    args = parser.parse_args()
    count = 10 if args.quick and args.count == 50 else args.count
    prefix = resolve_prefix(args.prefix)
    results = {}
    with SshServer.start() as sshd:
        for dedup in (True, False):
            results[dedup] = run(prefix, sshd, count, dedup)
            print(json.dumps(results[dedup]))
    rows, summary = [], []
    for dedup, name in ((True, "with dedup-sendmail"), (False, "without")):
        r = results[dedup]
        rows.append([name, *(str(r.get(key)) for key in
                             ("sent", "flagged duplicate", "copies kept", "duplicates"))])
    print(markdown_table(["far side", "messages sent", "flagged duplicate", "copies kept",
                          "duplicates"], rows))
    ours, peer = results[True].get("duplicates"), results[False].get("duplicates")
    summary.append(summary_row("uncertain", f"duplicates after {count} cut deliveries",
                               str(ours), str(peer), f"{ours} vs {peer}", "0",
                               "yes" if ours == 0 else "no", note="peer: without the wrapper"))
    write_summary(args.summary, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
