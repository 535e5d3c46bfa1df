"""A bounded flood of HTTP requests from one source address, run as its own process by
``test_limits`` (so its CPU does not slow the test's own measurements):

    python flood.py URL SOURCE_ADDRESS RATE SECONDS

``RATE`` requests per second of ``GET /v1/search?q=flood`` over 20 keep-alive
connections for ``SECONDS`` seconds, then it stops. It prints ``started`` once the
connections are open, then one JSON line: the count of each status (and
``"error"`` for broken connections) and the seconds the flood lasted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

CONNECTIONS = 20
REQUEST = b"GET /v1/search?q=flood HTTP/1.1\r\nHost: tracker\r\n\r\n"


async def _one(
    host: str, port: int, source: str, interval: float, start: float, end: float, counts: Counter
) -> None:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    loop = asyncio.get_running_loop()
    next_at = start
    try:
        while loop.time() < end:
            writer.write(REQUEST)
            status = (await reader.readline()).split(b" ", 2)[1].decode()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            counts[status] += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    except (OSError, IndexError, asyncio.IncompleteReadError):
        counts["error"] += 1
    finally:
        writer.close()


async def main(url: str, source: str, rate: float, seconds: float) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    counts: Counter[str] = Counter()
    start = loop.time() + 0.2  # time to open every connection first
    end = start + seconds
    tasks = [
        asyncio.create_task(_one(host, port, source, CONNECTIONS / rate, start, end, counts))
        for _ in range(CONNECTIONS)
    ]
    await asyncio.sleep(max(0.0, start - loop.time()))
    print("started", flush=True)
    began = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 10)
    print(json.dumps({"counts": counts, "seconds": time.monotonic() - began}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
