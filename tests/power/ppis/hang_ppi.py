#!/usr/bin/env python3
"""A PPI that never answers: it starts a ``sleep 1000`` child, writes both pids to
``params.pids`` and sleeps. The driver must kill the pair when the timeout expires."""

import json
import os
import subprocess
import sys
import time

request = json.load(sys.stdin)
child = subprocess.Popen(["sleep", "1000"])
with open(request["params"]["pids"] + ".tmp", "w") as f:
    json.dump({"ppi": os.getpid(), "child": child.pid}, f)
os.rename(request["params"]["pids"] + ".tmp", request["params"]["pids"])
time.sleep(1000)
