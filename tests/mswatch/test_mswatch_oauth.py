"""mswatch end to end with OAuth 2.0: watch-imap and real mbsync both log in
with XOAUTH2 to the same Dovecot, whose oauth2 passdb asks a token
introspection endpoint served by the test (peers.oauth).  mbsync does it
through Cyrus SASL's XOAUTH2 plugin (libsasl2-modules-kdexoauth2), with
the token from its PassCmd; watch-imap takes the host, port, user and
AuthMechs from the same ~/.mbsyncrc section and its own token helper from
watch-imap.conf, so the endpoint can tell their tokens apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from mswatch_helpers import START_TIMEOUT
from test_mswatch_mbsync import quote, wait_for_subject

from peers.maildirs import make_maildir, render_message
from peers.oauth import Introspection, helper_runs, token_helper
from peers.require import require_file, require_program

pytestmark = pytest.mark.slow

BASE_DELAY = 1.0
# mbsync's first login and full sync, and watch-imap's, are done by
# START_TIMEOUT; a delivery then needs a notification, base_delay and one
# mbsync run of a folder: well under a second here, 5 s on a loaded machine.
DELIVERY_TIMEOUT = BASE_DELAY + 5.0
WATCH_TOKEN, SYNC_TOKEN = "tok-watch-imap", "tok-mbsync"
KDEXOAUTH2 = ("/usr/lib/*/sasl2/libkdexoauth2.so*", "/usr/lib/sasl2/libkdexoauth2.so*",
              "/usr/lib64/sasl2/libkdexoauth2.so*")


def mbsync_quote(text: str) -> str:
    """A double-quoted mbsync string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def introspection():
    with Introspection("tester") as endpoint:
        yield endpoint


@pytest.fixture
def oauth_setup(tmp_path: Path, home: Path, dovecot_factory, introspection, installed):
    require_program("mbsync")
    require_file(KDEXOAUTH2, "libsasl2-modules-kdexoauth2 (XOAUTH2 for mbsync)")
    server = dovecot_factory(oauth2_introspection_url=introspection.url)
    server.create_folder("Lists.foo")
    introspection.good.update({WATCH_TOKEN, SYNC_TOKEN})
    watch_tokens, sync_tokens = tmp_path / "watch-tokens", tmp_path / "sync-tokens"
    watch_tokens.mkdir()
    sync_tokens.mkdir()
    local = make_maildir(tmp_path / "local", ["Lists.foo"])
    # No Pass: AuthMechs XOAUTH2 alone, and the PassCmd prints a token.
    (home / ".mbsyncrc").write_text(f"""\
IMAPAccount t
Host {server.host}
Port {server.imaps_port}
User {server.user}
PassCmd {mbsync_quote(token_helper(sync_tokens, [SYNC_TOKEN]))}
AuthMechs XOAUTH2
SSLType IMAPS
SystemCertificates no
CertificateFile {server.ca_file}

""" + server.mbsync_channel("t", local))
    conf = home / ".config" / "roammail" / "watch-imap.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"account t {{\n    mbsync = \"t\"\n"
                    f"    pass_cmd = {mbsync_quote(token_helper(watch_tokens, [WATCH_TOKEN]))}\n"
                    f"}}\n")
    text = f"""\
base_delay {BASE_DELAY}
inter_delay 1s
sync mbsync -q
mailbox_prefix t :
store local {{ watch watch-maildirs -m {quote([local])} --delimiter=/ }}
store server {{ watch watch-imap -a t }}
"""
    return dict(server=server, local=local, text=text,
                watch_tokens=watch_tokens, sync_tokens=sync_tokens)


def test_both_log_in_with_xoauth2_and_a_delivery_is_synced(
        oauth_setup, introspection, mswatch_run) -> None:
    server = oauth_setup["server"]
    # The set-up's own logins (create_folder) use the password: skip them.
    setup_lines = len(server.log_text().splitlines())
    run = mswatch_run(oauth_setup["text"])
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    server.deliver("Lists.foo", render_message(b"hi\n", subject="oauth-delivery"))
    took = wait_for_subject(oauth_setup["local"] / ".Lists.foo", "oauth-delivery",
                            DELIVERY_TIMEOUT)
    assert "failed" not in run.text(), run.text()
    assert run.stop() == 0
    asked = list(introspection.asked)
    # Every token the endpoint saw came from one of the two helpers, each
    # token once per run of its helper: one login per watch-imap
    # connection, one per mbsync run (the full sync, then the folder).
    watch_runs, sync_runs = (helper_runs(oauth_setup["watch_tokens"]),
                             helper_runs(oauth_setup["sync_tokens"]))
    assert sorted(set(asked)) == sorted({WATCH_TOKEN, SYNC_TOKEN}), asked
    assert asked.count(WATCH_TOKEN) == watch_runs >= 1, (asked, watch_runs)
    assert asked.count(SYNC_TOKEN) == sync_runs >= 2, (asked, sync_runs)
    logins = [line for line in server.log_text().splitlines()[setup_lines:]
              if "Login: user=" in line]
    assert logins and all("method=XOAUTH2" in line for line in logins), logins
    assert len(logins) == len(asked), (logins, asked)
    print(f"server->laptop {took:.2f} s; tokens: {watch_runs} watch-imap, {sync_runs} mbsync")
