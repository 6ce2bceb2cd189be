"""watch_imap/watch.py: which folders of an IMAP account change, and when.

It owns the watching of one account (an `Account` of watch_imap.config):
  - NOTIFY (RFC 5465) when the server offers it: one connection, INBOX
    examined (so that mail dropped straight into the server's INBOX
    directory is seen too: servers watch the selected folder's files),
    NOTIFY SET for every personal folder: new and expunged messages, flag
    changes, folders created, deleted and renamed;
  - otherwise IDLE (RFC 2177) on the folders named (one connection each,
    up to max_idle) and STATUS polling of every other folder on one more
    connection, every `poll` seconds (with LIST, for folders created,
    deleted or renamed);
  - keepalive: every `keepalive` seconds each connection proves it is alive
    (IDLE ended and begun again, or NOOP) within `timeout`; a machine that
    slept (CLOCK_BOOTTIME ran ahead of CLOCK_MONOTONIC) checks at once;
  - roaming: a link that fails is dropped with all its siblings, then
    connected again with a backoff (RECONNECT_FIRST doubling to
    RECONNECT_MAX); after a reconnect every folder is reported once,
    since changes may have been missed meanwhile.  The network's events
    come in through `on_network` (the caller listens to them): changed or
    resumed makes every connection prove itself at once, within
    CHECK_TIMEOUT, and one that fails is replaced at once; offline stops
    the attempts to connect (but to a server on this machine) until
    online, which reconnects at once;
  - names: a server name becomes the name mbsync gives that folder
    (`MailboxNames`): the store's path prefix removed, the hierarchy
    delimiter made "/", modified UTF-7 decoded or not, as that mbsync does;
    for an account named by a Channel, the channel's box removed too, and
    only the folders its Patterns select watched.

It reports through a `Reporter` (ready(), changed(names)); it never writes
to stdout, never exits, and raises only what cannot get better by trying
again: AuthError, TlsError, ConfigError, UnavailableError (a pass_cmd that
failed).  Everything else is logged and retried.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Awaitable, Callable, Iterable, Optional

from ..core.child import kill_group_async
from ..core.errors import ConfigError, UnavailableError
from .config import OAUTH_MECHANISMS, Account, ChannelView
from .connection import (
    AuthError,
    CommandFailed,
    Endpoint,
    ImapConnection,
    make_ssl_context,
    run_to_end,
    within,
)
from .utf7 import mutf7_decode, mutf7_encode, server_mailbox
from .wire import LinkError, Response, mailbox_argument

log = logging.getLogger("roammail.watch_imap.watch")

RECONNECT_FIRST = 1.0   # s before the second attempt to connect; doubles
RECONNECT_MAX = 60.0    # s: the longest wait between two attempts (roaming: be prompt)
STABLE_SESSION = 30.0   # s a session must last for the backoff to start again at 0
SLEEP_CHECK = 5.0       # s between two looks at the clocks for a suspended machine
SLEEP_THRESHOLD = 3.0   # s of suspension that make every link prove itself at once
SECRET_TIMEOUT = 300.0  # s a pass_cmd or user_cmd may take (a pinentry prompt)
SECRET_STOP_GRACE = 0.0  # s between SIGTERM and SIGKILL for one given up on: none
NO_IDLE_POLL = 60.0     # s between polls when nothing can be IDLEd on and poll is 0
LOOP_STOP_GRACE = 1.0   # s a cancelled connection loop may take to end (it takes none)
CHECK_TIMEOUT = 5.0     # s a woken connection has to answer (the timeout, if shorter)

# What NOTIFY asks for: everything that changes what mbsync would sync.
NOTIFY_SET = ("NOTIFY", "SET",
              "(selected (MessageNew MessageExpunge FlagChange))",
              "(personal (MessageNew MessageExpunge FlagChange MailboxName "
              "SubscriptionChange))")
# Untagged responses that, on a connection with a folder selected, mean
# that folder changed.
SELECTED_EVENTS = frozenset({"EXISTS", "EXPUNGE", "FETCH", "VANISHED"})


# ------------------------------------------------------------ names


class MailboxNames:
    """Server names <-> the names mbsync gives the folders of this store
    (or of this channel).

    prefix: the store's Path (or the NAMESPACE prefix), in the server's
    notation, stripped from the server's names; a server name outside it
    (INBOX aside) is not one mbsync sees (to_mbsync gives None).
    delimiter: the server's hierarchy delimiter (None: a flat server), made
    "/".  utf8: decode modified UTF-7 (mbsync 1.5 and later do; 1.4 shows
    the encoded text).  channel: the mbsync Channel the account was named
    by, whose box (in mbsync's notation) is a further prefix and whose
    Patterns choose the folders (None: every folder of the store).
    """

    def __init__(self, prefix: str = "", delimiter: Optional[str] = ".",
                 utf8: bool = False, channel: Optional[ChannelView] = None) -> None:
        self.prefix = prefix
        self.delimiter = delimiter
        self.utf8 = utf8
        self.channel = channel

    def to_mbsync(self, server: str) -> Optional[str]:
        name = self._store_name(server)
        if name is None or self.channel is None:
            return name
        return self.channel.name_of(name)

    def _store_name(self, server: str) -> Optional[str]:
        if server == "INBOX":
            return "INBOX"
        name = server
        if self.prefix:
            if not name.startswith(self.prefix) or name == self.prefix:
                return None
            name = name[len(self.prefix):]
        if self.delimiter and self.delimiter != "/":
            name = name.replace(self.delimiter, "/")
        if self.utf8:
            try:
                name = mutf7_decode(name)
            except ValueError:
                pass
        return name

    def to_server(self, name: str) -> str:
        if self.channel is not None:
            name = self.channel.store_name_of(name)
        if name.upper() == "INBOX":
            return "INBOX"
        server = mutf7_encode(name) if self.utf8 else name
        if self.delimiter and self.delimiter != "/":
            server = server.replace("/", self.delimiter)
        return self.prefix + server


def mbsync_order(name: str) -> tuple:
    """mbsync's order of folder names: INBOX and its sub-folders first,
    then by the bytes of the name."""
    inbox = name == "INBOX" or name.startswith("INBOX/")
    return (not inbox, name.encode("utf-8", "surrogateescape"))


# ------------------------------------------------------------ reporting


class Reporter:
    """Where the watcher's news goes.  ready(): the watches are in place
    (once); changed(names): those folders (mbsync names) changed."""

    def ready(self) -> None:
        raise NotImplementedError

    def changed(self, names: Iterable[str]) -> None:
        raise NotImplementedError


# ------------------------------------------------------------ credentials


async def run_secret_command(command: str, what: str) -> str:
    """The first line a /bin/sh command prints (a pass_cmd, a user_cmd)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise UnavailableError(f"cannot run {what}: {exc.strerror}") from None
    try:
        out, _ = await within(proc.communicate(), SECRET_TIMEOUT)
    except asyncio.TimeoutError:
        await kill_group_async(proc.pid, SECRET_STOP_GRACE)
        await proc.wait()
        raise UnavailableError(f"{what} gave no answer within {SECRET_TIMEOUT:g} s") from None
    except asyncio.CancelledError:  # told to stop: the command must not outlive us
        await kill_group_async(proc.pid, SECRET_STOP_GRACE)
        raise
    code = proc.returncode
    assert code is not None  # communicate() returned: the command has exited
    if code != 0:
        status = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
        raise UnavailableError(f"{what} failed ({status})")
    line = out.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise UnavailableError(f"{what} printed nothing")
    return line.decode("utf-8", "surrogateescape")


class Credentials:
    """The user and password of an account, asked for once and kept; an
    OAuth access token is asked for anew at every login (the token helper
    keeps it fresh, and it lives about an hour)."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self._user: Optional[str] = account.user
        self._password: Optional[str] = account.password

    async def user(self) -> str:
        if self._user is None:
            if not self.account.user_cmd:
                raise ConfigError(*_where(self.account), f"account '{self.account.name}': "
                                  "the server wants a login, and no user is set")
            self._user = await run_secret_command(self.account.user_cmd, "user_cmd")
        return self._user

    async def password(self) -> str:
        if self._password is None:
            if not self.account.pass_cmd:
                raise ConfigError(*_where(self.account), f"account '{self.account.name}': "
                                  "no password (pass or pass_cmd)")
            self._password = await run_secret_command(self.account.pass_cmd, "pass_cmd")
        return self._password

    async def secret(self, mechanism: str) -> str:
        """The password, or for an OAuth mechanism a token just printed by
        pass_cmd (never logged)."""
        if mechanism not in OAUTH_MECHANISMS or not self.account.pass_cmd:
            return await self.password()
        return await run_secret_command(self.account.pass_cmd, "pass_cmd (token helper)")


def endpoint_of(account: Account) -> Endpoint:
    """Where and how to connect; ConfigError or TlsError when TLS cannot be set up."""
    context = None
    if account.tls != "none":
        if not account.system_certificates and not account.ca_files:
            raise ConfigError(*_where(account), f"account '{account.name}': no certificate "
                              "to trust (system certificates off and no ca_file)")
        context = make_ssl_context(account.ca_files, account.system_certificates)
    where = "tunnel" if account.tunnel else f"{account.host}:{account.port}"
    return Endpoint(host=account.host, port=account.port, tls=account.tls,
                    tunnel=account.tunnel, ssl_context=context,
                    label=f"{account.name} ({where})")


def _where(account: Account) -> tuple[str, int]:
    path, _, line = account.where.rpartition(":")
    return path, int(line) if line.isdigit() else 0


# ------------------------------------------------------------ the clock


def slept_for(previous_gap: float, gap: float) -> float:
    """Seconds the machine was suspended between two looks at the clocks,
    given each look's CLOCK_BOOTTIME - CLOCK_MONOTONIC (the monotonic clock
    stops while the machine sleeps, the boot-time clock does not)."""
    return max(0.0, gap - previous_gap)


def clock_gap() -> float:
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return 0.0
    return time.clock_gettime(boottime) - time.monotonic()


# ------------------------------------------------------------ one session


class Session:
    """The connections of one attempt, from login to the first failure."""

    def __init__(self, watch: AccountWatch) -> None:
        self.watch = watch
        self.account = watch.account
        self.connections: list[ImapConnection] = []
        self.folders: dict[str, Optional[str]] = {}  # server name -> mbsync name
        self.known: dict[str, dict] = {}  # server name -> STATUS item -> value, as last seen
        self.names = watch.names
        self.mode = ""
        self.loops: list = []
        self.tasks: list[asyncio.Task] = []

    async def connect(self) -> ImapConnection:
        account = self.account
        conn = ImapConnection(self.watch.endpoint, account.timeout)
        self.connections.append(conn)
        await conn.open()
        if not conn.preauth:
            credentials = self.watch.credentials
            user = await credentials.user()
            mechanism = conn.choose_mechanism(account.auth)
            try:
                await conn.authenticate(mechanism, user, await credentials.secret(mechanism))
            except AuthError as exc:
                if mechanism not in OAUTH_MECHANISMS or conn.failure is not None:
                    raise
                # Expired or revoked: the helper may have a fresh token by now.
                log.info("%s; once more with a new token", exc)
                await conn.authenticate(mechanism, user, await credentials.secret(mechanism))
        return conn

    async def setup(self) -> None:
        """Connect, learn the folders, start watching them."""
        first = await self.connect()
        await self._learn_names(first)
        await self.list_folders(first)
        caps = first.capabilities
        want = self.account.mode
        if want == "notify" and "NOTIFY" not in caps:
            raise UnavailableError(f"{self.account.name}: the server does not offer NOTIFY "
                                   "(mode = notify)")
        if want in ("auto", "notify") and "NOTIFY" in caps:
            try:
                await self._start_notify(first)
                self.mode = "NOTIFY"
                return
            except CommandFailed as exc:
                if want == "notify":
                    raise UnavailableError(f"{self.account.name}: NOTIFY refused: "
                                           f"{exc.response.text}") from None
                log.info("%s: NOTIFY refused (%s): watching with IDLE", self.account.name,
                         exc.response.text)
        await self._start_idle(first)

    async def _learn_names(self, conn: ImapConnection) -> None:
        account = self.account
        prefix = account.path
        delimiter = account.delimiter
        if (prefix is None and account.use_namespace and "NAMESPACE" in conn.capabilities):
            _, untagged = await conn.command("NAMESPACE")
            for response in untagged:
                if response.kind == "NAMESPACE" and response.data and \
                        isinstance(response.data[0], list) and response.data[0]:
                    personal = response.data[0][0]
                    if isinstance(personal, list) and personal:
                        prefix = server_mailbox(personal[0])
                        if delimiter is None and len(personal) > 1:
                            delimiter = _delimiter_value(personal[1])
        if delimiter is None:
            _, untagged = await conn.command("LIST", b'""', b'""')
            for response in untagged:
                if response.kind == "LIST" and len(response.data) >= 2:
                    delimiter = _delimiter_value(response.data[1])
        self.names = MailboxNames(prefix or "", delimiter, self.watch.names.utf8,
                                  account.channel)
        self.watch.names = self.names

    async def list_folders(self, conn: ImapConnection) -> None:
        _, untagged = await conn.command("LIST", b'""', b'"*"')
        self._folders_from(untagged)

    def remember_status(self, server: str, values: dict) -> Optional[dict]:
        """Keep a folder's STATUS values (item -> value); the ones known before."""
        known = self.known.get(server)
        self.known[server] = {**known, **values} if known else dict(values)
        return known

    def all_names(self) -> list:
        """Every folder's name, in the order mbsync lists them."""
        return sorted({n for n in self.folders.values() if n is not None}, key=mbsync_order)

    def report(self, servers: Iterable[str]) -> None:
        names = []
        for server in servers:
            name = self.folders.get(server) or self.names.to_mbsync(server)
            if name is not None:
                names.append(name)
        if names:
            log.debug("%s: changed: %s", self.account.name, ", ".join(names))
            self.watch.reporter.changed(names)

    # -- NOTIFY -------------------------------------------------------------

    async def _start_notify(self, conn: ImapConnection) -> None:
        caps = conn.capabilities
        if "CONDSTORE" in caps and "ENABLE" in caps:
            # Else a flag other than \Seen changed in a folder not selected
            # changes no value NOTIFY's STATUS shows, and Dovecot says
            # nothing; with it, the STATUS shows HIGHESTMODSEQ.  (ENABLE
            # must come before a folder is selected.)
            await conn.command("ENABLE", "CONDSTORE")
        await conn.command("EXAMINE", mailbox_argument("INBOX"))
        await conn.command(*NOTIFY_SET)
        conn.on_untagged = self._on_notify
        poller = None
        if self.account.poll > 0:
            # Mail written into a folder behind the server's back is told of
            # only once the server looks at it: a STATUS of every folder now
            # and then makes it look (and shows the change itself).
            poller = Poller(self, conn, set(), self.account.poll,
                            during=self._on_notify_while_polling)
            await poller.poll()
        self.loops.append(Keepalive(self, conn, idle=True, poller=poller))

    def _on_notify(self, response: Response) -> None:
        kind = response.kind
        if kind == "STATUS" and response.data:
            server = server_mailbox(response.data[0])
            values = _status_values(response)
            known = self.remember_status(server, values)
            # Dovecot also tells of a folder whose indexes it merely built
            # or refreshed (the first STATUS of a folder never opened
            # makes it do so), with the values already known: no news.
            # Only HIGHESTMODSEQ shows a change of flags other than \Seen,
            # so without it every STATUS is news.
            if "HIGHESTMODSEQ" not in values or _differs(known, values):
                self.report([server])
        elif kind == "LIST" and len(response.data) >= 3:
            server = server_mailbox(response.data[2])
            gone = isinstance(response.data[0], list) and \
                any(str(f).lower() == "\\nonexistent" for f in response.data[0])
            servers = [server] + _old_names(response.data[3:])
            for old in servers[1:]:
                self.report([old])
                self.folders.pop(old, None)
            if gone:
                self.report([server])
                self.folders.pop(server, None)
            else:
                self.folders[server] = self.names.to_mbsync(server)
                self.report([server])
        elif kind in SELECTED_EVENTS:
            self.report(["INBOX"])
        elif response.code_name == "NOTIFICATIONOVERFLOW":
            self.watch.reporter.changed(self.all_names())

    def _on_notify_while_polling(self, response: Response) -> None:
        """During a poll, STATUS and LIST are its answers (a change they
        show is reported by the comparison); the rest is news as ever."""
        if response.kind not in ("STATUS", "LIST"):
            self._on_notify(response)

    # -- IDLE and polling ----------------------------------------------------

    async def _start_idle(self, first: ImapConnection) -> None:
        account = self.account
        caps = first.capabilities
        targets: list[str] = []
        if "IDLE" in caps:
            for name in account.idle:
                server = self.names.to_server(name)
                if self.folders.get(server) is None:
                    # The default, INBOX, is not in a channel with a box, say.
                    level = logging.INFO if account.idle == ("INBOX",) else logging.WARNING
                    log.log(level, "%s: folder %s (to IDLE on) is not one watched: polling",
                            account.name, name)
                    continue
                if server not in targets:
                    targets.append(server)
            if len(targets) > account.max_idle:
                log.info("%s: IDLE on %d folders (max_idle), polling %s", account.name,
                         account.max_idle, ", ".join(targets[account.max_idle:]))
                targets = targets[:account.max_idle]
        else:
            log.info("%s: the server offers neither NOTIFY nor IDLE: polling every folder",
                     account.name)
        # Nothing IDLEd on and polling off would watch nothing: poll anyway.
        every = account.poll or (0.0 if targets else NO_IDLE_POLL)
        polled = every > 0 and any(f not in targets for f in self.folders)
        spare: Optional[ImapConnection] = first
        if polled:
            poller = Poller(self, first, set(targets), every)
            await poller.poll()
            self.loops.append(Keepalive(self, first, idle=False, poller=poller))
            spare = None
        for server in targets:
            conn = spare or await self.connect()
            spare = None
            await conn.command("EXAMINE", mailbox_argument(server))
            conn.on_untagged = self._selected_handler(server)
            self.loops.append(Keepalive(self, conn, idle=True))
        if spare is not None:  # nothing to IDLE on and nothing to poll
            self.loops.append(Keepalive(self, spare, idle=False))
        self.mode = (f"IDLE on {len(targets)} folder{'s' if len(targets) != 1 else ''}"
                     + (f", STATUS every {every:g} s" if polled else ""))

    def _selected_handler(self, server: str) -> Callable[[Response], None]:
        def handle(response: Response) -> None:
            if response.kind in SELECTED_EVENTS:
                self.report([server])
        return handle

    def _folders_from(self, untagged: list) -> None:
        """The folders of LIST answers (those that can be selected)."""
        folders: dict[str, Optional[str]] = {}
        for response in untagged:
            if response.kind != "LIST" or len(response.data) < 3:
                continue
            flags = {str(f).lower() for f in response.data[0]} \
                if isinstance(response.data[0], list) else set()
            if "\\noselect" in flags or "\\nonexistent" in flags:
                continue
            server = server_mailbox(response.data[2])
            folders[server] = self.names.to_mbsync(server)
        folders.setdefault("INBOX", "INBOX")
        self.folders = folders

    # -- running -------------------------------------------------------------

    async def run(self) -> None:
        """Run every loop until the first fails; raise its error."""
        self.tasks = [asyncio.ensure_future(keepalive.run()) for keepalive in self.loops]
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            failure = task.exception()
            if failure is not None:
                raise failure
        raise LinkError(f"{self.account.name}: the watch ended")  # not reached in practice

    async def close(self, polite: bool = False) -> None:
        """Stop the loops and close every connection (logging out when
        polite), to the end even if cancelled meanwhile."""
        await run_to_end(self._close(polite))

    async def _close(self, polite: bool) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            # A cancelled loop ends at once; one that did not would end when
            # its connection closes below.
            await asyncio.wait(self.tasks, timeout=LOOP_STOP_GRACE)
        await asyncio.gather(*(conn.logout() if polite else conn.close()
                               for conn in self.connections))


class Poller:
    """STATUS of every folder not IDLEd on, now and then, on one connection:
    what differs from the last look is reported, and so are folders that
    came or went (LIST).  `during`: the connection's handler while a poll
    runs (None: none; its answers are not news)."""

    def __init__(self, session: Session, conn: ImapConnection, idled: set, every: float,
                 during: Optional[Callable[[Response], None]] = None) -> None:
        self.session = session
        self.conn = conn
        self.idled = idled
        self.during = during
        self.every = every
        self.first = True

    async def poll(self) -> None:
        """One look; the first is the baseline and reports nothing."""
        session, conn = self.session, self.conn
        handler, conn.on_untagged = conn.on_untagged, self.during
        try:
            before = set(session.folders)
            items = "MESSAGES UIDNEXT UIDVALIDITY UNSEEN"
            if "CONDSTORE" in conn.capabilities:
                items += " HIGHESTMODSEQ"
            statuses: dict[str, dict] = {}
            if "LIST-STATUS" in conn.capabilities:
                _, untagged = await conn.command("LIST", b'""', b'"*"', "RETURN",
                                                 f"(STATUS ({items}))")
                session._folders_from(untagged)
                statuses = _statuses(untagged)
            else:
                await session.list_folders(conn)
                watched = [f for f, name in session.folders.items()
                           if f not in self.idled and name is not None]
                if watched:
                    batch = [("STATUS", mailbox_argument(f), f"({items})") for f in watched]
                    results = await conn.commands(batch, name="STATUS", check=False)
                    statuses = _statuses(results[-1][1])
        finally:
            conn.on_untagged = handler
        changed = before ^ set(session.folders)
        for server, values in statuses.items():
            known = session.remember_status(server, values)
            if server not in self.idled and _differs(known, values):
                changed.add(server)
        if not self.first:
            session.report(sorted(changed))
        self.first = False


class Keepalive:
    """One connection's life: IDLE (when `idle`) renewed, or a NOOP, every
    keepalive seconds, each answer awaited within the timeout; the poller's
    look every poll seconds.  Raises when the link fails."""

    def __init__(self, session: Session, conn: ImapConnection, *, idle: bool,
                 poller: Optional[Poller] = None) -> None:
        self.session = session
        self.conn = conn
        self.idle = idle and "IDLE" in conn.capabilities
        self.poller = poller

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        conn, keepalive = self.conn, self.session.account.keepalive
        next_poll = loop.time() + self.poller.every if self.poller else None
        while True:
            if self.idle:
                await conn.idle_start()
            wait = keepalive if next_poll is None else \
                min(keepalive, max(0.0, next_poll - loop.time()))
            woken = await self.session.watch.pause(conn, wait)
            if self.idle:
                await self._check(conn.idle_done(), woken)
            if next_poll is not None and loop.time() >= next_poll - 0.001:
                assert self.poller is not None
                await self.poller.poll()
                next_poll = loop.time() + self.poller.every
            elif not self.idle:
                await self._check(conn.command("NOOP"), woken)

    async def _check(self, answer: Awaitable, woken: bool) -> None:
        """Await the answer that proves the link alive; woken (the network
        changed, the machine woke up), within CHECK_TIMEOUT only."""
        conn = self.conn
        timeout = conn.timeout
        if woken:
            conn.timeout = min(timeout, CHECK_TIMEOUT)
        try:
            await answer
        finally:
            conn.timeout = timeout


def _delimiter_value(token: object) -> Optional[str]:
    if isinstance(token, bytes) and len(token) == 1:
        return token.decode("ascii", "replace")
    if isinstance(token, str) and len(token) == 1:
        return token
    return None  # NIL: a flat name space


def _old_names(extended: list) -> list:
    """The OLDNAME of a LIST's extended data (a rename), as canonical names."""
    out: list[str] = []
    for item in extended:
        if isinstance(item, list):
            for i in range(0, len(item) - 1, 2):
                key = item[i].decode("ascii", "replace") if isinstance(item[i], bytes) \
                    else str(item[i])
                if key.upper() == "OLDNAME" and isinstance(item[i + 1], list):
                    out.extend(server_mailbox(v) for v in item[i + 1])
    return out


def _statuses(untagged: list) -> dict:
    """The STATUS answers among `untagged`: server name -> item -> value."""
    return {server_mailbox(r.data[0]): _status_values(r) for r in untagged
            if r.kind == "STATUS" and len(r.data) >= 2}


def _status_values(response: Response) -> dict:
    """The items of a STATUS response ("MESSAGES" -> "3", ...)."""
    items = response.data[1] if len(response.data) >= 2 and \
        isinstance(response.data[1], list) else []
    return {str(items[i]).upper(): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _differs(known: Optional[dict], values: dict) -> bool:
    """Do STATUS `values` differ from those `known` (None: nothing known)?"""
    return known is None or any(known.get(item) != value for item, value in values.items())


# ------------------------------------------------------------ the account


class AccountWatch:
    """Watch one account for ever: connect, watch, reconnect after a failure."""

    def __init__(self, account: Account, reporter: Reporter, names: MailboxNames) -> None:
        self.account = account
        self.reporter = reporter
        self.names = names
        self.endpoint = endpoint_of(account)
        self.credentials = Credentials(account)
        self._wakers: set[asyncio.Event] = set()
        self.offline = False  # the network events said so, and not online since
        self.local = is_local(account)  # reachable without a network
        self._online = asyncio.Event()
        self._online.set()
        self._delay = 0.0  # s before the next attempt to connect
        self._checked_at: Optional[float] = None  # monotonic time of the last check asked for
        self._state: Optional[str] = None  # connected, reconnecting, offline: see note_state
        self._since = 0.0
        self._last_error: Optional[str] = None

    def note_state(self, state: str, error: Optional[str] = None) -> None:
        """Leave the connection's state (connected, reconnecting, offline or
        stopped), since when and the last error, for roammail-status
        (core.health): on each change of state, never per message."""
        from ..core import health

        if state != self._state:
            self._state, self._since = state, time.time()
        elif error is None or error == self._last_error:
            return
        if error is not None:
            self._last_error = " ".join(error.split())
        problem = health.record("watch-imap", self.account.name, {
            "account": self.account.name, "state": state,
            "since": round(self._since, 3), "last_error": self._last_error})
        if problem:
            log.debug("%s", problem)

    def wake_all(self) -> None:
        """Make every connection prove at once that it is alive."""
        for event in self._wakers:
            event.set()

    def on_network(self, events: Iterable[str], why: str = "") -> None:
        """Act on network events (core.roaming's words); `why`: what told
        us, for the log, when not the events themselves."""
        name = self.account.name
        found = set(events)
        if "offline" in found:
            if not self.offline:
                self.offline = True
                self._online.clear()
                if not self.local:
                    self.note_state("offline")
                log.info("%s: network offline: %s", name,
                         "carrying on (the server is on this machine)" if self.local
                         else "not connecting until it is back")
            return
        if "changed" in found or "resumed" in found:
            what = why or ("network changed" if "changed" in found
                           else "the machine woke up")
            log.info("%s: %s: checking the connections now", name, what)
        elif "online" in found and self.offline:
            log.info("%s: network back: connecting now", name)
        else:
            return
        self.offline = False
        self._online.set()
        self._delay = 0.0
        self._checked_at = time.monotonic()
        self.wake_all()

    def _after_check(self) -> bool:
        """Did this failure follow a check asked for (network events)?  Told
        once per check."""
        checked, self._checked_at = self._checked_at, None
        return (checked is not None
                and time.monotonic() - checked <= self.account.timeout + CHECK_TIMEOUT)

    def _token_expired(self, session: Session) -> bool:
        """Did the server end the session because the access token expired
        (Microsoft's and Google's "BYE ... AccessTokenExpired")?  Then a
        new login at once, with a new token, mends it."""
        if not self.account.oauth:
            return False
        for conn in session.connections:
            text = str(conn.failure or "").lower()
            if "expired" in text and "token" in text:
                return True
        return False

    def _quiet(self) -> bool:
        """Offline: failures are expected, and no news."""
        return self.offline and not self.local

    async def pause(self, conn: ImapConnection, seconds: float) -> bool:
        """Wait `seconds`, less if woken (True then); raise at once if conn fails."""
        event = asyncio.Event()
        self._wakers.add(event)
        waiters = [asyncio.ensure_future(event.wait()),
                   asyncio.ensure_future(conn.closed.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wakers.discard(event)
            for waiter in waiters:
                waiter.cancel()
        if conn.failure is not None:
            raise conn.failure
        return event.is_set()

    async def _sleep(self, seconds: float) -> None:
        event = asyncio.Event()
        self._wakers.add(event)
        try:
            await within(event.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            self._wakers.discard(event)

    async def watch_clocks(self) -> None:
        gap = clock_gap()
        while True:
            await asyncio.sleep(SLEEP_CHECK)
            now_gap = clock_gap()
            slept = slept_for(gap, now_gap)
            gap = now_gap
            if slept >= SLEEP_THRESHOLD:
                log.info("%s: the machine slept %.0f s: checking the connections",
                         self.account.name, slept)
                self.wake_all()

    async def run(self) -> None:
        """Never returns; raises only errors that retrying cannot mend."""
        name = self.account.name
        announced = False
        clocks = asyncio.ensure_future(self.watch_clocks())
        try:
            while True:
                if self._quiet():
                    await self._online.wait()
                session = Session(self)
                try:
                    await session.setup()
                except (LinkError, CommandFailed) as exc:
                    await session.close()
                    self.note_state("offline" if self._quiet() else "reconnecting", str(exc))
                    self._delay = min(RECONNECT_MAX, max(RECONNECT_FIRST, self._delay * 2))
                    if self._quiet():
                        log.debug("%s (offline)", exc)
                        continue
                    log.warning("%s; trying again in %.0f s", exc, self._delay)
                    await self._sleep(self._delay)
                    continue
                except BaseException:
                    await session.close()
                    raise
                log.info("%s: watching %d folders (%s)", name, len(session.all_names()),
                         session.mode)
                self.note_state("connected")
                if announced:
                    self.reporter.changed(session.all_names())
                else:
                    self.reporter.ready()
                    announced = True
                started = time.monotonic()
                try:
                    await session.run()
                except (LinkError, CommandFailed) as exc:
                    if self._quiet():
                        log.debug("%s (offline)", exc)
                    else:
                        log.warning("%s; connecting again", exc)
                    self.note_state("offline" if self._quiet() else "reconnecting", str(exc))
                    await session.close()
                except asyncio.CancelledError:  # told to stop: log out
                    await session.close(polite=True)
                    raise
                except BaseException:
                    await session.close()
                    raise
                if (time.monotonic() - started >= STABLE_SESSION or self._after_check()
                        or self._token_expired(session)):
                    self._delay = 0.0  # a link the network took: a new one at once
                elif not self._quiet():
                    self._delay = min(RECONNECT_MAX, max(RECONNECT_FIRST, self._delay * 2))
                    await self._sleep(self._delay)
        finally:
            clocks.cancel()
            self.note_state("stopped")


def is_local(account: Account) -> bool:
    """Is the server on this machine (a loopback address, no tunnel)?"""
    if account.tunnel:
        return False
    host = account.host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def list_names(account: Account, names: MailboxNames) -> list:
    """The folders of the account as mbsync names them (watch-imap --list)."""

    class _Quiet(Reporter):
        def ready(self) -> None:
            pass

        def changed(self, names: Iterable[str]) -> None:
            pass

    watch = AccountWatch(account, _Quiet(), names)
    session = Session(watch)
    try:
        conn = await session.connect()
        await session._learn_names(conn)
        await session.list_folders(conn)
        return session.all_names()
    finally:
        await session.close(polite=True)
