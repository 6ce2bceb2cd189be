"""roammail.syncmail: moves new mail from a server's maildir to this one over ssh.

Owns syncmail.conf (conf), the decisions as pure functions (plan), the
server program run through ssh (remote.sh, driven by remote.py) behind
one seam (session: ServerSession), the tar stream reader (tarstream), the
copy and the removal on the server (move), the journal of what was
stored here (journal), where its lines go (log) and the command line
(cli).

Must never remove a message on the server before it is durable here, and
never import another tool package.
"""
