"""roammail.extsmail: the sendmail lookalike extsmail and its daemon extsmaild.

Its modules, and what each owns:
  extsmail   the extsmail command: one message from stdin into the spool
  spool      the v1 spool, the only code that writes messages into spool_dir
  conf       the grammar of extsmail's conf file
  externals  the grammar of the externals file
  settings   finding and reading those two files for extsmaild
  extsmaild  extsmaild's command line and its modes: one pass (batch), the
             daemon loop (wake-ups, backoff, signals, reload), -t
  deliver    the delivery of queued messages through externals, and each
             message's last-error note (spool_dir/errors/)
  notify     the notification commands run after a pass (spool_dir/state/)
  queue      the queue commands --list, --show, --delete and --status
  status     each message's delivery state (spool_dir/status/)
  sshshare   the ssh connection shared by a pass over the queue
  health     the spool's state after each pass, for roammail-status

Must never import another tool package, and extsmail's own path (extsmail,
spool, conf) must never import anything heavy: it runs for every mail sent.
extsmaild over an empty queue (a cron run) stays light too: what only a
message needs is imported when one is there, and queue only for its
commands.
"""
