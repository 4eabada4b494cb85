"""Bakeform import: receive an uploaded SD card image, check it, extract boot and root.

An uploaded image is hostile input. No kernel filesystem driver ever parses it: the
partition table, FAT boot sector and ext4 superblock are checked here in Python before
any tool touches the bytes, the boot partition is read with mtools and the root with
``debugfs`` (libext2fs, user space). The root tree is listed and vetted first (unique
names, no ``/`` in names, no directory reachable twice), so every path written is a fresh,
unique path below ``staging/root`` and nothing is written through a symlink. Block maps
are vetted too (inside the filesystem, no block shared by two files), so a small image
cannot expand into a huge tree, and the decompressed image is capped like the upload.

The upload is streamed: hashed while received (in a thread that may trail the write a
little and finish while extraction starts), decompressed by ``xz``/``pigz`` in a child
process, written once to a temporary raw image in ``staging`` (the extractors need random
access) and removed before returning, usually before the kernel ever wrote it to disk:
debugfs fsyncs its device when it exits, even read-only, which flushed the whole scratch
image (0.4 s per GiB here), so it runs under ``eatmydata`` where that is installed.
Boot and root are extracted in parallel.
The root is built here from debugfs' listing and ``stat`` of every inode: file data is
copied straight from the raw image by block map with ``copy_file_range`` (large in-kernel
copies; ``debugfs rdump`` reads and writes 4 KiB at a time and took most of an import),
only symlinks and inline-data files go through ``rdump``.

Fidelity of the root tree (as root): contents, modes including setuid/setgid/sticky,
owners (symlinks too), symlink targets, hard links, sparse files (holes and unwritten
extents stay holes), fifos and device nodes, atime/mtime to the nanosecond, and extended
attributes of every namespace a root uses: ``security.*`` (file capabilities: Raspberry Pi
OS and Debian give ``ping`` ``cap_net_raw`` that way, not setuid), POSIX ACLs
(``/var/log/journal``), ``trusted.*`` and ``user.*``, read with debugfs' ``ea_get`` and set
after the owner and mode (chown clears capabilities). Gaps: ctime/crtime (not settable),
sockets (meaningless in an image).

The modules, in the order an import runs them: ``receive`` (upload, hash, decompress),
``layout`` (partition table and filesystem headers, pure), ``fat`` (boot partition,
mtools), ``ext4`` (root listing and inodes, debugfs), ``rootwriter`` (the root tree);
``importer`` drives them.
"""

from __future__ import annotations

from .errors import ImageError, UploadTooLarge
from .fat import read_cmdline
from .importer import ImportedImage, import_image
from .layout import read_layout

__all__ = [
    "ImageError",
    "ImportedImage",
    "UploadTooLarge",
    "import_image",
    "read_cmdline",
    "read_layout",
]
