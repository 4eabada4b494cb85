"""Boot files as ready-made runs of DATA packets, cached once per file and block size:
all Pis on one bakeform read identical blocks, so sending a block is one ``send`` of a
memoryview slice."""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from . import packets as tp

#: Bytes of packet images kept in memory (shared by every Pi on the same bakeform).
CACHE_BYTES = 512 * 1024 * 1024
#: Bytes a memoryview slice and its list slot take (counted against CACHE_BYTES).
SLICE_OVERHEAD = 200
_HEADER = struct.Struct("!HH")
#: A cached image's key: device, inode, mtime (ns), size, block size and rendering.
_Key = tuple[int, int, int, int, int, Callable[[bytes], bytes]]


class PacketImage:
    """A file laid out as the DATA packets of one block size, back to back, so block
    ``n`` is a slice: no copying or header building while sending."""

    __slots__ = ("size", "blksize", "count", "nbytes", "packets")

    def __init__(self, content: bytes, blksize: int) -> None:
        self.size = len(content)
        self.blksize = blksize
        self.count = tp.block_count(self.size, blksize)
        image = bytearray(self.count * 4 + self.size)
        source = memoryview(content)
        for index in range(self.count):
            start = index * (blksize + 4)
            chunk = source[index * blksize : (index + 1) * blksize]
            _HEADER.pack_into(image, start, tp.Opcode.DATA, (index + 1) % tp.BLOCK_MODULO)
            image[start + 4 : start + 4 + len(chunk)] = chunk
        view = memoryview(image)
        #: Memory held, counting the slice objects (they dominate at tiny block sizes).
        self.nbytes = len(image) + self.count * SLICE_OVERHEAD
        #: DATA packet ``n`` (1-based, unwrapped) is ``packets[n]``; there is no block 0.
        self.packets: list[memoryview] = [memoryview(b"")]
        for index in range(self.count):
            start = index * (blksize + 4)
            self.packets.append(view[start : start + 4 + min(blksize, self.size - index * blksize)])


class PacketCache:
    """Packet images by (file, mtime, size, block size, rendering), least recently
    used evicted past ``limit`` bytes. Used from executor threads, hence the lock.

    A file is known by its inode, not its path: every bake links its bakeform's boot
    files into a directory of its own, and the Pis of one bakeform share one image."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.used = 0
        self._images: OrderedDict[_Key, PacketImage] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, blksize: int, render: Callable[[bytes], bytes]) -> PacketImage:
        """The packet image of ``path`` as ``render`` transforms it; read on a miss."""
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size, blksize, render)
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
                return image
        image = PacketImage(render(path.read_bytes()), blksize)
        self._store(key, image)
        return image

    def _store(self, key: _Key, image: PacketImage) -> None:
        if image.nbytes > self.limit:
            return
        with self._lock:
            if key in self._images:
                return
            self._images[key] = image
            self.used += image.nbytes
            while self.used > self.limit:
                _, evicted = self._images.popitem(last=False)
                self.used -= evicted.nbytes
