#!/usr/bin/env python3
"""A PPI that answers at once but leaves a child holding its stdout (``sleep 300 &`` in a
shell script does this), writing the child's pid to ``params.pids``."""

import json
import subprocess
import sys

request = json.load(sys.stdin)
child = subprocess.Popen(["sleep", "300"], stdout=sys.stdout)  # inherits the pipe
with open(request["params"]["pids"], "w") as pids:
    pids.write(str(child.pid))
print("ok", flush=True)
