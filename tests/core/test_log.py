"""Tests of roammail.core.log: the stderr format, real syslog datagrams, no duplicates."""

from __future__ import annotations

import logging
import os
import socket
import tempfile

import pytest

from roammail.core import log


@pytest.fixture
def syslog_socket():
    # AF_UNIX paths are limited to ~108 bytes: pytest's tmp_path can be too long.
    directory = tempfile.mkdtemp(prefix="rm-log-")
    path = os.path.join(directory, "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


@pytest.fixture(autouse=True)
def reset_logger():
    yield
    logger = logging.getLogger(log.LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_stderr_format(capsys):
    logger = log.setup("extsmaild", stderr=True, syslog=False)
    logger.info("sent message %s via %s", "m1", "work")
    logger.debug("not shown without verbose")
    assert capsys.readouterr().err == "extsmaild: sent message m1 via work\n"


def test_verbose_shows_debug(capsys):
    logger = log.setup("mswatch", stderr=True, verbose=True, syslog=False)
    logger.debug("details")
    assert capsys.readouterr().err == "mswatch: details\n"


def test_library_loggers_go_through_the_same_handlers(capsys):
    log.setup("syncmail", stderr=True, syslog=False)
    logging.getLogger("roammail.extsmail.spool").warning("from the library")
    assert capsys.readouterr().err == "syncmail: from the library\n"


def test_no_stderr_when_not_a_terminal(capsys):
    logger = log.setup("extsmaild", syslog=False)  # capsys' stderr is no terminal
    logger.warning("quiet")
    assert capsys.readouterr().err == ""


def test_syslog_datagram_is_mail_info(syslog_socket):
    sock, path = syslog_socket
    logger = log.setup("extsmaild", stderr=False, syslog_address=path)
    logger.info("sent 1 message via work")
    data = sock.recv(4096)
    assert data.startswith(b"<22>")  # facility mail (2) * 8 + info (6)
    assert f"extsmaild[{os.getpid()}]: sent 1 message via work".encode() in data


def test_syslog_warning_priority(syslog_socket):
    sock, path = syslog_socket
    log.setup("extsmaild", stderr=False, syslog_address=path).warning("retrying")
    assert sock.recv(4096).startswith(b"<20>")  # mail.warning


def test_missing_syslog_socket_is_silently_skipped(tmp_path, capsys):
    logger = log.setup("extsmaild", stderr=False, syslog_address=str(tmp_path / "nope"))
    logger.warning("nowhere to go")
    assert capsys.readouterr().err == ""  # not even logging's last-resort handler


def test_setup_twice_does_not_duplicate(capsys, syslog_socket):
    sock, path = syslog_socket
    log.setup("extsmaild", stderr=True, syslog_address=path)
    logger = log.setup("extsmaild", stderr=True, syslog_address=path)
    assert len(logger.handlers) == 2
    logger.info("once")
    assert capsys.readouterr().err == "extsmaild: once\n"
    assert b"once" in sock.recv(4096)
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        sock.recv(4096)


def test_setup_leaves_other_handlers_alone():
    logger = logging.getLogger(log.LOGGER_NAME)
    other = logging.NullHandler()
    logger.addHandler(other)
    log.setup("a", stderr=False, syslog=False)
    log.setup("b", stderr=False, syslog=False)
    assert other in logger.handlers
