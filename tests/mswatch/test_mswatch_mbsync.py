"""mswatch end to end: real mbsync between two maildirs, one watched
locally and one through the test sshd (`ssh ... inputkill watch-maildirs`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from mswatch_helpers import START_TIMEOUT, starts, wait_starts

from peers.maildirs import add_message, make_maildir
from peers.require import require_program

pytestmark = pytest.mark.slow

BASE_DELAY = 0.5


def mbsyncrc(path: Path, a: Path, b: Path, state: Path) -> Path:
    path.write_text(f"""\
MaildirStore a
Inbox {a}
SubFolders Maildir++

MaildirStore b
Inbox {b}
SubFolders Maildir++

Channel ab
Far :a:
Near :b:
Patterns *
Create Both
SyncState {state}/
""")
    return path


def quote(words) -> str:
    return " ".join('"' + str(w).replace("\\", "\\\\").replace('"', '\\"') + '"' for w in words)


@pytest.fixture
def setup(tmp_path: Path, sshd, installed, recorder):
    require_program("mbsync")
    a = make_maildir(tmp_path / "A")
    b = make_maildir(tmp_path / "B")
    (tmp_path / "state").mkdir()
    rc = mbsyncrc(tmp_path / "mbsyncrc", a, b, tmp_path / "state")
    script, log = recorder(run=True)
    # The far side's watcher goes through a gate: while `down` exists the
    # "network" is out and the ssh command fails at once.
    gate = tmp_path / "netgate"
    down = tmp_path / "down"
    gate.write_text(f'#!/bin/sh\nif [ -e {down} ]; then echo "netgate: down" >&2; '
                    f'exit 255; fi\nexec "$@"\n')
    gate.chmod(0o755)
    ssh = [str(gate), *sshd.ssh_command(remote_path=[installed.bindir]), sshd.host_alias,
           "inputkill", "watch-maildirs", "-m", str(b)]
    text = f"""\
# mswatch end-to-end test
base_delay {BASE_DELAY}
inter_delay 1s
max_delay 4
sync {quote([script, "mbsync", "-q", "-c", rc])}
mailbox_prefix ab :
store local {{ watch watch-maildirs -m {quote([a])} }}
store remote
{{
    watch {quote(ssh)}
}}
"""
    return dict(a=a, b=b, text=text, log=log, down=down)


def names(maildir: Path) -> set[str]:
    """Message-IDs in INBOX new/ and cur/ of maildir."""
    found = set()
    for sub in ("new", "cur"):
        for entry in (maildir / sub).iterdir():
            for line in entry.read_bytes().splitlines():
                if line.lower().startswith(b"subject:"):
                    found.add(line.split(b":", 1)[1].strip().decode())
                    break
    return found


def wait_for_subject(maildir: Path, subject: str, timeout: float) -> float:
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if subject in names(maildir):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{subject!r} not in {maildir} after {timeout} s: {names(maildir)}")


def test_delivery_on_either_side_is_synced(setup, mswatch_run) -> None:
    run = mswatch_run(setup["text"])
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    add_message(setup["a"], subject="from-a")
    took = wait_for_subject(setup["b"], "from-a", BASE_DELAY + 2)
    add_message(setup["b"], subject="from-b")
    took_b = wait_for_subject(setup["a"], "from-b", BASE_DELAY + 2)
    assert run.stop() == 0
    print(f"local->remote {took:.2f} s, remote->local {took_b:.2f} s")


def test_flood_is_batched(setup, mswatch_run) -> None:
    run = mswatch_run(setup["text"])
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    before = len(starts(setup["log"]))
    t0 = time.monotonic()
    for i in range(200):
        add_message(setup["a"], subject=f"flood-{i}")
        time.sleep(max(0.0, t0 + (i + 1) * 0.01 - time.monotonic()))
    wait_for_subject(setup["b"], "flood-199", 10)
    time.sleep(3)  # let the echoes (mbsync writing into B) settle
    syncs = len(starts(setup["log"])) - before
    assert len(names(setup["b"])) == 200
    assert 1 <= syncs <= 15, f"{syncs} syncs for 200 deliveries"
    assert run.stop() == 0


def _ssh_client_pids(parent: int) -> list[int]:
    """Pids of the ssh clients among the children of `parent`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == parent and cmd and os.path.basename(cmd[0]) == b"ssh":
            found.append(int(entry))
    return found


def test_cut_link_restarts_watcher_and_misses_nothing(setup, mswatch_run) -> None:
    run = mswatch_run(setup["text"])
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    clients = _ssh_client_pids(run.proc.pid)
    assert len(clients) == 1, clients
    setup["down"].touch()  # the network goes away...
    os.kill(clients[0], signal.SIGKILL)  # ...and takes the ssh connection with it
    run.wait_log("store remote: watcher ended")
    add_message(setup["b"], subject="during-outage")  # nobody watches B now
    time.sleep(2.5)
    assert "during-outage" not in names(setup["a"])
    full_before = run.text().count("synced all mailboxes")
    setup["down"].unlink()  # back: the next restart works
    run.wait_log("synced all mailboxes", count=full_before + 1, timeout=START_TIMEOUT)
    wait_for_subject(setup["a"], "during-outage", 5)
    assert len(_ssh_client_pids(run.proc.pid)) == 1
    # Still watching after the restart.
    add_message(setup["b"], subject="after-outage")
    wait_for_subject(setup["a"], "after-outage", BASE_DELAY + 2)
    assert run.stop() == 0


def test_failing_sync_backs_off_then_succeeds(tmp_path, mswatch_run, recorder) -> None:
    script, log = recorder(fail_first=3)
    a = make_maildir(tmp_path / "A")
    b = make_maildir(tmp_path / "B")
    run = mswatch_run(f"""\
base_delay 0
max_delay 4
sync {script}
store a {{ watch watch-maildirs -m {a} }}
store b {{ watch watch-maildirs -m {b} }}
""")
    found = wait_starts(log, 4, timeout=20)
    run.wait_log("synced all mailboxes in")
    gaps = [found[i + 1][0] - found[i][0] for i in range(3)]
    # Backoff: 1 s, 2 s, then 4 s (max_delay 4 caps the next doubling).
    for gap, want in zip(gaps, (1, 2, 4)):
        assert want - 0.1 <= gap <= want + 1.0, gaps
    assert all(args == [""] for _, args in found)
    assert run.stop() == 0
