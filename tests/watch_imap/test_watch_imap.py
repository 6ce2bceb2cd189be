"""watch-imap against a real Dovecot: the protocol, NOTIFY and the IDLE
fallback, names as mbsync gives them, TLS, tunnels, and every failure a
roaming laptop meets."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from imap_helpers import account

from peers.maildirs import render_message
from peers.require import require_program

pytestmark = pytest.mark.slow

FOLDERS = ["Lists.foo", "With Space", "Caf&AOk-"]


def mail(subject: str = "test") -> bytes:
    return render_message(b"hello\n", subject=subject)


def make_folders(server, names=FOLDERS) -> None:
    for name in names:
        server.create_folder(name)


def mbsyncrc(server, path, local) -> None:
    """Channel t: every folder; channel lists: those under Lists/ on the
    server (the form watch-imap(1) shows), but Lists/old, into a maildir
    of their own."""
    (local / "lists").mkdir(parents=True, exist_ok=True)
    path.write_text(f"""\
{server.mbsync_account("t")}IMAPStore t-far
Account t

MaildirStore t-near
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel t
Far :t-far:
Near :t-near:
Patterns *
Create Both
SyncState *

MaildirStore lists-near
Path {local}/lists/
Inbox {local}/lists/INBOX
SubFolders Verbatim

Channel lists
Far :t-far:Lists/
Near :lists-near:
Patterns * !old
Create Both
SyncState *
""")


# ------------------------------------------------------------ names


def test_list_names_folders_as_mbsync_does(dovecot, run_watch_imap, imap_home, tmp_path) -> None:
    mbsync = require_program("mbsync")
    make_folders(dovecot)
    mbsyncrc(dovecot, imap_home / ".mbsyncrc", tmp_path / "local")
    theirs = subprocess.run([mbsync, "-c", str(imap_home / ".mbsyncrc"), "-l", "t"],
                            capture_output=True, text=True, timeout=60)
    assert theirs.returncode == 0, theirs.stderr
    # From mbsync's own account, and from a block of watch-imap's file.
    ours = run_watch_imap(None, "--mbsyncrc", str(imap_home / ".mbsyncrc"), "-a", "t", "--list")
    assert ours.returncode == 0, ours.stderr
    assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
    assert "Lists/foo" in ours.stdout and "With Space" in ours.stdout
    block = run_watch_imap(account(dovecot), "-a", "t", "--list")
    assert block.stdout == ours.stdout


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "idle"])
def test_channel_with_a_far_path_names_folders_as_mbsync_does(dovecot_factory, run_watch_imap,
                                                              watch_imap, imap_home,
                                                              tmp_path, notify) -> None:
    # `Far :t-far:Lists/`: a prefix in mbsync's notation ("/", whatever the
    # server's delimiter), not part of the names; Patterns match the rest.
    mbsync = require_program("mbsync")
    server = dovecot_factory(notify=notify)
    make_folders(server, ["Lists", "Lists.dev", "Lists.dev.sub", "Lists.roam", "Lists.old",
                          "Listsfoo", "Other"])
    rc = imap_home / ".mbsyncrc"
    mbsyncrc(server, rc, tmp_path / "local")
    theirs = subprocess.run([mbsync, "-c", str(rc), "-l", "lists"],
                            capture_output=True, text=True, timeout=60)
    assert theirs.returncode == 0, theirs.stderr
    assert "Lists/dev <=> dev\n" in theirs.stdout  # what this mbsync prints, then
    ours = run_watch_imap(None, "--mbsyncrc", str(rc), "-a", "lists", "--list")
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
    # Watching, a folder is printed as `mbsync lists:NAME` wants it; the
    # folders the channel leaves alone are not printed at all.  Without
    # NOTIFY, IDLE on a folder named as the channel names it, the others polled.
    conf = "" if notify else \
        'account lists {\n  mbsync = "lists"\n  idle = "dev"\n  poll = 1s\n}\n'
    w = watch_imap(conf, account_name="lists")  # its --mbsyncrc is rc
    w.ready()
    for folder in ("INBOX", "Other", "Lists.old", "Lists"):
        server.deliver(folder, mail())
    server.deliver("Lists.dev", mail(subject="for dev"))
    got = w.expect(["dev"])
    assert got == ["dev"], got
    synced = subprocess.run([mbsync, "-c", str(rc), "-q", f"lists:{got[0]}"],
                            capture_output=True, text=True, timeout=60)
    assert synced.returncode == 0, synced.stderr
    assert len(list((tmp_path / "local" / "lists" / "dev" / "new").iterdir())) == 1
    server.deliver("Lists.dev.sub", mail())
    assert w.expect(["dev/sub"]) == ["dev/sub"]
    assert w.lines_for(1.5) == []
    if not notify:
        w.signal(signal.SIGTERM)
        assert w.wait() == 0
        assert "IDLE on 1 folder, STATUS every 1 s" in w.stderr()


def test_utf8_names_when_asked(dovecot, run_watch_imap) -> None:
    make_folders(dovecot)
    out = run_watch_imap(account(dovecot, names="utf8"), "-a", "t", "--list")
    assert out.returncode == 0, out.stderr
    assert "Café" in out.stdout.splitlines()


# ------------------------------------------------------------ NOTIFY


def test_notify_reports_each_change_on_one_connection(dovecot, watch_imap) -> None:
    make_folders(dovecot)
    w = watch_imap(account(dovecot))
    w.ready()
    assert dovecot.wait_for_sessions(1)
    assert w.lines_for(1.0) == []
    dovecot.deliver("INBOX", mail())
    w.expect(["INBOX"])
    dovecot.deliver("Lists.foo", mail())
    w.expect(["Lists/foo"])
    dovecot.append("Caf&AOk-", mail())
    w.expect(["Caf&AOk-"])
    dovecot.deliver_raw("INBOX", mail())  # past Dovecot: seen through the selected INBOX
    w.expect(["INBOX"])
    with dovecot.client() as c:
        c.select('"With Space"')
        c.append('"With Space"', None, None, mail())
        w.expect(["With Space"])
        c.store("1", "+FLAGS", "\\Seen")
        w.expect(["With Space"])
        c.store("1", "+FLAGS", "\\Deleted")
        c.expunge()
        w.expect(["With Space"])
        c.create("NewBox")
        w.expect(["NewBox"])
        c.rename("NewBox", "Renamed")
        w.expect(["NewBox", "Renamed"])
        c.delete("Renamed")
        w.expect(["Renamed"])
    # This client's session may outlive its LOGOUT by a few milliseconds.
    assert dovecot.wait_for_sessions(1)
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert dovecot.wait_for_sessions(0)
    assert "Logged out" in dovecot.log_text()


@pytest.mark.parametrize("poll", ["5m", "0s"], ids=["poll", "no-poll"])
def test_first_connection_prints_only_the_ready_line(dovecot, watch_imap, poll) -> None:
    # Folders created and never opened since: Dovecot builds their indexes
    # when the watcher first asks their STATUS, and tells NOTIFY clients
    # about them, with the values the watcher already knows.
    make_folders(dovecot, FOLDERS + ["Lists.dev", "Sent"])
    w = watch_imap(account(dovecot, poll=poll))
    w.ready()
    assert w.lines_for(2.5) == []
    dovecot.deliver("Lists.dev", mail())
    w.expect(["Lists/dev"])
    assert w.lines_for(1.0) == []
    # A change that leaves MESSAGES, UIDNEXT and UNSEEN as they were is
    # news all the same.
    with dovecot.client() as c:
        c.select("Lists.dev")
        c.store("1", "+FLAGS", "\\Flagged")
    w.expect(["Lists/dev"])


def test_notify_polls_for_mail_written_behind_the_servers_back(dovecot, watch_imap) -> None:
    make_folders(dovecot)
    w = watch_imap(account(dovecot, poll="1s"))
    w.ready()
    assert w.lines_for(1.5) == []  # polls that find nothing new print nothing
    # Dovecot does not tell NOTIFY clients of this file in a folder that is
    # not selected; the next STATUS poll (on the same connection) finds it.
    dovecot.deliver_raw("Lists.foo", mail())
    w.expect(["Lists/foo"], timeout=5)
    assert dovecot.sessions() == 1


def test_idle_fallback_without_notify(dovecot_factory, watch_imap) -> None:
    server = dovecot_factory(notify=False)
    make_folders(server)
    w = watch_imap(account(server, idle=["INBOX", "Lists/foo"], poll="1s"))
    w.ready()
    # Two IDLE connections and one for STATUS polling of the others.
    assert server.wait_for_sessions(3)
    time.sleep(0.5)
    assert server.sessions() == 3
    server.deliver_raw("INBOX", mail())
    w.expect(["INBOX"])
    server.deliver("Lists.foo", mail())
    w.expect(["Lists/foo"])
    server.deliver("With Space", mail())
    w.expect(["With Space"], timeout=5)
    server.create_folder("Later")
    w.expect(["Later"], timeout=5)
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert "IDLE on 2 folders" in w.stderr()


def test_idle_connections_stop_at_the_limit(dovecot_factory, watch_imap) -> None:
    server = dovecot_factory(notify=False)
    make_folders(server)
    w = watch_imap(account(server, mode="idle", idle=["INBOX", "Lists/foo", "With Space"],
                           max_idle=2, poll="1s"))
    w.ready()
    assert server.wait_for_sessions(3)
    server.deliver("With Space", mail())  # beyond max_idle: polled
    w.expect(["With Space"], timeout=5)
    assert server.sessions() == 3


def test_mode_notify_without_notify_fails(dovecot_factory, run_watch_imap) -> None:
    server = dovecot_factory(notify=False)
    out = run_watch_imap(account(server, mode="notify"), "-a", "t")
    assert out.returncode == 69
    assert out.stderr.count("\n") == 1 and "does not offer NOTIFY" in out.stderr


# ------------------------------------------------------------ ways in


def test_starttls(dovecot, watch_imap) -> None:
    w = watch_imap(account(dovecot, tls="starttls", port=dovecot.imap_port))
    w.ready()
    dovecot.deliver("INBOX", mail())
    w.expect(["INBOX"])


def test_preauth_tunnel_through_ssh(dovecot, sshd, watch_imap) -> None:
    import shlex

    tunnel = shlex.join(sshd.ssh_command()) + f" {sshd.host_alias} " \
        + shlex.quote(dovecot.tunnel_command())
    w = watch_imap(f'account t {{\n    tunnel = "{tunnel}"\n}}\n'.replace("\\", "\\\\"))
    w.ready()
    dovecot.deliver("INBOX", mail())
    w.expect(["INBOX"])
    w.signal(signal.SIGTERM)
    assert w.wait() == 0


def test_pass_cmd_gives_the_password(dovecot, watch_imap) -> None:
    w = watch_imap(account(dovecot, **{"pass": None, "pass_cmd": f"echo {dovecot.password}"}))
    w.ready()


@pytest.mark.parametrize("auth", ["PLAIN", "LOGIN"])
def test_awkward_password_with_each_mechanism(dovecot_factory, run_watch_imap, auth) -> None:
    # Quotes and backslashes must be escaped; 8-bit text goes as a literal.
    server = dovecot_factory(password='p\u00e4"ss\\w\u00f6rd x')
    out = run_watch_imap(account(server, auth=auth), "-a", "t", "--list")
    assert out.returncode == 0, out.stderr
    assert "INBOX" in out.stdout.splitlines()


# ------------------------------------------------------------ refusals


def test_wrong_password_is_one_line_and_exit_77(dovecot, run_watch_imap) -> None:
    out = run_watch_imap(account(dovecot, **{"pass": "wrong"}), "-a", "t")
    assert out.returncode == 77
    assert out.stderr.count("\n") == 1 and "login refused" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_untrusted_certificate_is_refused(dovecot, run_watch_imap) -> None:
    out = run_watch_imap(account(dovecot, ca_file=str(dovecot.other_ca_file)), "-a", "t")
    assert out.returncode == 76
    assert out.stderr.count("\n") == 1 and "certificate refused" in out.stderr, out.stderr
    # The same with STARTTLS, and for --list.
    out = run_watch_imap(account(dovecot, ca_file=str(dovecot.other_ca_file), tls="starttls",
                                 port=dovecot.imap_port), "-a", "t", "--list")
    assert out.returncode == 76 and "certificate refused" in out.stderr


def test_wrong_host_name_is_refused(dovecot, run_watch_imap) -> None:
    # "127.1" is 127.0.0.1 to the resolver, and a name the certificate lacks.
    out = run_watch_imap(account(dovecot, host="127.1"), "-a", "t")
    assert out.returncode == 76 and "certificate refused" in out.stderr, out.stderr


def test_failing_pass_cmd(dovecot, run_watch_imap) -> None:
    out = run_watch_imap(account(dovecot, **{"pass": None, "pass_cmd": "exit 3"}), "-a", "t")
    assert out.returncode == 69
    assert out.stderr == "watch-imap: pass_cmd failed (exit status 3)\n"


def test_list_when_the_server_is_down(dovecot, run_watch_imap) -> None:
    dovecot.kill()
    out = run_watch_imap(account(dovecot), "-a", "t", "--list")
    assert out.returncode == 75
    assert "cannot connect" in out.stderr and out.stderr.count("\n") == 1


# ------------------------------------------------------------ roaming


def test_server_killed_and_restarted(dovecot, watch_imap) -> None:
    make_folders(dovecot)
    w = watch_imap(account(dovecot))
    w.ready()
    dovecot.kill()
    time.sleep(1.5)  # some attempts fail while it is down
    dovecot.restart()
    # After the reconnect every folder once: changes may have been missed.
    w.expect(["INBOX", "Lists/foo", "With Space", "Caf&AOk-"], timeout=20)
    w.lines_for(1.0)
    dovecot.deliver("Lists.foo", mail())
    w.expect(["Lists/foo"])
    assert w.proc.poll() is None


def test_silent_link_is_noticed_and_reconnected(dovecot, watch_imap) -> None:
    make_folders(dovecot)
    w = watch_imap(account(dovecot, keepalive="1s", timeout="1s"))
    w.ready()
    dovecot.freeze()
    started = time.monotonic()
    try:
        # Nothing arrives while the server is silent...
        assert w.lines_for(3.5) == []
    finally:
        dovecot.thaw()
    # ...and the dead link was noticed within keepalive + timeout: the
    # reconnect that follows the thaw reports every folder.
    w.expect(["INBOX", "Lists/foo", "With Space", "Caf&AOk-"], timeout=20)
    assert time.monotonic() - started < 25
    dovecot.deliver("INBOX", mail())
    w.expect(["INBOX"])


def test_first_connection_waits_for_the_server(dovecot, watch_imap) -> None:
    dovecot.kill()
    w = watch_imap(account(dovecot))
    time.sleep(1.5)
    assert w.proc.poll() is None  # still trying, not given up
    dovecot.restart()
    w.ready(timeout=20)
    dovecot.deliver("INBOX", mail())
    w.expect(["INBOX"])


# ------------------------------------------------------------ the process


def test_reader_gone_ends_it(dovecot, watch_imap) -> None:
    w = watch_imap(account(dovecot))
    w.ready()
    w.close_stdout()
    assert w.wait(timeout=10) == 0
    assert dovecot.wait_for_sessions(0)


def test_sigint_exits_130(dovecot, watch_imap) -> None:
    w = watch_imap(account(dovecot))
    w.ready()
    w.signal(signal.SIGINT)
    assert w.wait(timeout=10) == 130


def test_config_error_names_file_and_line(run_watch_imap, imap_home) -> None:
    out = run_watch_imap('account t {\n    host = "h"\n    frob = "x"\n}\n', "-a", "t")
    assert out.returncode == 78
    conf = imap_home / "watch-imap-run.conf"
    assert out.stderr == f"watch-imap: unknown key 'frob' in account 't' ({conf}:3)\n"


def test_unknown_account_and_bad_command_line(run_watch_imap, imap_home) -> None:
    out = run_watch_imap(None, "--mbsyncrc", str(imap_home / "none"), "-a", "nope")
    assert out.returncode == 78 and "no account 'nope'" in out.stderr
    out = run_watch_imap(None, "--frobnicate")
    assert out.returncode == 64 and out.stderr.startswith("watch-imap: ")
    assert out.stderr.count("\n") == 1
    out = run_watch_imap(None, "--version")
    assert out.returncode == 0 and out.stdout.startswith("watch-imap (roammail) ")
