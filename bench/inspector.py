"""The stream benchmark with the inspector watching: does a browser on the inspector (and a tool reading every
event) cost the streams anything?

    python bench/inspector.py                      # N=300, 20 s calls; writes bench/RESULTS.md
    python bench/inspector.py --ns 300,400 --no-write
    python bench/inspector.py --baseline-command "/path/to/old/.venv/bin/python -m mockglot"

Each N runs `bench/stream.py`'s step (same calls, lags and pass rule) up to four ways, one after the other:
- `baseline`: mockglot as `--baseline-command` runs it (e.g. a checkout from before the event feed), if given;
- `unwatched`: this checkout, nobody subscribed to `/_mockglot/events` (the feed only keeps its backlog);
- `browser`: while a separate process keeps headless Chromium on the inspector's Sessions page and on the first
  session's page (which follows that session's frames live); the step starts once the Sessions page shows;
- `browser + all events`: the same, plus a plain HTTP client in that process reading the whole unfiltered event
  stream (every frame of every call: the costliest subscriber there is).
The watcher reports how many events it read and how many `resync` events (slow-consumer drops) it got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import stream  # noqa: E402
from tests.chromium import ARGS as CHROMIUM_ARGS  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SECTION = "## Stream concurrency with the inspector watching\n"


# --- the watcher process ---------------------------------------------------------------------------------


async def watch(base_url: str, result_file: Path, everything: bool) -> None:
    import httpx
    from playwright.async_api import async_playwright

    counts: dict[str, Any] = {"events": 0, "resyncs": 0, "frames": 0, "page_errors": 0, "problems": []}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def read_everything() -> None:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=None) as client,
            client.stream("GET", "/_mockglot/events") as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    counts["events"] += 1
                    counts["resyncs"] += line == "event: resync"
                    counts["frames"] += line == "event: frame"

    async def open_first_session(browser: Any, sessions: Any) -> Any:
        first = sessions.locator("table.sessions tbody tr[data-session]").last  # the oldest: first to stream
        await first.wait_for(timeout=120_000)
        one = await browser.new_page()
        await one.goto(f"{base_url}/_mockglot/ui/sessions/{await first.get_attribute('data-session')}")
        return one

    reader = asyncio.create_task(read_everything()) if everything else None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sessions = await browser.new_page()
        sessions.on("pageerror", lambda _: counts.__setitem__("page_errors", counts["page_errors"] + 1))
        await sessions.goto(f"{base_url}/_mockglot/ui/sessions")
        await sessions.wait_for_selector("table.sessions")
        print("ready", flush=True)
        opener = asyncio.create_task(open_first_session(browser, sessions))
        await stop.wait()
        try:
            one = await asyncio.wait_for(opener, 1)
            counts["session_page_frames"] = await one.locator("details.frame").count()
        except Exception as exc:  # the report says what the watcher could not do
            counts["problems"].append(f"session page: {type(exc).__name__}")
        await browser.close()
    if reader is not None:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await reader
    result_file.write_text(json.dumps(counts), encoding="utf-8")


class Watcher:
    """The watcher process; returns once its browser shows the Sessions page (and its reader is connected)."""

    def __init__(self, base_url: str, logdir: Path, nice: int, everything: bool) -> None:
        self.result = logdir / f"watch-{time.monotonic_ns()}.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--watch",
            base_url,
            "--result-file",
            str(self.result),
        ]
        self.proc = subprocess.Popen(
            [*command, *(["--everything"] if everything else [])],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=stream.priority(nice),  # as the server's: the browser is part of what is measured
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the watcher did not start")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return json.loads(self.result.read_text()) if self.result.exists() else {"problems": ["no result"]}


# --- what one frame costs the feed, in-process ---------------------------------------------------------


def publish_cost(frames: int = 200_000) -> list[str]:
    """Microseconds per frame: journalling it alone, and journalling plus publishing it to the feed with no
    subscriber, a subscriber whose filter does not match (another session), and one that takes every event."""
    from mockglot.state.feed import FEED_FRAME_CHARS, Feed, Filter, Frame
    from mockglot.state.journal import Journal

    text = stream.audio_json(1, "A" * 1068)

    def run(feed: Feed | None) -> float:
        journal = Journal()
        started = time.perf_counter()
        for _ in range(frames):
            entry = journal.append("in", 0.0, "audio.input", text)
            if feed is not None:
                frame = Frame(entry.index, "in", "audio.input", entry.text[:FEED_FRAME_CHARS], entry.length)
                feed.publish("frame", "sess_1", "org_1", "sk_test_benchkey000000001", frame)
        return (time.perf_counter() - started) / frames * 1e6

    results = [f"journal only: {min(run(None) for _ in range(3)):.2f} µs"]
    for label, filters in (
        ("+ feed, no subscriber", []),
        ("+ feed, one subscriber of another session", [Filter(session_id="sess_2")]),
        ("+ feed, one subscriber of everything (queue full, dropping)", [Filter()]),
    ):
        best = []
        for _ in range(3):
            feed = Feed(lambda: 0.0)
            for filter_ in filters:
                feed.subscribe(filter_)
            best.append(run(feed))
        results.append(f"{label}: {min(best):.2f} µs")
    return results


# --- the orchestrator ------------------------------------------------------------------------------------


def watched_step(
    n: int, args: argparse.Namespace, logdir: Path, everything: bool
) -> tuple[stream.Step, dict[str, Any]]:
    """stream.run_step with a watcher started as soon as the server is up, stopped when the step ends."""
    original_enter = stream.Server.__enter__
    watchers: list[Watcher] = []

    def enter(server: stream.Server) -> stream.Server:
        original_enter(server)
        watchers.append(Watcher(server.base_url, logdir, args.nice, everything))
        return server

    stream.Server.__enter__ = enter  # type: ignore[method-assign]
    try:
        step = stream.run_step("mockglot", n, args, logdir)
    finally:
        stream.Server.__enter__ = original_enter  # type: ignore[method-assign]
    return step, watchers[0].stop() if watchers else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=lambda s: [int(x) for x in s.split(",")], default=[stream.GOAL_N])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--baseline-command", metavar="CMD", help="mockglot to compare with: CMD serve ...")
    parser.add_argument("--patience", type=float, default=120.0)
    parser.add_argument(
        "--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
        help="niceness of servers, load generators and the watcher (default -10 as root, as bench/stream.py)",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--watch", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--everything", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.watch:
        asyncio.run(watch(args.watch, Path(args.result_file), args.everything))
        return 0
    costs = publish_cost()
    print("per frame:", "; ".join(costs), flush=True)
    step_args = argparse.Namespace(
        duration=args.duration, clients=args.clients, output_pace="realtime",
        nice=args.nice, patience=args.patience, mockglot_command=None, timeline=False,
    )  # fmt: skip
    started = time.monotonic()
    rows: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-inspector-") as tmp:
        logdir = Path(tmp)
        for n in args.ns:
            runs: list[tuple[str, stream.Step, dict[str, Any]]] = []
            if args.baseline_command:
                baseline_args = argparse.Namespace(**{**vars(step_args), "mockglot_command": args.baseline_command})
                runs.append(("baseline", stream.run_step("mockglot", n, baseline_args, logdir), {}))
            runs.append(("unwatched", stream.run_step("mockglot", n, step_args, logdir), {}))
            for label, everything in (("browser", False), ("browser + all events", True)):
                step, seen = watched_step(n, step_args, logdir, everything)
                runs.append((label, step, seen))
            for label, step, seen in runs:
                rows.append(stream.row(step).replace("| mockglot |", f"| mockglot, {label} |", 1))
                print(rows[-1], flush=True)
                if seen:
                    reader = (
                        f"the all-events reader got {seen.get('events', 0)} events ({seen.get('frames', 0)} frames), "
                        f"{seen.get('resyncs', 0)} resync(s); "
                        if label.endswith("all events")
                        else ""
                    )
                    notes.append(
                        f"N={n} {label}: {reader}the session page showed {seen.get('session_page_frames', 0)} "
                        f"frame rows; page errors: {seen.get('page_errors', 0)}; "
                        f"problems: {', '.join(seen.get('problems', [])) or 'none'}"
                    )
                    print(notes[-1], flush=True)
    with open("/proc/loadavg") as loadavg:
        load = " ".join(loadavg.read().split()[:3])
    command = "python bench/inspector.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    section = "\n".join(
        [
            SECTION.rstrip("\n"),
            "",
            f"- Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}; load average after "
            f"the run: {load} (a shared 2-core machine: other sessions' tests ran meanwhile, see 'other CPU')",
            f"- Machine: {stream.machine()}",
            f"- Command: `{command.strip()}` ({(time.monotonic() - started) / 60:.1f} min)",
            "- Calls, lags and the pass rule as in Stream concurrency (bench/stream.py), "
            f"{args.duration:g} s calls, niceness {args.nice} (servers, load generators and watcher). "
            "'browser': headless Chromium on the inspector's Sessions page and on one session's page, in a separate "
            "process competing for the same 2 cores; 'browser + all events': that process also reads the whole "
            "unfiltered event stream with a plain HTTP client.",
            f"- Per frame, in-process (best of 3 x 200,000 frames): {'; '.join(costs)}.",
            "",
            stream.HEADER,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *(f"- {note}" for note in notes),
            "",
        ]
    )
    print()
    print(section)
    if not args.no_write:
        path = ROOT / "bench" / "RESULTS.md"
        text = path.read_text(encoding="utf-8")
        at = text.find("\n" + SECTION)
        if at >= 0:
            end = text.find("\n## ", at + 1)
            text = text[: at + 1] + section.rstrip("\n") + "\n" + (text[end:] if end >= 0 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        path.write_text(text, encoding="utf-8")
        print("written to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
