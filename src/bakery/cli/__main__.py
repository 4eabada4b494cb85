"""``python -m bakery.cli``: how ``bakery serve`` starts its netboot and TFTP children."""

from . import main

main()
