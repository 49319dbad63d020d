"""Shared state on Redis (#17): what `--state redis://...` costs against the in-memory default, and what a second
worker buys, each measured side by side in one run, interleaved.

    python bench/shared.py                               # all four parts (about 15 minutes)
    python bench/shared.py --parts rest,stream           # only some
    python bench/shared.py --compare-to /path/to/checkout --parts compare

1. rest: CPU per REST round trip (create with an Idempotency-Key, retrieve, end: three requests), one
   `mockglot serve` with `--state memory` against one with `--state redis://...`, sequential (1 connection)
   and concurrent (`--concurrency`), the two modes alternating in turns of `--chunk` round trips (so a slow spell
   of the machine weighs on both). bench/rest.py's hand-written HTTP client; the server's CPU and redis-server's
   from /proc. Servers and Redis on one CPU, this client on the other.
2. stream: mockglot CPU per stream-second, N real-time calls (bench/stream.py's load generator and step:
   12 s calls, lag measured the same way), memory against redis, alternating; Redis's own CPU beside it.
3. workers: the most concurrent real-time calls with p99 lag < 100 ms, `--workers 1` against `--workers 2`
   (both on Redis), climbing a ladder of N in lockstep. Nothing is pinned: with 2 cores, two workers and the
   load generator share them. So each step also reports server CPU per stream-second per worker, Redis's,
   and the load generator's, and the capacity ratio is given both as measured and as projected per core.
   `--core-per-worker` accounts for the load generator's CPU by giving each variant its own share of the
   machine: 1 worker with its load generator and Redis on one core, 2 workers with theirs on two.
4. compare: the in-memory default here against another checkout (`--compare-to DIR`, e.g. a worktree of the
   commit before the shared state), REST round trips and streams as in 1 and 2.

Redis is a `redis-server` started here on a free port without persistence (tests/redis_server.py), emptied
before each stream step. Every figure is a CPU time over the same work in the same run, so the ratios hold on
a busy machine; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import rest, startup, stream  # noqa: E402
from bench.common import heading  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

GOAL_COST = 1.5  # redis / memory, CPU per round trip and per stream-second
GOAL_SCALE = 1.7  # two workers / one, concurrent real-time streams


# --- servers ----------------------------------------------------------------------------------------------


class Redis:
    """A redis-server for the run, pinned with the servers; its CPU time from /proc."""

    def __init__(self, directory: Path, cpus: set[int] | None) -> None:
        self.server = RedisServer(directory)
        self.server.start()
        assert self.server.process is not None
        self.pid = self.server.process.pid
        if cpus:
            os.sched_setaffinity(self.pid, cpus)

    @property
    def url(self) -> str:
        return self.server.url

    def cpu_seconds(self) -> float:
        return startup.cpu_seconds(self.pid)  # nanoseconds (schedstat): a round trip costs Redis ~0.1 ms

    def stop(self) -> None:
        self.server.stop()


class Variant:
    """One way to run `mockglot serve`: which state, how many workers, which checkout."""

    def __init__(self, label: str, state: str = "memory", workers: int = 1, checkout: Path | None = None) -> None:
        self.label = label
        self.state = state
        self.workers = workers
        self.checkout = checkout

    def command(self) -> str:
        """The prefix before `serve` (stream.Server's --mockglot-command): another checkout is imported from
        its own directory (PYTHONSAFEPATH: not from this one, the servers' working directory)."""
        if self.checkout is None:
            return f"{shlex.quote(sys.executable)} -m mockglot"
        checkout = shlex.quote(str(self.checkout))
        return f"env PYTHONSAFEPATH=1 PYTHONPATH={checkout} {shlex.quote(sys.executable)} -m mockglot"


def server_class(variant: Variant, redis: Redis | None, readings: list[tuple[float, float]]) -> type[stream.Server]:
    """stream.Server started as `variant` says, on an empty Redis; each CPU reading the step takes of the server
    also takes Redis's, into `readings` (time, Redis CPU seconds)."""

    class SharedServer(stream.Server):
        def __init__(self, kind: str, args: argparse.Namespace, logdir: Path) -> None:
            args.mockglot_command = variant.command()
            super().__init__(kind, args, logdir)
            self.command += ["--state", variant.state, "--workers", str(variant.workers)]
            self.log = logdir / f"{re.sub(r'[^a-z0-9]+', '-', variant.label.lower())}-{time.strftime('%H%M%S')}.log"

        def __enter__(self) -> stream.Server:
            if redis is not None and variant.state != "memory":
                redis.server.flush()
            return super().__enter__()

        def cpu_seconds(self) -> float:
            shared = redis is not None and variant.state != "memory"
            readings.append((time.monotonic(), redis.cpu_seconds() if shared else 0.0))
            return super().cpu_seconds()

    return SharedServer


# --- 1 and 4: REST round trips ------------------------------------------------------------------------------


async def round_trip(conn: rest.Connection) -> None:
    """Create (with an Idempotency-Key), retrieve, end."""
    key = f"Idempotency-Key: {secrets.token_hex(12)}\r\n"
    status, body = await conn.request("POST", "/v1/sessions", rest.BODY, key)
    rest.expect(status, 201, body)
    session_id = json.loads(body)["id"]
    status, body = await conn.request("GET", f"/v1/sessions/{session_id}")
    rest.expect(status, 200, body)
    status, body = await conn.request("POST", f"/v1/sessions/{session_id}/end")
    rest.expect(status, 200, body)


async def rest_load(port: int, round_trips: int, concurrency: int) -> None:
    connections = [rest.Connection(port, f"sk_test_bench{secrets.token_hex(8)}") for _ in range(concurrency)]
    for conn in connections:
        await conn.open()
    remaining = round_trips

    async def worker(conn: rest.Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await round_trip(conn)

    await asyncio.gather(*(worker(conn) for conn in connections))
    for conn in connections:
        conn.close()


def rest_part(
    variants: list[Variant], redis: Redis | None, args: argparse.Namespace, logdir: Path
) -> dict[tuple[str, int], list[tuple[float, float, float]]]:
    """Per (variant, concurrency): each repeat's (server CPU ms, Redis CPU ms, wall ms) per round trip."""
    readings: list[tuple[float, float]] = []
    servers = {}
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for variant in variants:
            server = server_class(variant, redis, readings)("mockglot", args, logdir)
            servers[variant.label] = server.__enter__()
        for variant in variants:  # warm-up: imports, first connections, caches
            port = int(servers[variant.label].base_url.rsplit(":", 1)[1])
            asyncio.run(rest_load(port, args.warmup, max(args.concurrency)))
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                totals = {variant.label: [0.0, 0.0, 0.0] for variant in variants}  # server CPU, Redis CPU, wall
                chunks = max(1, args.round_trips // args.chunk)
                for chunk in range(chunks):  # in turns of `--chunk`: a slow spell of the machine hits both
                    order = variants if (repeat + chunk) % 2 == 0 else variants[::-1]
                    for variant in order:
                        server = servers[variant.label]
                        port = int(server.base_url.rsplit(":", 1)[1])
                        cpu0, redis0, wall0 = server.cpu_seconds(), readings[-1][1], time.perf_counter()
                        asyncio.run(rest_load(port, args.chunk, concurrency))
                        total = totals[variant.label]
                        total[2] += time.perf_counter() - wall0
                        total[0] += server.cpu_seconds() - cpu0
                        total[1] += readings[-1][1] - redis0
                for variant in variants:
                    cpu, redis_cpu, wall = totals[variant.label]
                    count = chunks * args.chunk
                    each = (cpu * 1000 / count, redis_cpu * 1000 / count)
                    results.setdefault((variant.label, concurrency), []).append((*each, wall * 1000 / count))
                    print(
                        f"  rest repeat {repeat + 1} c={concurrency:<3d} {variant.label:24s} server {each[0]:.3f} "
                        f"ms, redis {each[1]:.3f} ms CPU per round trip; {count / wall:.0f} round trips/s",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    return results


def rest_table(
    results: dict[tuple[str, int], list[tuple[float, float, float]]], variants: list[Variant], args: argparse.Namespace
) -> list[str]:
    base, other = variants[0].label, variants[1].label
    lines = [
        f"| connections | {base}: server CPU / round trip | {other}: server CPU | {other}: redis-server CPU "
        f"| ratio server | ratio incl. Redis | {base}: round trips/s | {other}: round trips/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for concurrency in args.concurrency:
        a, b = results[(base, concurrency)], results[(other, concurrency)]
        ratio = [y[0] / x[0] for x, y in zip(a, b, strict=True)]
        total = [(y[0] + y[1]) / (x[0] + x[1]) for x, y in zip(a, b, strict=True)]

        def med(rows: list[tuple[float, float, float]], i: int) -> float:
            return statistics.median(r[i] for r in rows)

        lines.append(
            f"| {concurrency} | {med(a, 0):.3f} ms | {med(b, 0):.3f} ms | {med(b, 1):.3f} ms "
            f"| **{statistics.median(ratio):.2f}** ({', '.join(f'{r:.2f}' for r in ratio)}) "
            f"| **{statistics.median(total):.2f}** ({', '.join(f'{r:.2f}' for r in total)}) "
            f"| {1000 / med(a, 2):.0f} | {1000 / med(b, 2):.0f} |"
        )
    return lines


# --- 2, 3 and 4: streams ----------------------------------------------------------------------------------


def stream_step(
    variant: Variant, n: int, redis: Redis | None, args: argparse.Namespace, logdir: Path
) -> tuple[stream.Step, float]:
    """One bench/stream.py step against `variant`; the step and Redis's CPU (% of a core) over its window."""
    readings: list[tuple[float, float]] = []
    step = stream.run_step("mockglot", n, args, logdir, server_class=server_class(variant, redis, readings))
    (t0, r0), (t1, r1) = readings[-2], readings[-1]
    redis_cpu = (r1 - r0) / (t1 - t0) * 100 if t1 > t0 else 0.0
    print(row(step, variant.label), f" redis {redis_cpu:.0f}%  [{step.seconds:.0f} s]", flush=True)
    return step, redis_cpu


def row(step: stream.Step, label: str) -> str:
    """bench/stream.py's row of a mockglot step, named by its variant."""
    return stream.row(step).replace("| mockglot |", f"| {label} |", 1)


def per_stream_second(step: stream.Step, cpu_percent: float) -> float:
    """ms of CPU per stream-second from % of a core over the steady window."""
    return cpu_percent * 10 / step.n


def cost_part(
    variants: list[Variant], n: int, redis: Redis | None, args: argparse.Namespace, logdir: Path
) -> list[str]:
    """Server CPU per stream-second, variants[1] against variants[0], `args.repeats` alternating rounds."""
    rows: dict[str, list[tuple[stream.Step, float]]] = {v.label: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            rows[variant.label].append(stream_step(variant, n, redis, args, logdir))
    base, other = variants[0].label, variants[1].label
    lines = [
        stream.HEADER.replace("| finals |", "| redis-server CPU | finals |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in (base, other):
        for step, redis_cpu in rows[label]:
            cells = row(step, label).rsplit(" | ", 2)
            lines.append(f"{cells[0]} | {redis_cpu:.0f}% | {cells[1]} | {cells[2]}")
    pairs = list(zip(rows[base], rows[other], strict=True))
    ratio = [per_stream_second(b, b.server_cpu) / per_stream_second(a, a.server_cpu) for (a, _), (b, _) in pairs]
    total = [
        per_stream_second(b, b.server_cpu + rb) / per_stream_second(a, a.server_cpu + ra) for (a, ra), (b, rb) in pairs
    ]
    a_ms = statistics.median(per_stream_second(s, s.server_cpu) for s, _ in rows[base])
    b_ms = statistics.median(per_stream_second(s, s.server_cpu) for s, _ in rows[other])
    r_ms = statistics.median(per_stream_second(s, r) for s, r in rows[other])
    lines += [
        "",
        f"- Server CPU per stream-second at N={n}: {base} {a_ms:.2f} ms, {other} {b_ms:.2f} ms (redis-server "
        f"{r_ms:.2f} ms more); ratio **{statistics.median(ratio):.2f}** ({', '.join(f'{r:.2f}' for r in ratio)}), "
        f"with Redis **{statistics.median(total):.2f}** ({', '.join(f'{r:.2f}' for r in total)})",
    ]
    return lines


def workers_part(redis: Redis, args: argparse.Namespace, logdir: Path) -> list[str]:
    """--workers 1 against --workers 2 on Redis, climbing `args.ladder` in lockstep until each fails: unpinned, or
    (`--core-per-worker`) each variant with as many cores as workers, its load generator and Redis on them too."""
    variants = [Variant("redis, 1 worker", redis.url, 1), Variant("redis, 2 workers", redis.url, 2)]
    pinned = args.server_cpus, args.client_cpus

    def cpus(variant: Variant) -> set[int]:
        # Every CPU, said outright: this process runs pinned to the client's CPU, and a child inherits that.
        return set(sorted(args.all_cpus)[-variant.workers :]) if args.core_per_worker else args.all_cpus

    steps: dict[str, list[tuple[stream.Step, float]]] = {v.label: [] for v in variants}
    redis_cpu: dict[int, float] = {}  # each step's (by id) Redis CPU
    climbing = list(variants)
    try:
        for index, n in enumerate(args.ladder):
            for variant in climbing if index % 2 == 0 else climbing[::-1]:
                args.server_cpus = args.client_cpus = cpus(variant)
                os.sched_setaffinity(redis.pid, cpus(variant))

                def measure(variant: Variant = variant, n: int = n) -> stream.Step:
                    step, redis_cpu[id(step)] = stream_step(variant, n, redis, args, logdir)
                    return step

                # A failed step runs once more, whatever else the machine did: near the limit one stall of the
                # machine decides the p99, and the limit is what this part measures (alike for both variants).
                step = stream.rerun_if_noisy(measure, None)
                steps[variant.label].append((step, redis_cpu[id(step)]))
            climbing = [v for v in climbing if steps[v.label][-1][0].passed]
            if not climbing:
                break
    finally:
        args.server_cpus, args.client_cpus = pinned
        if pinned[0]:
            os.sched_setaffinity(redis.pid, pinned[0])
    lines = [
        "| server | N | p99 lag ping / event (ms) | late send p99 (ms) | server CPU (all workers) "
        "| server CPU / stream-s | redis-server CPU (/ stream-s) | load-gen CPU (/ stream-s) | other CPU | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    best: dict[str, int] = {}
    for variant in variants:
        for step, redis_cpu in steps[variant.label]:
            if step.passed:
                best[variant.label] = max(best.get(variant.label, 0), step.n)
            lines.append(
                f"| {variant.label} | {step.n} | {stream.fmt(step.ping_p99)} / {stream.fmt(step.event_p99)} "
                f"| {stream.fmt(step.late_p99)} | {step.server_cpu:.0f}% "
                f"({step.server_cpu / variant.workers:.0f}% each) | {per_stream_second(step, step.server_cpu):.2f} ms "
                f"| {redis_cpu:.0f}% ({per_stream_second(step, redis_cpu):.2f} ms) "
                f"| {step.client_cpu:.0f}% ({per_stream_second(step, step.client_cpu):.2f} ms) "
                f"| {step.other_cpu:.0f}% | {'pass' if step.passed else 'FAIL'}"
                f"{' (' + '; '.join(step.problems) + ')' if step.problems else ''} |"
            )
    one, two = (best.get(v.label, 0) for v in variants)
    lines.append("")
    where = (
        "each variant on as many cores as it has workers, its load generator and Redis with it"
        if args.core_per_worker
        else "on this machine's cores, unpinned, the load generator on the same cores"
    )
    lines.append(
        f"- Largest N with p99 < 100 ms (ladder {', '.join(map(str, args.ladder))}): 1 worker **{one}**, "
        f"2 workers **{two}**: measured ratio **{two / one if one else float('nan'):.2f}**, {where}"
    )
    # Projections from CPU per stream-second (ms per second of one call) at the largest N both passed (a failed
    # step is one starved of CPU, its figures not the server's): capacity is the CPU available over the CPU a
    # stream-second needs (lag limits come before 100% of a core, alike for both).
    common = [n for n in args.ladder if all(any(s.n == n and s.passed for s, _ in steps[v.label]) for v in variants)]
    if common:
        n = max(common)
        (s1, r1), (s2, r2) = (next((s, r) for s, r in steps[v.label] if s.n == n and s.passed) for v in variants)
        cost1, cost2 = per_stream_second(s1, s1.server_cpu), per_stream_second(s2, s2.server_cpu)
        redis1, redis2 = per_stream_second(s1, r1), per_stream_second(s2, r2)
        gen = statistics.median([per_stream_second(s, s.client_cpu) for s in (s1, s2)])
        own_cores = 2 * cost1 / cost2
        own_cores_redis = 2 * (cost1 + redis1) / (cost2 + redis2)
        lines.append(
            f"- CPU per stream-second at N={n}: 1 worker {cost1:.2f} ms (+ Redis {redis1:.2f}), 2 workers "
            f"{cost2:.2f} ms together (+ Redis {redis2:.2f}); load generator {gen:.2f} ms. Projected per core at "
            f"equal N, each worker on a core of its own and the load generator elsewhere: **{own_cores:.2f}x** "
            f"({own_cores_redis:.2f}x with Redis's CPU counted)"
        )
        # A worker's CPU per stream-second falls as its own load grows (more work per turn of its event loop):
        # compare two workers at N with one worker at N/2, the same streams per worker.
        halves = [
            (s, r, h, hr)
            for s, r in steps[variants[1].label]
            for h, hr in steps[variants[0].label]
            if s.passed and h.passed and 2 * h.n == s.n
        ]
        for s, r, h, hr in halves:
            cost_two, cost_one = per_stream_second(s, s.server_cpu + r), per_stream_second(h, h.server_cpu + hr)
            lines.append(
                f"- Same streams per worker: 2 workers at N={s.n} {cost_two:.2f} ms per stream-second with Redis, "
                f"1 worker at N={h.n} {cost_one:.2f} ms: two workers cost {cost_two / cost_one:.2f}x as much per "
                f"stream as one worker carrying as many, so N on two cores of their own scales by "
                f"**{2 * cost_one / cost_two:.2f}x** per the CPU"
            )
        budget = max((s for s, _ in steps[variants[1].label] if s.passed), key=lambda s: s.n)
        lines.append(
            f"- The machine at the 2-worker limit (N={budget.n}): servers {budget.server_cpu:.0f}%, load generator "
            f"{budget.client_cpu:.0f}%, other processes {budget.other_cpu:.0f}% of the 2 cores' 200%"
        )
    return lines


# --- the run ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=lambda s: s.split(","), default=["rest", "stream", "workers", "compare"])
    parser.add_argument("--round-trips", type=int, default=2000, help="per REST run (default 2000)")
    parser.add_argument(
        "--chunk", type=int, default=250, help="REST round trips per turn: the variants alternate (default 250)"
    )
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of each comparison (default 3)")
    parser.add_argument("--streams", type=int, default=100, help="N for the CPU per stream-second (default 100)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of audio per call (default 12)")
    parser.add_argument(
        "--ladder", type=lambda s: [int(x) for x in s.split(",")], default=[100, 200, 300, 400, 500, 600, 800]
    )
    parser.add_argument(
        "--core-per-worker",
        action="store_true",
        help="part 3: 1 worker on one core and 2 on two, each with its load generator and Redis on the same cores",
    )
    parser.add_argument("--compare-to", type=Path, metavar="DIR", help="part 4: the other checkout")
    parser.add_argument("--patience", type=float, default=10.0, help="seconds to wait for a quiet machine per step")
    parser.add_argument("--logs", metavar="DIR")
    args = parser.parse_args(argv)
    if "compare" in args.parts and args.compare_to is None:
        args.parts.remove("compare")
    # What bench/stream.py's step reads of its arguments.
    args.nice = -10 if os.geteuid() == 0 else 0
    args.output_pace, args.clients, args.timeline = "realtime", 2, False
    cpus = sorted(os.sched_getaffinity(0))
    args.all_cpus = set(cpus)
    args.server_cpus = {cpus[-1]} if len(cpus) >= 2 else None
    args.client_cpus = set(cpus[:-1]) if len(cpus) >= 2 else None
    if args.client_cpus:
        os.sched_setaffinity(0, args.client_cpus)  # this process is the REST client
    print(heading("shared.py"))
    print("command: python bench/shared.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])), flush=True)
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        logdir = Path(args.logs or tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        redis = Redis(Path(tmp), args.server_cpus)
        try:
            memory, shared = Variant("memory"), Variant("redis", redis.url)
            if "rest" in args.parts:
                table = rest_table(rest_part([memory, shared], redis, args, logdir), [memory, shared], args)
                out += ["", f"1. REST, CPU per round trip ({heading('shared.py')[2:]})", "", *table]
            if "stream" in args.parts:
                lines = cost_part([memory, shared], args.streams, redis, args, logdir)
                out += ["", f"2. Streams, CPU per stream-second ({heading('shared.py')[2:]})", "", *lines]
            if "workers" in args.parts:
                lines = workers_part(redis, args, logdir)
                out += ["", f"3. One worker against two ({heading('shared.py')[2:]})", "", *lines]
            if "compare" in args.parts:
                before = Variant(f"memory at {args.compare_to}", checkout=args.compare_to.resolve())
                table = rest_table(rest_part([before, memory], None, args, logdir), [before, memory], args)
                lines = cost_part([before, memory], args.streams, None, args, logdir)
                out += ["", f"4. In memory, against {args.compare_to} ({heading('shared.py')[2:]})", "", *table, ""]
                out += lines
        finally:
            redis.stop()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
