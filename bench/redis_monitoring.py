"""What continuous monitoring costs a Redis server: redis-benchmark GET/SET throughput with the product's
scheduled checks running back to back, against the same benchmark with monitoring off, in one run.

    python bench/redis_monitoring.py [--keys 200000] [--requests 100000] [--rounds 25]

Starts its own redis-server on loopback (Debian's package), loads LangChain RedisCache entries for the
monitor to scan, then runs pairs of rounds of `redis-benchmark -t set,get`, one with monitoring off
and one with it on, in alternating order (on: a second process runs the redis backend's scheduled check — rate-limited SCAN in
small pipelined batches, INFO, timed PINGs, SLOWLOG, LATENCY — again and again with no pause, which is
harsher than any schedule). Prints the median throughput of each side, the drop as the median of the
pairs' ratios, and what the monitor costs the server and itself when it runs alone. On a 2-core
machine the monitor also competes with the server and the load generator for the CPU, which a monitor on
its own host would not. Goal: a drop under 5 %.
"""

from __future__ import annotations

import argparse
import csv
import io
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.redis_scan import load  # noqa: E402
from healing.backends.base import TargetConfig  # noqa: E402
from healing.backends.redis import RedisBackend  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def monitor(url: str, state: str, options: dict) -> None:
    """The product's scheduled check (not the full-speed on-demand one), back to back until terminated."""
    backend = RedisBackend(TargetConfig(id=0, name="bench", kind="redis", location=url, state_path=Path(state), options=options))
    while True:
        outcome = backend.check()
        if not outcome.reachable:
            raise SystemExit(outcome.error)


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def monitor_cost(server: RedisServer, ctx, state: str, options: dict, seconds: float = 10.0) -> tuple[float, float]:
    """Share of a core the monitor costs the server and itself, measured with nothing else running."""
    client = server.client()
    before = _server_cpu(client)
    proc = ctx.Process(target=monitor, args=(server.url, state, options))
    proc.start()
    time.sleep(seconds)
    mine = _proc_cpu(proc.pid)
    proc.terminate()
    proc.join(timeout=30)
    return (_server_cpu(client) - before) / seconds, mine / seconds


def throughput(server: RedisServer, requests: int) -> dict[str, float]:
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-t", "set,get", "-n", str(requests),
                          "-c", "50", "-d", "256", "-r", "100000", "--csv"], capture_output=True, text=True, check=True).stdout
    return {row["test"]: float(row["rps"]) for row in csv.DictReader(io.StringIO(out))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200_000, help="cache entries the monitor scans")
    parser.add_argument("--requests", type=int, default=100_000, help="requests per redis-benchmark test and round")
    parser.add_argument("--rounds", type=int, default=25, help="pairs of rounds, off and on")
    parser.add_argument("--read-script", type=int, choices=[0, 1], default=None, help="force the batch read script off or on (default: the product's)")
    args = parser.parse_args()
    if shutil.which("redis-benchmark") is None:
        raise SystemExit("redis-benchmark is not installed (Debian: apt-get install redis-server; .ci/run does it)")
    scratch = Path(tempfile.mkdtemp(prefix="bench-redis-mon-"))
    server = RedisServer(scratch)
    try:
        load(server.client(), args.keys)
        throughput(server, 20_000)  # warm up
        ctx = multiprocessing.get_context("fork")
        options = {"read_script": args.read_script} if args.read_script is not None else {}
        server_share, monitor_share = monitor_cost(server, ctx, str(scratch / "state.json"), options)
        # one monitor for the whole run, paused (SIGSTOP) for the "off" rounds and resumed for the "on" ones:
        # rounds can then be short and many, so that the machine's drift falls on both sides alike
        proc = ctx.Process(target=monitor, args=(server.url, str(scratch / "state.json"), options))
        proc.start()
        time.sleep(1.0)
        ratios: dict[str, list[float]] = {}
        sides: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
        try:
            for i in range(args.rounds):
                order = ("off", "on") if i % 2 == 0 else ("on", "off")
                pair: dict[str, dict[str, float]] = {}
                for side in order:
                    os.kill(proc.pid, signal.SIGCONT if side == "on" else signal.SIGSTOP)
                    pair[side] = throughput(server, args.requests)
                    if not proc.is_alive():
                        raise SystemExit(f"the monitor failed (exit {proc.exitcode})")
                for test, off in pair["off"].items():
                    sides["off"].setdefault(test, []).append(off)
                    sides["on"].setdefault(test, []).append(pair["on"][test])
                    ratios.setdefault(test, []).append(pair["on"][test] / off)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.join(timeout=30)
        rate = RedisBackend(TargetConfig(id=0, name="bench", kind="redis", location=server.url, options=options))._scan_pace()[1]
        print(f"redis-server on loopback, {args.keys:,} cache keys; {args.rounds} pairs of rounds, {args.requests:,} requests per test and round")
        print(f"monitor: the scheduled check back to back, at {rate:,.0f} keys/s; alone it costs the server {100 * server_share:.1f} % "
              f"of a core and itself {100 * monitor_share:.1f} %")
        for test, values in ratios.items():
            off, on = statistics.median(sides["off"][test]), statistics.median(sides["on"][test])
            drops = sorted(100 * (1 - r) for r in values)
            q1, _, q3 = statistics.quantiles(drops, n=4)
            print(f"{test:4s}  off {off:10,.0f} req/s   on {on:10,.0f} req/s (medians)   drop {statistics.median(drops):5.1f} % "
                  f"(median of the pairs; middle half {q1:.1f} to {q3:.1f} %)   (goal < 5 %)")
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
