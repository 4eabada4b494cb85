#!/usr/bin/env python3
"""A v2 PPI with failure injection (the Sidero "dice"), driven by the request's params.

params:
  calls:  file that gets one line per invocation (to count attempts)
  fail:   {"times": N, "type": "...", "exit": code} fail the first N invocations with a
          structured error of that type (N counted in ``calls``)
  exit:   exit with this code and a non-JSON answer
  state:  state to report
  log:    jsonl file receiving {"serial", "op", "start", "end"} wall-clock times
  hold:   seconds the "relay" takes to switch
  touch / await: create one file on start / wait (10 s at most) until another exists
  message: text to put into the reply (and stderr)
"""

import json
import os
import sys
import time

request = json.load(sys.stdin)
params = request["params"]
start = time.time()
calls = 0
if "calls" in params:
    with open(params["calls"], "a") as f:
        f.write(request["op"] + "\n")
    with open(params["calls"]) as f:
        calls = len(f.readlines())
if "touch" in params:
    open(params["touch"], "w").close()
if "await" in params:
    deadline = time.monotonic() + 10
    while not os.path.exists(params["await"]) and time.monotonic() < deadline:
        time.sleep(0.01)
time.sleep(params.get("hold", 0))
if "log" in params:
    with open(params["log"], "a") as f:
        entry = {"serial": request["serial"], "op": request["op"], "start": start}
        f.write(json.dumps(entry | {"end": time.time()}) + "\n")
message = params.get("message", "")
if message:
    print(message, file=sys.stderr)
fail = params.get("fail")
if fail and calls <= fail["times"]:
    print(json.dumps({"ok": False, "error": {"type": fail["type"], "message": message}}))
    sys.exit(fail.get("exit", 3))
if "exit" in params:
    print("relay board said no")
    sys.exit(params["exit"])
print(json.dumps({"ok": True, "state": params.get("state", request["op"]), "message": message}))
