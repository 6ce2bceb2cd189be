"""journal.py: the journal of one syncmail source: name -> size of the
messages stored here and not yet seen removed on the server.

A later run removes such a message on the server if it is here with that
size (an interrupted run's work, finished).  The file is replaced
atomically and durably (core.durable) every time it changes.
"""

from __future__ import annotations

import os

from ..core.durable import write_file_atomically
from ..core.errors import IOFailure


class Journal:
    """name -> size of messages this tool stored (or was about to store)
    locally and has not seen removed on the server: a later run removes
    such a message on the server if it is here with that size.

    `entries` is for reading; add(), drop() and keep_only() change it.
    Each entry's line of the file is made once, when it is added: the file
    is rewritten for every batch, with up to six batches in it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: dict[str, int] = {}
        self._lines: dict[str, bytes] = {}  # name -> its line, in the file's order
        try:
            with open(path, "rb") as f:
                for raw in f.read().split(b"\n"):
                    size, _, name = raw.partition(b" ")
                    if name and size.isdigit():
                        self.add({os.fsdecode(name): int(size)})
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise IOFailure(f"cannot read {path}: {exc.strerror}") from exc
        self.on_disk = self.data()  # what the file holds (b"": no file, or empty)

    def add(self, sizes: dict) -> None:
        """Enter (or update) name -> size."""
        for name, size in sizes.items():
            self.entries[name] = size
            self._lines[name] = b"%d %s\n" % (size, os.fsencode(name))

    def drop(self, name: str) -> None:
        self.entries.pop(name, None)
        self._lines.pop(name, None)

    def keep_only(self, names) -> None:
        """Drop every entry whose name is not in `names`."""
        for name in [n for n in self.entries if n not in names]:
            self.drop(name)

    def data(self) -> bytes:
        """The file's content for the entries as they are now (in the order
        they were entered: one read and written back unchanged is the same
        bytes)."""
        return b"".join(self._lines.values())

    def write(self, data: bytes) -> None:
        """Make the file hold `data` (durably), unless it does already: a
        run that finds nothing new writes nothing."""
        if data != self.on_disk:
            write_file_atomically(self.path, data)
            self.on_disk = data

    def save(self) -> None:
        self.write(self.data())
