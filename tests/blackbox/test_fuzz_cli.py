"""No command line and no config file makes a tool report an internal error.

Exit 70 (EX_SOFTWARE) is the tools' status for a bug, and a Python
traceback on stderr is one too: whatever the user writes in a config file
or on a command line, a tool must refuse it in one line with its
documented status, or do its job.  Every tool is driven with generated
input (fuzz_inputs.py): mostly through its main(), in a forked child, for
speed, and a few times through the installed launcher; the hooks through
the installed scripts.  Each run has a fresh home, no network beyond
127.0.0.1 (ssh is a fake that runs nothing remote) and a deadline: a hang
fails the test as surely as exit 70.

FUZZ_SCALE=N multiplies the number of runs (a longer hunt); FUZZ_STATS=1
prints, with -s, how the runs ended, to see what the generators reach.
"""

from __future__ import annotations

import importlib
import os
from collections import Counter

import fuzz_inputs as fz
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

# Runs per tool: enough to get past the first refusals of each grammar,
# few enough that the whole file stays well under a minute on two cores.
IN_PROCESS_RUNS = {"extsmail": 60, "extsmaild": 80, "syncmail": 80, "smtpdcheck": 50,
                   "inputkill": 30, "socketwatch": 30, "mswatch": 30, "watch-maildirs": 20,
                   "watch-imap": 40}
LAUNCHER_RUNS = 3
HOOK_RUNS = 25


@pytest.fixture(scope="module")
def world(installed, tmp_path_factory):
    for module, _ in fz.ENTRY_POINTS.values():
        importlib.import_module(module)  # once, before the forks
    root = tmp_path_factory.mktemp("fuzz")
    greeter = fz.Greeter()
    try:
        yield fz.World(fz.make_fake_bin(root / "fakebin"), installed.bindir,
                       installed.prefix / "share" / "roammail" / "hooks", greeter.port,
                       fz.closed_port(), root)
    finally:
        greeter.close()


def case_strategy(tool: str, world: fz.World) -> st.SearchStrategy:
    return {
        "extsmail": fz.extsmail_case(),
        "extsmaild": fz.extsmaild_case(),
        "syncmail": fz.syncmail_case(),
        "mswatch": fz.mswatch_case(),
        "watch-maildirs": fz.watch_maildirs_case(),
        "watch-imap": fz.watch_imap_case(world.smtp_port, world.dead_port),
        "inputkill": fz.guard_case("inputkill"),
        "socketwatch": fz.guard_case("socketwatch"),
        "smtpdcheck": fz.smtpdcheck_case(world.smtp_port, world.dead_port),
        "mail-on-failure": fz.hook_case("mail-on-failure"),
        "persistent-ssh": fz.hook_case("persistent-ssh"),
    }[tool]


def check(outcome: fz.Outcome, case: fz.Case) -> None:
    problem = outcome.problem()
    assert problem is None, (
        f"{problem}\n{case.show()}\nexit status {outcome.status}, signal {outcome.signal}\n"
        f"stderr: {outcome.stderr.decode(errors='replace')[-3000:]}")


def fuzz(world: fz.World, tool: str, runs: int, run) -> None:
    """Run `runs` generated cases of `tool` with run(world, case), each checked."""
    runs *= int(os.environ.get("FUZZ_SCALE", "1"))
    seen: Counter = Counter()

    @settings(max_examples=runs, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(st.data())
    def body(data):
        case = data.draw(case_strategy(tool, world))
        outcome = run(world, case)
        seen[(outcome.status, outcome.termed,
              outcome.stderr.decode(errors="replace")[:70].split("(")[0])] += 1
        check(outcome, case)

    body()
    if os.environ.get("FUZZ_STATS"):
        for (status, termed, err), count in sorted(seen.items(), key=lambda i: -i[1]):
            print(f"{tool}: {count:3d}x exit {status}{' (TERM)' if termed else ''}: {err!r}")


@pytest.mark.parametrize("tool", sorted(IN_PROCESS_RUNS))
def test_main_never_fails_internally(world, tool):
    fuzz(world, tool, IN_PROCESS_RUNS[tool], fz.run_in_process)


@pytest.mark.parametrize("tool", sorted(IN_PROCESS_RUNS))
def test_launcher_never_fails_internally(world, tool):
    fuzz(world, tool, LAUNCHER_RUNS, fz.run_launcher)


@pytest.mark.parametrize("hook", fz.HOOKS)
def test_hook_always_exits_0(world, hook):
    """The hooks' contract: exit 0 whatever happens (a failing hook fails
    the sync), so no generated argument list or environment may change
    that, nor hang them."""
    def run(world, case):
        outcome = fz.run_launcher(world, case)
        assert outcome.status == 0, (
            f"exit {outcome.status}\n{case.show()}\n"
            f"stderr: {outcome.stderr.decode(errors='replace')[-2000:]}")
        return outcome

    fuzz(world, hook, HOOK_RUNS, run)
