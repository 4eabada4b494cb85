"""Entry point of the ``bakery-cpi`` executable (the CPI methods arrive with the BOSH CPI issue)."""

import json
import sys


def main() -> int:
    """Answer every request with the CPI's NotImplemented error until the CPI lands."""
    sys.stdin.read()
    error = {
        "type": "Bosh::Clouds::NotImplemented",
        "message": "bakery-cpi: not implemented yet",
        "ok_to_retry": False,
    }
    sys.stdout.write(json.dumps({"result": None, "error": error, "log": ""}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
