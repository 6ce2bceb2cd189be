"""watch-imap against servers that misbehave in ways a real Dovecot does
not: each is a FAKE IMAP server, a few scripted lines on a loopback
socket, standing for an attacker on the path or a broken server."""

from __future__ import annotations

import socket
import threading

import pytest
from imap_helpers import account

pytestmark = pytest.mark.slow


class ScriptedImap:
    """A fake server: sends `greeting`, then answers each line it reads
    with `answers(line)` (bytes, or None to say nothing)."""

    def __init__(self, greeting: bytes, answers=lambda line: None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.answers = answers
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.sendall(self.greeting)
                    buf = b""
                    while not self._stop.is_set():
                        data = conn.recv(4096)
                        if not data:
                            break
                        buf += data
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            self.received.append(line)
                            answer = self.answers(line)
                            if answer:
                                conn.sendall(answer)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def fake():
    servers: list[ScriptedImap] = []

    def make(greeting: bytes, answers=lambda line: None) -> ScriptedImap:
        server = ScriptedImap(greeting, answers)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


class Plain:
    """What account() needs to know of a server."""

    def __init__(self, port: int) -> None:
        self.host, self.imaps_port, self.user, self.password = "localhost", port, "u", "p"
        self.ca_file = "/dev/null"


def starttls_account(port: int) -> str:
    return account(Plain(port), tls="starttls", port=port, ca_file=None,
                   system_certificates="yes", timeout="3s")


def test_plaintext_after_starttls_is_refused(fake, run_watch_imap) -> None:
    # An attacker on the path appends a response to the server's answer to
    # STARTTLS, hoping it is read as if it had come through TLS.
    server = fake(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
                  lambda line: b"S1 OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN]"
                               b" injected\r\n" if b"STARTTLS" in line else None)
    out = run_watch_imap(starttls_account(server.port), "-a", "t", "--list")
    assert out.returncode == 76, out.stderr
    assert "plaintext after the answer to STARTTLS" in out.stderr
    assert out.stderr.count("\n") == 1


def test_preauth_before_starttls_is_refused(fake, run_watch_imap) -> None:
    server = fake(b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] welcome\r\n")
    out = run_watch_imap(starttls_account(server.port), "-a", "t", "--list")
    assert out.returncode == 76 and "PREAUTH" in out.stderr, out.stderr
    assert server.received == []  # not one command sent in plaintext


def test_no_starttls_offered_is_refused_not_downgraded(fake, run_watch_imap) -> None:
    server = fake(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n",
                  lambda line: b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nS0 OK done\r\n"
                  if line.startswith(b"S0 CAPABILITY") else None)
    out = run_watch_imap(starttls_account(server.port), "-a", "t", "--list")
    assert out.returncode == 76 and "does not offer STARTTLS" in out.stderr, out.stderr
    assert not any(b"LOGIN" in line or b"AUTHENTICATE" in line for line in server.received)


def test_a_server_that_is_not_imap(fake, run_watch_imap) -> None:
    server = fake(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    out = run_watch_imap(account(Plain(server.port), tls="none", port=server.port),
                         "-a", "t", "--list")
    assert out.returncode == 75, out.stderr
    assert "not an IMAP greeting: b'HTTP/1.1 400" in out.stderr, out.stderr


def test_a_server_that_greets_with_bye(fake, run_watch_imap) -> None:
    server = fake(b"* BYE Too many connections\r\n")
    out = run_watch_imap(account(Plain(server.port), tls="none", port=server.port),
                         "-a", "t", "--list")
    assert out.returncode == 75
    assert "refused the connection: Too many connections" in out.stderr, out.stderr


def test_a_silent_server_times_out(fake, run_watch_imap) -> None:
    server = fake(b"")  # accepts, never greets
    out = run_watch_imap(account(Plain(server.port), tls="none", port=server.port,
                                 timeout="1s"), "-a", "t", "--list", timeout=30)
    assert out.returncode == 75
    assert "no answer to the greeting within 1 s" in out.stderr, out.stderr
