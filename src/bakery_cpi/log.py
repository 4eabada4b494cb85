"""The call's log: every line goes to stderr at once and into the response's ``log``.

The director appends both to the task's CPI log (``bosh task N --cpi``); stderr also
survives a crash before the response is written.
"""

from __future__ import annotations

import sys
import time


class CallLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self._write("INFO", message)

    def warn(self, message: str) -> None:
        self._write("WARN", message)

    def error(self, message: str) -> None:
        self._write("ERROR", message)

    def _write(self, level: str, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} bakery-cpi {level} {message}"
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")
