"""The peers (tests/peers) work for real: sshd logins, SMTP servers, maildirs, Dovecot."""

from __future__ import annotations

import imaplib
import os
import re
import select
import smtplib
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest

from peers.dovecot import DovecotServer, imap_utf7_decode, imap_utf7_encode
from peers.fixtures import DovecotFactory, MaildirFactory
from peers.maildirs import add_message, folder_path, make_maildir, messages, render_message
from peers.require import require_executable, require_program, require_root, require_user
from peers.smtp import (
    ScriptedServer,
    SmtpServer,
    start_greets_554,
    start_silent,
    start_smtp_server,
)
from peers.sshd import SshServer, ssh_run

# ------------------------------------------------------------------ require


def test_require_program_returns_absolute_path() -> None:
    path = require_program("sh")
    assert os.path.isabs(path) and os.access(path, os.X_OK)


def test_require_program_looks_in_sbin(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.access("/usr/sbin/sshd", os.X_OK):
        pytest.skip("no /usr/sbin/sshd to find")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert require_program("sshd") == "/usr/sbin/sshd"


def test_require_program_missing_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-prog-x is missing"):
        require_program("no-such-prog-x")


def test_require_program_missing_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception,
                       match=r"no-such-prog-x is missing: \./test\.sh installs it"):
        require_program("no-such-prog-x")


def test_require_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    require_root("binds port 25")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root: binds port 25"):
        require_root("binds port 25")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs root: binds port 25"):
        require_root("binds port 25")


def test_require_user(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require_user("root", "owns everything").pw_uid == 0
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception,
                       match=r"user no-such-user-x is missing \(runs it\): \./test\.sh creates it"):
        require_user("no-such-user-x", "runs it")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="user no-such-user-x is missing"):
        require_user("no-such-user-x", "runs it")


def test_require_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require_executable(["/no/such/prog", "/bin/sh"], "a shell") == "/bin/sh"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception,
                       match=r"a tool is missing \(looked for /no/such/prog\)"):
        require_executable(["/no/such/prog"], "a tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="a tool is missing"):
        require_executable(["/no/such/prog"], "a tool")


# --------------------------------------------------------------------- sshd


@pytest.mark.slow
def test_ssh_dash_f_runs_a_command(sshd: SshServer) -> None:
    result = subprocess.run([*sshd.ssh_command(), sshd.host_alias, "echo", "hi"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")
    assert (sshd.host_alias, sshd.host) == ("testhost", "127.0.0.1")


@pytest.mark.slow
def test_ssh_run_quotes_argv_and_passes_status(sshd: SshServer) -> None:
    result = ssh_run(sshd, "printf", "%s|", "a b", "x;y", "$HOME")
    assert (result.returncode, result.stdout) == (0, "a b|x;y|$HOME|")
    assert ssh_run(sshd, "exit 7", shell=True).returncode == 7
    assert ssh_run(sshd, "cat", input="piped\n").stdout == "piped\n"


@pytest.mark.slow
def test_two_connections_are_counted(sshd: SshServer) -> None:
    before = sshd.count_accepted()
    for _ in range(2):
        assert ssh_run(sshd, "true").returncode == 0
    assert sshd.count_accepted() == before + 2


@pytest.mark.slow
def test_remote_path_puts_chosen_dirs_first(sshd: SshServer, tmp_path: Path) -> None:
    default = ssh_run(sshd, 'echo "$PATH"', shell=True).stdout.strip()
    assert default.split(":")[0] == str(sshd.remote_bin)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "far-side-tool"
    tool.write_text("#!/bin/sh\necho far side \"$@\"\n")
    tool.chmod(0o755)
    result = ssh_run(sshd, "far-side-tool", "ok", remote_path=[bin_dir])
    assert (result.returncode, result.stdout) == (0, "far side ok\n")
    chosen = ssh_run(sshd, 'echo "$PATH"', shell=True, remote_path=[bin_dir]).stdout.strip()
    assert chosen.split(":")[:2] == [str(bin_dir), str(sshd.remote_bin)]


@pytest.mark.slow
def test_remote_home(sshd: SshServer, tmp_path: Path) -> None:
    result = ssh_run(sshd, 'echo "$HOME"; pwd', shell=True, remote_home=tmp_path)
    assert result.stdout.split() == [str(tmp_path), str(tmp_path)]


@pytest.mark.slow
def test_install_home_files(sshd: SshServer, tmp_path: Path) -> None:
    dot_ssh = sshd.install_home(tmp_path / "home")
    assert stat.S_IMODE(dot_ssh.stat().st_mode) == 0o700
    for name in ("config", "id_ed25519", "known_hosts"):
        assert stat.S_IMODE((dot_ssh / name).stat().st_mode) == 0o600
    result = subprocess.run(["ssh", "-F", str(dot_ssh / "config"), "testhost", "echo", "hi"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "hi\n")


@pytest.mark.slow
def test_openssh_ignores_home(sshd: SshServer, tmp_path: Path) -> None:
    """Documents why install_home() alone is not enough: ssh reads ~ from passwd."""
    home = tmp_path / "home"
    sshd.install_home(home)
    result = subprocess.run(["ssh", "-G", "testhost"], env={**os.environ, "HOME": str(home)},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert f"port {sshd.port}\n" not in result.stdout


@pytest.mark.slow
def test_plain_ssh_via_client_bin_wrapper(sshd: SshServer, tmp_path: Path) -> None:
    env = sshd.client_env(home=tmp_path)
    result = subprocess.run(["sh", "-c", "ssh testhost echo hi"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")


def _read_line(stream: object, timeout: float) -> bytes:
    assert hasattr(stream, "fileno") and hasattr(stream, "readline")
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output in time"
    return stream.readline()  # type: ignore[no-any-return]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.slow
def test_stop_kills_sessions_and_detached_children() -> None:
    if not os.path.isdir("/proc"):
        pytest.skip("process discovery needs /proc")
    server = SshServer.start()
    try:
        client = subprocess.Popen(
            [*server.ssh_command(), "testhost", "echo started; exec sleep 300"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert _read_line(client.stdout, 10) == b"started\n"
        detached = ssh_run(server, "setsid sleep 301 </dev/null >/dev/null 2>&1 & echo $!",
                           shell=True)
        detached_pid = int(detached.stdout)
        pids = server.session_processes()
        assert detached_pid in pids
        assert len(pids) >= 3  # connection sshd, sleep 300, detached sleep 301
        workdir, port = server.workdir, server.port
    finally:
        server.stop()
    assert [pid for pid in pids if _alive(pid)] == []
    assert client.wait(timeout=5) == 255
    assert client.stdout is not None
    client.stdout.close()
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server.stop()  # idempotent


# --------------------------------------------------------------------- smtp


@pytest.mark.slow
def test_smtp_server_receives_mail(smtp_server: SmtpServer) -> None:
    smtp_server.clear()
    with smtplib.SMTP(*smtp_server.address, timeout=5) as client:
        code, _ = client.noop()
        assert code == 250
        client.sendmail("a@example.org", ["b@example.org", "c@example.org"],
                        b"Subject: hi\r\n\r\nbody\r\n")
    [received] = smtp_server.wait_for_messages(1)
    assert received.mail_from == "a@example.org"
    assert received.rcpt_tos == ("b@example.org", "c@example.org")
    assert b"Subject: hi" in received.content and b"body" in received.content
    assert smtp_server.connections == 1
    smtp_server.clear()
    assert (smtp_server.messages, smtp_server.connections) == ([], 0)


@pytest.mark.slow
def test_smtp_server_greets_220_and_can_refuse_data(smtp_server: SmtpServer) -> None:
    smtp_server.clear()
    with socket.create_connection(smtp_server.address, timeout=5) as sock:
        assert sock.recv(1024).startswith(b"220 ")
    smtp_server.data_response = "451 4.3.0 try later"
    with smtplib.SMTP(*smtp_server.address, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.org", ["b@example.org"], b"\r\nbody\r\n")
    assert refused.value.smtp_code == 451
    assert smtp_server.messages == []
    smtp_server.clear()
    assert smtp_server.data_response == "250 OK"


@pytest.mark.slow
def test_greets_554(smtp_greets_554: ScriptedServer) -> None:
    before = smtp_greets_554.connections
    with socket.create_connection(smtp_greets_554.address, timeout=5) as sock:
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
    assert data == b"554 no service\r\n"
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(*smtp_greets_554.address, timeout=5)
    assert refused.value.smtp_code == 554
    assert smtp_greets_554.connections == before + 2


@pytest.mark.slow
def test_silent_times_out(smtp_silent: ScriptedServer) -> None:
    before = smtp_silent.connections
    with socket.create_connection(smtp_silent.address, timeout=0.3) as sock:
        sock.sendall(b"EHLO me\r\n")
        with pytest.raises(socket.timeout):
            sock.recv(1024)
    with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP(*smtp_silent.address, timeout=0.3)
    assert smtp_silent.connections == before + 2


@pytest.mark.slow
def test_multiline_220(smtp_multiline_220: ScriptedServer) -> None:
    with socket.create_connection(smtp_multiline_220.address, timeout=5) as sock:
        greeting = b""
        while not greeting.endswith(b"220 ready\r\n"):
            chunk = sock.recv(1024)
            assert chunk, f"closed after {greeting!r}"
            greeting += chunk
        assert greeting == b"220-first\r\n220-second\r\n220 ready\r\n"
    client = smtplib.SMTP(timeout=5)
    assert client.connect(*smtp_multiline_220.address) == (220, b"first\nsecond\nready")
    assert client.ehlo()[0] == 250
    assert client.quit()[0] == 221
    assert smtp_multiline_220.connections >= 2


def test_closed_port_refuses(closed_port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port), timeout=2).close()


@pytest.mark.slow
def test_servers_bind_other_loopback_addresses() -> None:
    with start_greets_554("127.0.0.2") as server:
        assert server.address[0] == "127.0.0.2"
        with socket.create_connection(server.address, timeout=5) as sock:
            assert sock.recv(1024).startswith(b"554 ")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    with start_smtp_server("127.0.0.3") as smtp:
        with smtplib.SMTP(*smtp.address, timeout=5) as client:
            client.sendmail("a@example.org", ["b@example.org"], b"\r\nx\r\n")
        assert len(smtp.wait_for_messages(1)) == 1
        assert smtp.connections == 1


@pytest.mark.slow
def test_stop_closes_open_connections_quickly() -> None:
    silent = start_silent()
    smtp = start_smtp_server()
    socks = [socket.create_connection(silent.address, timeout=5) for _ in range(3)]
    socks.append(socket.create_connection(smtp.address, timeout=5))
    assert socks[-1].recv(1024).startswith(b"220 ")
    started = time.monotonic()
    silent.stop()
    smtp.stop()
    assert time.monotonic() - started < 2
    try:
        for sock in socks:
            # The server closed it: an orderly EOF, or a reset when the
            # close raced our unread data; both end the connection.
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in socks:
            sock.close()
    silent.stop()
    smtp.stop()  # idempotent


# ----------------------------------------------------------------- maildirs


def test_make_maildir_layout(tmp_path: Path) -> None:
    base = make_maildir(tmp_path / "Mail", folders=["Sent", "lists/roam"])
    for directory in (base, base / ".Sent", base / ".lists.roam"):
        assert sorted(p.name for p in directory.iterdir() if p.name in ("cur", "new", "tmp")) \
            == ["cur", "new", "tmp"]
    assert (base / ".Sent" / "maildirfolder").is_file()
    assert not (base / "maildirfolder").exists()
    assert folder_path(base, "lists.roam") == base / ".lists.roam"


def test_add_message_and_messages(maildir_factory: MaildirFactory) -> None:
    base = maildir_factory("Mail", folders=["Sent"])
    first = add_message(base, body=b"one")
    second = add_message(base, body=b"two", subdir="cur", flags="SF")
    sent = add_message(base, "Sent", name="fixed-name", raw=b"Subject: raw\n\nraw body\n")
    assert sent == base / ".Sent" / "new" / "fixed-name"
    assert first.parent == base / "new" and second.parent == base / "cur"
    assert second.name.endswith(":2,FS")
    assert first.name != second.name.split(":")[0]
    inbox = messages(base)
    assert set(inbox) == {first.name, second.name}
    assert inbox[first.name].endswith(b"\n\none\n")
    assert b"\nSubject: test message\n" in inbox[first.name]
    assert messages(base, "Sent") == {"fixed-name": b"Subject: raw\n\nraw body\n"}
    assert messages(base, "Sent", subdirs=["cur"]) == {}
    assert list((base / "tmp").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        add_message(base, "NoSuchFolder")


# ------------------------------------------------------------------ dovecot


def test_dovecot_utf7_names() -> None:
    pairs = {"Café": "Caf&AOk-", "a&b": "a&-b", "台北": "&U,BTFw-", "日本語": "&ZeVnLIqe-",
             "Lists.foo": "Lists.foo", "": ""}
    for text, name in pairs.items():
        assert (imap_utf7_encode(text), imap_utf7_decode(name)) == (name, text)


def _status(server: DovecotServer, *folders: str) -> dict[str, int]:
    """MESSAGES of each folder, by IMAP STATUS."""
    counts = {}
    with server.client() as client:
        for folder in folders:
            typ, data = client.status(f'"{folder}"', "(MESSAGES)")
            assert typ == "OK", data
            found = re.search(rb"\(MESSAGES (\d+)\)", data[0])
            assert found is not None, data
            counts[folder] = int(found.group(1))
    return counts


def _capabilities(client: imaplib.IMAP4) -> set[str]:
    typ, data = client.capability()
    assert typ == "OK"
    return set(data[0].decode().upper().split())


class _RawImap:
    """A bare IMAP-over-TLS connection whose reads may time out and be retried."""

    def __init__(self, server: DovecotServer) -> None:
        raw = socket.create_connection((server.address, server.imaps_port), timeout=5)
        self.sock = server.ssl_context().wrap_socket(raw, server_hostname=server.host)
        self.buffer = b""
        assert self.line(5).startswith(b"* OK")

    def line(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed after {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def command(self, tag: str, command: str, timeout: float = 5) -> bytes:
        self.sock.sendall(f"{tag} {command}\r\n".encode())
        return self.tagged(tag, timeout)

    def tagged(self, tag: str, timeout: float) -> bytes:
        while True:
            line = self.line(timeout)
            if line.startswith(f"{tag} ".encode()):
                return line

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
def test_dovecot_imaps_login_verified_with_ca_file(dovecot: DovecotServer) -> None:
    assert (dovecot.host, dovecot.address) == ("localhost", "127.0.0.1")
    with dovecot.client() as client:
        assert client.noop()[0] == "OK"
        assert isinstance(client.sock, ssl.SSLSocket)
        cert = client.sock.getpeercert()
        assert cert is not None
        assert ("DNS", "localhost") in cert["subjectAltName"]
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    with imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=context,
                           timeout=5) as client:
        assert client.login(dovecot.user, dovecot.password)[0] == "OK"
    with pytest.raises(imaplib.IMAP4.error):
        with imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=context,
                               timeout=5) as client:
            client.login(dovecot.user, "wrong")


@pytest.mark.slow
def test_dovecot_other_ca_file_fails_verification(dovecot: DovecotServer) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.other_ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=context, timeout=5)


@pytest.mark.slow
def test_dovecot_starttls_on_imap_port(dovecot: DovecotServer) -> None:
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=5) as client:
        assert "STARTTLS" in client.capabilities
        assert client.starttls(ssl_context=dovecot.ssl_context())[0] == "OK"
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.login(dovecot.user, dovecot.password)[0] == "OK"
        assert client.noop()[0] == "OK"


@pytest.mark.slow
def test_dovecot_notify_by_default_and_not_with_notify_false(
        dovecot_factory: DovecotFactory) -> None:
    with_notify = dovecot_factory()
    without = dovecot_factory(notify=False)
    assert (with_notify.notify, without.notify) == (True, False)
    with with_notify.client() as client:
        on = _capabilities(client)
    with without.client() as client:
        off = _capabilities(client)
    assert "NOTIFY" in on and "IDLE" in on
    assert off == on - {"NOTIFY"}


@pytest.mark.slow
def test_dovecot_tunnel_gives_preauth_and_list(dovecot: DovecotServer) -> None:
    dovecot.create_folder("Lists.foo")
    script = b'a LIST "" "*"\r\nb LOGOUT\r\n'
    for argv in (["/bin/sh", "-c", dovecot.tunnel_command()], dovecot.tunnel_argv()):
        result = subprocess.run(argv, input=script, capture_output=True, timeout=10)
        assert (result.returncode, result.stderr) == (0, b"")
        lines = result.stdout.split(b"\r\n")
        assert re.fullmatch(rb"\* PREAUTH \[CAPABILITY IMAP4rev1 [^]]*\] Logged in as tester",
                            lines[0]), lines[0]
        listed = {line.rsplit(b" ", 1)[-1] for line in lines if line.startswith(b"* LIST ")}
        assert listed == {b"INBOX", b"Lists", b"Lists.foo"}  # CREATE made the parent
        assert b'* LIST (\\HasNoChildren) "." Lists.foo' in lines
        assert any(line.startswith(b"a OK") for line in lines)
    assert "Logged out" in dovecot.log_text()


@pytest.mark.slow
def test_dovecot_deliveries_put_one_message_where_asked(dovecot: DovecotServer) -> None:
    folders = ("INBOX", "Lists.foo", "Caf&AOk-")
    for folder in folders[1:]:
        dovecot.create_folder(folder)
    assert (dovecot.maildir / ".Caf&AOk-" / "cur").is_dir()
    assert _status(dovecot, *folders) == {"INBOX": 0, "Lists.foo": 0, "Caf&AOk-": 0}

    dovecot.deliver("Caf&AOk-", render_message(b"by lda", subject="lda"))
    assert _status(dovecot, *folders) == {"INBOX": 0, "Lists.foo": 0, "Caf&AOk-": 1}

    path = dovecot.deliver_raw("Lists.foo", render_message(b"raw", subject="raw"))
    assert path.parent == dovecot.maildir / ".Lists.foo" / "new"
    info = path.stat()
    assert (info.st_uid, info.st_gid) == (dovecot.run_as.uid, dovecot.run_as.gid)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert list((dovecot.maildir / ".Lists.foo" / "tmp").iterdir()) == []
    assert _status(dovecot, *folders) == {"INBOX": 0, "Lists.foo": 1, "Caf&AOk-": 1}

    dovecot.append("INBOX", render_message(b"appended", subject="append"))
    assert _status(dovecot, *folders) == {"INBOX": 1, "Lists.foo": 1, "Caf&AOk-": 1}

    with dovecot.client() as client:
        for folder, subject in (("INBOX", b"append"), ("Lists.foo", b"raw"),
                                ("Caf&AOk-", b"lda")):
            assert client.select(f'"{folder}"', readonly=True)[0] == "OK"
            typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK" and data[0] is not None
            assert data[0][1].strip() == b"Subject: " + subject

    with pytest.raises(FileNotFoundError):
        dovecot.deliver("No.such", render_message(b"lost"))
    with pytest.raises(FileNotFoundError):
        dovecot.deliver_raw("No.such", render_message(b"lost"))
    assert _status(dovecot, *folders) == {"INBOX": 1, "Lists.foo": 1, "Caf&AOk-": 1}


@pytest.mark.slow
def test_dovecot_freeze_silences_a_client_and_thaw_brings_it_back(
        dovecot: DovecotServer) -> None:
    conn = _RawImap(dovecot)
    try:
        assert conn.command("a", f"LOGIN {dovecot.user} {dovecot.password}").startswith(b"a OK")
        assert conn.command("b", "NOOP").startswith(b"b OK")
        dovecot.freeze()
        conn.sock.sendall(b"c NOOP\r\n")
        with pytest.raises(TimeoutError):
            conn.line(0.5)
        with socket.create_connection((dovecot.address, dovecot.imap_port), timeout=2) as late:
            late.settimeout(0.3)
            with pytest.raises(TimeoutError):
                late.recv(1024)  # accepted by the kernel, never greeted
        dovecot.thaw()
        assert conn.tagged("c", 5).startswith(b"c OK")
        assert conn.command("d", "NOOP").startswith(b"d OK")
    finally:
        conn.close()


@pytest.mark.slow
def test_dovecot_kill_drops_connections_and_restart_keeps_mail(
        dovecot: DovecotServer) -> None:
    dovecot.append("INBOX", render_message(b"kept", subject="kept"))
    ports = (dovecot.imap_port, dovecot.imaps_port)
    client = dovecot.client()
    try:
        assert client.select("INBOX")[1] == [b"1"]
        dovecot.kill()
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            client.noop()
    finally:
        try:
            client.shutdown()
        except OSError:
            pass
    assert dovecot.processes() == set() and not dovecot.running()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((dovecot.address, port), timeout=2).close()
    dovecot.restart()
    assert (dovecot.imap_port, dovecot.imaps_port) == ports
    assert dovecot.running() and dovecot.pid in dovecot.processes()
    assert _status(dovecot, "INBOX") == {"INBOX": 1}


@pytest.mark.slow
def test_dovecot_sessions_counts_logged_in_clients(dovecot: DovecotServer) -> None:
    assert dovecot.sessions() == 0
    first = dovecot.client()
    assert dovecot.sessions() == 1
    second = dovecot.client()
    assert dovecot.sessions() == 2
    tunnel = subprocess.Popen(dovecot.tunnel_argv(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert _read_line(tunnel.stdout, 10).startswith(b"* PREAUTH ")
        assert dovecot.sessions() == 3
    finally:
        assert tunnel.stdin is not None and tunnel.stdout is not None
        tunnel.stdin.close()
        tunnel.stdout.close()
        tunnel.wait(timeout=10)
    assert dovecot.wait_for_sessions(2, timeout=5)
    second.logout()
    assert dovecot.wait_for_sessions(1, timeout=5)
    assert dovecot.sessions() == 1
    first.logout()
    assert dovecot.wait_for_sessions(0, timeout=5)


@pytest.mark.slow
def test_dovecot_stop_leaves_no_process(dovecot_factory: DovecotFactory) -> None:
    server = dovecot_factory()
    client = server.client()
    tunnel = subprocess.Popen(server.tunnel_argv(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert _read_line(tunnel.stdout, 10).startswith(b"* PREAUTH ")
        pids = server.processes()
        assert server.pid in pids and tunnel.pid in pids
        assert len(pids) >= 5  # master, log, config, login, imap, tunnel imap, ...
        server.freeze()
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        assert [pid for pid in pids if _alive(pid)] == []
        assert server.processes() == set() and server.pid is None
        assert tunnel.wait(timeout=5) != 0 or tunnel.returncode == 0
        server.stop()  # idempotent
    finally:
        assert tunnel.stdin is not None and tunnel.stdout is not None
        tunnel.stdin.close()
        tunnel.stdout.close()
        tunnel.wait(timeout=5)
        try:
            client.shutdown()
        except OSError:
            pass
    for port in (server.imap_port, server.imaps_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((server.address, port), timeout=2).close()
    server.restart()
    assert _status(server, "INBOX") == {"INBOX": 0}
    directory = server.directory
    server.close()
    assert server.processes() == set()
    assert directory.exists() != server.private
    server.close()  # idempotent
