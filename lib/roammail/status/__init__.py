"""roammail.status: roammail-status, one health line for the mail tools.

Owns the command line (cli) and the reading of what the other tools leave
in core.health's directory: a line for a status bar, JSON for scripts, or
a monitoring plugin's answer (Nagios, monitoring-plugins).  It only reads:
it never writes a health record, never touches a spool or a maildir, and
never imports another tool package.
"""
