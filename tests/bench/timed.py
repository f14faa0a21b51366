"""Run one agent action and print: wall seconds, CPU seconds of the child, exit code.

Started inside the benchmark's namespace, so the namespace entry itself is not
part of what is measured (it is the same for both agents anyway).
"""

import resource
import subprocess
import sys
import time

before = resource.getrusage(resource.RUSAGE_CHILDREN)
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print("%.6f %.6f %d" % (wall, cpu, rc))
