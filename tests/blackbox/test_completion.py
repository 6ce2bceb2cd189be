"""Black-box: the installed bash completions, through a real bash.

Each case runs a bash that loads bash-completion and the tool's installed
file (PREFIX/share/bash-completion/completions/TOOL), sets COMP_WORDS,
COMP_CWORD, COMP_LINE and COMP_POINT as readline does for a partial command
line, calls the function that `complete -p TOOL` names, and prints
COMPREPLY.  Files the completions read (watch-imap's and mbsync's
configurations, syncmail's) live in a temporary HOME.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from peers.require import in_ci, require_program

TOP = Path(__file__).resolve().parents[2]
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")

# What readline splits a command line at, besides blanks: bash's default
# COMP_WORDBREAKS has = and : among them (and quotes and redirections,
# which these command lines do not use).
_WORDS = re.compile(r"[=:]+|[^\s=:]+")

# Loads bash-completion, then the tool's file ($1 "source") or nothing, for
# the loader to find it as bash would ($1 "load"); then completes $3, the
# cursor at $4 in word $5 of the words $6...  compopt only works while readline completes: here
# it reports what it was asked.
_HARNESS = r'''
source /usr/share/bash-completion/bash_completion || exit 90
compopt() { printf 'compopt\t%s\n' "$*"; }
how=$1 tool=$2 COMP_LINE=$3 COMP_POINT=$4 COMP_CWORD=$5
shift 5
if [[ $how == source ]]; then
    source "$COMPLETIONS/$tool" || exit 91
else
    _completion_loader "$tool"
fi
COMP_WORDS=("$@")
spec=$(complete -p "$tool") || exit 92
func=${spec#*-F }
func=${func%% *}
printf 'function\t%s\n' "$func"
"$func" "$tool" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
for reply in "${COMPREPLY[@]}"; do
    printf 'reply\t%s\n' "$reply"
done
'''


def require_bash_completion() -> str:
    bash = require_program("bash")
    if not BASH_COMPLETION.is_file():
        message = f"{BASH_COMPLETION} is missing: ./test.sh installs bash-completion"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return bash


def comp_words(line: str) -> tuple[list[str], int, int, str]:
    """COMP_WORDS, COMP_CWORD, COMP_POINT and COMP_LINE as readline makes
    them of `line`: the cursor at its end, or at the `|` in it (just after a
    word, not in a blank)."""
    before, _, after = line.partition("|")
    words = _WORDS.findall(before)
    if not before or before[-1].isspace():
        words.append("")
    cword = len(words) - 1
    assert not after or after[0].isspace(), "the cursor must end a word"
    return words + _WORDS.findall(after), cword, len(before), before + after


@dataclass
class Completion:
    function: str
    replies: list[str]
    compopt: list[str]

    @property
    def offered(self) -> set[str]:
        return set(self.replies)


class Completer:
    """Completes command lines against the installed completion files."""

    def __init__(self, bash: str, installed, home: Path, cwd: Path) -> None:
        self.bash = bash
        self.installed = installed
        self.home = home
        self.cwd = cwd
        self.completions = installed.prefix / "share" / "bash-completion" / "completions"
        self.env_extra: dict[str, str] = {}
        self.path_first: list[str] = []

    def __call__(self, line: str, *, how: str = "source") -> Completion:
        tool = line.split()[0]
        path = ":".join(self.path_first + [str(self.installed.bindir), "/usr/bin", "/bin"])
        env = {"PATH": path, "HOME": str(self.home), "LC_ALL": "C",
               "COMPLETIONS": str(self.completions),
               "BASH_COMPLETION_USER_DIR": str(self.home / "no-user-completions"),
               "XDG_DATA_DIRS": str(self.installed.prefix / "share")}
        env.update(self.env_extra)
        words, cword, point, full = comp_words(line)
        proc = subprocess.run([self.bash, "--norc", "--noprofile", "-c", _HARNESS, "bash",
                               how, tool, full, str(point), str(cword), *words],
                              cwd=self.cwd, env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"{line!r}: exit {proc.returncode}\n{proc.stderr}"
        function, replies, compopt = "", [], []
        for out in proc.stdout.splitlines():
            kind, _, value = out.partition("\t")
            if kind == "function":
                function = value
            elif kind == "reply":
                replies.append(value)
            elif kind == "compopt":
                compopt.append(value)
        return Completion(function, replies, compopt)


@pytest.fixture
def complete(installed, tmp_path: Path) -> Completer:
    bash = require_bash_completion()
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    return Completer(bash, installed, home, work)


def install_list(variable: str) -> list[str]:
    match = re.search(rf'^{variable}="([^"]*)"', (TOP / "install.sh").read_text(), re.M)
    assert match, f"no {variable}= in install.sh"
    return match.group(1).split()


# ------------------------------------------------------------ every tool

COMMANDS = install_list("TOOLS") + [a.split("=")[0] for a in install_list("ALIASES")]


def test_the_lists_are_read_from_install_sh() -> None:
    assert {"extsmail", "watch-imap", "smtpdcheck", "watch_maildirs"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_completion_file(complete, command: str) -> None:
    path = complete.completions / command
    assert path.is_file(), f"{path} is not installed"
    assert complete(f"{command} -").function.startswith("_roammail_")


@pytest.mark.parametrize("command", COMMANDS)
def test_bash_completion_loads_each_file_on_demand(complete, command: str) -> None:
    # Not sourced here: found under PREFIX/share by bash-completion's loader.
    result = complete(f"{command} --h", how="load")
    assert result.function.startswith("_roammail_")
    assert "--help" in result.offered


# ------------------------------------------------------------ options

OPTIONS = {
    "extsmail": {"--version", "--help"},
    "extsmaild": {"-c", "--conf", "-e", "--externals", "-m", "--mode", "-f", "--foreground",
                  "-t", "--test", "--flush", "--list", "--show", "--delete", "--failed",
                  "--retry", "--wake", "--status", "--json", "-j", "--jobs",
                  "--stall-timeout", "-V", "-v", "--version", "-h", "--help"},
    "watch-maildirs": {"-m", "--maildir=", "--exit-on-new-folder", "--delimiter=", "-V",
                       "--version", "-h", "--help"},
    "watch-imap": {"-a", "--account=", "-c", "--config=", "--mbsyncrc=", "-l", "--list",
                   "-v", "--verbose", "-V", "--version", "-h", "--help"},
    "inputkill": {"--grace=", "-h", "--help", "-V", "--version"},
    "socketwatch": {"-t", "--timeout=", "--grace=", "-h", "--help", "-V", "--version"},
    "mswatch": {"-c", "--config=", "-d", "--dry", "-q", "--quiet", "-f", "--foreground",
                "--daemon", "--pid-file=", "--hooks=", "-l", "--log-file=", "--sync-now",
                "--network-changed", "-V", "--version", "-h", "--help"},
    "syncmail": {"-c", "--config=", "-n", "--dry-run", "-v", "--verbose", "-q", "--quiet",
                 "--offline-ok", "--hooks", "-h", "--help"},
    "smtpdcheck": {"--stop", "--timeout", "--port", "--sequential", "--cache", "--no-cache",
                   "--cache-ttl", "-V", "--version", "-h", "--help"},
    "watch-network": {"--exec=", "--settle=", "--once", "-q", "--quiet", "-V", "--version",
                      "-h", "--help"},
    "roammail-status": {"--json", "--nagios", "--queue-age-warn=", "--queue-age-crit=",
                        "--sync-age-warn=", "--sync-age-crit=", "-V", "--version", "-h",
                        "--help"},
}
OPTIONS["watch_maildirs"] = OPTIONS["watch-maildirs"]


def test_every_command_has_its_options_here() -> None:
    assert set(OPTIONS) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_a_dash_completes_the_options(complete, command: str) -> None:
    result = complete(f"{command} -")
    assert OPTIONS[command] <= result.offered, OPTIONS[command] - result.offered
    assert all(reply.startswith("-") for reply in result.replies), result.replies


@pytest.mark.parametrize(("line", "expected"), [
    ("extsmaild --st", ["--stall-timeout", "--status"]),
    ("smtpdcheck --cache", ["--cache", "--cache-ttl"]),
    ("watch-imap --acc", ["--account="]),
    ("mswatch --sync", ["--sync-now"]),
    ("syncmail --dry", ["--dry-run"]),
    ("socketwatch --t", ["--timeout="]),
    ("extsmail --v", ["--version"]),
])
def test_a_prefix_completes_only_the_options_it_starts(complete, line: str,
                                                       expected: list[str]) -> None:
    result = complete(line)
    assert sorted(result.replies) == expected
    # --account=DIR: the value follows the = with no blank between.
    assert ("-o nospace" in result.compopt) == expected[0].endswith("=")


def test_an_option_that_is_not_there_is_not_offered(complete) -> None:
    assert complete("watch-imap --no-such").replies == []
    assert "--maildir=" not in complete("extsmaild --").offered
    assert "--stall-timeout" not in complete("watch-maildirs --").offered
    assert "--stop-timeout" not in complete("extsmaild --st").offered


# ------------------------------------------------------------ values

@pytest.mark.parametrize(("line", "expected"), [
    ("extsmaild -m ", {"batch", "daemon"}),
    ("extsmaild --mode ", {"batch", "daemon"}),
    ("extsmaild --mode=d", {"daemon"}),
    ("extsmaild -f -m b", {"batch"}),
    ("extsmaild -j ", set()),
    ("extsmaild --stall-timeout ", set()),
    ("extsmaild --show ", set()),
    ("smtpdcheck --port ", set()),
    ("smtpdcheck --timeout=", set()),
    ("socketwatch -t ", set()),
    ("inputkill --grace=", set()),
    ("watch-maildirs --delimiter=", set()),
])
def test_fixed_values_and_numbers(complete, line: str, expected: set[str]) -> None:
    assert complete(line).offered == expected


@pytest.fixture
def maildirs(complete) -> Completer:
    for name in ("Mail", "Maildir", "Other"):
        (complete.cwd / name).mkdir()
    (complete.cwd / "Mailbox.txt").write_text("not a directory\n")
    (complete.cwd / "conf").write_text("spool_dir = \"~/spool\"\n")
    return complete


@pytest.mark.parametrize("line", [
    "watch-maildirs -m Mail", "watch-maildirs --maildir Mail", "watch-maildirs --maildir=Mail",
    "watch_maildirs -m Mail", "mswatch --hooks=Mail", "syncmail --hooks Mail",
])
def test_a_dir_completes_directories_only(maildirs, line: str) -> None:
    assert maildirs(line).offered == {"Mail", "Maildir"}


@pytest.mark.parametrize("line", [
    "extsmaild -c ", "extsmaild --externals=", "watch-imap --mbsyncrc ", "mswatch -l ",
    "smtpdcheck --cache ", "syncmail -c ", "extsmaild -t ",
])
def test_a_file_completes_files(maildirs, line: str) -> None:
    offered = maildirs(line).offered
    assert {"conf", "Mailbox.txt"} <= offered, offered


MBSYNCRC = """\
IMAPAccount office
Host imap.example.org
PassCmd "false"

IMAPStore office-remote
Account office

MaildirStore office-local
Path ~/Mail/office/

channel office-chan
Far :office-remote:
Near :office-local:

Group everything
Channel office-chan
"""


@pytest.fixture
def accounts(complete) -> Completer:
    (complete.home / ".mbsyncrc").write_text(MBSYNCRC)
    conf = complete.home / ".config" / "roammail"
    conf.mkdir(parents=True)
    (conf / "watch-imap.conf").write_text(
        '# account commented {\naccount hosted {\n    host = "imap.example.net"\n}\n')
    (complete.cwd / "other.conf").write_text("account other { host = \"x\" }\n")
    (complete.cwd / "other.rc").write_text('IMAPAccount "far away"\nIMAPStore elsewhere\n')
    return complete


def test_an_account_is_a_block_or_an_mbsync_account_store_or_channel(accounts) -> None:
    assert accounts("watch-imap -a ").offered == {"hosted", "office", "office-remote",
                                                  "office-chan"}
    # Not a MaildirStore, not a Group, not a comment:
    assert accounts("watch-imap -a ").offered.isdisjoint({"office-local", "everything",
                                                          "commented"})


@pytest.mark.parametrize(("line", "expected"), [
    ("watch-imap -a office-", {"office-remote", "office-chan"}),
    ("watch-imap --account=h", {"hosted"}),
    ("watch-imap -l --account o", {"office", "office-remote", "office-chan"}),
    ("watch-imap -c other.conf -a ", {"other", "office", "office-remote", "office-chan"}),
    ("watch-imap --config=other.conf -a ot", {"other"}),
    ("watch-imap --mbsyncrc=other.rc -a ", {"hosted", r"far\ away", "elsewhere"}),
    ("watch-imap -a nobody", set()),
])
def test_accounts_from_the_files_on_the_command_line(accounts, line: str,
                                                     expected: set[str]) -> None:
    assert accounts(line).offered == expected


def test_a_config_option_after_the_cursor_counts_too(accounts) -> None:
    assert accounts("watch-imap -a ot| --config other.conf").offered == {"other"}
    assert accounts("watch-imap -a h| -c other.conf -l").offered == set()


def test_accounts_follow_xdg_config_home(accounts, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "roammail").mkdir(parents=True)
    (xdg / "roammail" / "watch-imap.conf").write_text("account fromxdg {\n}\n")
    accounts.env_extra["XDG_CONFIG_HOME"] = str(xdg)
    assert accounts("watch-imap -a f").offered == {"fromxdg"}
    (accounts.home / ".mbsyncrc").unlink()
    (xdg / "isyncrc").write_text("IMAPStore isync-store\n")
    assert accounts("watch-imap -a ").offered == {"fromxdg", "isync-store"}


def test_no_configuration_offers_no_account(complete) -> None:
    assert complete("watch-imap -a ").replies == []


SYNCMAIL_CONF = """\
# source commented {
source office {
    remote = "mail.example.org:Maildir"
    local = "~/Maildir"
}
source home {
    remote = "home.example.org:Maildir"
    local = "~/Maildir"
}
"""


@pytest.fixture
def sources(complete) -> Completer:
    conf = complete.home / ".config" / "roammail"
    conf.mkdir(parents=True)
    (conf / "syncmail.conf").write_text(SYNCMAIL_CONF)
    (complete.cwd / "alt.conf").write_text("source alt {\n}\nsource also {\n}\n")
    (complete.cwd / "Maildir").mkdir()
    (complete.cwd / "notes").write_text("a file\n")
    return complete


@pytest.mark.parametrize(("line", "expected"), [
    ("syncmail ", {"office", "home"}),
    ("syncmail -v h", {"home"}),
    ("syncmail office ", {"home"}),
    ("syncmail -n -- ", {"office", "home"}),
    ("syncmail --hooks Maildir o", {"office"}),
    ("syncmail -c alt.conf ", {"alt", "also"}),
    ("syncmail --config=alt.conf al", {"alt", "also"}),
    ("syncmail nowhere", set()),
    ("syncmail mail.example.org:Maildir ", {"Maildir"}),
    ("syncmail -q mail.example.org:Maildir M", {"Maildir"}),
    ("syncmail mail.example.org:Maildir Maildir ", set()),
])
def test_syncmail_operands(sources, line: str, expected: set[str]) -> None:
    assert sources(line).offered == expected


# ------------------------------------------------------------ wrapped commands

@pytest.mark.parametrize("line", [
    "inputkill l", "inputkill --grace=5 l", "inputkill --grace 5 l", "inputkill -- l",
    "socketwatch l", "socketwatch -t 30 --grace=2 l", "socketwatch --timeout=30 -- l",
])
def test_the_wrapped_command_completes_as_a_command(complete, line: str) -> None:
    offered = complete(line).offered
    assert "ls" in offered, sorted(offered)[:20]
    assert not any(reply.startswith("-") for reply in offered)


@pytest.mark.parametrize(("line", "expected"), [
    ("inputkill watch-imap --li", {"--list"}),
    ("socketwatch -t 30 extsmaild -m ", {"batch", "daemon"}),
    ("inputkill --grace=1 socketwatch -t 5 extsmaild --mode d", {"daemon"}),
    ("inputkill -- extsmaild --st", {"--stall-timeout", "--status"}),
])
def test_the_wrapped_commands_arguments_complete_as_its_own(complete, line: str,
                                                           expected: set[str]) -> None:
    assert complete(line).offered == expected


def test_the_wrappers_own_options_before_the_command(complete) -> None:
    assert complete("socketwatch -t 30 --g").offered == {"--grace="}
    assert complete("inputkill --").offered == {"--grace=", "--help", "--version"}


# ------------------------------------------------------------ no side effects

def test_completing_runs_no_tool(complete, tmp_path: Path, accounts) -> None:
    """A spy for each tool (and mbsync, ssh) first on PATH: completing a
    line of every kind runs none of them."""
    spies = tmp_path / "spies"
    spies.mkdir()
    ran = tmp_path / "ran"
    for name in COMMANDS + ["mbsync", "ssh"]:
        spy = spies / name
        spy.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {ran}\n")
        spy.chmod(0o755)
    complete.path_first = [str(spies)]
    lines = [f"{command} -" for command in COMMANDS] + [
        "watch-imap -a ", "watch-imap -c other.conf -a ", "syncmail ", "syncmail h:M ",
        "extsmaild -m ", "extsmaild --show ", "inputkill watch-imap -a ", "socketwatch mbsync ",
        "smtpdcheck ", "extsmail ", "mswatch -c ",
    ]
    for line in lines:
        complete(line)
    assert not ran.exists(), ran.read_text()
