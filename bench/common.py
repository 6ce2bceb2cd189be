"""common.py: what every roammail benchmark needs, and nothing tool-specific.

- where our tools are installed (--prefix, else $ROAMMAIL_PREFIX, else
  .test-prefix in the repo) and which interpreter their launchers run;
- nss_wrapper, so that a C peer which finds its configuration through the
  password entry (getpwuid), not $HOME, reads a temporary home instead of
  the real user's;
- a tag put into the environment of every process a benchmark starts, so
  that whatever is left over (a daemon that detached, its children) is
  found by that tag and ended by pid, and nothing else is touched;
- the tests' peers (tests/peers, tests/smtpdcheck...), imported from here
  with the repository's tests/ on sys.path, and a message naming the test
  virtualenv's interpreter when their dependencies are missing;
- statistics (median, nearest-rank percentiles) and the output: the
  environment header, markdown tables and the --summary file (JSON rows
  that bench/run collects).

It must never start a process itself, nor write outside the directories a
benchmark hands it.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "lib"
TESTS = REPO / "tests"
# ./test.sh creates it: the interpreter that has the test peers' packages.
TEST_PYTHON = REPO / ".venv-test" / "bin" / "python3"
PREFIX_ENV = "ROAMMAIL_PREFIX"
DEFAULT_PREFIX = REPO / ".test-prefix"
# Every process a benchmark starts carries this variable (a fresh value per
# run): the cleanup sweep ends exactly the processes that have it.
TAG_VAR = "ROAMMAIL_BENCH_TAG"
NSS_WRAPPER_PACKAGE = "libnss-wrapper"
NSS_WRAPPER_LIB = "libnss_wrapper.so"


class BenchError(Exception):
    """A benchmark cannot run or went wrong; the message says why and what to do."""


# ------------------------------------------------------------------ our tools


def resolve_prefix(option: str | None) -> Path:
    """--prefix, else $ROAMMAIL_PREFIX, else REPO/.test-prefix (absolute)."""
    value = option or os.environ.get(PREFIX_ENV) or str(DEFAULT_PREFIX)
    return Path(value).expanduser().resolve()


def installed_tools(prefix: Path, names: list[str]) -> dict[str, Path]:
    """The launchers PREFIX/bin/NAME; BenchError naming the fix when one is missing."""
    found = {}
    for name in names:
        path = prefix / "bin" / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BenchError(
                f"{path} is not installed (or not executable): install roammail there "
                f"first with `./install.sh --prefix {prefix}`, or pass --prefix DIR / "
                f"set ${PREFIX_ENV} to where it is installed")
        found[name] = path
    return found


def launcher_interpreter(launcher: Path) -> list[str]:
    """The interpreter and its flags a launcher execs, e.g.
    ["/p/lib/roammail/venv/bin/python3", "-IS"]: from its `exec` line (a
    /bin/sh launcher, install.sh's) or else its #! line."""
    with open(launcher, "rb") as f:
        head = f.read(4096).decode("utf-8", "replace").splitlines()
    first = head[0].strip() if head else ""
    if not first.startswith("#!"):
        raise BenchError(f"{launcher} has no #! line: not a roammail launcher")
    words = first[2:].split()
    for line in head[1:3]:
        found = re.search(r'exec "([^"]+)" (-\S+) "\$0"', line)
        if found:
            words = [found.group(1), found.group(2)]
            break
    if not words or not os.access(words[0], os.X_OK):
        raise BenchError(f"{launcher}: its interpreter {words[:1]} is not executable; "
                         "reinstall with ./install.sh")
    return words


def require_executable(path: str, hint: str) -> str:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise BenchError(f"{path} is not installed: {hint}")
    return path


# ----------------------------------------------------------------- test peers


def import_test_peer(name: str, under: str = ""):
    """A module of the tests' peers: "peers.sshd", or ("smtpdcheck_peers",
    under="smtpdcheck") for one that lives in a test directory.

    tests/ (and tests/UNDER) go on sys.path here, once, for every benchmark.
    The peers import pytest, aiosmtpd...: without them a BenchError names the
    interpreter that has them.
    """
    for directory in (TESTS, TESTS / under) if under else (TESTS,):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BenchError(
            f"cannot import the test peer {name} (from {TESTS / under if under else TESTS}): "
            f"{exc}; run this benchmark with the test virtualenv's interpreter, "
            f"{TEST_PYTHON.relative_to(REPO)} (./test.sh creates it)") from None


# ---------------------------------------------------------------- nss_wrapper


def find_nss_wrapper() -> str:
    """The path of libnss_wrapper.so, from `dpkg -L libnss-wrapper`."""
    try:
        listing = subprocess.run(["dpkg", "-L", NSS_WRAPPER_PACKAGE], capture_output=True,
                                 text=True, check=False).stdout
    except OSError:
        listing = ""
    for line in listing.splitlines():
        if line.endswith("/" + NSS_WRAPPER_LIB) and os.path.isfile(line):
            return line
    raise BenchError(f"{NSS_WRAPPER_LIB} not found: install it with "
                     f"`apt-get install {NSS_WRAPPER_PACKAGE}` (the C extsmail finds its "
                     "configuration through the password entry, not $HOME)")


def nss_wrapper_env(library: str, directory: Path, home: Path) -> dict[str, str]:
    """Environment making getpwuid(getuid()) return an entry whose home is `home`.

    Writes DIRECTORY/passwd and DIRECTORY/group for the current uid and gid.
    """
    uid, gid = os.getuid(), os.getgid()
    passwd = directory / "passwd"
    group = directory / "group"
    passwd.write_text(f"benchuser:x:{uid}:{gid}:bench user:{home}:/bin/sh\n")
    group.write_text(f"benchgroup:x:{gid}:\n")
    return {"LD_PRELOAD": library, "NSS_WRAPPER_PASSWD": str(passwd),
            "NSS_WRAPPER_GROUP": str(group)}


# ------------------------------------------------------------------ processes


def new_tag() -> str:
    return uuid.uuid4().hex


def base_env(tag: str, home: Path, **extra: str) -> dict[str, str]:
    """A small, fixed environment: the same variables for every variant."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           TAG_VAR: tag}
    env.update(extra)
    return env


def tagged_pids(tag: str, exe: str | None = None) -> list[int]:
    """Pids of the processes whose environment holds TAG_VAR=tag (and whose
    executable is `exe`, when given); never our own pid."""
    wanted = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            if wanted not in environ:
                continue
            if exe is not None and os.readlink(f"/proc/{entry}/exe") != exe:
                continue
        except OSError:  # gone, or not ours to read
            continue
        found.append(int(entry))
    return found


def end_pids(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM each pid, then SIGKILL what is still there after `grace` s."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if _alive(pid)]
        if left:
            time.sleep(0.02)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"  # a zombie is dead; its parent reaps it


def sweep(tag: str) -> int:
    """End every leftover process of this run; return how many there were."""
    pids = tagged_pids(tag)
    end_pids(pids)
    return len(pids)


def wait_for(predicate, timeout: float, interval: float = 0.0005) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` s pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# ----------------------------------------------------------------- statistics


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with p% of them at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


class OtherLoad:
    """How much CPU other processes used while a benchmark ran.

    The machine's busy time (from /proc/stat) less our own and our reaped
    children's (getrusage), averaged over the wall time: in CPUs.  A
    detached daemon is not our child; its CPU time counts as "other", which
    errs on the side of warning.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        import resource

        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal: busy = all but idle, iowait
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            own += usage.ru_utime + usage.ru_stime
        return time.monotonic(), busy, own

    def cpus(self) -> float:
        """Average CPUs used by others since construction (0 when unknown)."""
        try:
            end = self._sample()
        except (OSError, ValueError, IndexError):
            return 0.0
        wall = end[0] - self.start[0]
        if wall <= 0:
            return 0.0
        return max(0.0, ((end[1] - self.start[1]) - (end[2] - self.start[2])) / wall)


# --------------------------------------------------------------------- output


def environment_lines(interpreter: str | None = None) -> list[str]:
    """Python, CPUs, kernel, load: what makes numbers comparable between runs."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    lines = [
        f"harness python: {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
    ]
    if interpreter:
        version = subprocess.run([interpreter, "-I", "-S", "-c",
                                  "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True, check=False).stdout.strip()
        lines.append(f"tools python:   {version} ({interpreter})")
    lines += [
        f"CPUs:           {os.cpu_count()} ({usable} usable), {cpu or 'unknown model'}",
        f"kernel:         {platform.system()} {platform.release()} {platform.machine()}",
        f"load average:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]
    return lines


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table with padded columns (readable as plain text too)."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def times(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}x"


def add_summary_option(parser) -> None:
    """--summary FILE: the summary table's rows as JSON too (for bench/run)."""
    parser.add_argument("--summary", metavar="FILE",
                        help="also write the summary table's rows to FILE as JSON "
                        "(a list of {bench, metric, ours, peer, ratio, target, met, note})")


def summary_row(bench: str, metric: str, ours: str, peer: str, ratio: str,
                target: str = "", met: str = "", note: str = "") -> dict:
    """One row of a --summary file, from cells of a printed summary table.

    `met` is the cell as printed ("yes", "no", "NO" or empty): true, false or
    null (no target).
    """
    flag = met.strip().lower()
    return {"bench": bench, "metric": metric, "ours": ours, "peer": peer, "ratio": ratio,
            "target": target, "met": True if flag == "yes" else False if flag == "no" else None,
            "note": note}


def summary_rows(bench: str, headers: list[str], rows: list[list[str]], *, metric,
                 ours: str, peer: str, ratio: str, target: str | None = None,
                 met: str | None = None, note=()) -> list[dict]:
    """The rows of a printed summary table (`headers`, `rows`) as --summary rows.

    Each field is the cell under the header named for it; `metric` may name
    several headers (the cells joined), `note` the headers whose cells make
    the note (empty cells left out; "header: cell" when there are several).
    """
    def cells(row: list[str], names, labelled: bool = False) -> str:
        names = [names] if isinstance(names, str) else names
        labelled = labelled and len(names) > 1
        return ", ".join((f"{n}: " if labelled else "") + str(row[headers.index(n)])
                         for n in names if str(row[headers.index(n)]))

    def cell(row: list[str], name: str | None) -> str:
        return str(row[headers.index(name)]) if name else ""

    return [summary_row(bench, cells(row, metric), cell(row, ours), cell(row, peer),
                        cell(row, ratio), cell(row, target), cell(row, met),
                        cells(row, note, labelled=True))
            for row in rows]


def write_summary(path: str | None, rows: list[dict]) -> None:
    """Write --summary FILE (nothing without the option)."""
    if not path:
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")


def clean_up(tag: str, root: Path, keep: bool) -> None:
    """End this run's leftover processes; remove (or keep) its directory."""
    import shutil

    left = sweep(tag)
    if left:
        print(f"\n(ended {left} leftover process(es) of this run)", file=sys.stderr)
    if keep:
        print(f"\nkept {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


def run_main(name: str, run, args) -> int:
    """A benchmark's main: BenchError is one line and exit 2; ^C is 130."""
    try:
        return run(args)
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def slow_ssh(server, bin_dir: Path, delay_ms: float, mbit: float) -> Path:
    """An `ssh` in bin_dir for the test sshd `server`, whose connections go
    through slowlink.py (as ProxyCommand): delay_ms each way, mbit Mbit/s."""
    proxy = shlex.join([sys.executable, str(REPO / "bench" / "slowlink.py"),
                        "--delay-ms", f"{delay_ms:g}", "--mbit", f"{mbit:g}",
                        "127.0.0.1", str(server.port)])
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "ssh"
    argv = [*server.ssh_command(), "-o", f"ProxyCommand={proxy}"]
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper
