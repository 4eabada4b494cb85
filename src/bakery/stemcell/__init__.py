"""What Bakery puts on the Pi beside the OS: the disk agent, and stemcells carrying it.

``files/`` holds what runs on the Pi (the POSIX sh disk agent and systemd units), shipped as
package data so that an installed ``bakery`` finds them. `install` writes them into a root
tree on the host; `build` injects them, a BOSH agent and its config into a Raspberry Pi OS
image and packs a stemcell tarball.
"""

from bakery.stemcell.build import StemcellError, build_stemcell
from bakery.stemcell.install import disk_device, install_boot_report, install_disk_agent

__all__ = [
    "StemcellError",
    "build_stemcell",
    "disk_device",
    "install_boot_report",
    "install_disk_agent",
]
