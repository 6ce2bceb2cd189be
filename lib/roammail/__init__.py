"""roammail: small Unix mail tools for a laptop that roams between networks.

The package holds a small shared library (config, spool, maildir, child,
watch, hookdirs, log, times, errors, cli) and one module per tool.  No tool
module imports another tool's module: shared code lives in the library.
"""

__version__ = "0.1.0"
