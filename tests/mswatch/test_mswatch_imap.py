"""mswatch end to end with an IMAP server: watch-imap on a real Dovecot,
real mbsync (an IMAPStore on the same Dovecot) and watch-maildirs on the
laptop's maildir."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mswatch_helpers import START_TIMEOUT
from test_mswatch_mbsync import names, quote, wait_for_subject

from peers.maildirs import add_message, make_maildir, render_message
from peers.require import require_program

pytestmark = pytest.mark.slow

BASE_DELAY = 1.0


@pytest.fixture
def imap_setup(tmp_path: Path, dovecot, installed):
    mbsync = require_program("mbsync")
    dovecot.create_folder("Lists.foo")
    dovecot.create_folder("Caf&AOk-")
    local = make_maildir(tmp_path / "local", ["Lists.foo"])
    rc = tmp_path / "mbsyncrc"
    rc.write_text(dovecot.mbsync_account("t") + dovecot.mbsync_channel("t", local))
    text = f"""\
base_delay {BASE_DELAY}
inter_delay 1s
sync {quote([mbsync, "-q", "-c", rc])}
mailbox_prefix t :
store local {{ watch watch-maildirs -m {quote([local])} --delimiter=/ }}
store server {{ watch watch-imap --mbsyncrc {quote([rc])} -a t }}
"""
    return dict(local=local, text=text)


def test_server_delivery_and_local_change_are_synced(imap_setup, dovecot, mswatch_run) -> None:
    run = mswatch_run(imap_setup["text"])
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    local = imap_setup["local"]

    dovecot.deliver("INBOX", render_message(b"hi\n", subject="on-server"))
    took = wait_for_subject(local, "on-server", BASE_DELAY + 2)

    dovecot.deliver("Lists.foo", render_message(b"hi\n", subject="in-a-folder"))
    took_folder = wait_for_subject(local / ".Lists.foo", "in-a-folder", BASE_DELAY + 2)

    # A name in modified UTF-7: printed as this mbsync names it, synced by it.
    dovecot.deliver("Caf&AOk-", render_message(b"hi\n", subject="accented"))
    wait_for_subject(local / ".Caf&AOk-", "accented", BASE_DELAY + 2)

    add_message(local, subject="from-laptop")
    deadline = time.monotonic() + BASE_DELAY + 2
    while "from-laptop" not in names(dovecot.folder_path("INBOX")):
        assert time.monotonic() < deadline, "the laptop's message never reached the server"
        time.sleep(0.05)
    # A folder of the laptop's Maildir++ tree, printed as mbsync names it.
    add_message(local / ".Lists.foo", subject="filed-on-laptop")
    deadline = time.monotonic() + BASE_DELAY + 2
    while "filed-on-laptop" not in names(dovecot.folder_path("Lists.foo")):
        assert time.monotonic() < deadline, f"not on the server:\n{run.text()}"
        time.sleep(0.05)
    assert "failed" not in run.text()
    assert run.stop() == 0
    print(f"server->laptop {took:.2f} s (INBOX), {took_folder:.2f} s (Lists/foo)")
