"""roammail.watch_imap: prints the name of each IMAP folder that changes.

Owns its IMAP client (imap), the watching over NOTIFY or IDLE and polling
(watch), watch-imap.conf (config), the reading of ~/.mbsyncrc (mbsyncrc)
and the command line (cli).  Must never import another tool package.
"""
