"""completion.py: the bash completion files of the tools, made from their usage texts.

Usage: python3 -m roammail.completion OUTDIR NAME...

Writes OUTDIR/NAME for each NAME, a tool (`extsmaild`) or an alias and its
tool (`watch_maildirs=watch-maildirs`): one file per command, named exactly
as the command, because bash-completion loads
.../share/bash-completion/completions/CMD on demand, when CMD is first
completed.  install.sh runs it with the source tree's lib/ on PYTHONPATH,
for PREFIX/share/bash-completion/completions.

Owns the mapping from a usage text to a completion function: the options
are those of the "Options:" section (short and long forms, and whether each
takes an argument and its name) and of the usage lines; an option's value
completes by the argument's name (FILE: files, DIR: directories, a number:
nothing) or by what this module knows of one tool (EXTRA below: extsmaild's
modes, watch-imap's accounts, syncmail's sources, the command that
inputkill and socketwatch run).  Each tool's usage text is read with `ast`
from its source file in this package; a tool module is never imported, as
the build of a .deb has none of the tools' dependencies, and this module
imports only the standard library.

The files are not self-contained: they use bash-completion's helpers
(_init_completion, _filedir, _command_offset, __ltrim_colon_completions),
which are there whenever the completions directory is, since bash-completion
is what loads it.  A completion function never runs a tool or any other
program, and never touches the network: it reads at most a tool's
configuration files (watch-imap's and mbsync's for account names,
syncmail's for source names), and only regular files.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Optional

PROG = "roammail.completion"

# Option names and argument names as the generated shell code may hold
# them unquoted in case patterns and word lists: nothing a shell expands.
_OPTION_NAME = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9-]*\Z")
_ARGUMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_USAGE_OPTION = re.compile(r"(?:(?<=\s)|(?<=[\[(|]))(--?[A-Za-z0-9][A-Za-z0-9-]*)"
                           r"(?:=([A-Za-z][A-Za-z0-9_-]*))?")


class CompletionError(Exception):
    """A usage text this module cannot read, or a tool it cannot complete."""


@dataclass(frozen=True)
class Option:
    """One option: its short and long names, and the name of its argument."""

    short: Optional[str]      # "-c", or None
    long: Optional[str]       # "--conf", or None
    argument: Optional[str]   # "FILE", or None for a flag
    equals: bool = False      # the long form is written --conf=FILE

    @property
    def names(self) -> list[str]:
        return [name for name in (self.short, self.long) if name]

    @property
    def words(self) -> list[str]:
        """What completes a word starting with '-': --maildir= for an
        option written --maildir=DIR (the value follows with no space)."""
        found = [self.short] if self.short else []
        if self.long:
            found.append(self.long + "=" if self.equals and self.argument else self.long)
        return found


# ------------------------------------------------------------ usage texts

def read_usage(source: str) -> str:
    """The module docstring of the Python file `source`, read with ast
    (the module is not imported); CompletionError if it has none."""
    try:
        with open(source, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=source)
    except (OSError, SyntaxError, ValueError) as e:
        raise CompletionError(f"cannot read the usage text of {source}: {e}") from e
    doc = ast.get_docstring(tree, clean=False)
    if not doc:
        raise CompletionError(f"{source} has no module docstring (its usage text)")
    return doc


def _section(doc: str, header: str) -> list[str]:
    """The lines of the section whose header line holds `header` (as
    docopt finds it: the header, then the lines that start with a blank)."""
    lines = doc.split("\n")
    for number, line in enumerate(lines):
        if header in line.lower():
            body = [line[line.lower().index(header) + len(header):]]
            for following in lines[number + 1:]:
                if not following[:1].isspace():
                    break
                body.append(following)
            return body
    return []


def usage_lines(doc: str) -> list[str]:
    lines = _section(doc, "usage:")
    if not any(line.strip() for line in lines):
        raise CompletionError("the usage text has no Usage: section")
    return lines


def _parse_option_line(line: str) -> Option:
    """One line of an Options: section, docopt's way: the option names and
    argument before the first two blanks, the description after them."""
    spec = line.strip().split("  ", 1)[0]
    short = long = argument = None
    equals = False
    for token in re.split(r"[\s,]+", spec):
        if not token:
            continue
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            long = name
            if eq:
                argument, equals = value, True
        elif token.startswith("-"):
            short = token
        else:
            argument = token
    for name in (short, long):
        if name is not None and not _OPTION_NAME.match(name):
            raise CompletionError(f"an option name completion cannot offer: {name!r}")
    if argument is not None and not _ARGUMENT_NAME.match(argument):
        raise CompletionError(f"an argument name completion cannot use: {argument!r}")
    if short is None and long is None:
        raise CompletionError(f"no option on the line {line.strip()!r}")
    return Option(short, long, argument, equals)


def parse_options(doc: str) -> list[Option]:
    """Every option of a usage text: the Options: section's lines, then the
    options that only the usage lines name (extsmail's --version, which it
    parses by hand); an option of the usage lines alone takes an argument
    only when written --name=ARG."""
    options = [_parse_option_line(line)
               for line in _section(doc, "options:")[1:] if line.strip().startswith("-")]
    known = {name for option in options for name in option.names}
    for line in usage_lines(doc):
        for name, argument in _USAGE_OPTION.findall(" " + line):
            if name not in known:
                known.add(name)
                short = name if not name.startswith("--") else None
                long = name if name.startswith("--") else None
                options.append(Option(short, long, argument or None, bool(argument)))
    if not options:
        raise CompletionError("the usage text names no option")
    return options


def operands(doc: str) -> set[str]:
    """The upper-case words of the usage lines: the operands (SOURCE,
    COMMAND...) and the options' arguments."""
    return set(re.findall(r"[A-Z][A-Z0-9_:-]*[A-Z0-9_]|[A-Z]", " ".join(usage_lines(doc))))


# ------------------------------------------------------------ what completes a value

# An option's value by its argument's name; the names not here (SECONDS, N,
# ID, CHAR, HOST, NAME...) complete nothing.
ARGUMENT_VALUES = {
    "FILE": "_filedir",
    "CONFIG": "_filedir",
    "DIR": "_filedir -d",
}


@dataclass(frozen=True)
class Extra:
    """What this module knows of one tool beyond its usage text.

    values: argument name -> shell code completing that option's value;
    before: shell code run before the options are looked at (the command a
    wrapper runs); operands: shell code completing a word that is not an
    option; functions: the shell functions that code calls (`@F@` stands
    for the tool's function name); needs: the options and the usage words
    that code relies on, checked against the usage text so that a renamed
    option fails the generation instead of a completion; keep_colons:
    HOST:PATH is one word.
    """

    values: dict[str, str] = field(default_factory=dict)
    before: str = ""
    operands: str = ""
    functions: str = ""
    needs: tuple[str, ...] = ()
    keep_colons: bool = False


_OPTION_VALUE_FUNCTION = r'''
# The value of the last of the options "$@" on the command line, but the
# word being completed, with a leading ~/ expanded; empty if none is given.
@F@_option()
{
    local i name value=""
    for ((i = 1; i < ${#words[@]}; i++)); do
        ((i == cword)) && continue
        for name; do
            if [[ ${words[i]} == "$name" ]]; then
                ((i + 1 < ${#words[@]} && i + 1 != cword)) && value=${words[i + 1]}
            elif [[ $name == --* && ${words[i]} == "$name="* ]]; then
                value=${words[i]#*=}
            elif [[ $name != --* && ${words[i]} == "$name"?* ]]; then
                value=${words[i]#"$name"}
            fi
        done
    done
    [[ $value == "~"/* ]] && value=$HOME/${value#"~"/}
    printf '%s\n' "$value"
}

# COMPREPLY: the names "$@" that start with the word being completed, once
# each, quoted for the shell.
@F@_reply()
{
    local name
    local -A seen=()
    for name; do
        [[ $name && $name == "$cur"* && ! ${seen[$name]-} ]] || continue
        seen[$name]=1
        COMPREPLY+=("$(printf '%q' "$name")")
    done
}

# $XDG_CONFIG_HOME, as the tools take it: ~/.config unless it is absolute.
@F@_config_home()
{
    local dir=${XDG_CONFIG_HOME-}
    [[ $dir == /* ]] || dir=$HOME/.config
    printf '%s\n' "$dir"
}
'''

_ACCOUNT_FUNCTIONS = _OPTION_VALUE_FUNCTION + r'''
# The names -a can take: the blocks of watch-imap's file (`account NAME {`;
# -c FILE, else $XDG_CONFIG_HOME/roammail/watch-imap.conf), then mbsync's
# IMAPAccount, IMAPStore and Channel sections (--mbsyncrc FILE, else
# ~/.mbsyncrc, else $XDG_CONFIG_HOME/isyncrc), one a line.  Only reads.
@F@_accounts()
{
    local config mbsyncrc key rest name
    config=$(@F@_option -c --config)
    [[ $config ]] || config=$(@F@_config_home)/roammail/watch-imap.conf
    mbsyncrc=$(@F@_option --mbsyncrc)
    if [[ ! $mbsyncrc ]]; then
        mbsyncrc=$HOME/.mbsyncrc
        [[ -e $mbsyncrc ]] || mbsyncrc=$(@F@_config_home)/isyncrc
    fi
    if [[ -f $config && -r $config ]]; then
        while read -r key rest; do
            [[ $key == account ]] && printf '%s\n' "${rest%%[[:space:]\{]*}"
        done < "$config"
    fi
    if [[ -f $mbsyncrc && -r $mbsyncrc ]]; then
        while read -r key rest; do
            case ${key,,} in
                imapaccount | imapstore | imap4store | channel)
                    rest=${rest%$'\r'}
                    if [[ $rest == \"* ]]; then
                        name=${rest#\"}
                        name=${name%%\"*}
                    else
                        name=${rest%%[[:space:]]*}
                    fi
                    printf '%s\n' "$name"
                    ;;
            esac
        done < "$mbsyncrc"
    fi
}
'''

_SOURCE_FUNCTIONS = _OPTION_VALUE_FUNCTION + r'''
# The sources of syncmail's configuration (`source NAME {`; -c FILE, else
# $XDG_CONFIG_HOME/roammail/syncmail.conf), one a line.  Only reads.
@F@_sources()
{
    local config key rest
    config=$(@F@_option -c --config)
    [[ $config ]] || config=$(@F@_config_home)/roammail/syncmail.conf
    [[ -f $config && -r $config ]] || return
    while read -r key rest; do
        [[ $key == source ]] && printf '%s\n' "${rest%%[[:space:]\{]*}"
    done < "$config"
}
'''

# The command a wrapper runs: the first word after its options (or after
# --) completes as a command, and the words after it as that command's.
# COMP_WORDS, not words: _command_offset counts in COMP_WORDS, where
# --grace=5 is three words.  @ARGS@: the options that take an argument.
_WRAPPED_COMMAND = r'''
    local i=1
    while ((i < COMP_CWORD)); do
        case ${COMP_WORDS[i]} in
            --)
                _command_offset $((i + 1))
                return
                ;;
            @ARGS@)
                [[ ${COMP_WORDS[i + 1]-} == = ]] && ((i++))
                ((i += 2))
                ;;
            -*)
                [[ ${COMP_WORDS[i + 1]-} == = ]] && ((i += 2))
                ((i++))
                ;;
            *)
                _command_offset $i
                return
                ;;
        esac
    done
    if ((i == COMP_CWORD)) && [[ $cur != -* ]]; then
        _command_offset $i
        return
    fi
'''

# syncmail SOURCE... (each source once) or HOST:REMOTE_MAILDIR LOCAL_MAILDIR.
_SYNCMAIL_OPERANDS = r'''
    local i operands=()
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --)
                operands+=("${words[@]:i+1:cword-i-1}")
                break
                ;;
            @ARGS@) ((i++)) ;;
            -*) ;;
            *) operands+=("${words[i]}") ;;
        esac
    done
    if ((${#operands[@]})) && [[ ${operands[0]} == *:* ]]; then
        if ((${#operands[@]} == 1)); then
            _filedir -d
            __ltrim_colon_completions "$cur"
        fi
        return
    fi
    local sources given
    mapfile -t sources < <(@F@_sources)
    for given in "${operands[@]}"; do
        for i in "${!sources[@]}"; do
            [[ ${sources[i]} == "$given" ]] && unset 'sources[i]'
        done
    done
    @F@_reply "${sources[@]}"
'''

# extsmaild -t [EXTERNALS]: a file; --show ID, --delete ID...: nothing.
_EXTSMAILD_OPERANDS = r'''
    local i
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            -t | --test)
                _filedir
                return
                ;;
        esac
    done
'''

EXTRA = {
    "extsmaild": Extra(
        values={"MODE": "COMPREPLY=($(compgen -W 'batch daemon' -- \"$cur\"))"},
        operands=_EXTSMAILD_OPERANDS,
        needs=("-m", "--mode", "-t", "--test", "EXTERNALS")),
    "watch-imap": Extra(
        values={"NAME": "local accounts\n"
                        "mapfile -t accounts < <(@F@_accounts)\n"
                        '@F@_reply "${accounts[@]}"'},
        functions=_ACCOUNT_FUNCTIONS,
        needs=("-a", "--account", "-c", "--config", "--mbsyncrc")),
    "syncmail": Extra(
        operands=_SYNCMAIL_OPERANDS,
        functions=_SOURCE_FUNCTIONS,
        needs=("-c", "--config", "SOURCE", "HOST:REMOTE_MAILDIR", "LOCAL_MAILDIR"),
        keep_colons=True),
    "inputkill": Extra(before=_WRAPPED_COMMAND, needs=("COMMAND",)),
    "socketwatch": Extra(before=_WRAPPED_COMMAND, needs=("COMMAND",)),
}


# ------------------------------------------------------------ the shell file

def function_name(tool: str) -> str:
    return "_roammail_" + re.sub(r"[^A-Za-z0-9]", "_", tool)


def _indent(code: str, blanks: str) -> str:
    return "\n".join(blanks + line if line else line for line in code.split("\n"))


def _check_needs(tool: str, doc: str, options: list[Option], extra: Extra) -> None:
    names = {name for option in options for name in option.names}
    words = operands(doc)
    for need in extra.needs:
        if need not in (names if need.startswith("-") else words):
            raise CompletionError(f"{tool}: its usage text has no {need}, which its "
                                  f"completion relies on ({PROG} must follow the change)")
    arguments = {option.argument for option in options}
    for argument in extra.values:
        if argument not in arguments:
            raise CompletionError(f"{tool}: no option takes {argument} any more "
                                  f"({PROG} must follow the change)")


def completion_script(tool: str, doc: str, commands: list[str] | None = None) -> str:
    """The bash completion file of `tool` from its usage text `doc`; the
    function is registered for `commands` (default: the tool alone)."""
    options = parse_options(doc)
    extra = EXTRA.get(tool, Extra())
    _check_needs(tool, doc, options, extra)
    func = function_name(tool)
    with_argument = [option for option in options if option.argument]
    arg_pattern = " | ".join(name for option in with_argument for name in option.names)
    ltrim = '\n__ltrim_colon_completions "$cur"' if extra.keep_colons else ""

    # prev is an option that takes an argument: complete its value.
    groups: dict[str, list[str]] = {}
    for option in with_argument:
        action = extra.values.get(option.argument or "")
        if action is None:
            action = ARGUMENT_VALUES.get(option.argument or "", "")
            if action.startswith("_filedir"):
                action += ltrim
        groups.setdefault(action, []).extend(option.names)
    cases = []
    for action, names in groups.items():
        body = (action + "\n" if action else "") + "return\n;;"
        cases.append(f"{' | '.join(names)})\n{_indent(body, '    ')}")
    words = " ".join(word for option in options for word in option.words)

    init = "_init_completion -s" + (" -n :" if extra.keep_colons else "") + " || return"
    parts = [f"local cur prev words cword split\n{init}"]
    if extra.before:
        parts.append(extra.before.replace("@ARGS@", arg_pattern or "--"))
    if cases:
        parts.append("case $prev in\n" + _indent("\n".join(cases), "    ") + "\nesac\n"
                     "$split && return")
    parts.append("if [[ $cur == -* ]]; then\n"
                 f"    COMPREPLY=($(compgen -W '{words}' -- \"$cur\"))\n"
                 "    [[ ${COMPREPLY-} == *= ]] && compopt -o nospace\n"
                 "    return\n"
                 "fi")
    if extra.operands:
        parts.append(extra.operands.replace("@ARGS@", arg_pattern or "--"))
    code = "\n\n".join(_indent(textwrap.dedent(part).strip("\n"), "    ") for part in parts)
    code = code.replace("@F@", func)
    functions = extra.functions.replace("@F@", func)
    registered = " ".join(commands or [tool])
    return (f"# bash completion for {registered}: made by {PROG} from the usage text of\n"
            f"# {tool}; install.sh writes it anew, edit {PROG} instead.\n"
            f"# Needs bash-completion, which loads this directory.\n"
            f"{functions}\n"
            f"{func}()\n{{\n{code}\n}} &&\n"
            f"    complete -F {func} {registered}\n")


def tool_module(tool: str) -> str:
    """The module holding `tool`'s main() and usage text, under roammail:
    extsmail and extsmaild in extsmail/, inputkill and socketwatch in
    guards/, roammail-status in status/cli.py, every other tool in the cli
    module of its own package (watch-imap: watch_imap/cli.py).  install.sh's
    module_of says the same."""
    if tool == "roammail-status":
        return "status/cli.py"
    if tool in ("extsmail", "extsmaild"):
        return f"extsmail/{tool}.py"
    if tool in ("inputkill", "socketwatch"):
        return f"guards/{tool}.py"
    return tool.replace("-", "_") + "/cli.py"


def tool_source(tool: str, source_dir: str | None = None) -> str:
    """The module file of `tool` (watch-imap: watch_imap/cli.py), under the
    package of this module unless `source_dir` says where."""
    directory = source_dir or os.path.dirname(os.path.abspath(__file__))
    return os.path.join(directory, *tool_module(tool).split("/"))


def write_completions(outdir: str, names: list[str],
                      source_dir: str | None = None) -> list[str]:
    """Write OUTDIR/NAME for each name (TOOL or ALIAS=TOOL); return the
    paths written.  Each file is written under a temporary name, then
    renamed, so a shell never loads half of one."""
    commands: dict[str, list[str]] = {}
    for name in names:
        alias, _, tool = name.partition("=")
        tool = tool or alias
        for word in (alias, tool):
            if not re.match(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z", word):
                raise CompletionError(f"not a command name: {word!r}")
        commands.setdefault(tool, [tool])
        if alias not in commands[tool]:
            commands[tool].append(alias)
    os.makedirs(outdir, exist_ok=True)
    written = []
    for tool, names_of_tool in commands.items():
        text = completion_script(tool, read_usage(tool_source(tool, source_dir)),
                                 names_of_tool)
        for command in names_of_tool:
            path = os.path.join(outdir, command)
            temporary = os.path.join(outdir, f".{command}.tmp.{os.getpid()}")
            with open(temporary, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__.split("\n\n")[1])
        return 0
    if len(args) < 2 or args[0].startswith("-"):
        print(f"{PROG}: usage: python3 -m {PROG} OUTDIR NAME...", file=sys.stderr)
        return 64
    try:
        write_completions(args[0], args[1:])
    except (CompletionError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
