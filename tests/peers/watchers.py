"""A watcher process (watch-maildirs, watch-imap) and the lines it prints.

`WatcherProcess(argv, env)` starts the command with its stdout read by a
bounded reader thread: `ready()` waits for the ready line, `expect(names)`
collects lines until every name was seen, `lines_for(seconds)` what comes
in a while, `wait()` the exit status, `kill()` ends it whatever it does.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import subprocess
import threading
import time
from typing import Iterable

# Generous bounds: CI machines are small and busy.  A passing run never
# waits for them; a failing one fails within them instead of hanging.
START_TIMEOUT = 20.0
LINE_TIMEOUT = 5.0


class WatcherProcess:
    """One running watcher and the lines of its stdout."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self._lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.seen: list[str] = []

    def _read(self) -> None:
        """Split stdout into lines; select() with a short timeout so that
        close_stdout() can stop this thread before it closes the pipe."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buffer = b""
        while not self._stop.is_set():
            readable, _, _ = select.select([fd], [], [], 0.05)
            if not readable:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            now = time.monotonic()
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                self._lines.put((now, raw.decode("utf-8", "surrogateescape")))
        self._lines.put((time.monotonic(), None))  # EOF (or stopped)

    def close_stdout(self) -> None:
        """Close our end of the tool's stdout, as a reader that goes away."""
        self._stop.set()
        self._reader.join(timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float = LINE_TIMEOUT) -> tuple[float, str | None]:
        """(arrival time, line) of the next line; line None at EOF.
        TimeoutError when nothing comes."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line from {self.argv} in {timeout} s "
                               f"(seen so far: {self.seen[-20:]})") from None
        if item[1] is not None:
            self.seen.append(item[1])
        return item

    def ready(self, timeout: float = START_TIMEOUT) -> float:
        """Wait for the ready line (the first line, empty); its arrival time."""
        when, text = self.line(timeout)
        assert text == "", f"first line is {text!r}, not the ready line; stderr: " \
                           f"{self.stderr_now()}"
        return when

    def expect(self, names: Iterable[str], timeout: float = LINE_TIMEOUT) -> list[str]:
        """Lines until each of `names` was seen; all the lines read."""
        wanted = set(names)
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"still waiting for {sorted(wanted)}; got {got}")
            _, text = self.line(left)
            if text is None:
                raise AssertionError(f"EOF while waiting for {sorted(wanted)}; got {got}; "
                                     f"exit {self.proc.poll()}, stderr {self.stderr_now()}")
            got.append(text)
            wanted.discard(text)
        return got

    def lines_for(self, seconds: float) -> list[str]:
        """Every line that arrives within `seconds` (stops early at EOF)."""
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                _, text = self.line(left)
            except TimeoutError:
                return got
            if text is None:
                return got
            got.append(text)

    def wait(self, timeout: float = LINE_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        """All of stderr; only once the process has exited."""
        assert self.proc.poll() is not None
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode("utf-8", "replace")

    def stderr_now(self) -> str:
        return self.stderr() if self.proc.poll() is not None else "(still running)"

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test stopped it
            except ProcessLookupError:
                pass
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
