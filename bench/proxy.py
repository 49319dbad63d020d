"""What `mockglot proxy` adds: latency per REST call and per stream frame, against the same upstream called
directly, in the same run.

    python bench/proxy.py                     # 400 REST round trips and 2000 pings, each way, 3 repeats
    python bench/proxy.py --round-trips 1000 --pings 5000 --repeats 5

The upstream is a `mockglot serve` process; the proxy is a `mockglot proxy` process in front of it. One client
(this process) sends requests one at a time on one keep-alive connection (httpx), so each figure is a latency,
not a throughput: a round trip is create + retrieve + end. On the stream it sends `ping` and waits for `pong`,
so a round trip crosses the proxy twice (client->upstream, upstream->client); the added latency per frame is
half the difference. Directly and through the proxy alternate in every repeat; medians are reported, and the
proxy's own measurement of the time it adds (its drift report) is printed beside them. Loopback only; every
loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.ports import free_port  # noqa: E402

BODY = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}


def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "mockglot", *args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"mockglot {args[0]} did not start on port {port}")


async def rest(base: str, round_trips: int) -> list[float]:
    """Milliseconds per request, over `round_trips` create + retrieve + end."""
    key = f"sk_test_{secrets.token_hex(8)}"
    took: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        for _ in range(round_trips):
            started = time.perf_counter()
            session = (await http.post("/v1/sessions", json=BODY)).json()
            middle = time.perf_counter()
            (await http.get(f"/v1/sessions/{session['id']}")).raise_for_status()
            after_get = time.perf_counter()
            (await http.post(f"/v1/sessions/{session['id']}/end")).raise_for_status()
            took += [(middle - started) * 1000, (after_get - middle) * 1000, (time.perf_counter() - after_get) * 1000]
    return took


async def pings(base: str, count: int) -> list[float]:
    """Milliseconds per ping -> pong round trip on one stream."""
    key = f"sk_test_{secrets.token_hex(8)}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        session = (await http.post("/v1/sessions", json=BODY)).json()
    took: list[float] = []
    async with connect(f"{session['stream']['url']}?token={session['stream']['token']}", compression=None) as ws:
        await ws.recv()  # session.ready
        for _ in range(count):
            started = time.perf_counter()
            await ws.send('{"type": "ping"}')
            await ws.recv()
            took.append((time.perf_counter() - started) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=400)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    upstream_port, proxy_port = free_port(), free_port()
    upstream = start(["serve", "--port", str(upstream_port)], upstream_port)
    direct, proxied = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{proxy_port}"
    proxy = start(["proxy", "--upstream", direct, "--port", str(proxy_port)], proxy_port)
    results: dict[str, list[float]] = {"rest direct": [], "rest proxy": [], "ping direct": [], "ping proxy": []}
    try:
        asyncio.run(rest(direct, 50))  # warm both up
        asyncio.run(rest(proxied, 50))
        for _ in range(args.repeats):
            results["rest direct"].append(statistics.median(asyncio.run(rest(direct, args.round_trips))))
            results["rest proxy"].append(statistics.median(asyncio.run(rest(proxied, args.round_trips))))
            results["ping direct"].append(statistics.median(asyncio.run(pings(direct, args.pings))))
            results["ping proxy"].append(statistics.median(asyncio.run(pings(proxied, args.pings))))
        own = httpx.get(f"{proxied}/_mockglot/proxy/report").json()["added_latency_ms"]
    finally:
        for proc in (proxy, upstream):
            proc.terminate()
            proc.wait(20)
    median = {name: statistics.median(values) for name, values in results.items()}
    rest_added = median["rest proxy"] - median["rest direct"]
    frame_added = (median["ping proxy"] - median["ping direct"]) / 2
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.2f}, {args.repeats} repeats")
    print("| measure | direct (median ms) | through the proxy | added | ratio |")
    print("|---|---|---|---|---|")
    print(f"| REST request | {median['rest direct']:.2f} | {median['rest proxy']:.2f} | {rest_added:.2f} ms "
          f"| {median['rest proxy'] / median['rest direct']:.2f} |")  # fmt: skip
    print(f"| stream ping -> pong | {median['ping direct']:.2f} | {median['ping proxy']:.2f} | "
          f"{frame_added:.2f} ms a frame | {median['ping proxy'] / median['ping direct']:.2f} |")  # fmt: skip
    print(f"proxy's own measure of what it adds: REST mean {own['rest']['mean']:.2f} ms over {own['rest']['count']} "
          f"calls (excluding the upstream's time); frames mean {own['frame']['mean']:.3f} ms over "
          f"{own['frame']['count']}")  # fmt: skip
    print("per repeat:", {name: [round(v, 2) for v in values] for name, values in results.items()})


if __name__ == "__main__":
    main()
