"""Receiving an upload: counted against the limit, hashed in a thread beside the write,
decompressed by ``xz``/``pigz`` in a child process held to the same limit by the kernel,
and written to a sparse scratch image (the extractors need random access)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from .errors import ImageError, UploadTooLarge

CHUNK = 1024 * 1024
#: Chunks the upload's hash may trail the write by (SHA-256 at ~2 GB/s is slower than
#: writing to the page cache): it finishes while extraction starts. The memory an import
#: may hold; only a local upload outruns the hash, one over the network never does.
#: bench/import.py on 1 GiB: 64 chunks 1.32 s, 128 1.24 s, 192 1.01 s, 256 1.00 s.
HASH_LAG = 192
_MAGICS = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gz"))


def detect_compression(head: bytes) -> str:
    """ "xz", "gz" or "none", from the first bytes (a filename says nothing about content)."""
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return "none"


def receive(
    stream: IO[bytes],
    raw: Path,
    hash_chunk: Callable[[bytes], None],
    max_bytes: int | None,
    progress: Callable[[int], None] | None,
) -> tuple[int, str]:
    """Count the upload, pass every chunk to ``hash_chunk`` and (decompress and) write it
    to ``raw``; hashing and the sink run in other threads or a process, so reading,
    hashing, decompressing and writing overlap. Returns the upload's size and its
    compression."""
    head = stream.read(CHUNK)
    if not head:
        raise ImageError("empty", "the upload is empty (0 bytes received)")
    compression = detect_compression(head)
    received = 0
    with raw.open("wb") as out, _sink(compression, out, max_bytes) as write:
        for chunk in _chunks(head, stream):
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise UploadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
            hash_chunk(chunk)
            write(chunk)
            if progress is not None:
                progress(received)
    return received, compression


def _chunks(head: bytes, stream: IO[bytes]) -> Iterator[bytes]:
    yield head
    while chunk := stream.read(CHUNK):
        yield chunk


class SparseWriter:
    """Writes a raw image leaving holes where it is all zeros (a Pi image's free space):
    less to write now, and less to free (and discard) when the scratch copy is deleted."""

    BLOCK = 64 * 1024
    ZEROS = bytes(BLOCK)

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._size = 0

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        data_from = None  # start of the run of non-zero blocks being collected
        for start in range(0, len(chunk), self.BLOCK):
            end = min(start + self.BLOCK, len(chunk))
            zeros = self._is_zeros(chunk, start, end)
            if zeros and data_from is not None:
                self._write_at(view, data_from, start)
                data_from = None
            elif not zeros and data_from is None:
                data_from = start
        if data_from is not None:
            self._write_at(view, data_from, len(chunk))
        self._size += len(chunk)

    def _is_zeros(self, chunk: bytes, start: int, end: int) -> bool:
        """A memcmp against zeros (startswith copies nothing and stops at the first
        non-zero byte): a byte-counting scan held the GIL long enough to slow the hashing
        thread down by a third."""
        zeros = self.ZEROS if end - start == self.BLOCK else bytes(end - start)
        return chunk.startswith(zeros, start, end)

    def _write_at(self, view: memoryview, start: int, end: int) -> None:
        self._target.seek(self._size + start)
        self._target.write(view[start:end])

    def close(self) -> None:
        self._target.truncate(self._size)


class InBackground:
    """Feeds chunks to ``consume`` in a background thread through a queue of ``depth``
    chunks (the most it may trail the producer, and the memory it may hold).

    A context manager whose value is the producer's ``write(chunk)``; leaving it waits
    until every chunk is consumed. A failure of ``consume`` is raised to the producer.
    """

    def __init__(self, consume: Callable[[bytes], object], depth: int = 8) -> None:
        self._consume = consume
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def __enter__(self) -> Callable[[bytes], None]:
        return self.write

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain so the producer never blocks
            try:
                self._consume(chunk)
            except BaseException as exc:  # reported to the producer in write()/close()
                self._error = exc

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


@contextmanager
def _sink(
    compression: str, out: BinaryIO, max_bytes: int | None
) -> Iterator[Callable[[bytes], None]]:
    """A ``write(chunk)`` whose bytes land, decompressed, in ``out``: at most ``max_bytes``
    of them, enforced by the kernel (a file size limit on the decompressor), so a small
    compressed bomb cannot fill the disk."""
    if compression == "none":
        sparse = SparseWriter(out)
        writer = InBackground(sparse.write)
        try:
            yield writer.write
        finally:
            writer.close()
            sparse.close()
        return
    limit = [] if max_bytes is None else ["prlimit", f"--fsize={max_bytes}", "--core=0", "--"]
    process = subprocess.Popen(
        [*limit, *_decompressor(compression)],
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=subprocess.PIPE,
    )
    writer = InBackground(process.stdin.write)  # type: ignore[union-attr]
    failed = True
    try:
        yield writer.write
        failed = False
    finally:
        error = _finish_decompressor(process, writer, failed=failed)
    if process.returncode != 0:
        _decompression_failed(out, compression, max_bytes, process.returncode, error)


def _finish_decompressor(
    process: subprocess.Popen[bytes], writer: InBackground, *, failed: bool
) -> str:
    """Reap the decompressor (killed if receiving failed); what it said on stderr."""
    if failed:
        process.kill()
    try:
        writer.close()
        process.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError):
        pass  # the decompressor died; its exit status says why
    error = process.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
    process.stderr.close()  # type: ignore[union-attr]
    process.wait()
    return error


def _decompression_failed(
    out: BinaryIO, compression: str, max_bytes: int | None, returncode: int, error: str
) -> None:
    """The size limit kills the decompressor with SIGXFSZ (or fails its write with EFBIG,
    leaving ``max_bytes`` behind); anything else is a corrupt stream."""
    if max_bytes is not None and (
        returncode == -signal.SIGXFSZ or os.fstat(out.fileno()).st_size >= max_bytes
    ):
        raise UploadTooLarge(
            f"the upload decompresses to more than the limit of {max_bytes} bytes "
            f"({compression} data expanding beyond the largest image allowed)"
        )
    detail = error or f"exit {returncode}"
    if "trailing" in error:  # pigz's "trailing junk", gzip's "trailing garbage"
        detail = "data follows the compressed stream (xz refuses the same)"
    raise ImageError("decompress_failed", f"{compression} decompression failed: {detail}")


def _decompressor(compression: str) -> list[str]:
    """xz refuses data after its stream; gzip warns (exit 2) and pigz only says so, and
    exits 1, when verbose."""
    if compression == "xz":
        return ["xz", "--decompress", "--stdout", "--threads=0"]
    if shutil.which("pigz"):
        return ["pigz", "--decompress", "--stdout", "--verbose"]
    return ["gzip", "--decompress", "--stdout"]
