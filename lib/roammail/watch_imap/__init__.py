"""roammail.watch_imap: prints the name of each IMAP folder that changes.

Owns its IMAP client: the wire format (wire: responses parsed, arguments
encoded, the link's errors), modified UTF-7 names (utf7) and one asyncio
connection with its deadlines (connection); the watching over NOTIFY or
IDLE and polling (watch), watch-imap.conf (config), the reading of
~/.mbsyncrc (mbsyncrc) and the command line (cli).  Must never import
another tool package.
"""
