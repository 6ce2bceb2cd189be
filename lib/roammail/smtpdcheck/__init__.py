"""roammail.smtpdcheck: tells a secondary MX whether a more preferred server is up.

Owns the probes, the cache of their answers and the command line (cli).
Must never import another tool package.
"""
