"""roammail-status: one line on the health of the mail tools.

Usage:
  roammail-status [--json | --nagios] [options]
  roammail-status -V | --version
  roammail-status -h | --help

Options:
  --json                  Print the state as one JSON object, for scripts.
  --nagios                Answer as a monitoring plugin (Nagios, Icinga,
                          monitoring-plugins): ROAMMAIL OK - ... | perfdata,
                          exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
  --queue-age-warn=TIME   A queued message this old is stale [default: 1h].
  --queue-age-crit=TIME   ... and critical [default: 6h].
  --sync-age-warn=TIME    A sync last good this long ago is stale [default: 30m].
  --sync-age-crit=TIME    ... and critical [default: 2h].
  -V, --version           Print the version.
  -h, --help              Show this help.
"""

from __future__ import annotations

import os
import sys
import time

from .. import __version__
from ..core import health
from ..core.cli import docopt_args, error, guarded
from ..core.errors import UsageError

TOOL = "roammail-status"
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
JSON_VERSION = 1


def short_age(seconds: float) -> str:
    """45s, 5m, 3h, 2d: the whole units of the largest that fits."""
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _time(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: it exists
    return True


def _live_queue(spool_dir: str) -> tuple[int, float | None] | None:
    """The queue as it is now (spool_dir/msgs/, dot files aside): its length
    and its oldest message's queue time; None when it cannot be read.  The
    record says what the last pass saw; a queue nobody runs grows after it."""
    oldest = None
    count = 0
    try:
        with os.scandir(os.path.join(spool_dir, "msgs")) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                count += 1
                oldest = mtime if oldest is None or mtime < oldest else oldest
    except OSError:
        return None
    return count, oldest


class Thresholds:
    def __init__(self, queue_warn: float, queue_crit: float, sync_warn: float,
                 sync_crit: float) -> None:
        self.queue = (queue_warn, queue_crit)
        self.sync = (sync_warn, sync_crit)

    @staticmethod
    def level(age: float | None, pair: tuple[float, float]) -> int:
        if age is None:
            return OK
        return CRITICAL if age >= pair[1] else WARNING if age >= pair[0] else OK


class Report:
    """Every record read, judged against the thresholds: the line's pieces,
    the problems (each with its monitoring state), the perfdata."""

    def __init__(self, records: list[dict], limits: Thresholds, now: float) -> None:
        self.now = now
        self.limits = limits
        self.pieces: list[str] = []
        self.problems: list[tuple[int, str]] = []
        self.perf: list[str] = []
        self.mail: list[dict] = []
        self.sync: list[dict] = []
        self.mswatch: list[dict] = []
        self.imap: list[dict] = []
        by_tool: dict[str, list[dict]] = {}
        for rec in records:
            by_tool.setdefault(rec["tool"], []).append(rec)
        for rec in by_tool.get("extsmaild", []):
            self._mail(rec)
        for rec in by_tool.get("syncmail", []):
            self._sync(rec)
        mswatches = by_tool.get("mswatch", [])
        for rec in mswatches:
            self._mswatch(rec, len(mswatches) > 1)
        for rec in by_tool.get("watch-imap", []):
            self._imap(rec)
        if self.mail:
            queued = sum(m["queued"] for m in self.mail)
            ages = [m["oldest_age"] for m in self.mail if m["oldest_age"] is not None]
            warn, crit = limits.queue
            self.perf.append(f"queued={queued};;;0;")
            self.perf.append(f"queue_age={int(max(ages, default=0))}s;{int(warn)};{int(crit)};0;")
            self.perf.append(f"failed={sum(m['failed'] for m in self.mail)};;;0;")
        for entry in self.sync:
            if entry["age"] is not None:
                warn, crit = limits.sync
                self.perf.append(f"sync_age_{_label(entry['source'])}={int(entry['age'])}s;"
                                 f"{int(warn)};{int(crit)};0;")

    def _ago(self, when: float | None) -> float | None:
        return None if when is None else max(0.0, self.now - when)

    def problem(self, state: int, text: str) -> None:
        if state != OK:
            self.problems.append((state, text))

    # -- extsmaild ------------------------------------------------------------

    def _mail(self, rec: dict) -> None:
        spool_dir = str(rec.get("spool_dir") or rec["key"])
        queued = rec.get("queued") if isinstance(rec.get("queued"), int) else 0
        oldest = _time(rec.get("oldest_queued"))
        live = _live_queue(spool_dir)
        if live is not None:
            queued, oldest = live
        failed = rec.get("failed") if isinstance(rec.get("failed"), int) else 0
        age = self._ago(oldest) if queued else None
        level = Thresholds.level(age, self.limits.queue)
        if queued:
            text = f"mail: {queued} queued (oldest {short_age(age or 0)}"
            text += ", stale" if level != OK else ""
            # A queue that waits for the network is no fault of the mail's.
            text += ", offline)" if rec.get("network") == "offline" else ")"
        else:
            text = "mail: queue empty"
        if failed:
            text += f", {failed} failed"
        self.pieces.append(text)
        self.problem(level, f"{queued} queued in {spool_dir}, the oldest for "
                            f"{short_age(age or 0)}")
        self.problem(WARNING if failed else OK, f"{failed} set aside in {spool_dir}/failed")
        externals = rec.get("externals")
        externals = externals if isinstance(externals, dict) else {}
        shown = {}
        best: tuple[float, str] | None = None
        for name, entry in sorted(externals.items()):
            if not isinstance(entry, dict):
                continue
            ok_at, bad_at = _time(entry.get("last_success")), _time(entry.get("last_failure"))
            reason = entry.get("last_error") if isinstance(entry.get("last_error"), str) else None
            shown[name] = {"last_success": ok_at, "last_failure": bad_at, "last_error": reason}
            if ok_at is not None and (best is None or ok_at > best[0]):
                best = (ok_at, name)
            if bad_at is not None and (ok_at is None or bad_at > ok_at):
                self.pieces.append(f"{name} failed {short_age(self.now - bad_at)} ago")
        if best is not None:
            self.pieces.append(f"sent via {best[1]} {short_age(self.now - best[0])} ago")
        self.mail.append({
            "spool_dir": spool_dir, "queued": queued, "oldest_queued": oldest,
            "oldest_age": None if age is None else round(age), "failed": failed, "externals": shown,
            "network": rec.get("network"), "last_pass": _time(rec.get("last_pass")),
            "updated": rec["updated"], "stale": level != OK})

    # -- syncmail -------------------------------------------------------------

    def _sync(self, rec: dict) -> None:
        source = str(rec.get("source") or rec["key"])
        ok_at = _time(rec.get("last_success"))
        age = self._ago(ok_at)
        last_error = rec.get("last_error") if isinstance(rec.get("last_error"), str) else None
        offline = rec.get("offline") is True
        level = Thresholds.level(age, self.limits.sync) if ok_at is not None else WARNING
        stale = ", stale" if level != OK else ""
        since = "never" if age is None else f"{short_age(age)} ago"
        if offline:
            text = f"sync {source} offline (ok {since}{stale})"
        elif last_error:
            text = f"sync {source} failed (ok {since}{stale})"
        elif ok_at is None:
            text = f"sync {source} never ok"
        else:
            text = f"sync {source} {since}" + (" (stale)" if stale else "")
        self.pieces.append(text)
        self.problem(level, f"sync {source}: last good {since}"
                            + (f": {last_error}" if last_error else ""))
        self.sync.append({
            "source": source, "last_run": _time(rec.get("last_run")), "last_success": ok_at,
            "age": None if age is None else round(age),
            "moved": rec.get("moved") if isinstance(rec.get("moved"), int) else 0,
            "last_error": last_error, "offline": offline, "stale": level != OK})

    # -- mswatch --------------------------------------------------------------

    def _mswatch(self, rec: dict, named: bool) -> None:
        stores = str(rec.get("stores") or rec["key"])
        who = f"mswatch {stores}" if named else "mswatch"
        running = rec.get("running") is True and _alive(rec.get("pid"))
        watchers = rec.get("watchers")
        watchers = watchers if isinstance(watchers, dict) else {}
        ok_at, bad_at = _time(rec.get("last_success")), _time(rec.get("last_failure"))
        failing = bad_at is not None and (ok_at is None or bad_at > ok_at)
        restarting = sorted(str(n) for n, s in watchers.items() if s == "restarting")
        offline = rec.get("network") == "offline"
        if not running:
            text, level = f"{who} stopped", CRITICAL
        elif failing:
            age = self._ago(ok_at)
            level = Thresholds.level(age, self.limits.sync) if ok_at is not None else WARNING
            text = f"{who} sync failing (ok {'never' if age is None else short_age(age)}" \
                   + (" ago, stale)" if level != OK and age is not None else
                      ")" if age is None else " ago)")
        elif restarting:
            text, level = f"{who} restarting {', '.join(restarting)}", WARNING
        else:
            text, level = f"{who} ok", OK
        if offline and running:
            text += " (offline)"
        self.pieces.append(text)
        last_error = rec.get("last_error") if isinstance(rec.get("last_error"), str) else None
        self.problem(level, text + (f": {last_error}" if failing and last_error else ""))
        self.mswatch.append({
            "stores": stores, "running": running, "watchers": watchers,
            "network": rec.get("network"), "last_sync": _time(rec.get("last_sync")),
            "last_success": ok_at, "last_failure": bad_at, "last_error": last_error,
            "stale": level != OK})

    # -- watch-imap -----------------------------------------------------------

    def _imap(self, rec: dict) -> None:
        account = str(rec.get("account") or rec["key"])
        state = rec.get("state") if isinstance(rec.get("state"), str) else "unknown"
        if state != "stopped" and not _alive(rec.get("pid")):
            state = "stopped"
        since = _time(rec.get("since"))
        age = self._ago(since)
        last_error = rec.get("last_error") if isinstance(rec.get("last_error"), str) else None
        if state == "connected":
            text, level = f"imap {account} connected", OK
        elif state == "stopped":
            text, level = f"imap {account} stopped", WARNING
        else:
            level = Thresholds.level(age, self.limits.sync)
            text = f"imap {account} {state}" + (f" for {short_age(age)}" if age else "") \
                + (" (stale)" if level != OK else "")
        self.pieces.append(text)
        self.problem(level, text + (f": {last_error}" if last_error and level else ""))
        self.imap.append({"account": account, "state": state, "since": since,
                          "last_error": last_error, "stale": level != OK})

    # -- the answers ----------------------------------------------------------

    def state(self) -> int:
        if not self.pieces:
            return UNKNOWN
        return max((state for state, _ in self.problems), default=OK)

    def line(self) -> str:
        return "; ".join(self.pieces) if self.pieces else "nothing recorded yet"


def _label(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def nagios_text(report: Report) -> str:
    state = report.state()
    worst = [text for level, text in report.problems if level == state]
    head = "; ".join(worst) if worst and state in (WARNING, CRITICAL) else report.line()
    text = f"ROAMMAIL {STATE_NAMES[state]} - {' '.join(head.split())}"
    if report.perf:
        text += " | " + " ".join(report.perf)
    return text


def json_text(report: Report, warnings: list[str]) -> str:
    import json

    warn_q, crit_q = report.limits.queue
    warn_s, crit_s = report.limits.sync
    return json.dumps({
        "version": JSON_VERSION, "now": round(report.now, 3),
        "status": STATE_NAMES[report.state()].lower(), "line": report.line(),
        "problems": [text for _, text in report.problems],
        "warnings": warnings,
        "thresholds": {"queue_age_warn": warn_q, "queue_age_crit": crit_q,
                       "sync_age_warn": warn_s, "sync_age_crit": crit_s},
        "mail": report.mail, "sync": report.sync, "mswatch": report.mswatch,
        "imap": report.imap}, sort_keys=True)


def _seconds(args: dict, option: str) -> float:
    from ..core.times import parse_time

    try:
        return float(parse_time(args[option]))
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def run(argv: list[str] | None) -> int:
    args = docopt_args(__doc__, argv)
    if args["--version"]:
        sys.stdout.write(f"{TOOL} (roammail) {__version__}\n")
        return 0
    limits = Thresholds(_seconds(args, "--queue-age-warn"), _seconds(args, "--queue-age-crit"),
                        _seconds(args, "--sync-age-warn"), _seconds(args, "--sync-age-crit"))
    if limits.queue[0] > limits.queue[1] or limits.sync[0] > limits.sync[1]:
        raise UsageError("a warning threshold is longer than its critical one")
    warnings: list[str] = []
    records = health.read_all(warnings)
    for text in warnings:
        error(TOOL, f"warning: {text}")
    report = Report(records, limits, time.time())
    if args["--json"]:
        sys.stdout.write(json_text(report, warnings) + "\n")
        return 0
    if args["--nagios"]:
        sys.stdout.write(nagios_text(report) + "\n")
        return report.state()
    sys.stdout.write(report.line() + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    status = guarded(TOOL, lambda: run(argv))
    words = sys.argv[1:] if argv is None else argv
    if "--nagios" in words and status not in (OK, WARNING, CRITICAL, UNKNOWN):
        # A monitoring plugin answers UNKNOWN for whatever kept it from
        # checking (a bad command line, an unwritable output), never 64.
        try:
            sys.stdout.write("ROAMMAIL UNKNOWN - could not check; see the error above\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        return UNKNOWN
    return status


if __name__ == "__main__":
    sys.exit(main())
