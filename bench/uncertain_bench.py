"""Duplicates after N deliveries cut off mid-way, with and without dedup-sendmail.

Each message goes through the real test sshd to a far-side sendmail that
keeps the whole message and then hangs, the first time it sees it, until
extsmaild's stall timeout cuts the connection: every first try is
uncertain.  A second pass sends every message again.  Printed: the
copies the far side kept, and so the duplicates, with the dedup-sendmail
wrapper (dedup = "yes") and without it.

    ROAMMAIL_PREFIX=... PYTHONPATH=tests:lib python3 bench/uncertain_bench.py [N]
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from peers.sshd import SshServer

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


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    prefix = Path(os.environ["ROAMMAIL_PREFIX"])
    with SshServer.start() as sshd:
        for dedup in (True, False):
            print(json.dumps(run(prefix, sshd, count, dedup)))


if __name__ == "__main__":
    main()
