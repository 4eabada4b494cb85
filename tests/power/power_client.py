"""Run one power action in a process of its own, as a gunicorn worker would.

Usage: ``python power_client.py '<json>'`` with ``root``, ``ppi_dir``, ``gap``,
``driver``, ``action`` and ``target`` (PowerTarget fields). Prints the resulting state.
"""

import json
import sys
from pathlib import Path

from bakery.config import Settings
from bakery.power import PowerController, PowerTarget

spec = json.loads(sys.argv[1])
config = Settings(
    root=Path(spec["root"]), ppi_dir=spec["ppi_dir"], power_on_gap=spec["gap"], power_retries=1
)
result = PowerController(config).run(spec["driver"], PowerTarget(**spec["target"]), spec["action"])
print(result.state)
