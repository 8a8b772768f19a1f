#!/usr/bin/env python3
"""Prints bench/run.sh's tables from the JSON lines it wrote.

    report.py OUT_DIR            the whole report (throughput, targets, memory, cost)
    report.py --cell FILE.jsonl  one line about the last cell, for the progress log

Standard library only.
"""

import json
import sys
from statistics import median
from pathlib import Path

PROXIES = ["haproxy", "nginx", "limpet"]
SIZES = {"100b": "100 B", "64k": "64 KiB", "1m": "1 MiB"}
MODES = {"1": "1 worker (proxy pinned to CPU 0; wrk and backends on CPU 1)",
         "scaling": "1 worker, nothing pinned (the baseline for default workers, in their conditions)",
         "default": "default workers (HAProxy: a thread per CPU, nginx: auto, limpet: a thread per CPU; nothing pinned)"}
SCENARIOS = {"new": "new sessions: no cookie, so every response sets one",
             "pinned": "pinned sessions: every request sends the proxy's own cookie"}


def read_jsonl(path: Path) -> list:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def figures(cell: dict) -> dict | None:
    w = cell.get("wrk")
    if not w or not w["duration_us"]:
        return None
    seconds = w["duration_us"] / 1e6
    errors = sum(w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return {
        "rps": w["requests"] / seconds,
        "p50": w["p50_us"] / 1000,
        "p99": w["p99_us"] / 1000,
        "errors": errors,
        "cpu": cell["cpu_ns"] / (w["duration_us"] * 1000) * 100,
        "cpu_us": cell["cpu_ns"] / 1000 / w["requests"] if w["requests"] else 0.0,
        "bytes_per_req": w["bytes"] / w["requests"] if w["requests"] else 0.0,
        "others": cell["others_ns"] / (w["duration_us"] * 1000) * 100 if "others_ns" in cell else None,
        "load_us": cell["load_ns"] / 1000 / w["requests"] if "load_ns" in cell and w["requests"] else None,
        "cpus": cell.get("cpus"),
    }


def ms(value: float) -> str:
    return f"{value:.2f}ms" if value < 100 else f"{value:.0f}ms"


def row(label: str, f: dict | None) -> str:
    if f is None:
        return f"  {label:<8} {'(failed)':>10}"
    others = "" if f["others"] is None else f" {max(f['others'], 0):>6.0f}%"
    return (f"  {label:<8} {f['rps']:>10,.0f} {ms(f['p50']):>9} {ms(f['p99']):>9} {f['errors']:>7}"
            f" {f['cpu']:>6.0f}% {f['cpu_us']:>10.1f}{others}")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def index(cells: list) -> dict:
    """Figures per cell; with several rounds, those of the round with the median rps."""
    rounds = {}
    for c in cells:
        key = (c["mode"], c["size"], c["target"]) if c["target"] == "direct" else \
            (c["mode"], c["size"], c["scenario"], c["target"])
        rounds.setdefault(key, []).append(figures(c))
    table = {}
    for key, runs in rounds.items():
        ok = sorted((f for f in runs if f), key=lambda f: f["rps"])
        table[key] = ok[(len(ok) - 1) // 2] if ok else None
    return table


def throughput(cells: list) -> list:
    t = index(cells)
    out = []
    for mode, mode_text in MODES.items():
        if not any(c["mode"] == mode for c in cells):
            continue
        for scenario, scenario_text in SCENARIOS.items():
            out.append("")
            out.append(f"{mode_text}")
            out.append(f"{scenario_text}")
            out.append(f"  {'target':<8} {'rps':>10} {'p50':>9} {'p99':>9} {'errors':>7} {'cpu':>7} {'cpu µs/req':>10} {'others':>7}")
            for size, size_text in SIZES.items():
                if (mode, size, "direct") not in t:
                    continue
                out.append(f" {size_text}")
                out.append(row("direct", t.get((mode, size, "direct"))))
                for p in PROXIES:
                    # A proxy left out with --only has no cells; one whose cells all failed has None.
                    if (mode, size, scenario, p) in t:
                        out.append(row(p, t[(mode, size, scenario, p)]))
                lim = t.get((mode, size, scenario, "limpet"))
                for other in ("haproxy", "nginx"):
                    o = t.get((mode, size, scenario, other))
                    if lim and o:
                        out.append(f"    limpet/{other:<8} rps {ratio(lim['rps'], o['rps']):>6}   "
                                   f"p50 {ratio(lim['p50'], o['p50']):>6}   p99 {ratio(lim['p99'], o['p99']):>6}   "
                                   f"cpu/req {ratio(lim['cpu_us'], o['cpu_us']):>6}")
    out.append("")
    out.append("cpu: CPU time of the proxy's processes (all threads) during the cell, as % of one core;")
    out.append("     for 'direct' it is the backend's. cpu µs/req = that time divided by the requests.")
    out.append("others: CPU time of processes outside this benchmark during the cell (% of one core): noise.")
    out.append("The 'direct' row is measured once per body size and shown in both scenarios.")
    # The swap phase numbers its cells with --swap-rounds, not --rounds.
    rounds = max((c.get("round", 1) for c in cells if c["mode"] in MODES), default=1)
    if rounds > 1:
        out.append(f"Each row is the round with the median rps of {rounds} interleaved rounds.")
    return out


def targets(cells: list, memory: list) -> list:
    t = index(cells)
    out = ["", "Targets (issue 'Performance', item 2)"]
    for scenario in SCENARIOS:
        for size, size_text in SIZES.items():
            lim = t.get(("1", size, scenario, "limpet"))
            if not lim:
                continue
            verdicts = []
            for other in ("haproxy", "nginx"):
                o = t.get(("1", size, scenario, other))
                if not o:
                    continue
                ok_rps = lim["rps"] >= o["rps"]
                ok_p99 = lim["p99"] <= o["p99"]
                verdicts.append(f"vs {other}: rps {'ok' if ok_rps else 'MISS'} ({ratio(lim['rps'], o['rps'])}), "
                                f"p99 {'ok' if ok_p99 else 'MISS'} ({ratio(lim['p99'], o['p99'])})")
            out.append(f"  1 worker, {scenario:<6} {size_text:<6}  " + "; ".join(verdicts))
    for scenario in SCENARIOS:
        parts = []
        for size, size_text in SIZES.items():
            one = t.get(("1", size, scenario, "limpet"))
            dflt = t.get(("default", size, scenario, "limpet"))
            if one and dflt:
                parts.append(f"{size_text} {ratio(dflt['rps'], one['rps'])}")
        if parts:
            out.append(f"  limpet default/1 worker rps, {scenario}: " + ", ".join(parts))
    for scenario in SCENARIOS:
        parts = []
        for p in PROXIES:
            one = t.get(("scaling", "100b", scenario, p))
            dflt = t.get(("default", "100b", scenario, p))
            if one and dflt:
                parts.append(f"{p} {ratio(dflt['rps'], one['rps'])}")
        if parts:
            out.append(f"  default/1 worker rps, both unpinned, 100 B, {scenario}: " + ", ".join(parts))
    out += ceilings(t)
    for m in memory:
        if m["target"] == "limpet":
            idle = m["idle_rss_kib"] / 1024
            loaded = m["loaded_rss_kib"] / 1024
            out.append(f"  limpet RSS idle {idle:.1f} MiB ({'ok' if idle <= 20 else 'MISS'} <= 20 MiB); "
                       f"with {m['open']} idle connections {loaded:.1f} MiB "
                       f"({'ok' if loaded <= 100 else 'MISS'} <= 100 MiB"
                       f"{'' if m['connections'] >= 10000 else ', but fewer than 10,000 connections'})")
    return out


def ceilings(t: dict) -> list:
    """What "more workers, more requests" can reach here. wrk and the backend run on the same
    cores as the proxy, so with every core busy the machine serves at most
    cores / (the proxy's CPU per request + theirs); both taken from the pinned 1-worker cell,
    where neither has to share a core. A proxy that scales without loss reaches that ceiling
    at its default workers, however close it already is at 1 worker."""
    rows = []
    cpus = 0
    for scenario in SCENARIOS:
        for size, size_text in SIZES.items():
            parts = []
            for p in PROXIES:
                one = t.get(("1", size, scenario, p))
                dflt = t.get(("default", size, scenario, p))
                if not one or not dflt or one["load_us"] is None or not one["cpus"]:
                    continue
                cpus = one["cpus"]
                ceiling = cpus * 1e6 / (one["cpu_us"] + one["load_us"])
                parts.append(f"{p} {ratio(ceiling, one['rps'])} {dflt['rps'] / ceiling * 100:3.0f} %")
            if parts:
                rows.append(f"    {scenario:<6} {size_text:<6}  " + "   ".join(parts))
    if not rows:
        return []
    return [f"  ceiling of {cpus} CPUs shared with wrk and the backend, as a multiple of the pinned"
            " 1-worker rps, and the share of it reached by default workers:"] + rows


def swap_table(cells: list, swaps: list) -> list:
    t = index(cells)
    quiet, swapping = t.get(("swap", "100b", "quiet", "limpet")), t.get(("swap", "100b", "swapping", "limpet"))
    if not quiet or not swapping:
        return []
    s = swaps[len(swaps) // 2] if swaps else None
    what = (f"{s['swaps']} tables of {s['services']:,} services / {s['servers']:,} servers built and swapped "
            f"in {s['seconds']} s ({s['writes']} file writes)") if s else "swap count unknown"
    out = ["", f"Table swaps under load (limpet, 1 worker, pinned 100 B): {what}",
           f"  {'':<8} {'rps':>10} {'p50':>9} {'p99':>9} {'errors':>7} {'cpu':>7} {'cpu/req us':>10} {'others':>7}",
           row("quiet", quiet), row("swapping", swapping)]
    out += swap_pairs(cells)
    if s and "control_ns" in s:
        # The writes that fell in the measured seconds, at the writer's rate.
        writes = s["rate"] * s["control_seconds"]
        out.append(f"  control plane: {s['control_ns'] / 1e6 / writes:.2f} ms of CPU per write under load "
                   f"({s['control_ns'] / 1e6:.0f} ms over {s['control_seconds']} s of {s['rate']} writes/s)")
    return out


def swap_pairs(cells: list) -> list:
    """p99 of each swapping cell against the mean of the quiet cells either side of it, and
    of each inner quiet cell against its quiet neighbours: the same comparison with no swaps,
    which is how far p99 moves by chance on this machine."""
    p99 = {}
    for c in cells:
        f = figures(c)
        if c["mode"] == "swap" and f:
            p99[(c["scenario"], c.get("round", 1))] = f["p99"]
    quiet = {r: v for (kind, r), v in p99.items() if kind == "quiet"}
    swap = {r: v for (kind, r), v in p99.items() if kind == "swapping"}
    effect = [v / ((quiet[r - 1] + quiet[r]) / 2) for r, v in sorted(swap.items())
              if r - 1 in quiet and r in quiet]
    chance = [v / ((quiet[r - 1] + quiet[r + 1]) / 2) for r, v in sorted(quiet.items())
              if r - 1 in quiet and r + 1 in quiet]
    if not effect:
        return []
    mid = median(effect)
    out = [f"  p99 swapping / quiet neighbours, by round: {' '.join(f'{x:.2f}' for x in effect)}; "
           f"median {mid:.2f}x ({'ok' if mid <= 1.1 else 'MISS'} <= 1.10x)"]
    if chance:
        out.append(f"  p99 quiet / quiet neighbours (no swaps: the noise): {' '.join(f'{x:.2f}' for x in chance)}; "
                   f"median {median(chance):.2f}x")
    return out


def memory_table(memory: list) -> list:
    if not memory:
        return []
    out = ["", "Memory (default workers; RSS summed over the proxy's processes, PSS in brackets)",
           f"  {'proxy':<8} {'idle':>18} {'with idle conns':>22} {'open':>7} {'per conn':>9}"]
    for m in memory:
        per = (m["loaded_rss_kib"] - m["idle_rss_kib"]) / m["open"] if m["open"] else 0
        out.append(f"  {m['target']:<8} {m['idle_rss_kib'] / 1024:>7.1f} MiB ({m['idle_pss_kib'] / 1024:>5.1f})"
                   f" {m['loaded_rss_kib'] / 1024:>11.1f} MiB ({m['loaded_pss_kib'] / 1024:>5.1f})"
                   f" {m['open']:>7} {per:>6.2f} KiB")
        clients = m.get("clients") or {}
        if clients.get("failed"):
            out.append(f"           {clients['failed']} client connections failed: {clients.get('first_error', '')}")
    return out


def cost_table(cost: list) -> list:
    if not cost:
        return []
    runs = {}
    for c in cost:
        if c["kind"] == "native" and c["requests"]:
            runs.setdefault((c["target"], c["scenario"]), []).append(c)
    # With several rounds, the round with the median CPU time per request.
    native = {k: sorted(v, key=lambda c: c["cpu_ns"] / c["requests"])[(len(v) - 1) // 2]
              for k, v in runs.items()}
    grind = {(c["target"], c["scenario"]): c for c in cost if c["kind"] == "callgrind"}
    out = ["", "Per-request cost (1 worker, proxy on CPU 0, 100 B bodies, h2load --h1 with a fixed request count)",
           f"  {'proxy':<8} {'scenario':<7} {'cpu µs/req':>10} {'user':>5} {'syscalls/req':>12} {'ctx-sw/req':>10} {'instr/req':>10}"]
    for p in PROXIES:
        for s in SCENARIOS:
            n, g = native.get((p, s)), grind.get((p, s))
            if not n and not g:
                continue
            cpu = sys_ = ctx = instr = user = "-"
            if n and n["requests"]:
                cpu = f"{n['cpu_ns'] / 1000 / n['requests']:.1f}"
                ticks = n.get("user_ticks", 0) + n.get("sys_ticks", 0)
                if ticks:
                    user = f"{n['user_ticks'] / ticks * 100:.0f}%"
                if n.get("syscalls") is not None:
                    sys_ = f"{n['syscalls'] / n['requests']:.2f}"
                if n.get("ctx_switches") is not None:
                    ctx = f"{n['ctx_switches'] / n['requests']:.3f}"
            if g and g["requests"]:
                instr = f"{g['instructions'] / g['requests']:,.0f}"
            out.append(f"  {p:<8} {s:<7} {cpu:>10} {user:>5} {sys_:>12} {ctx:>10} {instr:>10}")
    rounds = max((len(v) for v in runs.values()), default=1)
    if rounds > 1:
        out.append(f"  cpu, user, syscalls, ctx-sw: the round with the median cpu µs/req of {rounds}.")
    out.append("  user: share of that CPU time spent in user space (the rest is the kernel's).")
    out.append("  instr/req: user-space instructions counted by callgrind (kernel work is not included),")
    out.append("  divided by the requests h2load completed; the first requests (pool set-up) are excluded.")
    return out


def cell_line(path: Path) -> str:
    c = read_jsonl(path)[-1]
    f = figures(c)
    name = f"{c['mode']}/{c['scenario']}/{c['size']}/{c['target']}" + (f" #{c['round']}" if "round" in c else "")
    if f is None:
        return f"  {name}: failed"
    others = "" if f["others"] is None else f"  others {max(f['others'], 0):.0f}%"
    return (f"  {name:<28} {f['rps']:>9,.0f} rps  p50 {ms(f['p50'])}  p99 {ms(f['p99'])}  "
            f"errors {f['errors']}  cpu {f['cpu']:.0f}%  {f['bytes_per_req']:,.0f} B/req{others}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--cell":
        print(cell_line(Path(sys.argv[2])))
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    lines = []
    meta = out / "meta.txt"
    if meta.exists():
        lines += meta.read_text().rstrip().splitlines()
    load = out / "loadavg.txt"
    if load.exists():
        lines.append("load average (1/5/15 min) at: " + "; ".join(
            l.strip() for l in load.read_text().splitlines()))
    cells = read_jsonl(out / "results.jsonl")
    memory = read_jsonl(out / "memory.jsonl")
    lines += throughput(cells)
    lines += swap_table(cells, read_jsonl(out / "swaps.jsonl"))
    lines += memory_table(memory)
    lines += cost_table(read_jsonl(out / "cost.jsonl"))
    lines += targets(cells, memory)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
