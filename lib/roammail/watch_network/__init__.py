"""roammail.watch_network: prints online, offline, changed and resumed as the network changes.

Owns the command line (cli): its line protocol and the --exec hook.  The
event source itself is core.roaming, which the daemons use too.  Must
never import another tool package, and never probe another host.
"""
