"""roammail.syncmail: moves new mail from a server's maildir to this one over ssh.

Owns syncmail.conf and its rules (plan), the server program run through
ssh (remote), the tar stream reader (tarstream), the copy and the removal
on the server (move), and where its lines go (log).

Must never remove a message on the server before it is durable here, and
never import another tool package.
"""
