"""The TFTP server on one event loop: requests, the Pi behind each, and its timeline."""

from __future__ import annotations

import asyncio
import functools
import logging
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from ... import metrics
from ...config import Settings
from .. import bootfiles
from ..bootfiles import BootSource, BootTarget, UnsafePath
from . import packets as tp
from .boots import PiBoots
from .cache import PacketCache, PacketImage
from .sockets import listening_socket, transfer_socket
from .transfer import Transfer

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How often retransmit deadlines are checked, in seconds.
SWEEP_INTERVAL = 0.05
CMDLINE = "cmdline.txt"
CONFIG_TXT = "config.txt"


@dataclass
class Outcome:
    """Why a request is refused: the TFTP error sent back."""

    code: tp.ErrorCode
    message: str


NOT_FOUND = Outcome(tp.ErrorCode.FILE_NOT_FOUND, "file not found")


class TftpServer:
    """The server on one event loop. ``start()``/``stop()`` run it in a background
    thread (tests, or a supervisor that embeds it); ``serve_forever()`` runs it in the
    calling thread until SIGTERM/SIGINT (``bakery tftp``, one per worker process).

    Give ``sock`` to share a listening socket made by the caller (``SO_REUSEPORT``
    workers); otherwise it binds ``settings.tftp_address``."""

    def __init__(
        self,
        settings: Settings,
        source: BootSource,
        sock: socket.socket | None = None,
        cache: PacketCache | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sock = sock or listening_socket(*settings.tftp_address)
        self.cache = cache or PacketCache()
        self.transfers: dict[tuple[str, int], Transfer | None] = {}
        self.boots = PiBoots()
        self.recv_buffer = bytearray(600)
        self._epoll: select.epoll | None = None
        self._by_fd: dict[int, Transfer] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.DatagramTransport | None = None
        self._files = ThreadPoolExecutor(4, thread_name_prefix="tftp-files")
        self._db = ThreadPoolExecutor(1, thread_name_prefix="tftp-db")
        self._events: list[tuple[str, str, dict[str, Any]]] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the real port when bound to port 0)."""
        return cast("tuple[str, int]", self.sock.getsockname()[:2])

    @property
    def active_transfers(self) -> int:
        """Requests being looked up or transferred; 0 when the server is idle."""
        return len(self.transfers)

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Serve from a background thread; returns once requests are accepted."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=_run, args=(self._serve(ready),), name="tftp", daemon=True
        )
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        """Stop serving (open transfers are dropped) and wait for the thread."""
        if self.loop is not None and self._stopped is not None:
            self.loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join()

    def serve_forever(self) -> None:
        """Serve in this thread until SIGTERM or SIGINT."""
        _run(self._serve(None, handle_signals=True))

    async def _serve(self, ready: threading.Event | None, handle_signals: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(signum, self._stopped.set)
        self._listener, _ = await self.loop.create_datagram_endpoint(
            lambda: _Listener(self), sock=self.sock
        )
        self._epoll = select.epoll()
        self.loop.add_reader(self._epoll.fileno(), self._pump)
        sweeper = self.loop.create_task(self._sweep())
        log.info("TFTP listening on %s:%d", *self.address)
        if ready is not None:
            ready.set()
        try:
            await self._stopped.wait()
        finally:
            sweeper.cancel()
            self._close()

    def _close(self) -> None:
        for transfer in list(self.transfers.values()):
            if transfer is not None:
                self._drop(transfer)
        self.transfers.clear()
        # _serve set all three before it could get here
        assert self.loop is not None and self._epoll is not None and self._listener is not None
        self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        for task in self._tasks:
            task.cancel()
        self._listener.close()
        self._files.shutdown(wait=False, cancel_futures=True)
        self._db.submit(self.source.close)
        self._db.shutdown(wait=True, cancel_futures=True)

    async def _sweep(self) -> None:
        """Retransmit what was not acknowledged in time; give up after the retries."""
        timeout, retries = self.settings.tftp_timeout, self.settings.tftp_retries
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for transfer in list(self.transfers.values()):
                if transfer is not None and transfer.image is not None:
                    transfer.check_progress(now, timeout, retries)

    def _pump(self) -> None:
        """The loop's callback when any transfer socket is readable: serve them all."""
        by_fd = self._by_fd
        assert self._epoll is not None  # registered as the loop's reader of this epoll
        for fd, _ in self._epoll.poll(0):
            transfer = by_fd.get(fd)
            if transfer is not None:
                transfer.on_readable()

    # -- requests ------------------------------------------------------------------------

    def on_request(self, packet: bytes, client: tuple[str, int]) -> None:
        """An RRQ on the listening socket. A repeat from a client port whose transfer
        is still running is the same request (the Pi resends after ~2 s)."""
        if client in self.transfers:
            return
        try:
            request = tp.parse_request(packet)
        except tp.PacketError as exc:
            log.info("TFTP bad request from %s:%d: %s", *client, exc)
            self._refuse(client, Outcome(tp.ErrorCode.ILLEGAL_OPERATION, str(exc)))
            return
        if request.opcode != tp.Opcode.RRQ:
            self._refuse(client, Outcome(tp.ErrorCode.ACCESS_VIOLATION, "read-only server"))
            return
        self.transfers[client] = None
        self._spawn(self._answer(client, request))

    async def _answer(self, client: tuple[str, int], request: tp.Request) -> None:
        try:
            result = await self._prepare(client, request)
        except Exception:
            log.exception("TFTP request %r from %s failed", request.filename, client[0])
            result = Outcome(tp.ErrorCode.UNDEFINED, "server error")
        if client not in self.transfers:
            return  # the server stopped meanwhile
        if isinstance(result, Outcome):
            del self.transfers[client]
            self._refuse(client, result)
            return
        self._begin(client, request, *result)

    async def _prepare(
        self, client: tuple[str, int], request: tp.Request
    ) -> Outcome | tuple[str | None, str, PacketImage]:
        """Find what the request names and load it, or say why not."""
        try:
            path = bootfiles.parse_request_path(request.filename)
        except UnsafePath as exc:
            log.warning("TFTP refused %s from %s: %s", request.filename[:200], client[0], exc)
            return Outcome(tp.ErrorCode.ACCESS_VIOLATION, "access violation")
        blksize = tp.negotiate(request.options, 0, self.settings.tftp_max_blksize).get(
            "blksize", tp.DEFAULT_BLKSIZE
        )
        if path.serial is None:
            image = await self._load(self.settings.firmware_path, path.relative, blksize)
            return image if isinstance(image, Outcome) else (None, path.relative, image)
        target = await self._target(path.serial, client[0], path.relative)
        if target is None:
            return NOT_FOUND
        if path.relative.lower() == CMDLINE:
            image = PacketImage(target.cmdline.encode(), blksize)
        else:
            image = await self._load(target.boot_dir, path.relative, blksize)
        if image is NOT_FOUND:
            probe = bootfiles.is_normal_probe(path.relative)
            message = f"no such file: {path.relative}"
            self._record(path.serial, message, step="missing", file=path.relative, probe=probe)
        return image if isinstance(image, Outcome) else (path.serial, path.relative, image)

    async def _load(self, tree: Path, relative: str, blksize: int) -> PacketImage | Outcome:
        assert self.loop is not None  # requests arrive only while serving
        image = await self.loop.run_in_executor(
            self._files, self._read_boot_file, tree, relative, blksize
        )
        return NOT_FOUND if image is None else image

    def _read_boot_file(self, tree: Path, relative: str, blksize: int) -> PacketImage | None:
        """Blocking: find the file in its tree and get its packets from the cache."""
        path = bootfiles.find_boot_file(tree, relative)
        if path is None:
            return None
        render = self._render_config if relative.lower() == CONFIG_TXT else _as_is
        try:
            return self.cache.get(path, blksize, render)
        except OSError:
            return None

    @functools.cached_property
    def _render_config(self) -> Callable[[bytes], bytes]:
        drop = tuple(self.settings.config_txt_drop)

        def render(content: bytes) -> bytes:
            return bootfiles.adjust_config_txt(content.decode("latin-1"), drop).encode("latin-1")

        return render

    def _begin(
        self,
        client: tuple[str, int],
        request: tp.Request,
        serial: str | None,
        name: str,
        image: PacketImage,
    ) -> None:
        sock = transfer_socket(self.address[0], client)
        transfer = Transfer(self, client, sock)
        transfer.name, transfer.serial = name, serial
        self.transfers[client] = transfer
        self._by_fd[sock.fileno()] = transfer
        assert self._epoll is not None  # requests arrive only while serving
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        granted = tp.negotiate(request.options, image.size, self.settings.tftp_max_blksize)
        transfer.begin(image, tp.encode_oack(granted) if granted else b"")

    def _refuse(self, client: tuple[str, int], outcome: Outcome) -> None:
        if self._listener is not None and not self._listener.is_closing():
            self._listener.sendto(tp.encode_error(outcome.code, outcome.message), client)

    # -- the Pi behind a request -----------------------------------------------------------

    async def _target(self, serial: str, ip: str, name: str) -> BootTarget | None:
        """The Pi's boot target, from the fleet when it may have changed: on the first
        request of a boot, after ``boots.TARGET_TTL``, from a new address, and always for
        cmdline.txt (its exports must follow its address before it learns its root)."""
        now = time.monotonic()
        boot = self.boots[serial]
        first = boot.note(name, now)
        if boot.target_is_fresh(ip, now) and name.lower() != CMDLINE and _still_there(boot.target):
            return boot.target
        target = await self._ask(self.source.boot_target, serial, ip, boot.model())
        boot.remember(target, ip, now)
        if first:
            message = f"first request: {name} from {ip}"
            self._record(serial, message, step="first_request", file=name, ip=ip)
        if target is None and boot.time_to_turn_away(now):
            self._spawn(self._ask(self.source.turn_away, serial))
        return target

    # -- endings -----------------------------------------------------------------------------

    def client_error(self, transfer: Transfer, packet: bytes) -> None:
        """An ERROR from the client. Right after the OACK it is the Pi's existence
        probe ("Early terminate"): normal, and not a served file."""
        code, message = tp.parse_error(packet)
        if transfer.block == 0:
            self._drop(transfer)
            return
        self.finish(transfer, f"client error {code}: {message}")

    def finish(self, transfer: Transfer, failure: str | None = None) -> None:
        """End a transfer: count it (first: whoever sees the server idle sees the count),
        drop it, and put it on the Pi's timeline."""
        assert transfer.image is not None  # only a transfer that had begun ends here
        if failure is None:
            metrics.tftp_sent(transfer.name, transfer.image.size)
        else:
            metrics.tftp_failed(transfer.name)
        self._drop(transfer)
        if transfer.serial is None:
            log.info("TFTP %s to %s: %s", transfer.name, transfer.client[0], failure or "sent")
            return
        if failure is not None:
            message = f"{transfer.name} failed: {failure}"
            self._record(
                transfer.serial, message, step="failed", file=transfer.name, reason=failure
            )
            return
        seconds = round(time.monotonic() - transfer.started, 4)
        size = transfer.image.size
        message = bootfiles.served_message(transfer.name, size, seconds)
        data = {"file": transfer.name, "size": size, "seconds": seconds}
        self._record(transfer.serial, message, step="served", **data)

    def _drop(self, transfer: Transfer) -> None:
        if self.transfers.get(transfer.client) is transfer:
            del self.transfers[transfer.client]
        fd = transfer.sock.fileno()
        if self._by_fd.pop(fd, None) is transfer:
            assert self._epoll is not None  # _begin registered it there
            self._epoll.unregister(fd)
        transfer.sock.close()

    # -- the fleet, off the event loop -------------------------------------------------------

    async def _ask(self, call: Callable[..., T], *args: Any) -> T:
        """Run a boot source call on the database thread (the source's calls are made
        from that one thread, never from the event loop)."""
        assert self.loop is not None  # asked only while serving
        return await self.loop.run_in_executor(self._db, call, *args)

    def _record(self, serial: str, message: str, **data: Any) -> None:
        """Queue a boot event. Events queued while a write is under way go in the next
        one, a single trip to the database thread: at 50 Pis booting, one trip (and
        connection) per served file cost the event loop more than the files' packets.
        Each event is still its own commit: a batch in one transaction made SQLite
        refuse it ("database is locked") when another worker process wrote first."""
        self._events.append((serial, message, data))
        if len(self._events) == 1:
            self._spawn(self._write_events())

    async def _write_events(self) -> None:
        events, self._events = self._events, []
        assert self.loop is not None  # spawned only while serving
        await self.loop.run_in_executor(self._db, self._store_events, events)

    def _store_events(self, events: list[tuple[str, str, dict[str, Any]]]) -> None:
        for serial, message, data in events:
            self.source.record_boot(serial, message, data)

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        assert self.loop is not None  # spawns come from requests and events while serving
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("TFTP background call failed", exc_info=task.exception())


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server: TftpServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.on_request(data, addr[:2])


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` on uvloop when it is installed: its loop costs about half of
    asyncio's per ready socket, which is most of a packet's cost here."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coroutine)


def _as_is(content: bytes) -> bytes:
    return content


def _still_there(target: BootTarget | None) -> bool:
    """Whether a remembered target still holds: a Pi unbaked and baked again within the
    target's few seconds must not be served the old bake's (deleted) boot files."""
    return target is None or target.boot_dir.is_dir()
