#!/usr/bin/env python3
"""A PPI written to the original bakery contract, like bakery-simpleweb-ppi.

``v1_ppi.py -c <config>``; stdin ``{"piId", "action"}``; prints exactly ``ok`` for
poweron/poweroff of a Pi listed in the config's ``piList``. Anything else is an error
on stdout with exit 1, as the Go PPIs do. Each call is appended to the config's ``log``.
"""

import argparse
import json
import sys

parser = argparse.ArgumentParser()
parser.add_argument("-c", dest="config", required=True)
config = json.load(open(parser.parse_args().config))
request = json.load(sys.stdin)
with open(config["log"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "request": request}) + "\n")
if config.get("chatty"):
    print(f"switching relay for {request['piId']}", file=sys.stderr)
if request["piId"] not in config["piList"]:
    print(f"unknown pi {request['piId']}")
    sys.exit(1)
if request["action"] not in ("poweron", "poweroff"):
    print(f"unknown action {request['action']}")
    sys.exit(1)
print("ok")
