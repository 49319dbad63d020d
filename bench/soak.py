"""Soak: tens of thousands of short streamed calls against one `mockglot serve`, and what it costs to keep them.

    python bench/soak.py                   # 20,000 calls with default settings, then the reset measurement
    python bench/soak.py --calls 2000      # a quick look
    python bench/soak.py --write           # also append the results to bench/RESULTS.md

Part 1, memory. One server, `python -m mockglot serve --port 0` with default settings (retention: 1000 ended
sessions, 60 minutes, 256 MB). `--concurrency` workers each run calls back to back; one call is what a user's
test does: `POST /v1/sessions` (every other one with `recording: {"enabled": true}`), connect the WebSocket,
wait for `session.ready`, send 2 s of the customer's speech (1.2 s tone, 0.8 s silence) as twenty 100 ms
`audio.input` frames as fast as the socket takes them, then `session.end`, and read to `session.ended` and the
close. The server's resident memory (VmRSS from /proc) is sampled every `--every` calls. The baseline, in the
same run: the same calls against a second server whose retention is effectively off (`--retain-sessions
10000000 --retain-minutes 525600 --retain-mb 1048576`), which is how mockglot kept every session before #10.
Reported: RSS after each block, and the growth per 1000 calls over the second half of the run for both.

Part 2, reset. The pytest fixture resets one organization per test. A server with retention off holds N ended
sessions of other organizations (created and ended over REST by a helper key per 500), then the time of
`POST /_mockglot/reset {"api_key": K}` for a fresh key that has one session of its own is measured (median of
`--resets`, each on a fresh key), at N = 0 (the baseline), 6,000 and 56,000.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import math
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import stop  # noqa: E402

BODY = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}
UNBOUNDED = ["--retain-sessions", "10000000", "--retain-minutes", "525600", "--retain-mb", "1048576"]


def mulaw(pcm: list[int]) -> bytes:
    from mockglot.speech.codec import pcm_to_mulaw

    return pcm_to_mulaw(struct.pack(f"<{len(pcm)}h", *pcm))


def speech() -> list[str]:
    """Twenty 100 ms frames: 1.2 s of a 440 Hz tone, then 0.8 s of silence (the VAD closes the utterance)."""
    tone = [int(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(9600)]
    audio = mulaw(tone + [0] * 6400)
    frames = []
    for index in range(20):
        chunk = audio[index * 800 : (index + 1) * 800]
        payload = base64.b64encode(chunk).decode()
        frame = {"type": "audio.input", "sequence": index + 1, "timestamp_ms": index * 100, "speaker": "customer",
                 "audio": {"encoding": "mulaw", "sample_rate_hz": 8000, "payload": payload}}  # fmt: skip
        frames.append(msgspec.json.encode(frame).decode())
    return frames


class Server:
    def __init__(self, *flags: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "mockglot", "serve", "--port", "0", *flags]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "mockglot ... at http://localhost:PORT  (REST under /v1 ..."
        self.url = "http://127.0.0.1:" + line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1]
        self.ws = self.url.replace("http", "ws", 1)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        stop(self.process)


async def call(http: httpx.AsyncClient, ws_base: str, key: str, frames: list[str], recorded: bool) -> None:
    body = {**BODY, "recording": {"enabled": True}} if recorded else BODY
    session = (await http.post("/v1/sessions", json=body, headers={"Authorization": f"Bearer {key}"})).json()
    url = f"{ws_base}/v1/sessions/{session['id']}/connect?token={session['stream']['token']}"
    async with connect(url, compression=None, max_size=None) as ws:
        while msgspec.json.decode(await ws.recv())["type"] != "session.ready":
            pass
        for frame in frames:
            await ws.send(frame)
        await ws.send('{"type": "session.end"}')
        async for message in ws:
            if msgspec.json.decode(message)["type"] == "session.ended":
                break


async def soak(server: Server, calls: int, concurrency: int, every: int) -> list[tuple[int, float]]:
    frames = speech()
    samples = [(0, server.rss_mb())]
    done = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

        async def worker(index: int) -> None:
            nonlocal done
            key = f"sk_test_soak{index:04d}{os.getpid():08d}"
            while done < calls:
                done += 1
                number = done
                for attempt in range(3):  # a keep-alive connection the server closed as the request went out
                    try:
                        await call(http, server.ws, key, frames, recorded=number % 2 == 0)
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                if number % every == 0:
                    samples.append((number, server.rss_mb()))
                    print(f"  {number:>6} calls  RSS {samples[-1][1]:7.1f} MB", flush=True)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return samples


def growth_per_1000(samples: list[tuple[int, float]]) -> float:
    """The least-squares slope of RSS over calls in the second half of the run, per 1000 calls."""
    half = [(n, mb) for n, mb in samples if n >= samples[-1][0] / 2]
    xs, ys = [n for n, _ in half], [mb for _, mb in half]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    return slope * 1000


async def reset_times(server: Server, held: list[int], resets: int) -> dict[int, float]:
    """Median reset time (ms) of a one-session organization with `n` sessions of others held, for each n."""
    results = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        made = 0
        for target in held:
            while made < target:
                key = f"sk_test_held{made // 500:06d}{os.getpid():08d}"
                batch = min(500, target - made)

                async def one(k: str = key) -> None:
                    headers = {"Authorization": f"Bearer {k}"}
                    session = (await http.post("/v1/sessions", json=BODY, headers=headers)).json()
                    await http.post(f"/v1/sessions/{session['id']}/end", headers=headers)

                await asyncio.gather(*(one() for _ in range(batch)))
                made += batch
            health = (await http.get("/_mockglot/health")).json()
            times = []
            for index in range(resets):
                key = f"sk_test_reset{target:06d}{index:04d}{os.getpid():08d}"
                await http.post("/v1/sessions", json=BODY, headers={"Authorization": f"Bearer {key}"})
                started = time.perf_counter()
                response = await http.post("/_mockglot/reset", json={"api_key": key})
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
            results[health["sessions"]] = statistics.median(times)
            print(f"  {health['sessions']:>6} sessions held: reset {results[health['sessions']]:.2f} ms", flush=True)
    return results


def reset_in_process(held: list[int], resets: int) -> dict[int, float]:
    """The same measurement without HTTP: `ServerState.reset(organization)` alone, median µs, on one state."""
    from mockglot.settings import Settings
    from mockglot.state.server import ServerState
    from mockglot.wire import SessionCreate

    state = ServerState(Settings(retain_sessions=10_000_000, retain_minutes=525_600, retain_mb=1_048_576))
    request = SessionCreate(mode="bidirectional_translation", source_language="de", target_language="en")
    results, made = {}, 0
    for target in held:
        for index in range(made, target):
            key = state.keys.ensure(f"sk_test_held{index // 500:08d}")
            state.sessions.end(state.sessions.create(key.owner, key.key, request, None), "client_ended")
        made = max(made, target)
        times = []
        for index in range(resets):
            key = state.keys.ensure(f"sk_test_reset{target:08d}{index:06d}")
            state.sessions.create(key.owner, key.key, request, None)
            started = time.perf_counter()
            state.reset(key.organization)
            times.append((time.perf_counter() - started) * 1e6)
        results[state.sessions.count()] = statistics.median(times)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--baseline-calls", type=int, default=5000, help="calls for the unbounded baseline")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--resets", type=int, default=25)
    parser.add_argument("--held", default="0,6000,56000")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--reset-only", action="store_true", help="only the reset measurement, in-process")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.UTC)
    load = os.getloadavg()
    lines = [f"### Soak ({started:%Y-%m-%d %H:%M} UTC, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})", ""]

    if args.reset_only:
        held_in_process = reset_in_process([int(n) for n in args.held.split(",")], args.resets * 4)
        base = held_in_process[min(held_in_process)]
        for n, us in held_in_process.items():
            print(f"| {n} | {us:.1f} µs | {us / base:.2f} |")
        return
    results = {}
    for name, flags, calls in (
        ("default settings", [], args.calls),
        ("retention off (baseline)", UNBOUNDED, args.baseline_calls),
    ):
        print(f"{name}: {calls} calls", flush=True)
        server = Server(*flags)
        try:
            began = time.perf_counter()
            samples = asyncio.run(soak(server, calls, args.concurrency, args.every))
            elapsed = time.perf_counter() - began
        finally:
            server.stop()
        results[name] = (samples, growth_per_1000(samples), elapsed)

    lines += ["| calls | " + " | ".join(f"RSS MB, {name}" for name in results) + " |",
              "|---|" + "---|" * len(results)]  # fmt: skip
    rows = sorted({n for samples, _, _ in results.values() for n, _ in samples})
    for n in rows:
        cells = [next((f"{mb:.0f}" for m, mb in samples if m == n), "") for samples, _, _ in results.values()]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, (samples, slope, elapsed) in results.items():
        lines.append(
            f"- {name}: {samples[-1][0]} calls in {elapsed:.0f} s ({samples[-1][0] / elapsed:.0f}/s); RSS "
            f"{samples[0][1]:.0f} → {samples[-1][1]:.0f} MB; growth over the second half **{slope:.2f} MB per "
            "1000 calls**"
        )

    print("reset time vs sessions held (retention off so they are all held)", flush=True)
    server = Server(*UNBOUNDED)
    try:
        held = asyncio.run(reset_times(server, [int(n) for n in args.held.split(",")], args.resets))
    finally:
        server.stop()
    baseline = held[min(held)]
    lines += ["", "| sessions held | reset of one organization, median ms | ratio to the empty server |"]
    lines += ["|---|---|---|"]
    lines += [f"| {n} | {ms:.2f} | {ms / baseline:.2f} |" for n, ms in held.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as results_file:
            results_file.write("\n" + text)


if __name__ == "__main__":
    main()
