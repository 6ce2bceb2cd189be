"""watch-imap logging in with OAuth 2.0 (XOAUTH2, OAUTHBEARER) to a real
Dovecot whose oauth2 passdb asks a token introspection endpoint served by
the test (peers.oauth), with the token from a helper script as pass_cmd,
over IMAPS verified against the test CA."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from imap_helpers import account

from peers.oauth import Introspection, helper_runs, set_tokens, token_helper

pytestmark = pytest.mark.slow

GOOD, FRESH, EXPIRED = "tok-good-1", "tok-fresh-2", "tok-expired-0"


@pytest.fixture
def introspection():
    with Introspection("tester") as endpoint:
        yield endpoint


def oauth_server(dovecot_factory, introspection, **kwargs):
    return dovecot_factory(oauth2_introspection_url=introspection.url, **kwargs)


def oauth_account(server, helper: str, mechanism: str = "xoauth2", **settings) -> str:
    return account(server, auth=mechanism, pass_cmd=helper, **{"pass": None, **settings})


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize("sasl_ir", [True, False])
def test_a_valid_token_logs_in(dovecot_factory, introspection, watch_imap, tmp_path: Path,
                               mechanism: str, sasl_ir: bool) -> None:
    server = oauth_server(dovecot_factory, introspection, sasl_ir=sasl_ir)
    introspection.good.add(GOOD)
    w = watch_imap(oauth_account(server, token_helper(tmp_path, [GOOD]), mechanism), "-v")
    w.ready()
    assert introspection.asked == [GOOD]
    assert helper_runs(tmp_path) == 1
    server.deliver("INBOX", b"Subject: x\n\nhello\n")
    w.expect(["INBOX"])
    assert GOOD not in w.stderr_now()


def test_an_expired_token_is_refused_and_a_fresh_one_works_at_once(
        dovecot_factory, introspection, watch_imap, tmp_path: Path) -> None:
    server = oauth_server(dovecot_factory, introspection)
    introspection.good.add(FRESH)
    started = time.monotonic()
    w = watch_imap(oauth_account(server, token_helper(tmp_path, [EXPIRED, FRESH])), "-v")
    w.ready()
    took = time.monotonic() - started
    assert introspection.asked == [EXPIRED, FRESH]
    assert helper_runs(tmp_path) == 2
    stderr = w.stderr_now()
    assert "trying again" not in stderr  # no backoff: the retry was at once
    assert took < 1.0 + 5.0, took  # RECONNECT_FIRST is 1 s; Dovecot's start is not counted
    assert EXPIRED not in stderr and FRESH not in stderr


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_a_revoked_token_is_exit_77(dovecot_factory, introspection, run_watch_imap,
                                    tmp_path: Path, mechanism: str) -> None:
    server = oauth_server(dovecot_factory, introspection)
    revoked = "tok-revoked"
    result = run_watch_imap(oauth_account(server, token_helper(tmp_path, [revoked]),
                                          mechanism), "-a", "t", "-v")
    assert result.returncode == 77, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("watch-imap: ") and "login refused" in last, result.stderr
    assert "token status" in last, last  # the server's JSON error, decoded
    assert "Traceback" not in result.stderr and revoked not in result.stderr
    assert helper_runs(tmp_path) == 2  # once more with a new token, then no more
    assert introspection.asked == [revoked, revoked]


@pytest.mark.parametrize("script, why", [("exit 3", "exit status 3"),
                                          ("true", "printed nothing")])
def test_a_helper_that_fails_is_exit_69(dovecot_factory, introspection, run_watch_imap,
                                        script: str, why: str) -> None:
    server = oauth_server(dovecot_factory, introspection)
    result = run_watch_imap(oauth_account(server, script), "-a", "t")
    assert result.returncode == 69, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("watch-imap: ") and why in lines[0], lines
    assert introspection.asked == []


@pytest.mark.parametrize("notify", [True, False])
def test_a_token_expiring_while_watching(dovecot_factory, introspection, watch_imap,
                                         tmp_path: Path, notify: bool) -> None:
    """The server ends every session (as Microsoft 365 and Gmail do when the
    token expires); watch-imap logs in again with the helper's new token and
    reports every folder once."""
    server = oauth_server(dovecot_factory, introspection, notify=notify)
    server.create_folder("Work")
    introspection.good.update({GOOD})
    conf = oauth_account(server, token_helper(tmp_path, [GOOD]),
                         idle=["INBOX", "Work"])
    w = watch_imap(conf, "-v")
    w.ready()
    logins = 1 if notify else 2  # IDLE on INBOX and Work: nothing left to poll
    assert helper_runs(tmp_path) == logins
    assert server.wait_for_sessions(logins, timeout=10)
    introspection.good = {FRESH}  # GOOD expires; the helper has a new one
    set_tokens(tmp_path, [FRESH])
    assert server.end_sessions() == logins
    got = w.expect(["INBOX", "Work"], timeout=20)
    got += w.lines_for(1.0)
    assert sorted(got) == ["INBOX", "Work"], got
    assert introspection.asked[-1] == FRESH and GOOD not in introspection.asked[logins:]
    assert GOOD not in w.stderr_now() and FRESH not in w.stderr_now()
