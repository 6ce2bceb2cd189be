"""The queue as users see it: extsmaild --list and --failed, extsmail -bp
and mailq (extsmail under that name), and the short IDs every queue
command takes.

Messages are queued through the installed extsmail, or a real mail(1)
(bsd-mailx or s-nail, whichever `mail` is installed); failed ones are set
aside by a real extsmaild pass whose external exits 65 (permanent by
default).  The hypothesis tests feed headers in RFC 2047 encodings of
several charsets, folded and long, and hostile bytes: the listings must
show the decoded text, never a traceback, never a control character.
"""

from __future__ import annotations

import email.header
import os
import pwd
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extsmail.conftest import ExtHome
from roammail.extsmail.spool import parse_header

LISTINGS = (("extsmaild", "--list"), ("extsmail", "-bp"))
# Each charset with characters it can encode.
ALPHABETS = {
    "utf-8": "abc XYZ éüß Привет 日本語 😀 ",
    "iso-8859-1": "abc XYZ éàüßñÆ¿ ",
    "iso-8859-15": "abc XYZ €œŸ é ",
    "koi8-r": "abc Привет мир ",
    "shift_jis": "abc 日本語テキスト ",
    "gb2312": "abc 中文 测试 ",
}
RUN_TIMEOUT = 60.0
OWNER = pwd.getpwuid(os.getuid()).pw_name


def enqueue(h: ExtHome, message: bytes, *args: str) -> Path:
    before = set(h.queued())
    res = h.run("extsmail", *args, input=message)
    assert res.returncode == 0, res.stderr
    (new,) = set(h.queued()) - before
    return new


def listing(h: ExtHome, tool: str, *args: str) -> str:
    res = h.run(tool, *args, timeout=RUN_TIMEOUT)
    assert (res.returncode, res.stderr) == (0, b""), res.stderr
    return res.stdout.decode()


def mailq_link(h: ExtHome) -> str:
    """extsmail under the name mailq, as extsmail(1) says to set it up."""
    link = h.tmp / "mailq-bin" / "mailq"
    if not link.exists():
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(h.installed.tool("extsmail"))  # type: ignore[attr-defined]
    return str(link)


def ids_of(text: str) -> dict[str, str]:
    """File name to short ID, from --list's first lines."""
    found = {}
    for line in text.splitlines():
        if not line.startswith(" ") and " file " in line:
            found[line.split()[-1]] = line.split()[0]
    return found


def one_line(text: str) -> str:
    return " ".join(text.split())


def no_controls(text: str) -> bool:
    return all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in text)


def clear(h: ExtHome) -> None:
    for path in h.queued():
        path.unlink()


# ------------------------------------------------------------ decoding


@st.composite
def encoded(draw, name: str) -> tuple[str, bytes]:
    """(text, its header line): the text in one charset, encoded as
    RFC 2047 words (B or Q, as the email package chooses), folded."""
    charset = draw(st.sampled_from(sorted(ALPHABETS)))
    text = draw(st.text(alphabet=ALPHABETS[charset], min_size=1, max_size=150)
                .filter(lambda t: t.strip()))
    line = email.header.Header(text, charset, header_name=name).encode(linesep="\n")
    return text, f"{name}: {line}\n".encode("ascii")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=encoded("Subject"), sender=st.one_of(st.none(), encoded("From")),
       to=encoded("To"))
def test_listings_decode_encoded_words_in_every_charset(ext_home, subject, sender, to):
    clear(ext_home)
    subject_text, subject_line = subject
    head = subject_line + to[1]
    if sender is not None:
        head = sender[1] + head
    enqueue(ext_home, head + b"\nbody\n", "-oi", "rcpt@example.org")
    text = listing(ext_home, "extsmaild", "--list")
    lines = text.splitlines()
    assert f"  Subject: {one_line(subject_text)}" in lines
    assert f"  To: {one_line(to[0])}" in lines
    if sender is None:
        assert f"  From: {OWNER} (the spool file's owner, no From: header)" in lines
    else:
        assert f"  From: {one_line(sender[0])}" in lines
    assert "  Recipients: rcpt@example.org" in lines
    mailq = listing(ext_home, "extsmail", "-bp")
    assert mailq.count("rcpt@example.org") == 1 and "Total requests: 1" in mailq


HOSTILE = st.lists(st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.sampled_from([b"=?", b"?=", b"=?utf-8?b?", b"=?x-unknown?q?caf=E9?=",
                     b"=?utf-8?q?a=0Ab=1B[31m?=", b"=?utf-8?b?!!!?=", b"=?utf-8?q?=FF?=",
                     b"\n ", b"\n\t", b"\r\n ", b"\x1b]0;title\x07", b"\xff\xfe",
                     b"=?iso-2022-jp?b?GyRCJEIbKEI=?=", b"=?utf-8*fr?q?x?="])),
    max_size=12).map(b"".join)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=HOSTILE, sender=HOSTILE, args=st.lists(
    st.sampled_from(["-f", "-t", "-oi", "--", "-fme@x", "-r", "-F", "a b", "-", "x@y"]),
    max_size=5))
def test_hostile_headers_never_break_a_listing(ext_home, subject, sender, args):
    clear(ext_home)
    enqueue(ext_home, b"From: " + sender + b"\nSubject: " + subject + b"\n\nbody\n", *args)
    for tool, *words in LISTINGS:
        text = listing(ext_home, tool, *words)
        assert "Traceback" not in text and no_controls(text), text


# ------------------------------------------------------------- senders


def test_mail_from_a_real_mail_command_shows_a_sender(ext_home: ExtHome) -> None:
    mail = shutil.which("mail")
    if mail is None:
        pytest.skip("no mail(1): apt-get install bsd-mailx")
    extsmail = ext_home.installed.tool("extsmail")  # type: ignore[attr-defined]
    (ext_home.home / ".mailrc").write_text(f"set sendmail={extsmail}\n")
    env = ext_home.env(MAILRC=str(ext_home.home / ".mailrc"))
    res = subprocess.run([mail, "-s", "from mailx", "bob@example.org"], input=b"hello\n",
                         capture_output=True, env=env, timeout=RUN_TIMEOUT)
    assert res.returncode == 0, res.stderr
    (queued,) = ext_home.queued()
    assert b"\nFrom:" not in b"\n" + queued.read_bytes()  # mailx writes none
    lines = listing(ext_home, "extsmaild", "--list").splitlines()
    assert f"  From: {OWNER} (the spool file's owner, no From: header)" in lines
    assert "  Subject: from mailx" in lines
    assert "  Recipients: bob@example.org" in lines
    mailq = listing(ext_home, mailq_link(ext_home)).splitlines()
    ident = ids_of(listing(ext_home, "extsmaild", "--list"))[queued.name]
    (row,) = [line for line in mailq if line.startswith(ident + " ")]
    data = queued.read_bytes()
    _, offset = parse_header(data, str(queued))
    assert row.split()[1] == str(len(data) - offset)  # the message's size, as queued
    assert row.endswith(f" {OWNER}")
    assert " " * 41 + "bob@example.org" in mailq


def test_the_envelope_sender_stands_in_for_a_missing_from(ext_home: ExtHome) -> None:
    enqueue(ext_home, b"To: a@example.org, Ann <b@example.org>\nCc: c@example.org\n"
                      b"Bcc: d@example.org\nSubject: s\n\nx\n", "-oi", "-t", "-f", "me@home")
    lines = listing(ext_home, "extsmaild", "--list").splitlines()
    assert "  From: me@home (envelope sender, no From: header)" in lines
    assert ("  Recipients: a@example.org, b@example.org, c@example.org, d@example.org"
            in lines)
    mailq = listing(ext_home, "extsmail", "-bp").splitlines()
    assert mailq[2].endswith(" me@home")
    assert [line.strip() for line in mailq[3:7]] == [
        "a@example.org", "b@example.org", "c@example.org", "d@example.org"]


# --------------------------------------------------------------- empty


def test_an_empty_queue_says_so(ext_home: ExtHome) -> None:
    assert listing(ext_home, "extsmaild", "--list") == "queue is empty\n"
    assert listing(ext_home, "extsmaild", "--failed") == "no failed messages\n"
    assert listing(ext_home, "extsmail", "-bp") == "Mail queue is empty\n"
    assert listing(ext_home, mailq_link(ext_home)) == "Mail queue is empty\n"
    assert ext_home.queued() == []  # nothing was spooled from the empty stdin


def test_mailq_and_bp_refuse_arguments_in_one_line(ext_home: ExtHome) -> None:
    for argv, error in (([mailq_link(ext_home), "-v"], b"mailq: mailq takes no arguments\n"),
                        ([ext_home.installed.tool("extsmail"), "-bp", "-v"],  # type: ignore
                         b"extsmail: -bp takes no other arguments\n")):
        res = subprocess.run(argv, input=b"", capture_output=True, env=ext_home.env(),
                             timeout=RUN_TIMEOUT)
        assert (res.returncode, res.stderr, res.stdout) == (64, error, b"")
    assert ext_home.queued() == []


def test_q_delivers_the_queue(ext_home: ExtHome) -> None:
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    enqueue(ext_home, b"Subject: now\n\nx\n", "-oi", "a@example.org")
    res = ext_home.run("extsmail", "-q", timeout=RUN_TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    ((argv, _),) = rec.received()
    assert argv == [b"-oi", b"a@example.org"]


# ----------------------------------------------------------- short IDs


def test_short_ids_are_shown_and_taken_by_every_command(ext_home: ExtHome) -> None:
    rec = ext_home.recorder("r")
    rec.fail_with(65)  # EX_DATAERR: a permanent failure by default
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    doomed = enqueue(ext_home, b"Subject: doomed\n\nx\n", "a@example.org")
    assert ext_home.run("extsmaild", "-m", "batch").returncode == 0
    assert ext_home.queued() == [] and (ext_home.spool / "failed" / doomed.name).exists()
    rec.succeed()
    kept = enqueue(ext_home, b"Subject: kept\n\nkept body\n", "a@example.org")
    gone = enqueue(ext_home, b"Subject: gone\n\nx\n", "a@example.org")

    ids = ids_of(listing(ext_home, "extsmaild", "--list"))
    ids.update(ids_of(listing(ext_home, "extsmaild", "--failed")))
    assert set(ids) == {doomed.name, kept.name, gone.name}
    assert all(len(i) == 8 and int(i, 16) >= 0 for i in ids.values())
    assert len(set(ids.values())) == 3
    mailq = listing(ext_home, "extsmail", "-bp")
    rows = [line.split()[0] for line in mailq.splitlines()[2:] if line[:1].isalnum()]
    assert rows == [ids[kept.name], ids[gone.name]]

    res = ext_home.run("extsmaild", "--show", ids[kept.name])
    assert (res.returncode, res.stdout) == (0, b"Subject: kept\n\nkept body\n")
    res = ext_home.run("extsmaild", "--show", ids[kept.name].upper())
    assert res.returncode == 0 and res.stdout.endswith(b"kept body\n")
    res = ext_home.run("extsmaild", "--delete", ids[gone.name])
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == [kept]
    # A queued message's ID is not a failed one's (--delete and --show take
    # both: test_extsmaild_permanent).
    assert ext_home.run("extsmaild", "--retry", ids[kept.name]).returncode == 65
    res = ext_home.run("extsmaild", "--show", ids[doomed.name])
    assert res.returncode == 0 and res.stdout.endswith(b"Subject: doomed\n\nx\n")
    res = ext_home.run("extsmaild", "--retry", ids[doomed.name])
    assert res.returncode == 0, res.stderr
    # Back in the queue under the same ID; whole names are still taken.
    again = ids_of(listing(ext_home, "extsmaild", "--list"))
    assert again == {kept.name: ids[kept.name], doomed.name: ids[doomed.name]}
    res = ext_home.run("extsmaild", "--show", doomed.name)
    assert res.returncode == 0 and res.stdout.endswith(b"Subject: doomed\n\nx\n")
    assert listing(ext_home, "extsmaild", "--failed") == "no failed messages\n"


def colliding_names() -> tuple[str, str]:
    """Two spool file names whose hashes share their first 8 hex digits."""
    from roammail.extsmail.queue import name_hash

    seen: dict[str, str] = {}
    for n in range(1_000_000):
        name = f"XXXX{n:06d}"
        prefix = name_hash(name)[:8]
        if prefix in seen:
            return seen[prefix], name
        seen[prefix] = name
    raise AssertionError("no collision among a million names")


def test_ids_grow_past_eight_digits_only_to_stay_unique(ext_home: ExtHome) -> None:
    from roammail.extsmail.queue import name_hash

    first, second = colliding_names()
    data = enqueue(ext_home, b"Subject: x\n\nx\n").read_bytes()
    for path in ext_home.queued():
        path.unlink()
    for name in (first, second):
        (ext_home.msgs / name).write_bytes(data)
        os.chmod(ext_home.msgs / name, 0o600)
    ids = ids_of(listing(ext_home, "extsmaild", "--list"))
    for name in (first, second):
        digest = name_hash(name)
        common = len(os.path.commonprefix([name_hash(first), name_hash(second)]))
        assert ids[name] == digest[:common + 1]
    res = ext_home.run("extsmaild", "--show", name_hash(first)[:8])
    assert res.returncode == 64
    assert res.stderr.decode() == (f"extsmaild: message ID '{name_hash(first)[:8]}' is "
                                   "ambiguous (2 messages)\n")
    res = ext_home.run("extsmaild", "--show", ids[second])
    assert res.returncode == 0 and res.stdout == b"Subject: x\n\nx\n"
