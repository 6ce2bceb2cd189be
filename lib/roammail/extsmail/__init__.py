"""roammail.extsmail: the sendmail lookalike extsmail and its daemon extsmaild.

Owns the v1 spool (spool: the only code that writes into spool_dir), the
grammars of extsmail's conf (conf) and externals (externals) files, the
delivery of queued messages through externals (extsmaild) and the ssh
connection shared by a pass over the queue (sshshare).

Must never import another tool package, and extsmail's own path (extsmail,
spool, conf) must never import anything heavy: it runs for every mail sent.
"""
