"""A TCP proxy that holds every answer of its upstream for a fixed time, as a network
round trip would: the benchmarks' stand-in for a store that is not on this host (moto
answers from loopback at once, where S3 is a round trip away). `watch`, when given, is
shown every connection's client port and then the bytes the client sends on it
(`bench._s3_count` counts the requests in them)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

__all__ = ["delayed"]

_CHUNK = 64 * 1024


@contextmanager
def delayed(
    upstream: str,
    delay_s: float,
    watch: Callable[[int], Callable[[bytes], None]] | None = None,
) -> Iterator[str]:
    """`http://127.0.0.1:PORT`, forwarding to `upstream` (`http://host:port`); what the
    upstream sends is held `delay_s` before it is passed on. Runs in a thread of its own
    for the block."""
    target = urlsplit(upstream)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    tasks: set[asyncio.Task[None]] = set()

    async def pump(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hold_s: float,
        seen: Callable[[bytes], None] | None = None,
    ) -> None:
        """A delay line: each chunk is passed on `hold_s` after it came, however many
        came before it (a latency, not a slower link)."""
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await line.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        sending = asyncio.ensure_future(send())
        try:
            while data := await reader.read(_CHUNK):
                if seen is not None:
                    seen(data)
                line.put_nowait((loop.time() + hold_s, data))
            line.put_nowait((0.0, b""))
            await sending
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sending.cancel()
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        seen = None if watch is None else watch(int(client_w.get_extra_info("peername")[1]))
        for pumping in (pump(client_r, up_w, 0.0, seen), pump(up_r, client_w, delay_s)):
            task = asyncio.ensure_future(pumping)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def start() -> asyncio.Server:
        return await asyncio.start_server(handle, "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:

        async def stop() -> None:
            server.close()
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
