"""extsmail with the real programs around it: mail clients in front, real
externals behind, real peers at the far end.

Externals: ssh to the fixture sshd (a recording sendmail on the far side),
msmtp and swaks to the fixture SMTP server (aiosmtpd), and fallback from a
failing first external (nothing listening, or a far side that refuses) to
msmtp.  Clients, each pointed at the installed extsmail, then extsmaild
delivering through msmtp:

- neomutt in batch mode (`set sendmail=` in a muttrc);
- git send-email (`--sendmail-cmd=`, git >= 2.33);
- bsd-mailx (`set sendmail=` in the file $MAILRC names; its man page lists
  the `sendmail` variable: "Pathname to an alternative mail delivery
  system").  It calls `sendmail -i -t` with no recipients on the command
  line, so msmtp takes them from the header.

msmtp finds ~/.msmtprc through $HOME (checked below); elsewhere it is
given `--file=/dev/null` and its settings on the command line, so no
user's or system's file can change what is tested.
"""

from __future__ import annotations

import email
import email.policy
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from extsmail.conftest import ExtHome
from peers.require import in_ci, require_program

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 60.0  # seconds for one client or one extsmaild run
SMTP_WAIT = 10.0    # seconds for a message to reach the SMTP server
SENDER = "me@example.org"


def run_bounded(argv: list, env: dict[str, str], input: bytes = b"",
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run argv in its own session; kill the whole group if it outlives RUN_TIMEOUT."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{argv[0]} took more than {RUN_TIMEOUT} s")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def batch(ext_home: ExtHome) -> subprocess.CompletedProcess:
    return run_bounded([ext_home.installed.tool("extsmaild"), "-m", "batch"],  # type: ignore
                       ext_home.env())


def enqueue(ext_home: ExtHome, *args: str, message: bytes) -> None:
    res = run_bounded([ext_home.installed.tool("extsmail"), *args],  # type: ignore
                      ext_home.env(), message)
    assert res.returncode == 0, res.stderr
    assert len(ext_home.queued()) == 1


def externals_string(text: str) -> str:
    """text as a STRING of the externals file."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_externals(ext_home: ExtHome, *commands: str) -> list[str]:
    """One group with an external per command (argv strings), named e1, e2...."""
    names = [f"e{i}" for i in range(1, len(commands) + 1)]
    body = "\n".join(f"    external {name} {{ sendmail = {externals_string(command)} }}"
                     for name, command in zip(names, commands))
    ext_home.write_externals(f"group {{\n{body}\n}}\n")
    return names


def msmtp_command(port: int, *, sender: str = SENDER) -> str:
    """msmtp to 127.0.0.1:port, with no configuration file at all."""
    msmtp = require_program("msmtp")
    return shlex.join([msmtp, "--file=/dev/null", "--host=127.0.0.1", f"--port={port}",
                       f"--from={sender}"])


def parsed(content: bytes) -> email.message.Message:
    return email.message_from_bytes(content, policy=email.policy.compat32)


def crlf_to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


@pytest.fixture
def smtp(smtp_server):
    smtp_server.clear()
    yield smtp_server
    smtp_server.clear()


def received_one(smtp) -> object:
    got = smtp.wait_for_messages(1, timeout=SMTP_WAIT)
    assert len(got) == 1, got
    return got[0]


# ------------------------------------------------------------------ externals


def test_ssh_external_delivers_bytes_and_arguments_to_the_far_side(ext_home, sshd) -> None:
    far = ext_home.recorder("far")  # on the "far side": same machine, run by sshd
    ssh = shlex.join(sshd.ssh_command() + [sshd.host_alias, str(far.path), "-t"])
    write_externals(ext_home, ssh)
    message = (b"From: me@example.org\r\nTo: rcpt@example.org\r\nSubject: over ssh\r\n\r\n"
               b"CRLF body, latin-1 \xe9, invalid \x80\xff, a NUL \x00.\r\n" * 50)
    logins = sshd.count_accepted()
    enqueue(ext_home, "-oi", "rcpt@example.org", message=message)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    assert far.received() == [([b"-t", b"-oi", b"rcpt@example.org"], message)]
    assert sshd.wait_for_log("Accepted publickey for ", count=logins + 1)


def test_msmtp_external_sends_to_the_header_recipients(ext_home, smtp) -> None:
    write_externals(ext_home, msmtp_command(smtp.port))
    message = (b"From: me@example.org\nTo: a@example.org\nCc: c@example.org\n"
               b"Bcc: hidden@example.org\nSubject: through msmtp\n\nHello.\n")
    enqueue(ext_home, "-oi", "-t", message=message)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    got = received_one(smtp)
    assert got.mail_from == SENDER
    assert sorted(got.rcpt_tos) == ["a@example.org", "c@example.org", "hidden@example.org"]
    mail = parsed(got.content)
    assert mail["Subject"] == "through msmtp"
    assert mail["Bcc"] is None  # msmtp -t drops it
    assert mail.get_payload().replace("\r\n", "\n") == "Hello.\n"
    assert ext_home.queued() == []


def test_msmtp_external_takes_stored_sender_and_recipients(ext_home, smtp) -> None:
    write_externals(ext_home, msmtp_command(smtp.port))
    message = b"From: me@example.org\nTo: a@example.org\nSubject: explicit\n\nHello.\n"
    enqueue(ext_home, "-i", "-f", "other@example.org", "--", "b@example.org",
            "c@example.org", message=message)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    got = received_one(smtp)
    assert got.mail_from == "other@example.org"
    assert sorted(got.rcpt_tos) == ["b@example.org", "c@example.org"]


def test_msmtp_reads_msmtprc_from_home(ext_home, smtp) -> None:
    rc = ext_home.home / ".msmtprc"
    rc.write_text(f"account default\nhost 127.0.0.1\nport {smtp.port}\nfrom {SENDER}\n")
    rc.chmod(0o600)
    write_externals(ext_home, f"{require_program('msmtp')} -t")
    enqueue(ext_home, message=b"To: a@example.org\nSubject: rc\n\nHello.\n")
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    got = received_one(smtp)
    assert (got.mail_from, got.rcpt_tos) == (SENDER, ("a@example.org",))


def failing_first(kind: str, ext_home: ExtHome, sshd, closed_port: int) -> str:
    """The command of a first external that fails the way `kind` says."""
    if kind == "msmtp-nothing-listening":
        return msmtp_command(closed_port)
    if kind == "ssh-nothing-listening":
        # -p on the command line beats the config's Port.
        return shlex.join(sshd.ssh_command() + ["-p", str(closed_port), sshd.host_alias,
                                                "/usr/sbin/sendmail", "-t"])
    far = ext_home.recorder("far")
    far.fail_with(75)  # EX_TEMPFAIL, as a sendmail says "try later"
    return shlex.join(sshd.ssh_command() + [sshd.host_alias, str(far.path), "-t"])


@pytest.mark.parametrize("kind", ["msmtp-nothing-listening", "ssh-nothing-listening",
                                  "far-sendmail-refuses"])
def test_a_failing_first_external_falls_back_to_msmtp(ext_home, sshd, smtp, closed_port,
                                                      kind: str) -> None:
    first = failing_first(kind, ext_home, sshd, closed_port)
    write_externals(ext_home, first, msmtp_command(smtp.port))
    message = b"From: me@example.org\nTo: a@example.org\nSubject: fallback\n\nHello.\n"
    enqueue(ext_home, "-oi", "-t", message=message)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert b"external e1 failed" in res.stderr, res.stderr
    assert b"sent via e2" in res.stderr, res.stderr
    got = received_one(smtp)
    assert (got.mail_from, got.rcpt_tos) == (SENDER, ("a@example.org",))
    assert crlf_to_lf(got.content).endswith(b"Subject: fallback\n\nHello.\n")
    assert ext_home.queued() == []


def test_when_every_external_fails_the_message_stays(ext_home, closed_port) -> None:
    write_externals(ext_home, msmtp_command(closed_port))
    message = b"From: me@example.org\nTo: a@example.org\nSubject: stays\n\nHello.\n"
    enqueue(ext_home, "-t", message=message)
    res = batch(ext_home)
    assert res.returncode == 1
    assert b"external e1 failed" in res.stderr and b"Connection refused" in res.stderr
    (left,) = ext_home.queued()
    assert left.read_bytes().endswith(message)


def test_swaks_as_an_external(ext_home, smtp) -> None:
    # swaks is no sendmail: it takes the stored argument as the value of a
    # final --to, and the message from --data -, as it is (Bcc and all).
    swaks = require_program("swaks")
    write_externals(ext_home, shlex.join([swaks, "--server", f"127.0.0.1:{smtp.port}",
                                          "--from", SENDER, "--data", "-", "--to"]))
    message = b"From: me@example.org\nTo: a@example.org\nSubject: by swaks\n\nHello.\n"
    enqueue(ext_home, "x@example.org", message=message)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    got = received_one(smtp)
    assert (got.mail_from, got.rcpt_tos) == (SENDER, ("x@example.org",))
    assert crlf_to_lf(got.content).startswith(message)


# -------------------------------------------------------------------- clients


def test_neomutt_sends_through_extsmail(ext_home, smtp, tmp_path) -> None:
    neomutt = require_program("neomutt")
    extsmail = ext_home.installed.tool("extsmail")  # type: ignore[attr-defined]
    scratch = tmp_path / "neomutt"
    scratch.mkdir()
    muttrc = ext_home.home / ".neomuttrc"
    muttrc.write_text("\n".join([
        f'set sendmail="{extsmail}"',
        f'set from="{SENDER}"',
        'set realname="Me Myself"',
        "set use_envelope_from=yes",
        'set hostname="example.org"',
        f'set tmpdir="{scratch}"',
        'set record=""',
        f'set folder="{scratch}"',
        f'set spoolfile="{scratch}/inbox"',
        f'set postponed="{scratch}/postponed"',
        f'set header_cache="{scratch}/hcache"',
        "",
    ]))
    write_externals(ext_home, msmtp_command(smtp.port, sender="nobody@example.org"))
    res = run_bounded([neomutt, "-n", "-F", str(muttrc), "-s", "subject from neomutt",
                       "rcpt@example.org"], ext_home.env(), b"Body typed in neomutt.\n")
    assert res.returncode == 0, res.stderr
    (queued,) = ext_home.queued()
    assert b"rcpt@example.org" in queued.read_bytes().split(b"Date:")[0]
    assert smtp.messages == []  # queued, not sent
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    got = received_one(smtp)
    # use_envelope_from: neomutt passes -f, which beats msmtp's --from.
    assert got.mail_from == SENDER
    assert got.rcpt_tos == ("rcpt@example.org",)
    mail = parsed(got.content)
    assert mail["Subject"] == "subject from neomutt"
    assert mail["To"] == "rcpt@example.org"
    assert mail["From"] == f"Me Myself <{SENDER}>"
    assert "Body typed in neomutt." in mail.get_payload()


def require_git_send_email(env: dict[str, str]) -> str:
    git = require_program("git")
    exec_path = subprocess.run([git, "--exec-path"], capture_output=True, text=True,
                               env=env, timeout=RUN_TIMEOUT).stdout.strip()
    reason = None
    if not os.path.exists(os.path.join(exec_path, "git-send-email")):
        reason = "git send-email is missing (Debian: git-email)"
    elif subprocess.run(["perl", "-MMail::Address", "-e", "1"], capture_output=True,
                        timeout=RUN_TIMEOUT).returncode != 0:
        # Debian's git-email only recommends it, and git send-email dies
        # without it ("BUG: The 'Mail::Address' module is not here").
        reason = "git send-email needs Perl's Mail::Address (Debian: libmailtools-perl)"
    if reason:
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return git


def test_git_send_email_sends_a_patch_through_extsmail(ext_home, smtp, tmp_path) -> None:
    env = ext_home.env(GIT_CONFIG_NOSYSTEM="1", TMPDIR=str(tmp_path), LC_ALL="C",
                       GIT_AUTHOR_NAME="Patch Author", GIT_AUTHOR_EMAIL=SENDER,
                       GIT_COMMITTER_NAME="Patch Author", GIT_COMMITTER_EMAIL=SENDER)
    git = require_git_send_email(env)
    version = subprocess.run([git, "--version"], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT).stdout.split()[-1]
    if tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < (2, 33):
        pytest.skip(f"git {version} has no --sendmail-cmd (2.33+)")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git_run(*args: str) -> subprocess.CompletedProcess:
        res = run_bounded([git, *args], env, cwd=repo)
        assert res.returncode == 0, res.stderr
        return res

    git_run("init", "-q")
    (repo / "greeting.txt").write_text("hello\n")
    git_run("add", "greeting.txt")
    git_run("commit", "-q", "-m", "Add a greeting")
    write_externals(ext_home, msmtp_command(smtp.port))
    extsmail = ext_home.installed.tool("extsmail")  # type: ignore[attr-defined]
    git_run("send-email", f"--sendmail-cmd={extsmail}", "--to=x@example.org",
            "--confirm=never", "--suppress-cc=all", "--quiet", "-1")
    assert len(ext_home.queued()) == 1
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    got = received_one(smtp)
    assert got.rcpt_tos == ("x@example.org",)
    mail = parsed(got.content)
    assert mail["Subject"] == "[PATCH] Add a greeting"
    assert mail["From"] == f"Patch Author <{SENDER}>"
    assert "+hello" in mail.get_payload()


def test_bsd_mailx_sends_through_extsmail(ext_home, smtp) -> None:
    mailx = require_program("bsd-mailx")
    extsmail = ext_home.installed.tool("extsmail")  # type: ignore[attr-defined]
    mailrc = ext_home.home / "mailrc"
    mailrc.write_text(f"set sendmail={extsmail}\n")
    write_externals(ext_home, msmtp_command(smtp.port))
    # -n: not /etc/mail.rc (its "ask" and "askcc" are for a terminal).
    res = run_bounded([mailx, "-n", "-s", "subject from mailx", "rcpt@example.org"],
                      ext_home.env(MAILRC=str(mailrc)), b"Body typed in mailx.\n")
    assert res.returncode == 0, res.stderr
    (queued,) = ext_home.queued()
    # bsd-mailx runs `sendmail -i -t`: the recipients are in the header only.
    assert queued.read_bytes().startswith(b"v1\n2\n2\n-i\n2\n-t\n")
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    got = received_one(smtp)
    assert (got.mail_from, got.rcpt_tos) == (SENDER, ("rcpt@example.org",))
    mail = parsed(got.content)
    assert mail["Subject"] == "subject from mailx"
    assert "Body typed in mailx." in mail.get_payload()
