"""roammail.core: what every tool may use, and nothing that one tool owns.

Owns the error types and exit statuses (errors), the one error funnel of
every command line (cli), paths and the XDG and original tools' locations,
times, logging, durable writes (durable), maildirs, the config tokenizer
(tokens), the one layer that runs and stops children (child), lock files
(lockfile), the process table (proc), the supervision of a child's
traffic (supervise, traffic), inotify, hook directories, headers, POSIX
regular expressions and the watchers' line protocol (watchproto).

Must never import a tool package (import-linter checks it in ./test.sh),
and must stay cheap to import for extsmail's path: errors, cli, paths,
locations, durable, maildir, tokens and lockfile import neither os nor
typing.
"""
