"""Black-box tests of the installed socketwatch, against real TCP servers on 127.0.0.1.

Two kinds of server: one that accepts and then says nothing (a hung peer),
and one that sends a byte every 0.3 s for a while and then closes.  The
client is a python3 script run in several shapes (plain, a forked child
holding the socket, a thread, a socket inherited and dup'ed, a grandchild
in its own session), plus a static binary (busybox nc) when there is one.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import pytest
from guard_helpers import PY, is_static_elf, read_line, running, wait_gone

from peers.require import in_ci, require_program

TIMEOUT = 2  # seconds of -t in these tests
# socketwatch looks every timeout/10 s (0.2 s here); allow for start-up
# (python3 twice) and a loaded machine on top.
LATE = 1.5
TICK = 0.3  # seconds between two bytes of the talking server
EXIT_TIMED_OUT = 124
CLIENT_STATUS = 5  # the clients exit with this when the server closed

# The client: `python3 -c CLIENT SHAPE PORT [FD]`.  It prints "pid N" for
# each of its processes, "ready" once connected, reads until the server
# closes, exits CLIENT_STATUS.
CLIENT = r"""
import os, socket, sys, threading
shape, port = sys.argv[1], int(sys.argv[2])

def say(text):
    os.write(1, (text + "\n").encode())

def talk(sock):
    say("ready")
    while sock.recv(100):
        pass

def connect():
    return socket.create_connection(("127.0.0.1", port))

say("pid %d" % os.getpid())
if shape == "plain":
    talk(connect())
elif shape == "thread":
    t = threading.Thread(target=lambda: talk(connect()))
    t.start()
    t.join()
elif shape == "fork":  # the child holds the socket, the parent waits
    pid = os.fork()
    if pid == 0:
        say("pid %d" % os.getpid())
        talk(connect())
        os._exit(0)
    os.waitpid(pid, 0)
elif shape == "setsid":  # a grandchild in a session of its own holds it
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.close(r)
            say("pid %d" % os.getpid())
            talk(connect())
        os._exit(0)
    os.close(w)
    os.read(r, 1)  # EOF when the grandchild is gone
elif shape == "inherited":  # a connected socket from our parent, dup'ed
    fd = int(sys.argv[3])
    new = os.dup(fd)
    os.close(fd)
    talk(socket.socket(fileno=new))
sys.exit(5)
"""

SHAPES = ["plain", "fork", "thread", "setsid", "inherited"]


class Server:
    """A TCP server on 127.0.0.1: 'silent' never sends; 'talk' sends a byte
    every TICK seconds for `duration` seconds, then closes."""

    def __init__(self, mode: str, duration: float = 0.0) -> None:
        self.mode = mode
        self.duration = duration
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if self.mode == "silent":
                self.stopping.wait(60)
                return
            end = time.monotonic() + self.duration
            while time.monotonic() < end and not self.stopping.is_set():
                try:
                    conn.sendall(b".")
                except OSError:
                    return
                self.stopping.wait(TICK)

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def servers():
    made: list[Server] = []

    def make(mode: str, duration: float = 0.0) -> Server:
        server = Server(mode, duration)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def watch(installed, cleanup, shape: str, port: int, *, timeout: float = TIMEOUT):
    """Start `socketwatch -t TIMEOUT python3 -c CLIENT SHAPE PORT`; return
    (proc, the client's pids, start time) once it is connected."""
    argv = [installed.tool("socketwatch"), "-t", str(timeout), "--grace", "1",
            PY, "-c", CLIENT, shape, str(port)]
    pass_fds: tuple[int, ...] = ()
    inherited = None
    if shape == "inherited":
        inherited = socket.create_connection(("127.0.0.1", port))
        argv.append(str(inherited.fileno()))
        pass_fds = (inherited.fileno(),)
    started = time.monotonic()
    proc = cleanup.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, pass_fds=pass_fds)
    if inherited is not None:
        inherited.close()  # the command's copy is the only one now
    pids = []
    while True:
        line = read_line(proc, 10).split()
        if line[0] == b"ready":
            break
        pids.append(int(line[1]))
        cleanup.pids.append(int(line[1]))
    return proc, pids, started


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_a_stalled_connection_is_killed_after_the_timeout(installed, cleanup, servers, shape):
    server = servers("silent")
    proc, pids, started = watch(installed, cleanup, shape, server.port)
    status = proc.wait(timeout=TIMEOUT + 10)
    elapsed = time.monotonic() - started
    assert status == EXIT_TIMED_OUT
    assert TIMEOUT <= elapsed < TIMEOUT + LATE, elapsed
    assert proc.stderr.read() == (b"socketwatch: no network traffic for 2 seconds: "
                                  b"stopping python3\n")
    assert wait_gone(pids, 2.0), "a process of the tree survived"


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_traffic_keeps_the_command_alive(installed, cleanup, servers, shape):
    talk = 5.0 if shape == "plain" else TIMEOUT + 1.0
    server = servers("talk", duration=talk)
    proc, _, started = watch(installed, cleanup, shape, server.port)
    status = proc.wait(timeout=talk + 10)
    assert status == CLIENT_STATUS
    assert time.monotonic() - started >= talk
    assert proc.stderr.read() == b""


@pytest.mark.slow
def test_a_static_binary_is_watched(installed, cleanup, servers):
    busybox = require_program("busybox")
    if not is_static_elf(busybox):
        message = f"{busybox} is not statically linked: ./test.sh installs busybox-static"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    silent, talking = servers("silent"), servers("talk", duration=TIMEOUT + 1.0)
    runs = {}
    for name, server in (("silent", silent), ("talking", talking)):
        argv = [installed.tool("socketwatch"), "-t", str(TIMEOUT), busybox, "nc",
                "127.0.0.1", str(server.port)]
        runs[name] = (cleanup.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE), time.monotonic())
    proc, started = runs["silent"]
    assert proc.wait(timeout=TIMEOUT + 10) == EXIT_TIMED_OUT
    assert time.monotonic() - started < TIMEOUT + LATE
    proc, started = runs["talking"]
    assert proc.wait(timeout=TIMEOUT + 10) == 0  # nc's own status: the server closed
    out = proc.stdout.read()
    assert out and out.strip(b".") == b""
    assert time.monotonic() - started >= TIMEOUT + 1.0


@pytest.mark.slow
def test_no_network_at_all_is_a_stall(installed, cleanup):
    proc = cleanup.popen([installed.tool("socketwatch"), "-t", "1", "sleep", "60"],
                         stderr=subprocess.PIPE)
    assert proc.wait(timeout=10) == EXIT_TIMED_OUT


def test_exit_status_passes_through(installed):
    for code in (0, 3):
        r = subprocess.run([installed.tool("socketwatch"), "sh", "-c", f"exit {code}"],
                           capture_output=True, timeout=10)
        assert (r.returncode, r.stderr) == (code, b"")
    r = subprocess.run([installed.tool("socketwatch"), "sh", "-c", "kill -USR1 $$"],
                       capture_output=True, timeout=10)
    assert r.returncode == 128 + signal.SIGUSR1


def test_command_errors(installed, tmp_path):
    tool = installed.tool("socketwatch")
    r = subprocess.run([tool, str(tmp_path / "nonesuch")], capture_output=True, text=True)
    assert r.returncode == 127
    assert r.stderr == (f"socketwatch: cannot run {tmp_path / 'nonesuch'}: "
                        "No such file or directory\n")
    for args in ([], ["-t", "0", "true"], ["-t", "soon", "true"], ["--grace=-1", "true"]):
        r = subprocess.run([tool, *args], capture_output=True, text=True)
        assert r.returncode == 64, args
        assert r.stderr.startswith("socketwatch: ") and r.stderr.count("\n") == 1
    r = subprocess.run([tool, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "[-t SECONDS | --timeout=SECONDS]" in r.stdout
    r = subprocess.run([tool, "echo", "-t", "1"], capture_output=True, text=True, timeout=10)
    assert (r.returncode, r.stdout) == (0, "-t 1\n")


def test_sigterm_is_passed_on(installed, cleanup):
    script = ("import signal,sys,time\n"
              "signal.signal(signal.SIGTERM, lambda n, f: sys.exit(9))\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    proc = cleanup.popen([installed.tool("socketwatch"), PY, "-c", script],
                         stdout=subprocess.PIPE)
    assert read_line(proc, 10) == b"ready\n"
    proc.terminate()
    assert proc.wait(timeout=10) == 9


def test_sigkill_of_socketwatch_kills_the_command(installed, cleanup):
    script = "import os,time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    proc = cleanup.popen([installed.tool("socketwatch"), PY, "-c", script],
                         stdout=subprocess.PIPE)
    pid = int(read_line(proc, 10).split()[1])
    cleanup.pids.append(pid)
    assert running(pid)
    proc.kill()
    proc.wait(timeout=5)
    assert wait_gone([pid], 2.0), "PR_SET_PDEATHSIG did not kill the command"


def test_stdin_and_descriptors_pass_through_and_nothing_else(installed):
    r = subprocess.run([installed.tool("socketwatch"), "sh", "-c", "cat; ls /proc/$$/fd"],
                       capture_output=True, text=True, timeout=10, input="to the command\n")
    # 0, 1 and 2 only: no descriptor of socketwatch (netlink, wakeup pipe) leaks.
    assert r.stdout.split() == ["to", "the", "command", "0", "1", "2"]
