"""A loopback TCP gate in front of a real server: open it and clients reach the server,
shut it and the port refuses connections and every open one is cut — what clients see when
the server is killed — or freeze it and nothing moves while connections stay up (a stopped
server, a lost network path); all without touching the server other tests share."""

from __future__ import annotations

import asyncio
import contextlib

HOST = "127.0.0.1"


class TcpGate:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._thawed = asyncio.Event()
        self._thawed.set()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._link, HOST, self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        """Hold every byte in both directions (connections are still accepted)."""
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    async def shut(self) -> None:
        """Refuse new connections and cut the open ones (both sides, at once)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        if server is not None:
            await server.wait_closed()

    async def aclose(self) -> None:
        self.thaw()
        await self.shut()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # shut while connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._thawed.wait()
                sink.write(data)
                await sink.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            self._links.discard(sink)
            with contextlib.suppress(Exception):
                sink.transport.abort()
