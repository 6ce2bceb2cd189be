"""notify.py: the notification commands of extsmail.conf(5), run after a pass.

notify_success_cmd runs after a pass that sent messages (${SUCCESSES}:
how many); notify_failure_cmd once deliveries have failed for
notify_failure_interval (${TIME}: for how long), then at most once per
interval.  A command that fails is logged (the C extsmaild's line, then
its whole stderr), never an error of the run.
"""

from __future__ import annotations

import os

from .conf import ExtsmailConf
from .deliver import KILL_GRACE, STALL_TIMEOUT, stderr_pieces, stderr_text

TYPE_CHECKING = False  # typing is not imported at run time: an empty-queue run avoids it
if TYPE_CHECKING:
    from .deliver import CycleResult

STATE_DIR = "state"    # spool_dir/state/: notification times


def substitute(command: str, name: str, value: str) -> str:
    """Replace every ${NAME} in command (also at its very end)."""
    return command.replace("${" + name + "}", value)


class Notifier:
    """notify_failure_cmd / notify_success_cmd, as extsmail.conf(5) says.

    When the last fully successful cycle was, and when the last failure
    notice went out, are kept as the mtimes of two files in
    spool_dir/state/, so batch runs from cron notify as a daemon does.
    """

    LAST_SUCCESS = "last-success"
    LAST_NOTICE = "last-failure-notice"

    def __init__(self, conf: ExtsmailConf, log, spool_dir: str,
                 should_abort=None) -> None:
        self.conf = conf
        self.should_abort = should_abort
        self.log = log
        self.state_dir = os.path.join(spool_dir, STATE_DIR)

    def _stamp(self, name: str) -> float | None:
        try:
            return os.stat(os.path.join(self.state_dir, name)).st_mtime
        except OSError:
            return None

    def _set(self, name: str, when: float | None) -> None:
        path = os.path.join(self.state_dir, name)
        try:
            if when is None:
                if os.path.exists(path):
                    os.unlink(path)
                return
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            os.utime(path, (when, when))
        except OSError as exc:
            self.log.warning("cannot record %s: %s", path, exc.strerror)

    def after_cycle(self, result: CycleResult, now: float) -> None:
        from ..core.times import render_duration

        if result.sent and self.conf.notify_success_cmd:
            self.run(substitute(self.conf.notify_success_cmd, "SUCCESSES", str(result.sent)))
        if result.failed == 0:
            self._set(self.LAST_SUCCESS, now)
            self._set(self.LAST_NOTICE, None)
            return
        interval = self.conf.notify_failure_interval
        if not interval or not self.conf.notify_failure_cmd:
            return
        last_ok = self._stamp(self.LAST_SUCCESS)
        if last_ok is None:
            # Never fully successful on record: failing since the oldest
            # message that failed was queued.
            last_ok = min(now, result.oldest_failed or now)
            self._set(self.LAST_SUCCESS, last_ok)
        since = now - last_ok
        last_notice = self._stamp(self.LAST_NOTICE)
        if since >= interval and (last_notice is None or now - last_notice >= interval):
            self._set(self.LAST_NOTICE, now)
            self.run(substitute(self.conf.notify_failure_cmd, "TIME", render_duration(since)))

    def run(self, command: str) -> None:
        from ..core import child

        res = child.run_child(["/bin/sh", "-c", command], stall_timeout=STALL_TIMEOUT,
                              grace=KILL_GRACE, should_abort=self.should_abort)
        if not (res.returncode == 0 and res.error is None):
            # The C extsmaild's line, then why, then the whole stderr.
            self.log.warning("When running cmd: %s: %s", command, res.describe())
            for piece in stderr_pieces(stderr_text(res)):
                self.log.warning("notification command: stderr: %s", piece)
