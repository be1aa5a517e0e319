"""HTTP load generator for ``rtdetr-edge bench`` (runs in its own process).

``python -m rtdetr_edge.dev.loadgen URL --concurrency 8 --requests 200 IMAGE...``
prints one JSON object: per-request latencies (seconds) and wall time.
Keep-alive connections, one per concurrent client, like a real client pool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp


async def run_load(url: str, images: list[bytes], concurrency: int, requests: int) -> dict[str, object]:
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            for index in counter:
                body = images[index % len(images)]
                started = time.perf_counter()
                async with session.post(url, data=body, headers={"Content-Type": "image/jpeg"}) as response:
                    await response.read()
                    if response.status != 200:
                        errors.append(f"{response.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"latencies": latencies, "wall_seconds": wall, "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup-requests", type=int, default=10)
    args = parser.parse_args()
    images = [path.read_bytes() for path in args.images]
    if args.warmup_requests:
        asyncio.run(run_load(args.url, images, args.concurrency, args.warmup_requests))
    result = asyncio.run(run_load(args.url, images, args.concurrency, args.requests))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
