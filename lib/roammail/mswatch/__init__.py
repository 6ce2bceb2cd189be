"""roammail.mswatch: runs a sync program for exactly the folders that changed.

Owns ~/.mswatchrc (config), the scheduling decisions as pure functions
(plan) and the running of watchers and sync programs (cli).

Must never import another tool package.
"""
