"""A TCP proxy in front of a broker that swallows the CONNECT of chosen client ids.

Connections of those clients are accepted and then never answered (no CONNACK, no close):
the worst kind of failure for a load generator, which must time them out without letting
them hold back anyone else.
"""

from __future__ import annotations

import asyncio
import threading

from stress.mqtt import codec


class Blackhole:
    """Runs in a thread of its own; ``port`` is where clients connect."""

    def __init__(self, broker_port: int, swallow: set[str]) -> None:
        self.broker_port = broker_port
        self.swallow = swallow
        self.swallowed = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        packets = codec.PacketReader()
        received = b""
        first: list[tuple[int, bytes]] = []
        while not first:
            chunk = await reader.read(4096)
            if not chunk:
                writer.close()
                return
            received += chunk
            first = packets.feed(chunk)
        body = first[0][1]
        name_end = 2 + int.from_bytes(body[:2], "big")
        properties_at = name_end + 4  # level, flags, keep-alive
        offset = properties_at
        if body[name_end] == codec.MQTT5:
            _, offset = codec.read_properties(body, properties_at)
        client_id = body[offset + 2 : offset + 2 + int.from_bytes(body[offset : offset + 2], "big")].decode()
        if client_id in self.swallow:
            self.swallowed += 1
            await asyncio.sleep(3600)  # cancelled at close
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        upstream_writer.write(received)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
