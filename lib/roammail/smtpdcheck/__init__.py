"""roammail.smtpdcheck: tells a secondary MX whether a more preferred server is up.

Its modules, and what each owns:
  cli     the command line (its usage text, parsed by hand) and the run:
          the server arguments, the cache read and written, the answer on
          stdout and the exit status
  decide  which server to report, as a pure function of what is known
  check   what one run knows of its servers, and the two drivers (all at
          once, or one after the other) that start the lookups and probes
          whose outcome can still change the answer
  probe   the network: lookups in threads, probes over non-blocking
          sockets under one selector, each bounded by its deadline
  cache   the cache file of the servers found down

Must never import another tool package, never block past the deadline,
never fail because of the cache, and must stay cheap to import (it runs
once per SMTP transaction from rule files): no asyncio, docopt, typing,
dataclasses or re.
"""
