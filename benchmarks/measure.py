"""Run one command and report its wall time and peak RSS: `measure.py RESULT_FILE CMD...`.

A small launcher, because a child's peak RSS (ru_maxrss) starts at the RSS of the process it was
forked from: forked from this small interpreter, it is the command's own to within a few MB.
Writes "seconds max_rss_kb cpu_seconds" (user + system) to RESULT_FILE and exits with the command's status.
"""

import os
import sys
import time

result, *cmd = sys.argv[1:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(result, "w") as out:
    out.write(f"{seconds} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}\n")
sys.exit(os.waitstatus_to_exitcode(status))
