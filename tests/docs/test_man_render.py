"""The installed man pages, rendered by mandoc as a user reads them.

mandoc -Tlint accepts mdoc that parses but renders wrongly: a quoting macro
that swallows the next one (`.Pq Ql 30 , Ql 2.5` gives `(‘30, ‘2.5’’)`),
an English word that is also a macro name (`No`, `An`, `In` ...) eaten as a
macro call, or a SEE ALSO entry naming a page that no Debian package ships.
These tests read what mandoc -Tutf8 prints, and the tree it parsed
(mandoc -Ttree), for each page under the installed share/man.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from peers.require import require_program

# Pages outside roammail that SEE ALSO may name: each checked to be in a
# Debian 12 package (with `man -w`, or the package's file list).
DEBIAN_PAGES = {
    "cron(8)",          # cron
    "dma(8)",           # dma
    "flock(1)",         # util-linux
    "getaddrinfo(3)",   # manpages-dev
    "inotify(7)",       # manpages
    "mail(1)",          # bsd-mailx
    "mbsync(1)",        # isync
    "msmtp(1)",         # msmtp
    "prctl(2)",         # manpages-dev
    "regex(7)",         # manpages
    "rsync(1)",         # rsync
    "runuser(1)",       # util-linux
    "rsyslogd(8)",      # rsyslog
    "sendmail(8)",      # any mail-transport-agent (dma, exim4, postfix)
    "sh(1)",            # dash
    "sock_diag(7)",     # manpages
    "ssh(1)",           # openssh-client
    "ssh_config(5)",    # openssh-client
    "sshd(8)",          # openssh-server
    "swaks(1)",         # swaks
    "tcp(7)",           # manpages
    "timeout(1)",       # coreutils
}

# Macro names that are also words of a sentence.  Called right after plain
# text, such a macro does nothing useful (there is no font or quote to end),
# so it is a word that mandoc took for a macro and dropped.  Ns and Ta are
# left out: after text they join words and separate table cells.
WORD_MACROS = {"No", "An", "At", "In", "Do", "So", "Ms", "Em", "Ex", "Li",
               "Ap", "Sm", "Ot", "Ad", "Ud", "Bo", "Fr", "Lb", "Ac", "Bc",
               "Dc", "Ec", "Oc", "Pc", "Qc", "Sc", "Xc", "En", "Es"}

QUOTES = {"‘": "’", "“": "”"}
TREE_NODE = re.compile(r"^(?P<indent> *)(?P<name>.*?) \((?P<kind>[a-z]+)\)(?P<rest>.*)$")
TREE_POSITION = re.compile(r"\*?(\d+):(\d+)")
REFERENCE = re.compile(r"([A-Za-z0-9_.+-]+)\((\d[a-z]*)\)")
ROFF_ESCAPE = re.compile(r"\\(\(..|\[[^]]*\]|\*(\(..|\[[^]]*\]|.)|f(\(..|\[[^]]*\]|.)|.)")


def _pages(mandir: Path) -> list[Path]:
    return sorted(p for p in mandir.glob("man[1-8]/*.[1-8]")
                  if not p.read_text().startswith(".so "))


def _render(mandoc: str, page: Path, fmt: str = "utf8") -> str:
    done = subprocess.run([mandoc, f"-T{fmt}", str(page)], capture_output=True,
                          text=True, timeout=60, cwd=page.parent.parent)
    assert done.returncode == 0, f"{page.name}: {done.stderr}"
    return re.sub(".\b", "", done.stdout)       # overstrike bold and underline


@pytest.fixture(scope="module")
def pages(installed):
    mandoc = require_program("mandoc")
    found = _pages(installed.mandir)
    assert found, f"no man pages under {installed.mandir}"
    return [(page, _render(mandoc, page), _render(mandoc, page, "tree")) for page in found]


def quote_faults(text: str) -> list[str]:
    """Unbalanced ‘’ and “” pairs, and a pair inside one of its own kind
    (‘30, ‘2.5’’), each with its context; “ inside ‘ is fine."""
    faults = []
    for paragraph in re.split(r"\n\s*\n", text):
        opened: list[tuple[str, int]] = []
        for i, ch in enumerate(paragraph):
            context = " ".join(paragraph[max(0, i - 30):i + 30].split())
            if ch in QUOTES:
                if any(quote == ch for quote, _ in opened):
                    faults.append(f"{ch} inside {ch}: {context!r}")
                opened.append((ch, i))
            elif ch in QUOTES.values():
                if opened and QUOTES[opened[-1][0]] == ch:
                    opened.pop()
                else:
                    faults.append(f"{ch} without its opening quote: {context!r}")
        for quote, at in opened:
            faults.append(f"{quote} never closed: {' '.join(paragraph[at:at + 60].split())!r}")
    return faults


def eaten_words(tree: str) -> list[str]:
    """Word-like macros called right after plain text of the same line."""
    faults = []
    previous: dict[int, tuple[str, str]] = {}
    for line in tree.splitlines():
        node = TREE_NODE.match(line)
        if node is None:
            continue
        indent, name, kind = len(node["indent"]), node["name"], node["kind"]
        for deeper in [k for k in previous if k > indent]:
            del previous[deeper]
        position = TREE_POSITION.search(node["rest"])
        before = previous.get(indent)
        if (kind in ("elem", "block") and name in WORD_MACROS and position
                and not position.group(0).startswith("*")     # not first on its line
                and before is not None and before[1] == "text"
                and re.search(r"[A-Za-z0-9]", before[0])):
            faults.append(f"line {position[1]}: {name!r} after {before[0]!r} was read as a macro")
        previous[indent] = (name, kind)
    return faults


def lost_text_words(source: str, rendered: str) -> list[str]:
    """Words of the source's text lines that the rendered page lacks."""
    shown = set(re.findall(r"[A-Za-z]{2,}", rendered))
    lost = []
    for line_no, line in enumerate(source.splitlines(), 1):
        if line.startswith(".") or line.startswith('\\"'):
            continue
        for word in re.findall(r"[A-Za-z]{2,}", ROFF_ESCAPE.sub(" ", line)):
            if word not in shown:
                lost.append(f"line {line_no}: {word!r} of {line!r}")
    return lost


def section(text: str, title: str) -> str:
    found = re.search(rf"^{title}\n(.*?)(?=^\S)", text, re.M | re.S)
    return found.group(1) if found else ""


def test_every_page_is_installed_and_rendered(pages, installed):
    sources = {p.name for p in (Path(__file__).resolve().parents[2] / "man").glob("*.[1-8]")}
    assert {page.name for page, _, _ in pages} == sources


def test_quotes_are_paired_and_not_nested(pages):
    faults = {page.name: quote_faults(text) for page, text, _ in pages}
    assert {name: f for name, f in faults.items() if f} == {}


def test_no_word_is_eaten_as_a_macro(pages):
    faults = {page.name: eaten_words(tree) for page, _, tree in pages}
    assert {name: f for name, f in faults.items() if f} == {}


def test_every_word_of_a_text_line_is_rendered(pages):
    faults = {page.name: lost_text_words(page.read_text(), text) for page, text, _ in pages}
    assert {name: f for name, f in faults.items() if f} == {}


def test_synopsis_alternatives_are_spaced(pages):
    faults = {}
    for page, text, _ in pages:
        bad = [line.strip() for line in section(text, "SYNOPSIS").splitlines()
               if re.search(r"\S\||\|\S", line)]
        if bad:
            faults[page.name] = bad
    assert faults == {}


def test_see_also_names_pages_that_exist(pages):
    ours = {f"{page.stem}({page.suffix[1:]})" for page, _, _ in pages}
    faults = {}
    for page, text, _ in pages:
        see_also = section(text, "SEE ALSO")
        named = {f"{name}({sec})" for name, sec in REFERENCE.findall(see_also)}
        unknown = sorted(named - ours - DEBIAN_PAGES)
        if unknown:
            faults[page.name] = unknown
    assert faults == {}
