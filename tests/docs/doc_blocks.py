"""The example blocks of README.md and of the man pages' EXAMPLES sections.

Every shell block of README.md (a fenced block of language sh, shell or
console) and every `.Bd -literal` block under `.Sh EXAMPLES` of man/*.[157]
carries a marker on the line just before it:

  README.md                          man page
  <!-- doctest: NAME -->             .\\" doctest: NAME
  <!-- norun: REASON -->             .\\" norun: REASON

`doctest: NAME` names the scenario of tests/docs/test_doc_blocks.py that
runs the block (a shell block) or writes it where its tool reads it and
has that tool check it (a configuration block).  `norun: REASON` says why
the block cannot run here; the reason is required.  A README fence with no
language is an error too: it could hide a shell block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SHELL_LANGUAGES = ("sh", "shell", "console")

_README_MARK = re.compile(r"^<!--\s*(doctest|norun):\s*(.*?)\s*-->\s*$")
_MAN_MARK = re.compile(r'^\.\\"\s*(doctest|norun):\s*(.*?)\s*$')
_FENCE = re.compile(r"^```\s*([A-Za-z0-9_+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    source: str          # path relative to the top of the tree
    line: int            # line of the block's first text line
    text: str            # the block as a reader sees it
    kind: Optional[str]  # "doctest", "norun" or None (unmarked)
    value: str           # the NAME of a doctest, the REASON of a norun
    language: str = ""

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


class ExtractError(Exception):
    pass


def _marker(pattern: re.Pattern[str], lines: list[str], index: int) -> tuple[Optional[str], str]:
    """The marker on the line before lines[index], skipping nothing."""
    if index == 0:
        return None, ""
    found = pattern.match(lines[index - 1])
    return (found.group(1), found.group(2)) if found else (None, "")


def readme_blocks(path: Path, source: str) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        language = fence.group(1)
        if not language:
            raise ExtractError(f"{source}:{i + 1}: a fenced block without a language "
                               f"(sh, console, text...)")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        if end is None:
            raise ExtractError(f"{source}:{i + 1}: the fenced block is not closed")
        if language in SHELL_LANGUAGES:
            kind, value = _marker(_README_MARK, lines, i)
            blocks.append(Block(source, i + 2, "\n".join(lines[i + 1:end]) + "\n",
                                kind, value, language))
        i = end + 1
    return blocks


def _man_text(line: str) -> str:
    """A line of a literal display as the reader sees it."""
    return (line.replace("\\(ga", "`").replace("\\(aq", "'").replace("\\&", "")
            .replace("\\e", "\\"))


def man_blocks(path: Path, source: str) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks = []
    in_examples = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(".Sh "):
            in_examples = line.split(None, 1)[1].strip() == "EXAMPLES"
        elif in_examples and line.startswith(".Bd") and "-literal" in line.split():
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(".Ed")),
                       None)
            if end is None:
                raise ExtractError(f"{source}:{i + 1}: .Bd without .Ed")
            kind, value = _marker(_MAN_MARK, lines, i)
            text = "".join(_man_text(x) + "\n" for x in lines[i + 1:end])
            blocks.append(Block(source, i + 2, text, kind, value))
            i = end
        i += 1
    return blocks


def all_blocks(top: Path) -> list[Block]:
    blocks = readme_blocks(top / "README.md", "README.md")
    for page in sorted((top / "man").iterdir()):
        if re.search(r"\.[1-8]$", page.name):
            blocks.extend(man_blocks(page, f"man/{page.name}"))
    return blocks


def console_commands(text: str) -> list[tuple[str, str]]:
    """A console block as (command, output) pairs: "$ " starts a command."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], ""))
        elif pairs:
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + line + "\n")
    return pairs
