"""pytest fixtures around tests/peers; load with `pytest_plugins = ["peers.fixtures"]`.

Session-scoped (started once, shared; reset what you change):
  sshd                SshServer: OpenSSH on 127.0.0.1 (see peers.sshd)
  smtp_server         SmtpServer: aiosmtpd recording messages; call .clear() first
  smtp_greets_554     ScriptedServer: greets "554 no service" and closes
  smtp_silent         ScriptedServer: accepts, never speaks
  smtp_multiline_220  ScriptedServer: three-line 220 greeting, QUIT -> 221
  dovecot_certificates
                      Certificates: test CA, server certificate, unrelated CA
                      (peers.dovecot.make_certificates), made once: keys cost time
Function-scoped:
  closed_port         int: a port on 127.0.0.1 with nothing listening (fresh
                      per test: a port is only known to be closed "now")
  maildir_factory     make(name="Maildir", folders=()) -> Path under tmp_path
  dovecot             DovecotServer: a fresh Dovecot IMAP server (notify=True) with
                      its files in tmp_path/dovecot, killed at teardown (see
                      peers.dovecot)
  dovecot_factory     make(notify=True, **start_kwargs) -> a started DovecotServer
                      (tmp_path/dovecot-N); every one is killed at teardown
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest

from peers.dovecot import Certificates, DovecotServer, make_certificates
from peers.maildirs import make_maildir
from peers.smtp import (
    ScriptedServer,
    SmtpServer,
    find_closed_port,
    start_greets_554,
    start_multiline_220,
    start_silent,
    start_smtp_server,
)
from peers.sshd import SshServer


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    server = SshServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    with start_smtp_server() as server:
        yield server


@pytest.fixture(scope="session")
def smtp_greets_554() -> Iterator[ScriptedServer]:
    with start_greets_554() as server:
        yield server


@pytest.fixture(scope="session")
def smtp_silent() -> Iterator[ScriptedServer]:
    with start_silent() as server:
        yield server


@pytest.fixture(scope="session")
def smtp_multiline_220() -> Iterator[ScriptedServer]:
    with start_multiline_220() as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    return find_closed_port()


MaildirFactory = Callable[..., Path]


@pytest.fixture
def maildir_factory(tmp_path: Path) -> MaildirFactory:
    """make(name="Maildir", folders=()) creates Maildir++ tmp_path/name; returns its path."""

    def make(name: str = "Maildir", folders: Iterable[str] = ()) -> Path:
        return make_maildir(tmp_path / name, folders)

    return make


@pytest.fixture(scope="session")
def dovecot_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("dovecot-certificates"))


@pytest.fixture
def dovecot(tmp_path: Path, dovecot_certificates: Certificates) -> Iterator[DovecotServer]:
    server = DovecotServer.start(tmp_path / "dovecot", certificates=dovecot_certificates)
    try:
        yield server
    finally:
        server.close()


DovecotFactory = Callable[..., DovecotServer]


@pytest.fixture
def dovecot_factory(tmp_path: Path,
                    dovecot_certificates: Certificates) -> Iterator[DovecotFactory]:
    """make(notify=True, **kwargs) starts one more DovecotServer; all are closed at teardown."""
    servers: list[DovecotServer] = []

    def make(notify: bool = True, **kwargs: Any) -> DovecotServer:
        kwargs.setdefault("certificates", dovecot_certificates)
        server = DovecotServer.start(tmp_path / f"dovecot-{len(servers) + 1}", notify=notify,
                                     **kwargs)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        errors = []
        for server in servers:
            try:
                server.close()
            except Exception as error:  # noqa: BLE001 - close the others, then raise
                errors.append(error)
        if errors:
            raise errors[0]
