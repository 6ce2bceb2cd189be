"""Fixtures of the hook tests (mail-on-failure, persistent-ssh); see hook_helpers.

  hooks      {"mail-on-failure": path, "persistent-ssh": path}: the installed hooks
  home       a fresh HOME (tmp_path/home) in an environment without SSH,
             ROAMMAIL_SSH_HOST, ROAMMAIL_HOOK_LOG and ROAMMAIL_OFFLINE
  ssh_home   SshHome: a short temporary home ssh itself uses (nss_wrapper);
             every master started in it is stopped and killed afterwards
  mailbox    Mailbox: the user's /var/mail mailbox through `mail` and dma;
             what the test appended is removed afterwards (tests register
             the subject markers they use in `mailbox.markers`)
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Iterator

import pytest
from hook_helpers import Mailbox, SshHome, find_nss_wrapper

from peers.require import in_ci, require_program
from peers.sshd import SshServer

HOOK_NAMES = ("mail-on-failure", "persistent-ssh")


@pytest.fixture(scope="session")
def hooks(installed) -> dict[str, Path]:
    found = {name: installed.prefix / "share" / "roammail" / "hooks" / name
             for name in HOOK_NAMES}
    for path in found.values():
        assert os.access(path, os.X_OK), f"{path} is not installed"
    return found


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home_dir = tmp_path / "home"
    home_dir.mkdir()
    env = dict(os.environ)
    for name in ("SSH", "ROAMMAIL_SSH_HOST", "ROAMMAIL_HOOK_LOG", "ROAMMAIL_OFFLINE"):
        env.pop(name, None)
    env["HOME"] = str(home_dir)
    env["USER"] = pwd.getpwuid(os.getuid()).pw_name
    return home_dir, env


@pytest.fixture
def ssh_home(sshd: SshServer) -> Iterator[SshHome]:
    library = find_nss_wrapper()
    if library is None:
        message = "libnss_wrapper.so is missing: ./test.sh installs libnss-wrapper"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    require_program("ssh")
    home = SshHome.create(sshd, library)
    try:
        yield home
    finally:
        home.cleanup()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    require_program("mail")
    require_program("dma")
    box = Mailbox(pwd.getpwuid(os.getuid()).pw_name)
    try:
        yield box
    finally:
        box.cleanup()
