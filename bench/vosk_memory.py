"""Vosk memory: what each extra live session costs mockglot, against what each extra recognizer costs Vosk alone.

    python bench/vosk_memory.py                  # 1 and 8, free recognition, 20 s of audio each
    python bench/vosk_memory.py --sessions 1,4,8 --seconds 30 --repeats 3

Every side is a fresh process, one per count, measured in the same run (each repeat runs them all again, in turn):
- **Vosk alone** (the floor): `python bench/vosk_memory.py floor N` loads the Korean model once, builds N
  `KaldiRecognizer`s (free recognition, word times on), feeds each the same PCM in 100 ms blocks, reads each
  partial, and each final when Vosk ends an utterance (`Result()`, as mockglot must, to send
  `transcript.final`), and keeps them all alive. Reading finals (Kaldi then builds each utterance's lattice and
  word times) leaves about 5 MiB more per recognizer than reading partials alone. The floor without them
  (`floor N --no-finals`, the only floor before 2026-12-03 23:00 UTC) is measured and reported too, but it does
  less than mockglot has to, so the goal is checked against the floor that reads its finals. A third floor
  (`floor N --at-once`, analysis) decodes its N recognizers side by side, each 100 ms block a job in mockglot's
  own decoding pool, as N live streams do in mockglot: Kaldi's memory interleaved across the pool's threads
  (glibc gives each its own arena) costs a few MiB per recognizer more than one recognizer after another.
- **mockglot**: `python -m mockglot serve --engine vosk --port 0` with N streams open at once (Vosk engine, same
  language, free recognition), each sent the same audio as `audio.input` frames; the streams stay open (an ended
  session frees its recognizer).

Measured: VmRSS from /proc/PID/status once all N have decoded their audio. Reported: resident memory at each N,
the memory per extra session/recognizer ((RSS at the largest N - RSS at 1) / (N - 1)), and mockglot's per-extra
over Vosk's, per repeat and their median (goal: at most 1.1). The server's CPU settling for a second marks
"decoded". The audio is the committed clip `fixtures/audio/ko_annyeonghaseyo.ulaw`, repeated. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and bench/vosk.py would shadow the vosk package.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from bench.common import heading  # noqa: E402
from mockglot.engines.vosk import VoskModels, _decoding_pool  # noqa: E402
from mockglot.speech import codec  # noqa: E402
from mockglot.testing.client import Client  # noqa: E402

CLIP = ROOT / "fixtures" / "audio" / "ko_annyeonghaseyo.ulaw"
KEY = "sk_test_benchvoskmem01"
GOAL = 1.1
BLOCK_BYTES = codec.SAMPLE_RATE_HZ // 10 * codec.SAMPLE_WIDTH


def audio(seconds: float) -> bytes:
    clip = CLIP.read_bytes()
    want = int(seconds * codec.SAMPLE_RATE_HZ)
    return (clip * (want // len(clip) + 1))[:want]


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def floor(n: int, seconds: float, finals: bool = True, at_once: bool = False) -> None:
    """Vosk alone: one model, n recognizers fed the same audio one after another (their finals read, unless
    not `finals`), all kept alive; prints the RSS in MiB. `at_once`: the n decode side by side, each 100 ms
    block a job in mockglot's decoding pool, as n live streams do in mockglot."""
    import vosk

    vosk.SetLogLevel(-1)
    model = vosk.Model(str(VoskModels.from_specs([]).path("ko")))
    pcm = codec.mulaw_to_pcm(audio(seconds))
    recognizers = []
    for _ in range(n):
        recognizer = vosk.KaldiRecognizer(model, codec.SAMPLE_RATE_HZ)
        recognizer.SetWords(True)
        recognizers.append(recognizer)

    def decode(recognizer: vosk.KaldiRecognizer, offset: int) -> None:
        if not recognizer.AcceptWaveform(pcm[offset : offset + BLOCK_BYTES]):
            recognizer.PartialResult()
        elif finals:
            recognizer.Result()

    def stream(recognizer: vosk.KaldiRecognizer) -> None:
        for offset in range(0, len(pcm), BLOCK_BYTES):
            if at_once:
                _decoding_pool().submit(decode, recognizer, offset).result()
            else:
                decode(recognizer, offset)

    if at_once:
        streams = [threading.Thread(target=stream, args=(recognizer,)) for recognizer in recognizers]
        for thread in streams:
            thread.start()
        for thread in streams:
            thread.join()
    else:
        for recognizer in recognizers:
            stream(recognizer)
    print(json.dumps({"rss_mib": rss_mib(), "alive": len(recognizers)}))


async def settle(pid: int) -> None:
    """Wait until the process used no CPU for a second."""
    previous = -1
    while True:
        await asyncio.sleep(1.0)
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = int(fields[11]) + int(fields[12])
        if cpu == previous:
            return
        previous = cpu


async def mockglot_sessions(n: int, seconds: float, one_at_a_time: bool = False) -> float:
    """mockglot's RSS with n Vosk streams open, each having decoded the same audio."""
    log = Path(f"/tmp/mockglot-bench-vosk-memory-{os.getpid()}-{n}.log")
    command = [sys.executable, "-m", "mockglot", "serve", "--engine", "vosk", "--port", "0", "--output-pace", "instant"]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            text = log.read_text()
            if match := re.search(r"http://\S+?:(\d+)", text):
                port = int(match[1])
            elif process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mockglot did not start: {text[-2000:]}")
            else:
                await asyncio.sleep(0.05)
        mulaw = audio(seconds)
        async with Client(f"http://127.0.0.1:{port}", KEY) as client:
            streams = []
            for _ in range(n):
                session = await client.create_session(
                    mode="assistive_translation",
                    source_language="ko",
                    target_language="en",
                    metadata={"mockglot_engine": "vosk"},
                )
                streams.append(await client.open_stream(session))
            if one_at_a_time:
                for stream in streams:
                    await stream.send_audio("customer", mulaw)
                    await settle(process.pid)
            else:
                await asyncio.gather(*(stream.send_audio("customer", mulaw) for stream in streams))
            await settle(process.pid)  # decoding runs behind the sends
            rss = rss_mib(process.pid)
            for stream in streams:
                await stream.ws.close()
        return rss
    finally:
        process.terminate()
        process.wait(10)
        log.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["floor"]:
        floor(int(argv[1]), float(argv[2]), "--no-finals" not in argv, "--at-once" in argv)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1,8", help="counts to measure, the smallest first (default 1,8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of audio per session (default 20)")
    parser.add_argument("--repeats", type=int, default=1, help="times to measure every side at every count (default 1)")
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="analysis: mockglot's sessions decode one after another (as the floor's recognizers do), not at once",
    )
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.sessions.split(",")]
    sides = ("Vosk alone, finals read", "Vosk alone, partials only", "Vosk alone, finals read, all at once", "mockglot")
    rss: dict[str, dict[int, list[float]]] = {side: {n: [] for n in counts} for side in sides}

    def floor_rss(n: int, *extra: str) -> float:
        command = [sys.executable, __file__, "floor", str(n), str(args.seconds), *extra]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rss_mib_: float = json.loads(done.stdout.strip().splitlines()[-1])["rss_mib"]
        return rss_mib_

    for _ in range(args.repeats):
        for n in counts:
            rss[sides[0]][n].append(floor_rss(n))
            rss[sides[1]][n].append(floor_rss(n, "--no-finals"))
            rss[sides[2]][n].append(floor_rss(n, "--at-once"))
            rss[sides[3]][n].append(asyncio.run(mockglot_sessions(n, args.seconds, args.one_at_a_time)))
    low, high = counts[0], counts[-1]

    def per_extra(side: str, repeat: int) -> float:
        return (rss[side][high][repeat] - rss[side][low][repeat]) / (high - low)

    print(heading("vosk_memory.py"))
    order = "one after another" if args.one_at_a_time else "all at once"
    print(f"{args.seconds:g} s of audio per session, free recognition, Korean model; mockglot's sessions: {order}; "
          f"{args.repeats} repeat(s), each side and count a fresh process, in turn")  # fmt: skip
    print()
    print("| | " + " | ".join(f"RSS at {n} (median)" for n in counts) + " | per extra session / recognizer (repeats) |")
    print("|---|" + "---|" * (len(counts) + 1))
    median_per: dict[str, float] = {}
    for side in sides:
        per = [per_extra(side, r) for r in range(args.repeats)]
        median_per[side] = statistics.median(per)
        at = " | ".join(f"{statistics.median(rss[side][n]):.0f} MiB" for n in counts)
        print(f"| {side} | {at} | {median_per[side]:.1f} MiB ({', '.join(f'{v:.1f}' for v in per)}) |")
    ratios = [per_extra(sides[3], r) / per_extra(sides[0], r) for r in range(args.repeats)]
    shipped = [per_extra(sides[3], r) / per_extra(sides[1], r) for r in range(args.repeats)]
    at_once = [per_extra(sides[3], r) / per_extra(sides[2], r) for r in range(args.repeats)]
    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= GOAL else "NOT met"
    print(f"\nmockglot per extra session / Vosk's per extra recognizer, finals read: **{ratio:.2f}** "
          f"(repeats {', '.join(f'{r:.2f}' for r in ratios)}; goal at most {GOAL:g}: {verdict})")  # fmt: skip
    print(f"against the floor reading partials only (as this bench compared before): {statistics.median(shipped):.2f} "
          f"(repeats {', '.join(f'{r:.2f}' for r in shipped)})")  # fmt: skip
    repeats = ", ".join(f"{r:.2f}" for r in at_once)
    print(f"against the floor reading finals with its recognizers decoding side by side in mockglot's decoding pool, "
          f"as mockglot's streams do: {statistics.median(at_once):.2f} (repeats {repeats})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
