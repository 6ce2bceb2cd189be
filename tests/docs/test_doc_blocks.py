"""The README's recipes and the man pages' examples, run as written.

doc_blocks.py finds the blocks and their markers; each `doctest: NAME`
names a scenario below.  A scenario runs its block with /bin/sh -e in a
scratch HOME whose ~/.local/bin and ~/.local/share are the installed
tools', with those tools first on PATH.  Host names in the blocks reach
the test sshd through an ssh first on PATH (`-F` a config whose Host line
lists the example names); the far side's HOME is another scratch
directory, and its PATH is the sshd's own: it does not hold the tools'
directory, as on a server where a non-interactive ssh session does not
read the profile that adds ~/.local/bin.  home.example.org is an address
where nothing listens, so a fallback is seen to work.
"""

from __future__ import annotations

import email
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
from doc_blocks import Block, all_blocks, console_commands

from peers.maildirs import make_maildir
from peers.require import require_program
from peers.waiting import wait_until

TOP = Path(__file__).resolve().parents[2]
BLOCKS = all_blocks(TOP)
RUN_TIMEOUT_S = 60
SYNC_DEADLINE_S = 20

pytestmark = pytest.mark.slow


class Scratch:
    """A scratch HOME, a far side HOME, and the environment blocks run in."""

    def __init__(self, tmp_path: Path, installed, request: pytest.FixtureRequest) -> None:
        self.root = tmp_path
        self.home = tmp_path / "home"
        self.server_home = tmp_path / "server"
        self.installed = installed
        self._request = request
        self.bin = tmp_path / "bin"
        for home in (self.home, self.server_home):
            (home / ".local").mkdir(parents=True)
            (home / ".local" / "bin").symlink_to(installed.bindir)
            (home / ".local" / "share").symlink_to(installed.prefix / "share")
        self.bin.mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XDG_", "MAIL", "SSH_")) and k not in ("MANPATH", "PAGER")}
        env.update(HOME=str(self.home), MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8",
                   PATH=f"{self.bin}:{installed.bindir}:{env.get('PATH', '/usr/bin:/bin')}")
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def fixture(self, name: str):
        return self._request.getfixturevalue(name)

    def ssh_to_test_server(self) -> None:
        """`ssh mail.example.org` (and `home.example.org`, refused) from PATH."""
        sshd = self.fixture("sshd")
        closed_port = self.fixture("closed_port")
        config = self.root / "ssh_config"
        text = sshd.config_path.read_text()
        config.write_text(f"Host home.example.org\n    Port {closed_port}\n\n"
                          + text.replace("Host testhost",
                                         "Host testhost mail.example.org home.example.org"))
        argv = sshd.ssh_command(remote_home=self.server_home)
        argv[2] = str(config)
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
        wrapper.chmod(0o755)

    def run(self, text: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["/bin/sh", "-e", "-c", text], env=self.env, cwd=self.home,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
        if check:
            assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def start(self, text: str) -> subprocess.Popen[bytes]:
        """Run a block that does not end by itself; killed (its group) at teardown."""
        out = open(self.root / f"started{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(["/bin/sh", "-e", "-c", text], env=self.env, cwd=self.home,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def output_of(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.root / f"started{self.procs.index(proc)}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture
def scratch(tmp_path: Path, installed, request: pytest.FixtureRequest):
    s = Scratch(tmp_path, installed, request)
    try:
        yield s
    finally:
        s.stop_all()


def block_named(name: str) -> Block:
    [block] = [b for b in BLOCKS if b.kind == "doctest" and b.value == name]
    return block


def message_files(maildir: Path) -> list[Path]:
    return [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]


# ------------------------------------------------------------ the scenarios


def readme_path(block: Block, s: Scratch) -> None:
    require_program("man")
    res = s.run(block.text)
    assert "roammail" in res.stdout and "extsmaild" in res.stdout


def msmtprc(s: Scratch) -> None:
    smtp = s.fixture("smtp_server")
    smtp.clear()
    host, port = smtp.address
    rc = s.home / ".msmtprc"
    rc.write_text(f"account backup\nhost {host}\nport {port}\nfrom me@example.org\n"
                  "auth off\ntls off\n")
    rc.chmod(0o600)


def readme_extsmail(block: Block, s: Scratch) -> None:
    """Queued as a mail client does (recipients as arguments); home's ssh
    is refused, and says so; msmtp delivers to each recipient once."""
    require_program("msmtp")
    s.ssh_to_test_server()
    msmtprc(s)
    res = s.run(block.text)
    assert "Connection refused" in res.stdout + res.stderr, "ssh's reason is hidden"
    [mail] = s.fixture("smtp_server").wait_for_messages(1)
    assert list(mail.rcpt_tos) == ["ann@example.org"]
    assert s.run("extsmaild --list").stdout.count("ann@example.org") == 0
    assert (s.home / ".extsmail" / "spool").stat().st_mode & 0o777 == 0o700


def readme_extsmaild_daemon(block: Block, s: Scratch) -> None:
    require_program("msmtp")
    s.ssh_to_test_server()
    msmtprc(s)
    setup = block_named("readme-extsmail").text.split("extsmaild --list")[0]
    s.run(setup.replace("extsmaild -t", "true"))
    s.run(block.text)
    try:
        [mail] = s.fixture("smtp_server").wait_for_messages(1, timeout=SYNC_DEADLINE_S)
        assert list(mail.rcpt_tos) == ["ann@example.org"]
    finally:
        pids = s.run("pgrep -f -u \"$(id -u)\" -- 'extsmaild -m daemon' || true").stdout
        for pid in pids.split():
            env = Path(f"/proc/{pid}/environ")
            try:
                if f"HOME={s.home}".encode() in env.read_bytes().split(b"\0"):
                    os.kill(int(pid), signal.SIGTERM)
            except (FileNotFoundError, ProcessLookupError):
                pass


def readme_mswatch(block: Block, s: Scratch) -> None:
    """The server's maildir is Dovecot's; mbsync reaches its IMAP through
    the fixture's tunnel (the one line of the block changed: the test's
    Dovecot runs as its own user, not through /usr/lib/dovecot/imap)."""
    require_program("mbsync")
    dovecot = s.fixture("dovecot")
    s.ssh_to_test_server()
    (s.server_home / "Maildir").symlink_to(dovecot.maildir)
    make_maildir(s.home / "Maildir")
    far = s.run('ssh mail.example.org "command -v inputkill || echo missing"').stdout
    assert far.strip() == "missing", "the far side's PATH must not hold the tools"
    text = block.text.replace(
        'Tunnel "ssh -o BatchMode=yes mail.example.org /usr/lib/dovecot/imap"',
        f'Tunnel "{dovecot.tunnel_command()}"')
    assert text != block.text
    dovecot.create_folder("lists.dev")
    proc = s.start(text)
    local = s.home / "Maildir" / ".lists.dev"
    wait_until(lambda: local.is_dir() or proc.poll() is not None, SYNC_DEADLINE_S)
    time.sleep(1)  # the watchers are up once the first full sync made the folder
    dovecot.deliver("lists.dev", b"Subject: to the list\n\nhello\n")
    arrived = wait_until(lambda: local.is_dir() and bool(message_files(local))
                         or proc.poll() is not None, SYNC_DEADLINE_S)
    assert arrived and proc.poll() is None, s.output_of(proc)
    [mail] = message_files(local)
    assert email.message_from_bytes(mail.read_bytes())["Subject"] == "to the list"
    assert "does not support dots" not in s.output_of(proc)


def readme_imap(block: Block, s: Scratch) -> None:
    """The ~/.mbsyncrc the README takes as given: channel office between
    the test Dovecot (IMAPS) and the Maildir++ store ~/Mail/office."""
    require_program("mbsync")
    dovecot = s.fixture("dovecot")
    (s.home / ".mbsyncrc").write_text(
        dovecot.mbsync_account("office")
        + "IMAPStore office-imap\nAccount office\n\n"
          "MaildirStore office-local\nInbox ~/Mail/office\nSubFolders Maildir++\n\n"
          "Channel office\nFar :office-imap:\nNear :office-local:\nPatterns *\n"
          "Create Both\nSyncState *\n")
    make_maildir(s.home / "Mail" / "office")
    dovecot.create_folder("Lists.roam")
    proc = s.start(block.text)
    local = s.home / "Mail" / "office" / ".Lists.roam"
    wait_until(lambda: local.is_dir() or proc.poll() is not None, SYNC_DEADLINE_S)
    time.sleep(1)
    dovecot.deliver("Lists.roam", b"Subject: to roam\n\nhello\n")
    arrived = wait_until(lambda: local.is_dir() and bool(message_files(local))
                         or proc.poll() is not None, SYNC_DEADLINE_S)
    assert arrived and proc.poll() is None, s.output_of(proc)
    assert "Lists/roam" in s.output_of(proc).splitlines()


def readme_syncmail(block: Block, s: Scratch) -> None:
    s.ssh_to_test_server()
    far = make_maildir(s.server_home / "Maildir")
    (far / "new" / "1.1.far").write_bytes(b"Subject: moved\n\nhello\n")
    s.run(block.text)
    [mail] = message_files(s.home / "Maildir")
    assert b"Subject: moved" in mail.read_bytes()
    assert message_files(far) == []


def shell(block: Block, s: Scratch) -> None:
    s.run(block.text)


def hooks_install(block: Block, s: Scratch) -> None:
    s.run(block.text)
    links = [p for p in (s.home / ".smd" / "hooks").rglob("*")] + \
        [p for p in (s.home / ".config" / "roammail" / "hooks").rglob("*")]
    links = [p for p in links if p.is_symlink()]
    assert links and all(os.access(p, os.X_OK) for p in links)


def extsmail_1(block: Block, s: Scratch) -> None:
    """extsmail(1)'s examples in order, up to this one, with one external:
    msmtp to the test SMTP server."""
    require_program("msmtp")
    msmtprc(s)
    (s.home / ".extsmail").mkdir()
    (s.home / ".extsmail" / "externals").write_text(
        'group {\n external backup { sendmail = "msmtp -a backup" }\n}\n')
    page = [b for b in BLOCKS if b.source == block.source]
    for earlier in page[:page.index(block) + 1]:
        s.run(earlier.text)
    if "--flush" in block.text:
        [mail] = s.fixture("smtp_server").wait_for_messages(1)
        assert list(mail.rcpt_tos) == ["ann@example.org"]


def extsmail_conf(block: Block, s: Scratch) -> None:
    (s.home / ".extsmail").mkdir()
    (s.home / ".extsmail" / "conf").write_text(block.text)
    (s.home / ".extsmail" / "externals").write_text(
        'group {\n external a { sendmail = "msmtp -a a" }\n}\n')
    s.run("extsmaild -t >/dev/null")


def extsmail_externals(block: Block, s: Scratch) -> None:
    (s.home / ".extsmail").mkdir()
    (s.home / ".extsmail" / "conf").write_text('spool_dir = "~/.extsmail/spool"\n')
    (s.home / ".extsmail" / "externals").write_text(block.text)
    s.run("extsmaild -t >/dev/null")
    for word in (" -q ", " -t\""):
        assert word not in block.text, f"{word.strip()} in an external"


def mswatchrc_text(text: str) -> str:
    """The file of a block; from a console block, what `cat` shows."""
    if text.startswith("$ "):
        [(_, out)] = [(c, o) for c, o in console_commands(text) if c.startswith("cat ")]
        return out
    return text


def mswatchrc(block: Block, s: Scratch) -> None:
    from roammail.mswatch.config import parse_mswatchrc

    config = parse_mswatchrc(mswatchrc_text(block.text), block.where)
    assert config.stores


def watch_imap_conf(block: Block, s: Scratch) -> None:
    from roammail.watch_imap.config import parse_watch_imap_conf

    assert parse_watch_imap_conf(block.text, block.where)


def syncmail_conf(block: Block, s: Scratch) -> None:
    from roammail.syncmail.conf import parse_config

    assert parse_config(block.text, block.where)


SCENARIOS: dict[str, Callable[[Block, Scratch], None]] = {
    "readme-path": readme_path,
    "readme-extsmail": readme_extsmail,
    "readme-extsmaild-daemon": readme_extsmaild_daemon,
    "readme-mswatch": readme_mswatch,
    "readme-imap": readme_imap,
    "readme-syncmail": readme_syncmail,
    "shell": shell,
    "hooks-install": hooks_install,
    "extsmail.1": extsmail_1,
    "extsmail.conf": extsmail_conf,
    "extsmail.externals": extsmail_externals,
    "mswatchrc": mswatchrc,
    "watch-imap.conf": watch_imap_conf,
    "syncmail.conf": syncmail_conf,
}


# ----------------------------------------------------------------- the tests


def test_every_block_is_run_or_says_why() -> None:
    assert any(b.source == "README.md" for b in BLOCKS)
    wrong = []
    for block in BLOCKS:
        if block.kind is None:
            wrong.append(f"{block.where}: neither run (doctest: NAME) nor marked norun: REASON")
        elif block.kind == "norun" and not block.value:
            wrong.append(f"{block.where}: norun needs a reason")
        elif block.kind == "doctest" and block.value not in SCENARIOS:
            wrong.append(f"{block.where}: no scenario {block.value!r}")
    assert not wrong, "\n".join(wrong)


def test_the_readme_has_no_indented_code() -> None:
    """An indented block escapes the markers: the README fences its blocks."""
    lines = (TOP / "README.md").read_text().splitlines()
    fenced = False
    for number, (before, line) in enumerate(zip([""] + lines, lines), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and not before.strip():
            pytest.fail(f"README.md:{number}: an indented code block; fence it")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "doctest"],
                         ids=lambda b: f"{b.where}-{b.value}")
def test_block(block: Block, scratch: Scratch) -> None:
    scenario: Optional[Callable[[Block, Scratch], None]] = SCENARIOS.get(block.value)
    if scenario is None:
        pytest.fail(f"{block.where}: no scenario {block.value!r}")
    scenario(block, scratch)
