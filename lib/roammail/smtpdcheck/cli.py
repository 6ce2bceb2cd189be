"""smtpdcheck: tell whether a more preferred SMTP server is up.

Usage:
  smtpdcheck [--stop HOST] [--timeout SECONDS] [--port N] [--sequential]
             [--cache FILE | --no-cache] [--cache-ttl SECONDS] SERVER...
  smtpdcheck -V | --version
  smtpdcheck -h | --help

Arguments:
  SERVER               [prio:]host: a host name or address, optionally after
                       its MX priority and a colon, as `avenger dns mx`
                       prints them (10:mx1.example.org).

Options:
  --stop HOST          Report no server from the first one that is HOST (by
                       name or by any address) on, nor one with its
                       priority or a worse one.
  --timeout SECONDS    Give up on the servers not up after this long, DNS
                       included; 0 waits forever [default: 10].
  --port N             The TCP port of every server [default: 25].
  --sequential         Probe one server after the other, each with its own
                       timeout, as Mail Avenger's smtpdcheck does.
  --cache FILE         The cache of servers found down (by default
                       $XDG_CACHE_HOME/roammail/smtpdcheck, else
                       /var/cache/roammail/smtpdcheck for root, else
                       ~/.cache/roammail/smtpdcheck).
  --no-cache           Neither read nor write the cache.
  --cache-ttl SECONDS  How long a server found down is not probed again
                       [default: 60].
  -V, --version        Print the version.
  -h, --help           Show this help.

A server is up when a TCP connection to it gives a 220 greeting.  Exit
status: 1, and the name of the first server up on stdout; 0 and nothing
when none is up; 2 on a system error or a bad command line.
"""

# What this module owns: the command line above and the run: the server
# arguments, the cache read before and written after it, the answer on
# stdout and the exit status.  The decision is decide.py (pure), the
# drivers that apply it check.py, the network probe.py, the cache file
# cache.py.  Nothing may block past the deadline, nor fail because of the
# cache.
#
# Start-up cost matters (it runs once per SMTP transaction from rule
# files): no asyncio (~30 ms to import), no docopt (~10 ms), no typing,
# dataclasses or re.  The command line is parsed by hand, and
# tests/smtpdcheck/test_smtpdcheck_args.py checks the parse against
# docopt's reading of the usage text above.

from __future__ import annotations

import os
import sys
import time

from ..core.cli import guarded
from .cache import default_cache_path, fresh_down, read_cache, update_cache
from .check import Check, Server
from .probe import EXIT_ERROR, QUIT_GRACE_S, CheckError, Engine, is_ipv6_literal, resolvers_running

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Sequence

TOOL = "smtpdcheck"

# The original's exit statuses: the contract rule files rely on (an
# error is EXIT_ERROR, 2).
EXIT_NONE_UP = 0
EXIT_UP = 1

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_PORT = 25
DEFAULT_CACHE_TTL_S = 60.0

_DIGITS = frozenset("0123456789")


# ------------------------------------------------------------- command line

_VALUE_OPTIONS = ("--stop", "--timeout", "--port", "--cache", "--cache-ttl")
_FLAG_OPTIONS = ("--sequential", "--no-cache", "--help", "--version")
_LONG_OPTIONS = _VALUE_OPTIONS + _FLAG_OPTIONS
_DEFAULTS = {"--timeout": f"{DEFAULT_TIMEOUT_S:g}", "--port": str(DEFAULT_PORT),
             "--cache-ttl": f"{DEFAULT_CACHE_TTL_S:g}"}


def _long_option(word: str) -> str | None:
    """The long option `word` names: itself, or the one option it is a
    unique prefix of (as docopt and getopt_long accept); None if unknown."""
    if word in _LONG_OPTIONS:
        return word
    found = [name for name in _LONG_OPTIONS if name.startswith(word)]
    return found[0] if len(found) == 1 else None


def parse_command_line(argv: Sequence[str]) -> dict:
    """The command line as docopt reads the usage text: a dict with every
    option ("--stop": None or its value, "--sequential": bool, ...) and
    "SERVER" (the list of server arguments), values as given.

    Options may come after servers; `--` ends them.  Raises CheckError
    (exit 2) for a bad command line.  With -h or --help (-V, --version),
    the dict has "--help" ("--version") True and may be incomplete.
    """
    parsed: dict = {name: None for name in _VALUE_OPTIONS}
    parsed.update({name: False for name in _FLAG_OPTIONS})
    servers: list[str] = []
    seen: list[str] = []
    unknown: list[str] = []
    args = list(argv)
    i = 0
    only_servers = False
    while i < len(args):
        arg = args[i]
        i += 1
        if only_servers or arg == "-" or not arg.startswith("-"):
            servers.append(arg)
            continue
        if arg == "--":
            only_servers = True
            continue
        value: str | None = None
        if arg == "-h":
            name: str | None = "--help"
        elif arg == "-V":
            name = "--version"
        elif arg.startswith("--"):
            word, equals, rest = arg.partition("=")
            value = rest if equals else None
            name = _long_option(word)
        else:
            name = None
        if name is None:
            unknown.append(arg.partition("=")[0])
            continue
        if name in _VALUE_OPTIONS:
            if value is None:
                if i >= len(args) or args[i] == "--":
                    raise CheckError(f"{name} needs a value; see --help")
                value = args[i]
                i += 1
            parsed[name] = value
        else:
            if value is not None:
                raise CheckError(f"{name} takes no value; see --help")
            parsed[name] = True
        seen.append(name)
    if parsed["--help"] or parsed["--version"]:
        return parsed
    if unknown:
        raise CheckError(f"unknown option {unknown[0]}; see --help")
    for name in seen:
        if seen.count(name) > 1:
            raise CheckError(f"{name} given twice; see --help")
    if parsed["--cache"] is not None and parsed["--no-cache"]:
        raise CheckError("--cache and --no-cache exclude each other; see --help")
    if not servers:
        raise CheckError("no server given; see --help")
    for name, default in _DEFAULTS.items():
        if parsed[name] is None:
            parsed[name] = default
    parsed["SERVER"] = servers
    return parsed


def parse_seconds(option: str, text: str) -> float:
    """A number of seconds (digits, at most one decimal point), >= 0."""
    digits = text.replace(".", "", 1)
    if not digits or not set(digits) <= _DIGITS:
        raise CheckError(f"bad {option} {text!r}: not a number of seconds")
    return float(text)


def parse_port(text: str) -> int:
    if not text or not set(text) <= _DIGITS or not 0 < int(text) < 65536:
        raise CheckError(f"bad --port {text!r}: not a port number (1-65535)")
    return int(text)


def parse_server(arg: str) -> Server:
    """`[prio:]host`; CheckError if bad.

    A whole argument that is an IPv6 address is a host, never a priority
    and the rest (`5:2001:db8::25` is one address).  An IPv6 address may
    be written in brackets, which is how to give it a priority without
    ambiguity: `5:[2001:db8::25]`.
    """
    if not arg:
        raise CheckError("empty server name")
    if is_ipv6_literal(arg):
        return Server(None, arg)
    prio: int | None = None
    host = arg
    if ":" in arg and not arg.startswith("["):
        prio_text, _, host = arg.partition(":")
        if not prio_text or not set(prio_text) <= _DIGITS:
            raise CheckError(f"bad priority {prio_text!r} in {arg!r}: not a number")
        prio = int(prio_text)
    if host.startswith("[") and host.endswith("]") and is_ipv6_literal(host[1:-1]):
        host = host[1:-1]
    if not host:
        raise CheckError(f"empty server name in {arg!r}")
    if ":" in host and not is_ipv6_literal(host):
        raise CheckError(f"bad server name {host!r} in {arg!r}")
    return Server(prio, host)


# --------------------------------------------------------------------- main


def run(argv: list[str] | None) -> int:
    parsed = parse_command_line(sys.argv[1:] if argv is None else argv)
    if parsed["--help"]:
        sys.stdout.write(__doc__.strip() + "\n")
        return 0
    if parsed["--version"]:
        from .. import __version__

        sys.stdout.write(f"smtpdcheck (roammail) {__version__}\n")
        return 0
    timeout = parse_seconds("--timeout", parsed["--timeout"])
    ttl = parse_seconds("--cache-ttl", parsed["--cache-ttl"])
    port = parse_port(parsed["--port"])
    stop = parsed["--stop"]
    if stop is not None and not stop:
        raise CheckError("empty --stop name")
    if parsed["--cache"] is not None and not parsed["--cache"]:
        raise CheckError("empty --cache file name")
    servers = [parse_server(arg) for arg in parsed["SERVER"]]

    cache_path = None
    if not parsed["--no-cache"] and ttl > 0:
        cache_path = parsed["--cache"] or default_cache_path()
    started_at = time.time()
    cached_down = (fresh_down(read_cache(cache_path), port, ttl, started_at)
                   if cache_path else set())

    try:
        engine = Engine(port)
    except OSError as exc:
        raise CheckError(f"system error: {exc.strerror or exc}") from None
    check = Check(servers, stop, port, timeout, cached_down, engine)
    start = engine.clock()
    try:
        answer = check.run_sequential() if parsed["--sequential"] else check.run_parallel()
        # What was found, before the lookups and probes that no longer
        # matter are abandoned (an abandoned one is not a server found down).
        found_down, found_up = check.found_down(), check.found_up()
        if answer is not None:
            sys.stdout.write(servers[answer].host + "\n")
            sys.stdout.flush()
        now = engine.clock()
        until = now + QUIT_GRACE_S
        if timeout > 0 and not parsed["--sequential"]:
            until = min(until, max(now, start + timeout))
        engine.finish(until)
    except BaseException as exc:
        engine.finish(engine.clock())
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise CheckError(f"system error: {exc.strerror or exc}") from None
        raise
    if cache_path and found_down:
        update_cache(cache_path, port, ttl, time.time(), found_down, found_up)
    return EXIT_NONE_UP if answer is None else EXIT_UP


def exit_now(status: int) -> None:
    """Flush stdout and stderr and end the process at once: no exit
    handlers, no library destructors, no interpreter finalisation."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    """The tool; with argv None (the launcher: the process is ours) it may
    not return but end the process, see below."""
    status = guarded(TOOL, lambda: run(argv))
    # The original's contract: 0 none up, 1 one up, 2 anything else (a bad
    # command line, a system error, an interruption, a bug).
    status = status if status in (EXIT_NONE_UP, EXIT_UP) else EXIT_ERROR
    if argv is None and resolvers_running():
        # A lookup abandoned at the deadline, or no longer needed, is still
        # inside getaddrinfo.  exit(3) would run the shared libraries'
        # destructors under it: an NSS module (or nss_wrapper, which the
        # tests preload) that frees its tables there makes the thread crash
        # the process (SIGSEGV) after the answer was given.  _exit(2) ends
        # everything at once; the answer and the cache are written already.
        exit_now(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
