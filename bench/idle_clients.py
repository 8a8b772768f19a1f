#!/usr/bin/env python3
"""Opens many keep-alive client connections to a proxy and leaves them idle.

Each connection sends one GET with keep-alive, reads the whole response, and then stays
open without sending anything else, which is the state a proxy holds for a browser
between page loads. Once every connection has its response the script prints one line,
`READY {json}`, and sleeps until it is terminated; the caller reads the proxy's RSS
meanwhile.

    idle_clients.py --port 19200 --count 10000 [--path /100b] [--concurrency 200] [--tls]

With --tls the connections speak TLS (HTTP/1.1 by ALPN, the certificate not checked: the
point is the proxy's memory per idle TLS connection, not its identity).

Standard library only. Loopback only: the address is fixed to 127.0.0.1.
"""

import argparse
import asyncio
import json
import resource
import ssl
import sys
import time

HOST = "127.0.0.1"


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def read_response(reader: asyncio.StreamReader) -> int:
    """Reads one response with a Content-Length body; returns the status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def open_one(port: int, request: bytes, gate: asyncio.Semaphore, keep: list, stats: dict,
                   tls):
    async with gate:
        try:
            reader, writer = await asyncio.open_connection(HOST, port, ssl=tls)
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(read_response(reader), timeout=30)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            stats["failed"] += 1
            stats.setdefault("first_error", repr(e))
            return
        if status != 200:
            stats["bad_status"] += 1
        stats["ok"] += 1
        keep.append((reader, writer))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--path", default="/100b")
    p.add_argument("--concurrency", type=int, default=200,
                   help="connections being opened at once (keeps backend pools small)")
    p.add_argument("--hold", type=float, default=600, help="seconds to stay connected at most")
    p.add_argument("--tls", action="store_true", help="connect with TLS (certificate not checked)")
    args = p.parse_args()

    tls = None
    if args.tls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["http/1.1"])

    raise_fd_limit(args.count + 100)
    request = (f"GET {args.path} HTTP/1.1\r\nHost: {HOST}:{args.port}\r\n"
               f"User-Agent: limpet-bench-idle\r\n\r\n").encode()
    gate = asyncio.Semaphore(args.concurrency)
    keep: list = []
    stats = {"ok": 0, "failed": 0, "bad_status": 0}
    started = time.monotonic()
    await asyncio.gather(*(open_one(args.port, request, gate, keep, stats, tls)
                           for _ in range(args.count)))
    stats["seconds"] = round(time.monotonic() - started, 2)
    print("READY " + json.dumps(stats), flush=True)
    await asyncio.sleep(args.hold)
    for _, writer in keep:
        writer.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
