"""Entry point of the ``bakery-cpi`` executable: ``bakery-cpi /path/to/cpi.json``.

The director runs it once per CPI call with the request on stdin, in an environment
holding only ``PATH`` (bosh-cpi.md §1.1). It always exits 0 after writing its one
JSON answer: the ``bosh create-env`` CLI treats any other exit code as a failure even
when the answer is a well-formed error.
"""

from __future__ import annotations

import json
import sys

from .log import CallLog
from .protocol import answer


def main(argv: list[str] | None = None) -> int:
    """Read the request to EOF, answer it on stdout, log on stderr."""
    args = sys.argv[1:] if argv is None else argv
    log = CallLog()
    response = answer(sys.stdin.buffer.read(), args[0] if args else None, log)
    sys.stdout.write(json.dumps(response))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
