"""Permanent and temporary failures, the queue lifetime and --retry, with
real msmtp against the fixture SMTP server (aiosmtpd) answering RCPT with
550 (msmtp exits 65, EX_DATAERR: permanent by default) or 451 (msmtp exits
69, EX_UNAVAILABLE: temporary).

A message that failed permanently is set aside in spool_dir/failed/ and
reported into ~/Maildir (a MIME multipart/mixed report, read back here
with Python's email package); one that failed temporarily stays queued and
is retried.  The queue lifetime (max_age) is tested on a message whose
queue time (its file's mtime) is set back with os.utime: waiting days is
the only other way to make a message old.
"""

from __future__ import annotations

import email
import email.policy
import os
import time
from pathlib import Path

import pytest

from extsmail.conftest import ExtHome, simple_message
from extsmail.test_clients import batch, externals_string, msmtp_command, received_one

pytestmark = pytest.mark.slow

REFUSED = "550 5.1.1 no such user"
LATER = "451 4.3.0 try later"
SPOOL = 'spool_dir = "~/.extsmail/spool"\n'


@pytest.fixture
def smtp(smtp_server):
    smtp_server.clear()
    yield smtp_server
    smtp_server.clear()


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def one_msmtp(h: ExtHome, port: int, extra: str = "") -> None:
    h.write_externals("group {\n  external e1 {\n    sendmail = "
                      f"{externals_string(msmtp_command(port))}\n{extra}  }}\n}}\n")


def enqueue(h: ExtHome, message: bytes) -> Path:
    before = set(h.queued())
    res = h.run("extsmail", "-oi", "-t", input=message)
    assert res.returncode == 0, res.stderr
    (new,) = set(h.queued()) - before
    return new


def failed(h: ExtHome) -> list[Path]:
    directory = h.spool / "failed"
    return sorted(directory.iterdir()) if directory.exists() else []


def reports(maildir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((maildir / "new").iterdir())]


def check_report(report: bytes, original: bytes, name: str, *texts: str) -> str:
    """The report's MIME structure: a text part saying why (and `texts`),
    then the original message attached; return the text."""
    msg = email.message_from_bytes(report, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["To"] == "me@example.org"
    text_part, attached = msg.get_payload()
    assert text_part.get_content_type() == "text/plain"
    text = text_part.get_content()
    assert f"extsmaild --retry {name}" in text
    for wanted in texts:
        assert wanted in text
    assert attached.get_content_type() == "message/rfc822"
    (inner,) = attached.get_payload()
    assert inner.as_bytes(policy=email.policy.compat32.clone(linesep="\n")) == original
    assert original in report  # the bytes themselves, unchanged
    return text


def test_a_550_sets_the_message_aside_with_a_report_and_never_retries(ext_home, smtp):
    maildir = make_maildir(ext_home.home / "Maildir")
    one_msmtp(ext_home, smtp.port)
    smtp.rcpt_response = REFUSED
    original = simple_message(subject="to nobody", to="nobody@example.org")
    queued = enqueue(ext_home, original)
    spooled = queued.read_bytes()
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr  # nothing is left in the queue
    err = res.stderr.decode()
    assert "failed permanently" in err and "moved to" in err
    assert ext_home.queued() == []
    (aside,) = failed(ext_home)
    assert aside.name == queued.name and aside.read_bytes() == spooled
    (report,) = reports(maildir)
    check_report(report, original, queued.name, REFUSED, "exit status 65",
                 "a permanent failure")
    listing = ext_home.run("extsmaild", "--failed")
    assert listing.returncode == 0
    assert queued.name in listing.stdout.decode() and REFUSED in listing.stdout.decode()
    assert "1 failed message" in ext_home.run("extsmaild", "--list").stdout.decode()

    smtp.clear()  # the server would take it now: it must not be tried
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert smtp.connections == 0
    assert failed(ext_home) == [aside]
    assert len(reports(maildir)) == 1


def test_a_permanent_failure_does_not_fall_back_to_the_next_external(ext_home, smtp):
    maildir = make_maildir(ext_home.home / "Maildir")
    rec = ext_home.recorder("second")
    ext_home.write_externals(
        "group {\n"
        f"  external e1 {{ sendmail = {externals_string(msmtp_command(smtp.port))} }}\n"
        f"  external e2 {{ sendmail = \"{rec.path}\" }}\n}}\n")
    smtp.rcpt_response = REFUSED
    enqueue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert rec.received() == []
    assert len(failed(ext_home)) == 1 and len(reports(maildir)) == 1


def test_a_451_stays_queued_and_is_retried(ext_home, smtp):
    maildir = make_maildir(ext_home.home / "Maildir")
    one_msmtp(ext_home, smtp.port)
    smtp.rcpt_response = LATER
    original = simple_message(subject="later")
    queued = enqueue(ext_home, original)
    for _ in range(2):
        res = batch(ext_home)
        assert res.returncode == 1, res.stderr
        assert ext_home.queued() == [queued]
    assert "exit status 69" in res.stderr.decode()
    assert failed(ext_home) == [] and reports(maildir) == []
    smtp.rcpt_response = "250 OK"
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    assert received_one(smtp).content.replace(b"\r\n", b"\n").endswith(b"\nHello.\n")


def test_max_age_turns_an_old_temporary_failure_into_a_report(ext_home, smtp):
    maildir = make_maildir(ext_home.home / "Maildir")
    ext_home.write_conf(SPOOL + "max_age = 1h\n")
    one_msmtp(ext_home, smtp.port)
    smtp.rcpt_response = LATER
    old_message = simple_message(subject="old")
    old = enqueue(ext_home, old_message)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))  # queued two hours ago
    young = enqueue(ext_home, simple_message(subject="young"))
    res = batch(ext_home)
    assert res.returncode == 1, res.stderr  # the young one remains
    assert ext_home.queued() == [young]
    assert [p.name for p in failed(ext_home)] == [old.name]
    (report,) = reports(maildir)
    check_report(report, old_message, old.name, "max_age", "1 hour", "exit status 69",
                 LATER)


def test_retry_puts_a_failed_message_back_and_it_is_sent(ext_home, smtp):
    maildir = make_maildir(ext_home.home / "Maildir")
    one_msmtp(ext_home, smtp.port)
    smtp.rcpt_response = REFUSED
    queued = enqueue(ext_home, simple_message(subject="again"))
    assert batch(ext_home).returncode == 0
    assert len(failed(ext_home)) == 1

    smtp.clear()
    res = ext_home.run("extsmaild", "--retry", queued.name[:12])
    assert res.returncode == 0, res.stderr
    assert failed(ext_home) == []
    assert ext_home.queued() == [queued]
    assert "Error:" not in ext_home.run("extsmaild", "--list").stdout.decode()
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    assert b"Subject: again" in received_one(smtp).content
    assert len(reports(maildir)) == 1  # the first failure's only

    res = ext_home.run("extsmaild", "--retry", queued.name)
    assert res.returncode != 0
    assert res.stderr.decode() == f"extsmaild: no failed message {queued.name}\n"


def test_show_and_delete_take_a_failed_message_too(ext_home, smtp):
    make_maildir(ext_home.home / "Maildir")
    one_msmtp(ext_home, smtp.port)
    smtp.rcpt_response = REFUSED
    queued = enqueue(ext_home, simple_message(subject="dead"))
    assert batch(ext_home).returncode == 0
    assert [p.name for p in failed(ext_home)] == [queued.name]

    res = ext_home.run("extsmaild", "--show", queued.name[:12])
    assert res.returncode == 0, res.stderr
    assert b"Subject: dead" in res.stdout
    assert ext_home.run("extsmaild", "--status", queued.name).returncode == 2  # failed

    res = ext_home.run("extsmaild", "--delete", queued.name[:12])
    assert res.returncode == 0, res.stderr
    assert failed(ext_home) == [] and ext_home.queued() == []
    assert "deleted (it had failed)" in res.stderr.decode()
    assert ext_home.run("extsmaild", "--status", queued.name).returncode == 66  # unknown
    assert ext_home.run("extsmaild", "--failed").stdout.decode() == "no failed messages\n"

    res = ext_home.run("extsmaild", "--delete", queued.name)
    assert res.returncode == 65
    assert res.stderr.decode() == f"extsmaild: no queued or failed message {queued.name}\n"


def test_permanent_failures_no_retries_a_550_forever(ext_home, smtp):
    """The C extsmaild's behaviour, on one setting."""
    maildir = make_maildir(ext_home.home / "Maildir")
    ext_home.write_conf(SPOOL + 'permanent_failures = "no"\nmax_age = 1s\n')
    one_msmtp(ext_home, smtp.port)
    smtp.rcpt_response = REFUSED
    queued = enqueue(ext_home, simple_message())
    for tries in (1, 2, 3):
        res = batch(ext_home)
        assert res.returncode == 1, res.stderr
        assert ext_home.queued() == [queued]
        assert smtp.connections == tries
        assert "exit status 65" in res.stderr.decode()
    assert failed(ext_home) == [] and reports(maildir) == []


def test_the_permanent_statuses_are_set_per_external(ext_home, smtp):
    """`permanent = ""`: a 550 is retried; `permanent = "69"`: a 451 is not."""
    maildir = make_maildir(ext_home.home / "Maildir")
    one_msmtp(ext_home, smtp.port, '    permanent = ""\n')
    smtp.rcpt_response = REFUSED
    queued = enqueue(ext_home, simple_message())
    assert batch(ext_home).returncode == 1
    assert ext_home.queued() == [queued] and failed(ext_home) == []

    one_msmtp(ext_home, smtp.port, '    permanent = "69 75"\n')
    smtp.rcpt_response = LATER
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == [] and [p.name for p in failed(ext_home)] == [queued.name]
    assert len(reports(maildir)) == 1


def test_without_a_maildir_no_report_but_a_log_line(ext_home, smtp):
    one_msmtp(ext_home, smtp.port)
    smtp.rcpt_response = REFUSED
    enqueue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    home = ext_home.home
    assert f"no report written: {home}/Maildir is not a maildir" in res.stderr.decode()
    assert len(failed(ext_home)) == 1
    assert not (home / "Maildir").exists()


def test_report_maildir_names_where_reports_go(ext_home, smtp):
    elsewhere = make_maildir(ext_home.home / "mail" / "reports")
    default = make_maildir(ext_home.home / "Maildir")
    ext_home.write_conf(SPOOL + 'report_maildir = "~/mail/reports"\n')
    one_msmtp(ext_home, smtp.port)
    smtp.rcpt_response = REFUSED
    enqueue(ext_home, simple_message())
    assert batch(ext_home).returncode == 0
    assert len(reports(elsewhere)) == 1 and reports(default) == []
