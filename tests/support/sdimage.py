"""Pi-like SD images for tests: the builder lives in ``bakery.sim.image`` (the demo
needs it at runtime); this module keeps the tests' import path."""

from bakery.sim.image import (  # noqa: F401
    DISK_ID,
    FIRST_SECTOR,
    MIB,
    REQUIRED_TOOLS,
    SECTOR,
    STOCK_CMDLINE,
    build_sd_image,
    default_boot_files,
    populate_root,
    sd_image,
)
