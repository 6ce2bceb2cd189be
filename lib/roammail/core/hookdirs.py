"""hookdirs.py: run hook directories in the convention of smd (syncmaildir).

A hook directory is BASE/WHEN-WHAT.d (smd: ~/.smd/hooks/pre-pull.d/ ...).
Every executable regular file in it whose name does not start with "." or
end with "~" runs, in name order (bytewise, as smd's `ls` in the C locale
sorts), as

    HOOK WHEN WHAT ENDPOINT STATUS

WHEN is pre or post, WHAT what the tool does (pull, push, sync), ENDPOINT
the source or store pair, STATUS 0 for pre hooks and the run's exit status
for post hooks.  Hooks run with the working directory $HOME and stdin from
/dev/null; their stdout, then their stderr, are appended to the log file given, or
passed through when there is none.  `extra_env` reaches them too (our tools
set ROAMMAIL_HOOK_LOG and ROAMMAIL_SSH_HOST).

Contract: argv only, never a shell, whatever ENDPOINT contains; a hook
that fails or hangs (killed after `timeout` seconds without output) is
reported in the results, it never raises; the caller decides what a
failing hook means (smd fails the run).

Cheap to import: a run with no hooks (the usual case) only lists a
directory, so child.py (subprocess, selectors, dataclasses: tens of
milliseconds) is imported by the first hook that runs.
"""

from __future__ import annotations

import os

from . import locations

# A hook that neither writes nor exits for this long is killed.
HOOK_STALL_SECONDS = 120.0


class HookResult:
    """One hook's outcome: its path, whether it succeeded, and how it
    ended ("exit status 0", "killed by signal 9 (SIGKILL)"...)."""

    __slots__ = ("path", "ok", "status")

    def __init__(self, path: str, ok: bool, status: str) -> None:
        self.path = path
        self.ok = ok
        self.status = status

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HookResult):
            return NotImplemented
        return (self.path, self.ok, self.status) == (other.path, other.ok, other.status)

    def __hash__(self) -> int:
        return hash((self.path, self.ok, self.status))

    def __repr__(self) -> str:
        return f"HookResult(path={self.path!r}, ok={self.ok!r}, status={self.status!r})"


def default_base() -> str:
    """Our tools' hook base: $XDG_CONFIG_HOME/roammail/hooks."""
    return os.path.join(locations.xdg_config_home(), "roammail", "hooks")


def hook_dir(base: str, when: str, what: str) -> str:
    return os.path.join(base, f"{when}-{what}.d")


def list_hooks(directory: str) -> list[str]:
    """The hooks of one directory, in the order they run."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    hooks = []
    for name in sorted(names, key=os.fsencode):
        if name.startswith(".") or name.endswith("~"):
            continue
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            hooks.append(path)
    return hooks


def run_hooks(base: str, when: str, what: str, endpoint: str, status: int = 0, *,
              log_path: str | None = None, extra_env: dict[str, str] | None = None,
              timeout: float = HOOK_STALL_SECONDS) -> list[HookResult]:
    """Run every hook of BASE/WHEN-WHAT.d; return one result per hook."""
    hooks = list_hooks(hook_dir(base, when, what))
    if not hooks:
        return []
    from . import child

    env = dict(os.environ)
    if extra_env:
        env.update(extra_env)
    results = []
    for hook in hooks:
        argv = [hook, when, what, endpoint, str(status)]
        res = child.run_child(argv, None, stall_timeout=timeout, capture_stdout=True,
                              env=env, cwd=locations.home(), stderr_limit=1 << 20)
        output = (res.stdout or b"") + res.stderr
        _append_output(log_path, output)
        ok = res.returncode == 0 and res.error is None and not res.stalled
        results.append(HookResult(hook, ok, res.describe()))
    return results


def _append_output(log_path: str | None, output: bytes) -> None:
    if not output:
        return
    if log_path is None:
        import sys

        try:
            sys.stderr.buffer.write(output)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, output)
        finally:
            os.close(fd)
    except OSError:
        pass
