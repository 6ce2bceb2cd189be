"""roammail: small Unix mail tools for a laptop that roams between networks.

core/ is what every tool may use; each tool family is one package beside
it (extsmail, syncmail, mswatch, watch_maildirs, watch_imap, guards,
smtpdcheck, status), and completion makes the bash completions from their usage
texts.  No tool package imports another and core imports none of them:
the import-linter contracts in pyproject.toml say so, and ./test.sh
checks them.  This module must stay empty but for the version: extsmail
imports it for every mail sent.
"""

__version__ = "0.1.0"
