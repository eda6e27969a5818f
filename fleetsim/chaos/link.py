"""A loopback TCP proxy for the slow and cut link drills (tc netem is not available here)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable


class LinkProxy:
    """A loopback TCP proxy with adjustable latency that can cut every connection.

    An asyncio loop in a daemon thread. Each chunk read is forwarded ``delay_s`` after it
    arrived (latency, not a bandwidth cap: chunks in flight overlap). :meth:`cut` resets every
    open connection and resets new ones at once until :meth:`heal` (the listening socket stays
    bound so no other process can take the port meanwhile).
    """

    def __init__(self) -> None:
        self.upstream_port: int | None = None
        self.delay_s = 0.0
        self.cutting = False
        self.connections = 0
        self.resets = 0
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._open: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="link-proxy")
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, sock=self._sock))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    @staticmethod
    def _abort(writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()  # RST, as a dropped link looks to the peer

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cutting or self.upstream_port is None:
            self.resets += 1
            self._abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            self._abort(writer)
            return
        self.connections += 1
        self._open |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            self._open.discard(w)
            self._abort(w)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await src.read(65536):
                if sender.done():
                    return
                queue.put_nowait((loop.time() + self.delay_s, data))
            queue.put_nowait((0.0, b""))
            await sender
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            sender.cancel()

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def cut(self) -> int:
        """Reset every open connection and refuse new ones; returns how many were reset."""
        reset: list[int] = []

        def do() -> None:
            self.cutting = True
            reset.append(len(self._open) // 2)
            for w in list(self._open):
                self._abort(w)
            self._open.clear()

        self._call(do)
        return reset[0] if reset else 0

    def heal(self) -> None:
        def do() -> None:
            self.cutting = False

        self._call(do)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
