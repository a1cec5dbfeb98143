"""An open-loop HTTP load generator, run as its own process by the control-plane benchmark.

    python bench/http_load.py URL --rate 200 --seconds 10 --paths paths.txt [--token T]

Requests are scheduled at a fixed rate whatever the server does (open loop), over keep-alive
connections, and each latency is measured from the moment its request was due — so a server
that falls behind shows it in the percentiles instead of slowing the load down (no
coordinated omission). Paths are taken in turn from the file. Prints one JSON object: the
rate reached, p50/p90/p99/max latency in milliseconds, and the count of each non-200 status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()
            return status, body
        body += await reader.readexactly(size)
        await reader.readline()


async def load(url: str, paths: list[str], rate: float, seconds: float, connections: int,
               token: str | None) -> dict[str, Any]:  # fmt: skip
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    queue: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (item := await queue.get()) is not None:
            due, path = item
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n"
            try:
                writer.write(request.encode())
                await writer.drain()
                status, _ = await _response(reader)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                statuses[type(exc).__name__] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            latencies.append(time.perf_counter() - due)
            if status != 200:
                statuses[str(status)] += 1
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, paths[i % len(paths)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    return {"rate": rate, "requests": len(ordered), "achieved_rate": len(ordered) / elapsed,
            "p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99),
            "max_ms": ordered[-1] * 1000 if ordered else 0.0,
            "mean_ms": statistics.fmean(ordered) * 1000 if ordered else 0.0,
            "errors": dict(statuses)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--paths", required=True, help="a file of paths, one per line")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--token")
    args = parser.parse_args()
    with open(args.paths) as given:
        paths = [line.strip() for line in given if line.strip()]
    found = asyncio.run(load(args.url, paths, args.rate, args.seconds, args.connections,
                             args.token))  # fmt: skip
    print(json.dumps(found))


if __name__ == "__main__":
    main()
