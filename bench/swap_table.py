#!/usr/bin/env python3
"""Writes limpet's benchmark configuration padded with filler services, and rewrites it at a
steady rate so that limpet's file provider builds and swaps a new table each time.

    swap_table.py --base limpet.toml --out swap.toml --services 1000 --servers 10
    swap_table.py ... --rate 10 --duration 5      # then prints `WRITES n` and exits

Every rewrite changes one filler service's rule, so each is a real change of the table
(limpet compares the parsed services and ignores a rewrite that changes nothing). The filler
services never match the benchmark's requests and their servers are never dialled: they only
make the table as large as the one the issue names (1,000 services, 10,000 servers).
Writes go to a temporary file renamed over the target, as an editor or a config tool would.
With --rate, every generation is written out before the clock starts, and each timed write
is only that rename: rendering and writing 400 KiB from Python took about 3 ms, on the core
where wrk and the backend run, which a 1-worker load at 100 B keeps nearly full, so the
writer itself would have slowed the load it is meant to leave alone.

Standard library only.
"""

import argparse
import os
import time


def filler(i: int, servers: int, generation: int) -> str:
    # Distinct ports where nothing listens; nothing dials them.
    urls = ", ".join(
        f'{{ url = "http://127.0.0.1:{20000 + (i * servers + j) % 40000}" }}' for j in range(servers)
    )
    rule = f"Host:filler-{i}-g{generation}.invalid" if i == 0 else f"Host:filler-{i}.invalid"
    return f'[services.filler{i}]\nrule = "{rule}"\nservers = [{urls}]\n'


class Table:
    """The file's text by generation; only the first filler service changes, so the rest is
    rendered once and the rewriter stays light beside the load generator."""

    def __init__(self, base: str, services: int, servers: int):
        self.base, self.services, self.servers = base.rstrip() + "\n\n", services, servers
        self.rest = "\n".join(filler(i, servers, 0) for i in range(1, services))

    def render(self, generation: int) -> str:
        if self.services == 0:
            return self.base
        return self.base + filler(0, self.servers, generation) + "\n" + self.rest


def write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def prepare(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--rate", type=float, default=0.0, help="rewrites per second (0: write once)")
    ap.add_argument("--duration", type=float, default=0.0)
    args = ap.parse_args()
    table = Table(open(args.base).read(), args.services, args.servers)
    write(args.out, table.render(0))
    if args.rate <= 0:
        return
    period = 1.0 / args.rate
    count = int(args.duration * args.rate) + 1
    ready = [prepare(f"{args.out}.g{n}", table.render(n)) for n in range(1, count + 1)]
    start = time.monotonic()
    writes = 0
    while time.monotonic() - start < args.duration and writes < count:
        os.replace(ready[writes], args.out)
        writes += 1
        # Paced against the start, so the rate holds however long a rename takes.
        delay = start + writes * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for unused in ready[writes:]:
        os.remove(unused)
    print(f"WRITES {writes}", flush=True)


if __name__ == "__main__":
    main()
