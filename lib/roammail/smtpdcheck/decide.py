"""decide.py: which server smtpdcheck reports, as a pure function of what is known.

No I/O, no clock, no imports: `candidacy` and `decide` take the servers'
priorities and what is known of them so far (None: not yet), so the
drivers (check.py) can ask after every event whether the answer is
settled, and the tests can try every outcome.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Sequence

# Servers are indexed in argument order.  What is known of server i:
#   match[i]  does it match --stop? True, False, or None (not known yet);
#   up[i]     is it up? True, False, or None (not known yet).
# The answer with everything known (Mail Avenger's rule): let k be the first
# server that matches --stop (none: k = n).  Candidates are the servers
# before k, except, when both have a priority, those whose priority is not
# strictly better (smaller) than k's.  The answer is the first candidate
# that is up, or None.  `decide` gives that answer as soon as no outcome of
# the unknowns can change it, and says "undecided" until then.


def _excludes(prio: int | None, stop_prio: int | None) -> bool:
    """A server with `prio` is not a candidate when k has `stop_prio`."""
    return prio is not None and stop_prio is not None and prio >= stop_prio


def candidacy(prios: Sequence[int | None],
              match: Sequence[bool | None]) -> list[tuple[bool, bool, bool]]:
    """(relevant, possible, certain) for each server.

    relevant: no earlier server surely matches --stop and this one does not
    surely match it (its addresses may still matter);
    possible: in some outcome of the unknown matches it is a candidate;
    certain: in every outcome it is.
    """
    n = len(prios)
    table = []
    earlier_true = False       # some j < i surely matches
    earlier_all_false = True   # every j < i surely does not match
    for i in range(n):
        if earlier_true or match[i] is True:
            table.append((False, False, False))
            earlier_true = True
            continue
        certain = earlier_all_false and match[i] is False
        prio = prios[i]
        possible = True
        if prio is not None:
            # Which server can be k?  Any later one not known not to match,
            # up to the first that surely matches; or none at all (k = n).
            possible = False
            for j in range(i + 1, n):
                if match[j] is False:
                    continue
                if _excludes(prio, prios[j]):
                    certain = False
                else:
                    possible = True
                if match[j] is True or (possible and not certain):
                    break
            else:
                possible = True  # no server after i matches: k = n
        table.append((True, possible, certain))
        if match[i] is not False:
            earlier_all_false = False
    return table


def decide(prios: Sequence[int | None], match: Sequence[bool | None],
           up: Sequence[bool | None]) -> tuple[bool, int | None]:
    """(decided, answer): answer is the index of the server to report, or
    None for none; when not decided, answer is None and means nothing.

    Decided means no outcome of the unknowns can change the answer: every
    server that may be a candidate before the answer is known to be down,
    and the answer is up and a candidate whatever the unknowns turn out to
    be.  With everything known, it is always decided.
    """
    for i, ((_relevant, possible, certain), state) in enumerate(
            zip(candidacy(prios, match), up)):
        if not possible or state is False:
            continue
        if state is True and certain:
            return True, i
        return False, None
    return True, None
