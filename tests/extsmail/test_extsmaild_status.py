"""extsmaild --status: what became of each message, through real externals.

The states a message goes through (queued, retrying, sent, failed) with
the recording sendmail; the uncertain state through the real test sshd, a
far-side sendmail that keeps the whole message and then hangs, and
extsmaild's stall timeout cutting the connection; the dedup-sendmail
wrapper on the far side keeping the retry from delivering it twice; and
neomutt in front, with a shell hook that waits for its message to go out.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from extsmail.conftest import ExtHome
from extsmail.test_extsmaild_batch import batch, queue, script
from peers.require import require_program
from peers.waiting import wait_until

KEYS = ["id", "message_id", "state", "queued", "updated", "attempts", "external", "sent_at",
        "output", "error", "next_try", "failed_path", "duplicate", "uncertain_via"]
HANG = 5.0     # seconds the far-side sendmail hangs after keeping a message
STALL = "1.5"  # extsmaild's stall timeout for the try that is cut off
DEADLINE = 30.0


def message(mid: str, subject: str = "hello") -> bytes:
    return (f"From: me@example.org\nTo: you@example.org\nSubject: {subject}\n"
            f"Message-ID: {mid}\n\nHello.\n").encode()


def status(h: ExtHome, *args: str) -> subprocess.CompletedProcess:
    return h.run("extsmaild", "--status", *args)


def states(h: ExtHome, *args: str) -> list[dict]:
    res = status(h, "--json", *args)
    assert res.returncode in (0, 1, 2), res.stderr
    return json.loads(res.stdout)


def test_a_message_is_queued_then_retrying_then_sent(ext_home) -> None:
    rec = ext_home.recorder("rec")
    ext_home.write_externals(f'group {{ external rec {{ sendmail = "{rec.path}" }} }}\n')
    path = queue(ext_home, message("<one@example.org>"))
    res = status(ext_home, "<one@example.org>")
    assert res.returncode == 1
    assert res.stdout.decode() == f"{path.name}  <one@example.org>  queued since " \
        + res.stdout.decode().split("queued since ")[1]
    rec.fail_with(75)
    assert batch(ext_home).returncode == 1
    (state,) = states(ext_home, "one@example.org")  # without the brackets too
    assert list(state) == KEYS
    assert state["state"] == "retrying" and state["attempts"] == 1
    assert state["error"].startswith("via rec: exit status 75")
    assert status(ext_home, path.name[:12]).returncode == 1  # a queue ID prefix
    rec.succeed()
    assert batch(ext_home).returncode == 0
    (state,) = states(ext_home, "<one@example.org>")
    assert state["state"] == "sent" and state["external"] == "rec"
    assert state["attempts"] == 2 and not state["duplicate"]
    assert status(ext_home, "<one@example.org>").returncode == 0
    assert os.stat(ext_home.spool / "status").st_mode & 0o777 == 0o700
    assert os.stat(ext_home.spool / "status" / path.name).st_mode & 0o777 == 0o600


def test_a_message_refused_for_good_is_failed_and_unknown_ids_exit_66(ext_home) -> None:
    refuse = script(ext_home, "refuse", "cat >/dev/null; echo 'no such user' >&2; exit 67\n")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{refuse}" }} }}\n')
    queue(ext_home, message("<bad@example.org>"))
    batch(ext_home)
    res = status(ext_home, "<bad@example.org>")
    assert res.returncode == 2
    assert "failed: via r: exit status 67" in res.stdout.decode()
    (state,) = states(ext_home)
    assert state["failed_path"].startswith(str(ext_home.spool / "failed"))
    res = status(ext_home, "<nobody@example.org>")
    assert res.returncode == 66
    assert res.stderr.decode() == "extsmaild: no message <nobody@example.org> " \
                                  "(queued, sent or failed)\n"
    assert status(ext_home).returncode == 0  # the listing itself


def test_sent_states_are_kept_for_keep_sent_then_pruned(ext_home) -> None:
    rec = ext_home.recorder("rec")
    ext_home.write_externals(f'group {{ external rec {{ sendmail = "{rec.path}" }} }}\n')
    ext_home.write_conf('spool_dir = "~/.extsmail/spool"\nkeep_sent = 1h\n')
    path = queue(ext_home, message("<keep@example.org>"))
    assert batch(ext_home).returncode == 0
    assert batch(ext_home).returncode == 0  # an hour has not passed
    assert status(ext_home, "<keep@example.org>").returncode == 0
    record = ext_home.spool / "status" / path.name
    data = json.loads(record.read_text())
    data["sent_at"] -= 3601
    record.write_text(json.dumps(data))
    assert batch(ext_home).returncode == 0
    assert not record.exists()
    assert status(ext_home, "<keep@example.org>").returncode == 66


# --------------------------------------------------- uncertain, through ssh


FAR_SENDMAIL = """\
#!/bin/sh
# Keeps the whole message in its own file, then (once) hangs, as a sendmail
# that took the message but never said so.
n=$(date +%s%N)-$$
cat > {store}/$n.tmp && mv {store}/$n.tmp {store}/$n.msg
if [ -e {hang} ]; then
    rm -f {hang}
    sleep {seconds}
    : > {store}/hang-over
fi
echo "250 2.0.0 Ok: queued as $n" >&2
exit 0  # queued, whether or not anyone still hears it
"""


def far_side(h: ExtHome, sshd, dedup: bool) -> tuple[Path, Path]:
    store = h.tmp / "far" / "store"
    store.mkdir(parents=True)
    hang = h.tmp / "far" / "hang"
    sink = script(h, "far-sendmail", FAR_SENDMAIL.format(store=store, hang=hang,
                                                         seconds=HANG)[len("#!/bin/sh\n"):])
    remote_home = h.tmp / "far" / "home"
    remote_home.mkdir()
    ssh = shlex.join(sshd.ssh_command(remote_home=remote_home))
    wrapper = Path(h.installed.tool("extsmaild")).parent.parent \
        / "share" / "roammail" / "dedup-sendmail"  # type: ignore[attr-defined]
    command = f"{wrapper} {sink}" if dedup else str(sink)
    h.write_externals(f'group {{ external far {{ sendmail = "{ssh} {sshd.host_alias} '
                      f'{command} -oi" dedup = "{"yes" if dedup else "no"}" }} }}\n')
    hang.touch()
    return store, hang


def copies(store: Path) -> int:
    return len(list(store.glob("*.msg")))


@pytest.mark.slow
@pytest.mark.parametrize("dedup", [True, False], ids=["dedup", "no-dedup"])
def test_a_connection_cut_after_the_whole_message_is_uncertain(ext_home, sshd,
                                                                dedup: bool) -> None:
    store, hang = far_side(ext_home, sshd, dedup)
    queue(ext_home, message("<cut@example.org>"))
    res = batch(ext_home, "--stall-timeout", STALL)
    assert res.returncode == 1, res.stderr
    assert "it may have been sent" in res.stderr.decode()
    (state,) = states(ext_home, "<cut@example.org>")
    assert state["state"] == "uncertain", state
    assert state["uncertain_via"] == ["far"]
    assert "stalled" in state["error"]
    assert status(ext_home, "<cut@example.org>").returncode == 1
    assert copies(store) == 1  # the far side has it: the try was not a failure
    # The hung sendmail ends; the next pass sends the message again.
    assert wait_until(lambda: (store / "hang-over").exists(), DEADLINE)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    (state,) = states(ext_home, "<cut@example.org>")
    assert state["state"] == "sent"
    line = status(ext_home, "<cut@example.org>").stdout.decode()
    if dedup:
        assert copies(store) == 1  # dedup-sendmail dropped the second copy
        assert state["duplicate"] is False
        assert "was sent before; not sent again" in state["output"]
        assert " sent via far at " in line
    else:
        assert copies(store) == 2  # sent again, and flagged
        assert state["duplicate"] is True
        assert "sent, may be a duplicate" in line
        assert "may be a duplicate" in res.stderr.decode()


# ------------------------------------------------ neomutt and a shell hook


HOOK = """\
# Wait for the message neomutt kept in $1 (its `record`) to go out.
mid=$(sed -n 's/^[Mm]essage-[Ii][Dd]: *//p' "$1" | head -n 1)
deadline=$(( $(date +%s) + {deadline} ))
until extsmaild --status "$mid" >/dev/null; do
    [ $? -eq 1 ] || exit 1                       # failed (2) or unknown (66)
    [ "$(date +%s)" -lt "$deadline" ] || exit 1  # still queued: give up waiting
    sleep 1
done
echo "$mid went out"
"""


@pytest.mark.slow
def test_neomutt_sends_and_a_hook_waits_until_it_went_out(ext_home, tmp_path) -> None:
    neomutt = require_program("neomutt")
    rec = ext_home.recorder("rec")
    ext_home.write_externals(f'group {{ external rec {{ sendmail = "{rec.path}" }} }}\n')
    scratch = tmp_path / "neomutt"
    scratch.mkdir()
    sent_folder = scratch / "sent"
    muttrc = ext_home.home / ".neomuttrc"
    muttrc.write_text("\n".join([
        f'set sendmail="{ext_home.installed.tool("extsmail")}"',  # type: ignore[attr-defined]
        'set from="me@example.org"', 'set hostname="example.org"',
        f'set tmpdir="{scratch}"', f'set record="{sent_folder}"', "set mbox_type=mbox",
        f'set folder="{scratch}"', f'set spoolfile="{scratch}/inbox"',
        f'set postponed="{scratch}/postponed"', ""]))
    res = subprocess.run([neomutt, "-n", "-F", str(muttrc), "-s", "did it go out?",
                          "you@example.org"], input=b"Body.\n", capture_output=True,
                         env=ext_home.env(), timeout=60)
    assert res.returncode == 0, res.stderr
    hook = script(ext_home, "went-out", HOOK.format(deadline=int(DEADLINE)))
    waiting = subprocess.Popen([str(hook), str(sent_folder)], env=ext_home.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: waiting.poll() is not None, 2.5) is False  # still queued
        assert batch(ext_home).returncode == 0
        out, err = waiting.communicate(timeout=DEADLINE)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    assert out.decode().endswith("@example.org> went out\n")
    ((_, body),) = rec.received()
    assert b"Subject: did it go out?" in body


def test_the_daemon_says_when_it_tries_again(ext_home, daemons) -> None:
    # After a failed pass the daemon waits out its backoff: --status gives
    # the time of the next try, within that backoff (5 s first).
    rec = ext_home.recorder("rec")
    rec.fail_with(75)
    ext_home.write_externals(f'group {{ external rec {{ sendmail = "{rec.path}" }} }}\n')
    queue(ext_home, message("<later@example.org>"))
    began = int(time.time())
    daemon = daemons()
    assert wait_until(lambda: states(ext_home, "later@example.org")[0]["next_try"],
                      DEADLINE), daemon.text()
    (state,) = states(ext_home, "later@example.org")
    assert state["state"] == "retrying"
    assert began <= state["next_try"] <= int(time.time()) + 60
    assert "next try 20" in status(ext_home, "later@example.org").stdout.decode()
    assert daemon.stop() == 0
