"""What webhooks cost the API: round-trip latency with no endpoint, with an endpoint whose receiver hangs, and
with one whose receiver answers 200 at once, against one mockglot server in the same run.

    python bench/webhooks.py                          # 3 repeats of 1000 round trips per mode, 8 connections
    python bench/webhooks.py --round-trips 2000 --concurrency 4 --repeats 5

The server runs in its own process (`bench/rest.py`'s launcher: one uvicorn worker, access log off); each
receiver runs in another (`python bench/webhooks.py receive hang|ok`, a `mockglot.testing.webhooks`
receiver), so neither competes with this client for the GIL. A round trip is `bench/rest.py`'s: create a
session, retrieve it, end it, over hand-written keep-alive HTTP/1.1, which makes three events (created, ended,
transcript.ready). Every mode resets the server (request cost grows with the sessions kept), registers its
endpoint through the control plane, loads, and deletes the endpoint; the modes rotate which goes first in each
repeat, so drift on the machine hits them alike. For `ok`, the backlog is drained before the endpoint is
deleted, and the drain is timed. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
from rest import Connection, Process, mockglot_round_trip

MODES = ("none", "hang", "ok")
DRAIN_TIMEOUT_SECONDS = 120.0


# --- the receivers ----------------------------------------------------------------------------------------


def receive(behaviour: str) -> None:
    from mockglot.testing.webhooks import WebhookReceiver

    with WebhookReceiver() as receiver:
        if behaviour == "hang":
            receiver.hang()
        print(f"URL {receiver.url}", flush=True)
        sys.stdin.read()  # until the bench closes our stdin


class Receiver:
    def __init__(self, behaviour: str) -> None:
        command = [sys.executable, __file__, "receive", behaviour]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("URL "):
            self.proc.kill()
            raise RuntimeError(f"{behaviour} receiver did not start: {line!r}")
        self.url = line.split()[1]

    def stop(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the load ---------------------------------------------------------------------------------------------


async def load(port: int, round_trips: int, concurrency: int) -> tuple[list[float], float]:
    """Round-trip latencies in ms, and round trips per second."""
    connections = [Connection(port, f"sk_test_bench{secrets.token_hex(8)}") for _ in range(concurrency)]
    for conn in connections:
        await conn.open()
    remaining = round_trips
    latencies: list[float] = []

    async def worker(conn: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await mockglot_round_trip(conn)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(conn) for conn in connections))
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return latencies, round_trips / elapsed


def pending(control: httpx.Client) -> bool:
    """Any delivery still pending? (`limit=1`: listing thousands would load the server being measured.)"""
    response = control.get("/_mockglot/webhooks/deliveries", params={"status": "pending", "limit": 1})
    return bool(response.json()["data"])


def drain(control: httpx.Client) -> float:
    """Wait until every delivery has been answered; returns how long that took, in seconds."""
    started = time.perf_counter()
    while pending(control):
        if time.perf_counter() - started > DRAIN_TIMEOUT_SECONDS:
            raise RuntimeError(f"deliveries still pending after {DRAIN_TIMEOUT_SECONDS:g} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def measure(mode: str, port: int, control: httpx.Client, receivers: dict[str, Receiver], args: argparse.Namespace):
    """One mode's load on a freshly reset server: register its endpoint, load, (drain,) delete it."""
    control.post("/_mockglot/reset", json={})  # the cost of a request grows with the sessions kept: start level
    endpoint = None
    if mode != "none":
        endpoint = control.post("/_mockglot/webhooks", json={"url": receivers[mode].url}).json()["id"]
    latencies, rate = asyncio.run(load(port, args.round_trips, args.concurrency))
    drained = drain(control) if mode == "ok" else None
    sent = len(control.get("/_mockglot/webhooks/deliveries", params={"limit": 10_000}).json()["data"])
    if endpoint is not None:
        control.delete(f"/_mockglot/webhooks/{endpoint}")
    return latencies, rate, drained, sent


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def run(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    server = Process("mockglot")
    receivers = {"hang": Receiver("hang"), "ok": Receiver("ok")}
    results: dict[str, dict[str, list[float]]] = {m: {"p50": [], "p99": [], "rate": [], "drain": []} for m in MODES}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as control:
            asyncio.run(load(server.port, args.warmup, args.concurrency))
            for repeat in range(args.repeats):
                for mode in MODES[repeat % 3 :] + MODES[: repeat % 3]:  # each mode goes first in turn
                    latencies, rate, drained, deliveries = measure(mode, server.port, control, receivers, args)
                    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
                    for name, value in (("p50", p50), ("p99", p99), ("rate", rate)):
                        results[mode][name].append(value)
                    if drained is not None:
                        results[mode]["drain"].append(drained)
                    drain_note = f", backlog drained in {drained:.1f} s" if drained is not None else ""
                    print(
                        f"  repeat {repeat + 1}: {mode:4s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rate:6.0f} rt/s  "
                        f"({deliveries} deliveries recorded{drain_note})",
                        flush=True,
                    )
    finally:
        for receiver in receivers.values():
            receiver.stop()
        server.stop()
    return results


def report(args: argparse.Namespace, results: dict[str, dict[str, list[float]]]) -> str:
    def cell(values: list[float], digits: int) -> str:
        return f"{statistics.median(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"

    label = {"none": "no endpoint", "hang": "endpoint, receiver hangs", "ok": "endpoint, receiver answers 200"}
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — `python bench/webhooks.py --round-trips {args.round_trips} "
        f"--concurrency {args.concurrency} --repeats {args.repeats}`",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}. "
        "Medians of the repeats (each repeat in brackets).",
        "",
        "| mode | round trip p50, ms | round trip p99, ms | round trips/s |",
        "|---|---|---|---|",
    ]
    for mode in MODES:
        r = results[mode]
        lines.append(f"| {label[mode]} | {cell(r['p50'], 2)} | {cell(r['p99'], 2)} | {cell(r['rate'], 0)} |")
    if results["ok"]["drain"]:
        lines += ["", f"`ok` backlog drain after each load, s: {cell(results['ok']['drain'], 1)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["receive"]:
        receive(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    print(report(args, run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
