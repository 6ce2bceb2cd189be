"""roammail.watch_maildirs: prints the name of each maildir folder that changes.

Owns the inotify watching of maildir trees (watch) and the command line
(cli).  Must never import another tool package.
"""
