"""mail-on-failure, the installed hook, run as smd runs it.

Fast tests put a recording `mail` first on PATH (argv and body of each
call land in a directory; it can be slow or fail on demand); the slow ones
mail for real, through bsd-mailx and dma into the user's /var/mail mailbox,
and look only at what they appended.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hook_helpers import (
    HOOK_TIMEOUT_S,
    Mailbox,
    env_with_path_first,
    run_hook,
    write_program,
)

from peers.require import find_program

HOSTILE_ENDPOINTS = [
    "a b",
    "q'uote\"d",
    "$(touch pwned)",
    "`touch pwned2`",
    "x; touch pwned3",
    "new\nline",
    "-rf",
    "--help",
    ".hidden",
    "sl/ash",
    "50%",
    "*",
]

FAKE_MAIL = r"""
# A recording `mail`: argv (NUL-separated) and stdin of each call go to
# $FAKE_MAIL_DIR; FAKE_MAIL_DELAY seconds of sleep first, then exit
# $FAKE_MAIL_STATUS (with a line on stderr when it is not 0).
sleep "${FAKE_MAIL_DELAY:-0}"
f=$(mktemp "$FAKE_MAIL_DIR/call.XXXXXX")
for a; do printf '%s\0' "$a"; done > "$f.args"
cat > "$f.body"
status=${FAKE_MAIL_STATUS:-0}
[ "$status" = 0 ] || echo "fake mail: no local delivery here" >&2
exit "$status"
"""


@dataclass
class MailCall:
    argv: list[str]
    body: str

    @property
    def subject(self) -> str:
        return self.argv[self.argv.index("-s") + 1]

    @property
    def recipient(self) -> str:
        return self.argv[-1]


class FakeMail:
    def __init__(self, root: Path) -> None:
        self.bin = root / "fake-mail-bin"
        self.calls_dir = root / "fake-mail-calls"
        self.calls_dir.mkdir(parents=True)
        write_program(self.bin, "mail", FAKE_MAIL)

    def env(self, env: dict[str, str], **extra: str) -> dict[str, str]:
        result = env_with_path_first(env, self.bin)
        result["FAKE_MAIL_DIR"] = str(self.calls_dir)
        result.update(extra)
        return result

    def calls(self) -> list[MailCall]:
        found = []
        for args in sorted(self.calls_dir.glob("*.args"), key=lambda p: p.stat().st_mtime_ns):
            argv = args.read_bytes().decode().split("\0")[:-1]
            body = args.with_suffix(".body").read_text(errors="replace")
            found.append(MailCall(argv, body))
        return found

    def take(self) -> list[MailCall]:
        """The calls so far, forgotten afterwards."""
        calls = self.calls()
        for path in self.calls_dir.iterdir():
            path.unlink()
        return calls


@pytest.fixture
def fake_mail(tmp_path: Path) -> FakeMail:
    return FakeMail(tmp_path)


def user_name() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def state_files(home: Path) -> list[str]:
    hooks_dir = home / ".smd" / "hooks"
    if not hooks_dir.is_dir():
        return []
    return sorted(p.name for p in hooks_dir.iterdir() if p.name.startswith("mail-on-failure-"))


def quiet_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# ---------------------------------------------------------------- fast tier


def test_pre_hooks_and_other_whens_do_nothing(hooks, home, fake_mail):
    home_dir, env = home
    for argv in (("pre", "pull", "default", "0"), ("pre", "push", "default", "1"),
                 ("during", "pull", "default", "1")):
        quiet_ok(run_hook(hooks["mail-on-failure"], *argv, env=fake_mail.env(env)))
    assert fake_mail.calls() == []
    assert not (home_dir / ".smd").exists()


def test_too_few_arguments_warn_and_exit_0(hooks, home, fake_mail):
    _, env = home
    result = run_hook(hooks["mail-on-failure"], "post", "pull", env=fake_mail.env(env))
    assert result.returncode == 0
    assert "usage: mail-on-failure WHEN WHAT ENDPOINT STATUS" in result.stderr
    assert fake_mail.calls() == []


def test_one_mail_per_series_and_one_on_recovery(hooks, home, fake_mail):
    home_dir, env = home
    logs = home_dir / ".smd" / "log"
    logs.mkdir(parents=True)
    (logs / "client.default.log").write_text("client: connecting\nclient: ssh died\n")
    (logs / "server.default.log").write_text("server: broken pipe\n")
    env = fake_mail.env(env)
    hook = hooks["mail-on-failure"]

    quiet_ok(run_hook(hook, "post", "pull", "default", "1", env=env))
    [call] = fake_mail.take()
    assert call.argv == ["-s", "[smd] sync with default failed", "--", user_name()]
    for text in ("what:      pull", "endpoint:  default", "status:    1",
                 "  client: connecting\n  client: ssh died\n", "  server: broken pipe\n",
                 str(logs / "client.default.log"), str(logs / "server.default.log")):
        assert text in call.body
    state = home_dir / ".smd" / "hooks" / "mail-on-failure-default"
    assert state.is_file() and (state.stat().st_mode & 0o777) == 0o600
    first_failure = [line.split(": ", 1)[1] for line in state.read_text().splitlines()
                     if line.startswith("first-failure: ")]
    assert len(first_failure) == 1 and first_failure[0] in call.body

    for what in ("pull", "push", "pull"):  # the series goes on: no more mail
        quiet_ok(run_hook(hook, "post", what, "default", "1", env=env))
    assert fake_mail.take() == []

    quiet_ok(run_hook(hook, "post", "push", "default", "0", env=env))
    [call] = fake_mail.take()
    assert call.argv == ["-s", "[smd] sync with default succeeded", "--", user_name()]
    assert f"failing since:  {first_failure[0]}" in call.body
    assert "what:           push" in call.body
    assert state_files(home_dir) == []

    quiet_ok(run_hook(hook, "post", "pull", "default", "0", env=env))
    assert fake_mail.take() == []
    # A new series mails again; any non-zero status is a failure.
    quiet_ok(run_hook(hook, "post", "sync", "default", "75", env=env))
    assert [c.subject for c in fake_mail.take()] == ["[smd] sync with default failed"]


def test_endpoints_keep_separate_states(hooks, home, fake_mail):
    home_dir, env = home
    env = fake_mail.env(env)
    hook = hooks["mail-on-failure"]
    for endpoint in ("work", "home"):
        quiet_ok(run_hook(hook, "post", "pull", endpoint, "1", env=env))
    quiet_ok(run_hook(hook, "post", "pull", "work", "0", env=env))
    assert [c.subject for c in fake_mail.take()] == [
        "[smd] sync with work failed", "[smd] sync with home failed",
        "[smd] sync with work succeeded"]
    assert state_files(home_dir) == ["mail-on-failure-home"]


def test_roammail_hook_log_is_the_log_of_the_run(hooks, home, fake_mail, tmp_path):
    home_dir, env = home
    logs = home_dir / ".smd" / "log"
    logs.mkdir(parents=True)
    (logs / "client.inbox.log").write_text("an unrelated smd log\n")
    run_log = tmp_path / "syncmail.log"
    run_log.write_text("syncmail: ssh: connect to host mx port 22: timed out\n")
    env = fake_mail.env(env, ROAMMAIL_HOOK_LOG=str(run_log))
    quiet_ok(run_hook(hooks["mail-on-failure"], "post", "sync", "inbox", "75", env=env))
    [call] = fake_mail.take()
    assert "  syncmail: ssh: connect to host mx port 22: timed out\n" in call.body
    assert f"log of the run: {run_log}" in call.body
    assert "unrelated" not in call.body
    assert "status:    75" in call.body


def test_a_missing_log_is_said_so(hooks, home, fake_mail):
    _, env = home
    quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", "nolog", "1",
                      env=fake_mail.env(env)))
    [call] = fake_mail.take()
    assert "client log: " in call.body and "(not found)" in call.body


def test_log_lines_are_indented_stripped_of_cr_and_bounded(hooks, home, fake_mail):
    home_dir, env = home
    logs = home_dir / ".smd" / "log"
    logs.mkdir(parents=True)
    lines = [f"line {i}" for i in range(1, 1201)]
    lines[1100:1104] = ["~! touch pwned", ".", "From the log", "dos line\r"]
    (logs / "client.default.log").write_text("\n".join(lines))  # no final newline
    quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", "default", "1",
                      env=fake_mail.env(env)))
    [call] = fake_mail.take()
    assert "[... the first 200 lines are left out ...]" in call.body
    assert "  line 200\n" not in call.body and "  line 201\n" in call.body
    assert "  line 1200\n" in call.body
    for line in ("  ~! touch pwned\n", "  .\n", "  From the log\n", "  dos line\n"):
        assert line in call.body
    assert "\r" not in call.body
    assert not any(line.startswith(("~", "From ")) or line == "."
                   for line in call.body.splitlines())


def test_user_unset_mails_the_id_user(hooks, home, fake_mail):
    _, env = home
    env = fake_mail.env(env)
    del env["USER"]
    quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", "default", "1", env=env))
    [call] = fake_mail.take()
    assert call.recipient == user_name()


def test_a_failing_mail_keeps_the_state_and_is_retried(hooks, home, fake_mail):
    home_dir, env = home
    hook = hooks["mail-on-failure"]
    broken = fake_mail.env(env, FAKE_MAIL_STATUS="1")
    working = fake_mail.env(env)

    result = run_hook(hook, "post", "pull", "default", "1", env=broken)
    assert (result.returncode, result.stdout) == (0, "")
    assert "mail-on-failure: mail: fake mail: no local delivery here" in result.stderr
    assert ("could not mail \"[smd] sync with default failed\" to "
            f"{user_name()}: 'mail' failed with exit status 1") in result.stderr
    assert "the next failed sync tries again" in result.stderr
    assert state_files(home_dir) == []  # not advanced
    fake_mail.take()

    quiet_ok(run_hook(hook, "post", "pull", "default", "1", env=working))  # the retry
    assert [c.subject for c in fake_mail.take()] == ["[smd] sync with default failed"]

    result = run_hook(hook, "post", "pull", "default", "0", env=broken)
    assert result.returncode == 0
    assert "succeeded\" to" in result.stderr and "is kept" in result.stderr
    assert state_files(home_dir) == ["mail-on-failure-default"]
    fake_mail.take()

    quiet_ok(run_hook(hook, "post", "pull", "default", "0", env=working))
    assert [c.subject for c in fake_mail.take()] == ["[smd] sync with default succeeded"]
    assert state_files(home_dir) == []


HOOK_TOOLS = ("mkdir", "date", "uname", "sed", "tr", "awk", "tail", "id", "mktemp", "flock",
              "timeout", "rm", "mv", "cksum", "sleep", "rmdir", "cat")


def tools_bin(directory: Path, *, leave_out: tuple[str, ...]) -> Path:
    """A bin dir with every tool the hook uses (sh scripts need them) but `leave_out`."""
    directory.mkdir()
    for tool in HOOK_TOOLS:
        found = find_program(tool)
        if found and tool not in leave_out:
            (directory / tool).symlink_to(found)
    return directory


def test_no_mail_command_is_reported(hooks, home, tmp_path):
    home_dir, env = home
    env = dict(env, PATH=str(tools_bin(tmp_path / "bin", leave_out=("mail",))))
    result = run_hook(hooks["mail-on-failure"], "post", "pull", "default", "1", env=env)
    assert result.returncode == 0
    assert "there is no 'mail' command" in result.stderr
    assert state_files(home_dir) == []


def test_without_flock_a_directory_is_the_lock(hooks, home, fake_mail, tmp_path):
    home_dir, env = home
    bin_dir = tools_bin(tmp_path / "bin", leave_out=("flock",))
    env = fake_mail.env(dict(env, PATH=str(bin_dir)), FAKE_MAIL_DELAY="1")
    env["PATH"] = f"{fake_mail.bin}:{bin_dir}"
    procs = [subprocess.Popen([str(hooks["mail-on-failure"]), "post", "pull", "default", "1"],
                              env=env, cwd=home_dir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    try:
        outputs = [p.communicate(timeout=HOOK_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0] and outputs == [(b"", b"")] * 3
    assert [c.subject for c in fake_mail.calls()] == ["[smd] sync with default failed"]
    assert not (home_dir / ".smd" / "hooks" / ".mail-on-failure.lock.d").exists()


def test_concurrent_failures_send_one_mail(hooks, home, fake_mail):
    home_dir, env = home
    env = fake_mail.env(env, FAKE_MAIL_DELAY="1")  # the first holds the lock a while
    procs = [subprocess.Popen([str(hooks["mail-on-failure"]), "post", "pull", "default", "1"],
                              env=env, cwd=home_dir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    try:
        outputs = [p.communicate(timeout=HOOK_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert outputs == [(b"", b"")] * 4
    assert [c.subject for c in fake_mail.calls()] == ["[smd] sync with default failed"]
    assert state_files(home_dir) == ["mail-on-failure-default"]


def test_state_names_never_collide(hooks, home, fake_mail):
    home_dir, env = home
    env = fake_mail.env(env)
    endpoints = ["a/b", "a%2Fb", ".x", "%2Ex", "x\ny", "x%0Ay", "%", "%25", "x" * 300,
                 "x" * 299 + "y", ""]
    for endpoint in endpoints:
        quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "1", env=env))
    assert len(fake_mail.take()) == len(endpoints)
    names = state_files(home_dir)
    assert len(names) == len(endpoints)
    assert all(len(os.fsencode(n)) < 255 and "/" not in n and "\n" not in n for n in names)
    assert not any(n.startswith(".") for n in names)
    for endpoint in endpoints:  # each one's state is found again
        quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "1", env=env))
    assert fake_mail.take() == []
    for endpoint in endpoints:
        quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "0", env=env))
    assert len(fake_mail.take()) == len(endpoints)
    assert state_files(home_dir) == []


def test_hostile_endpoints_are_data(hooks, home, fake_mail, tmp_path):
    home_dir, env = home
    env = fake_mail.env(env)
    for endpoint in HOSTILE_ENDPOINTS:
        quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "1", env=env))
        [call] = fake_mail.take()
        shown = endpoint.replace("\n", "?")
        assert call.argv == ["-s", f"[smd] sync with {shown} failed", "--", user_name()]
        assert f'endpoint:  {shown}\n' in call.body
        quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "1", env=env))
        assert fake_mail.take() == []
    assert len(state_files(home_dir)) == len(HOSTILE_ENDPOINTS)
    for endpoint in HOSTILE_ENDPOINTS:
        quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "0", env=env))
    assert len(fake_mail.take()) == len(HOSTILE_ENDPOINTS)
    assert state_files(home_dir) == []
    for where in (home_dir, tmp_path, Path.cwd(), home_dir / ".smd" / "hooks"):
        assert not any((where / n).exists() for n in ("pwned", "pwned2", "pwned3"))


# ------------------------------------------------- slow tier: real delivery


def marker() -> str:
    return "t" + uuid.uuid4().hex[:12]


def failed(endpoint: str) -> str:
    return f"[smd] sync with {endpoint} failed"


def succeeded(endpoint: str) -> str:
    return f"[smd] sync with {endpoint} succeeded"


@pytest.mark.slow
def test_real_mails_for_a_series_and_its_recovery(hooks, home, mailbox: Mailbox):
    home_dir, env = home
    endpoint = marker()
    mailbox.markers.append(endpoint)
    logs = home_dir / ".smd" / "log"
    logs.mkdir(parents=True)
    (logs / f"client.{endpoint}.log").write_text(f"smd-client: {endpoint} lost the link\n")
    hook = hooks["mail-on-failure"]

    quiet_ok(run_hook(hook, "post", "pull", endpoint, "1", env=env))
    [message] = mailbox.wait_for(endpoint, 1)
    assert message["Subject"] == failed(endpoint)
    assert message["To"] == mailbox.user
    body = message.get_content()
    assert f"  smd-client: {endpoint} lost the link\n" in body
    assert "what:      pull" in body

    quiet_ok(run_hook(hook, "post", "pull", endpoint, "1", env=env))
    quiet_ok(run_hook(hook, "post", "push", endpoint, "1", env=env))
    mailbox.settle()
    assert [m["Subject"] for m in mailbox.matching(endpoint)] == [failed(endpoint)]

    quiet_ok(run_hook(hook, "post", "pull", endpoint, "0", env=env))
    messages = mailbox.wait_for(endpoint, 2)
    assert [m["Subject"] for m in messages] == [failed(endpoint), succeeded(endpoint)]
    quiet_ok(run_hook(hook, "post", "pull", endpoint, "0", env=env))
    mailbox.settle()
    assert len(mailbox.matching(endpoint)) == 2
    assert state_files(home_dir) == []


@pytest.mark.slow
def test_real_concurrent_failures_deliver_one_mail(hooks, home, mailbox: Mailbox, tmp_path):
    home_dir, env = home
    endpoint = marker()
    mailbox.markers.append(endpoint)
    real_mail = find_program("mail")
    # The real mail, counted, and slow enough that the runs overlap.
    slow = tmp_path / "slow-mail"
    count = tmp_path / "count"
    write_program(slow, "mail", f'echo x >> "{count}"\nsleep 1\nexec "{real_mail}" "$@"')
    env = env_with_path_first(env, slow)
    started = time.monotonic()
    procs = [subprocess.Popen([str(hooks["mail-on-failure"]), "post", "pull", endpoint, "1"],
                              env=env, cwd=home_dir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=HOOK_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert time.monotonic() - started < HOOK_TIMEOUT_S
    assert [p.returncode for p in procs] == [0, 0] and outputs == [(b"", b"")] * 2
    mailbox.settle()
    assert [m["Subject"] for m in mailbox.matching(endpoint)] == [failed(endpoint)]
    assert count.read_text() == "x\n"


@pytest.mark.slow
def test_real_mail_failing_then_retried(hooks, home, mailbox: Mailbox, tmp_path):
    home_dir, env = home
    endpoint = marker()
    mailbox.markers.append(endpoint)
    broken = tmp_path / "broken-mail"
    write_program(broken, "mail", 'cat >/dev/null\necho "mail: no local delivery" >&2\nexit 1')
    result = run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "1",
                      env=env_with_path_first(env, broken))
    assert (result.returncode, result.stdout) == (0, "")
    assert "could not mail" in result.stderr and "exit status 1" in result.stderr
    assert state_files(home_dir) == []

    quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "1", env=env))
    [message] = mailbox.wait_for(endpoint, 1)
    assert message["Subject"] == failed(endpoint)
    assert state_files(home_dir) == [f"mail-on-failure-{endpoint}"]


@pytest.mark.slow
def test_real_mails_for_hostile_endpoints(hooks, home, mailbox: Mailbox, tmp_path):
    home_dir, env = home
    tag = marker()
    mailbox.markers.append(tag)
    endpoints = [f"{tag} {name}" for name in ("a b", "q'uote\"d", "$(touch pwned)",
                                              "x; touch pwned3", "new\nline\nBcc: root")]
    endpoints.append(f"-{tag}")
    for endpoint in endpoints:
        quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "1", env=env))
    messages = mailbox.wait_for(tag, len(endpoints))
    assert sorted(m["Subject"] for m in messages) == sorted(
        failed(e.replace("\n", "?")) for e in endpoints)
    assert all(m["Bcc"] is None for m in messages)
    for endpoint in endpoints:
        quiet_ok(run_hook(hooks["mail-on-failure"], "post", "pull", endpoint, "0", env=env))
    messages = mailbox.wait_for(tag, 2 * len(endpoints))
    assert sum(m["Subject"].endswith(" succeeded") for m in messages) == len(endpoints)
    mailbox.settle()
    assert len(mailbox.matching(tag)) == 2 * len(endpoints)
    for where in (home_dir, tmp_path):
        assert not any((where / n).exists() for n in ("pwned", "pwned3"))


# ------------------------------------------------- straight into a maildir


def make_maildir_at(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True)
    return path


def test_maildir_delivery_needs_no_mail_command(hooks, home, fake_mail):
    """With MAIL_ON_FAILURE_MAILDIR the notices land in that maildir's new/,
    whole (tmp/ then new/), and mail(1) is not run: a sendmail that queues
    offline cannot hold the failure notice back."""
    import email

    home_dir, env = home
    box = make_maildir_at(home_dir / "Maildir")
    env = fake_mail.env(env, MAIL_ON_FAILURE_MAILDIR=str(box))
    hook = hooks["mail-on-failure"]

    quiet_ok(run_hook(hook, "post", "pull", "default", "1", env=env))
    quiet_ok(run_hook(hook, "post", "pull", "default", "1", env=env))
    quiet_ok(run_hook(hook, "post", "pull", "default", "0", env=env))
    assert fake_mail.calls() == []
    assert list((box / "tmp").iterdir()) == []
    files = sorted((box / "new").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert len(files) == 2 and len({f.name for f in files}) == 2
    mails = [email.message_from_bytes(f.read_bytes()) for f in files]
    assert [m["Subject"] for m in mails] == ["[smd] sync with default failed",
                                             "[smd] sync with default succeeded"]
    for mail in mails:
        assert mail["To"] == user_name() and mail["Date"] and mail["Message-ID"]
    assert "status:    1" in mails[0].get_payload()
    assert state_files(home_dir) == []


def test_a_missing_maildir_records_nothing(hooks, home, fake_mail):
    home_dir, env = home
    env = fake_mail.env(env, MAIL_ON_FAILURE_MAILDIR=str(home_dir / "NoSuchMaildir"))
    result = run_hook(hooks["mail-on-failure"], "post", "pull", "default", "1", env=env)
    assert result.returncode == 0
    assert "is not a maildir" in result.stderr and "tries again" in result.stderr
    assert fake_mail.calls() == []
    assert state_files(home_dir) == []


# ------------------------------------------------------------------ offline


def test_offline_runs_are_neither_failures_nor_recoveries(hooks, home, fake_mail):
    """ROAMMAIL_OFFLINE=1 (syncmail sets it when ssh could not reach the
    server at all): no notice, no state, whatever the status."""
    home_dir, env = home
    hook = hooks["mail-on-failure"]
    offline = fake_mail.env(env, ROAMMAIL_OFFLINE="1")
    for status in ("75", "75", "1"):
        quiet_ok(run_hook(hook, "post", "pull", "default", status, env=offline))
    assert fake_mail.take() == []
    assert state_files(home_dir) == []
    # Back online: a success after offline runs is no recovery, nothing had failed.
    quiet_ok(run_hook(hook, "post", "pull", "default", "0", env=fake_mail.env(env)))
    assert fake_mail.take() == []
    # Only "1" means offline; a real failure still mails.
    for value in ("0", "", "yes"):
        assert state_files(home_dir) == []
        quiet_ok(run_hook(hook, "post", "pull", "default", "75",
                          env=fake_mail.env(env, ROAMMAIL_OFFLINE=value)))
        assert [c.subject for c in fake_mail.take()] == ["[smd] sync with default failed"]
        quiet_ok(run_hook(hook, "post", "pull", "default", "0", env=fake_mail.env(env)))
        assert [c.subject for c in fake_mail.take()] == ["[smd] sync with default succeeded"]


def test_offline_runs_inside_a_failing_series_keep_it(hooks, home, fake_mail):
    """A failure mailed, then offline runs (even one passing status 0):
    the series goes on, and the first real success mails the recovery."""
    home_dir, env = home
    hook = hooks["mail-on-failure"]
    quiet_ok(run_hook(hook, "post", "pull", "default", "1", env=fake_mail.env(env)))
    assert [c.subject for c in fake_mail.take()] == ["[smd] sync with default failed"]
    for status in ("75", "0"):
        quiet_ok(run_hook(hook, "post", "pull", "default", status,
                          env=fake_mail.env(env, ROAMMAIL_OFFLINE="1")))
    assert fake_mail.take() == []
    assert state_files(home_dir) == ["mail-on-failure-default"]
    quiet_ok(run_hook(hook, "post", "pull", "default", "0", env=fake_mail.env(env)))
    assert [c.subject for c in fake_mail.take()] == ["[smd] sync with default succeeded"]
    assert state_files(home_dir) == []
