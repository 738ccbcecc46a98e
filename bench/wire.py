"""Counting proxies: what one worker sends to MySQL, Redis and Neo4j, read off the wire.

The servers are shared with other engineers' runs, so their global counters (``SHOW GLOBAL
STATUS``, ``INFO commandstats``) count everyone. A loopback proxy in front of each server
sees only the worker pointed at it and counts the commands in the client's byte stream:

- MySQL: every command packet (sequence id 0): ``COM_QUERY`` by its first keyword
  (SELECT, INSERT, COMMIT, SET, ...), ``COM_PING``, prepared-statement commands, ...
- Redis: every RESP command by name (a pipeline or MULTI counts each command in it).
- Neo4j: every Bolt message by type (RUN is one Cypher statement; BEGIN/COMMIT a
  transaction), after the handshake (including Bolt 5.7's manifest negotiation).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Callable

HOST = "127.0.0.1"

_MYSQL_COMMANDS = {0x01: "QUIT", 0x02: "INIT_DB", 0x0E: "PING", 0x11: "CHANGE_USER",
                   0x16: "STMT_PREPARE", 0x17: "STMT_EXECUTE", 0x19: "STMT_CLOSE",
                   0x1F: "RESET_CONNECTION"}
_BOLT_MESSAGES = {0x01: "HELLO", 0x02: "GOODBYE", 0x0F: "RESET", 0x10: "RUN", 0x11: "BEGIN",
                  0x12: "COMMIT", 0x13: "ROLLBACK", 0x2F: "DISCARD", 0x3F: "PULL",
                  0x54: "TELEMETRY", 0x66: "ROUTE", 0x6A: "LOGON", 0x6B: "LOGOFF"}


#: Every MySQL statement's shape (literals blanked, first 90 characters), for ``--statements``.
STATEMENTS: Counter[str] = Counter()
_LITERALS = re.compile(r"'[^']*'|\b\d+(\.\d+)?\b")


class MySQLParser:
    """Client → server MySQL packets: 3-byte length, sequence id, payload."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts, self.buf = counts, bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            size = int.from_bytes(self.buf[:3], "little")
            if len(self.buf) < 4 + size:
                return
            seq, payload = self.buf[3], bytes(self.buf[4:4 + size])
            del self.buf[:4 + size]
            if seq != 0 or not payload:
                continue  # the handshake response, an auth switch, a continuation
            if payload[0] == 0x03:
                query = payload[1:400].decode("utf-8", "replace")
                words = query.lstrip(" (\n").split(None, 1)
                self.counts[f"query {words[0].upper() if words else '?'}"] += 1
                STATEMENTS[" ".join(_LITERALS.sub("?", query).split())[:90]] += 1
            else:
                self.counts[_MYSQL_COMMANDS.get(payload[0], f"command 0x{payload[0]:02x}")] += 1


class RedisParser:
    """Client → server RESP arrays of bulk strings (what redis-py sends)."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts, self.buf = counts, bytearray()

    def _command(self) -> bool:
        """Count one whole command at the buffer's head; False while it is incomplete."""
        end = self.buf.find(b"\r\n")
        if end < 0:
            return False
        if self.buf[:1] != b"*":  # an inline command
            words = bytes(self.buf[:end]).split()
            self.counts[words[0].decode().upper() if words else "?"] += 1
            del self.buf[:end + 2]
            return True
        pos, name = end + 2, "?"
        for index in range(int(self.buf[1:end])):
            line = self.buf.find(b"\r\n", pos)
            if line < 0:
                return False
            size = int(self.buf[pos + 1:line])
            if len(self.buf) < line + 2 + size + 2:
                return False
            if index == 0:
                name = bytes(self.buf[line + 2:line + 2 + size]).decode("utf-8", "replace")
            pos = line + 2 + size + 2
        self.counts[name.upper()] += 1
        del self.buf[:pos]
        return True

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self.buf and self._command():
            pass


class BoltParser:
    """Client → server Bolt: 20 handshake bytes, then (after a manifest reply from the
    server) the chosen version and a capabilities varint, then chunked messages."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts, self.buf, self.message = counts, bytearray(), bytearray()
        self.server_hello = bytearray()
        self.stage = "handshake"

    def feed_server(self, data: bytes) -> None:
        if len(self.server_hello) < 4:
            self.server_hello += data[:4 - len(self.server_hello)]

    def _negotiate(self) -> bool:
        if self.stage == "handshake":
            if len(self.buf) < 20:
                return False
            del self.buf[:20]
            self.stage = "manifest?"
        if self.stage == "manifest?":
            if len(self.server_hello) < 4:
                return False  # the client cannot speak before the server answered
            self.stage = "manifest" if self.server_hello[3] == 0xFF else "chunks"
        if self.stage == "manifest":
            if len(self.buf) < 5:
                return False
            end = next((i for i in range(4, len(self.buf)) if self.buf[i] < 0x80), -1)
            if end < 0:
                return False
            del self.buf[:end + 1]
            self.stage = "chunks"
        return True

    def feed(self, data: bytes) -> None:
        self.buf += data
        if self.stage != "chunks" and not self._negotiate():
            return
        while len(self.buf) >= 2:
            size = int.from_bytes(self.buf[:2], "big")
            if len(self.buf) < 2 + size:
                return
            if size == 0:
                if len(self.message) >= 2:
                    sig = self.message[1]
                    self.counts[_BOLT_MESSAGES.get(sig, f"message 0x{sig:02x}")] += 1
                self.message.clear()
            else:
                self.message += self.buf[2:2 + size]
            del self.buf[:2 + size]


class CountingProxy:
    """A loopback port that forwards to ``target`` and counts what clients send."""

    def __init__(self, target: tuple[str, int], parser: Callable[[Counter[str]], object]):
        self.target, self.parser = target, parser
        self.counts: Counter[str] = Counter()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._link, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        parser = self.parser(self.counts)
        server_side = getattr(parser, "feed_server", None)
        for source, sink, tap in ((reader, up_writer, parser.feed),  # type: ignore[attr-defined]
                                  (up_reader, writer, server_side)):
            task = asyncio.create_task(self._pipe(source, sink, tap))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    tap: Callable[[bytes], None] | None) -> None:
        try:
            while data := await source.read(65536):
                if tap is not None:
                    tap(data)
                sink.write(data)
                await sink.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()
