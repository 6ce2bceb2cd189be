"""roammail.guards: inputkill and socketwatch, which run a command and kill it.

inputkill kills its command when its standard input closes; socketwatch
when its network traffic stalls (through core.supervise and core.traffic,
which mswatch uses too).  Must never import another tool package.
"""
