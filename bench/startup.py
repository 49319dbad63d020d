"""Start-up: process start to the first 200 from the health route, `mockglot serve` against a bare uvicorn +
Starlette app.

    python bench/startup.py                  # 10 starts of each, alternated; medians
    python bench/startup.py --starts 20 --no-pin

Both are a fresh `python` process on the same interpreter (`python -m mockglot serve` and `python bench/startup.py
bare`), uvicorn with the same defaults. This process polls `GET /_mockglot/health` (bare: `/health`) on a raw
socket every 2 ms from the moment it spawned the server, and stops the server once it has answered 200; the
server's CPU time by then (its threads' schedstat in /proc) is reported too, since on a loaded machine it moves far less
than wall time. Both servers are pinned to one CPU (the poller to another) unless `--no-pin`. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import heading  # noqa: E402
from tests.ports import free_port  # noqa: E402


def serve_bare(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request: object) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/health", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_ping_interval=None)


def first_200(port: int, path: str, deadline: float) -> bool:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.002)
    return False


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far, all threads: schedstat's nanoseconds where the kernel keeps them (stat's
    utime+stime count 10 ms ticks, too coarse for a start of ~100 ms)."""
    try:
        return (
            sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
        )
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_once(kind: str, cpu: int | None, checkouts: dict[str, Path] | None = None) -> tuple[float, float]:
    """(wall seconds to the first 200, the server's CPU seconds by then); `checkouts`: where each mockglot kind
    other than this checkout's is imported from."""
    port = free_port()
    checkout = (checkouts or {}).get(kind, ROOT)
    if kind == "bare":
        command = [sys.executable, __file__, "bare", str(port)]
        path = "/health"
    else:
        command = [sys.executable, "-m", "mockglot", "serve", "--host", "127.0.0.1", "--port", str(port)]
        path = "/_mockglot/health"
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    # Bytecode is written (the warm-up start does it): an installed package has its .pyc files, and a stale
    # one recompiled at every start would measure the checkout, not the server.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(checkout)
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        if not first_200(port, path, start + 30):
            raise SystemExit(f"{kind} never answered 200: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        return time.perf_counter() - start, cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bare"]:
        serve_bare(int(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="leave CPU placement to the scheduler")
    parser.add_argument(
        "--compare-to",
        metavar="DIR",
        type=Path,
        help="analysis: also start the mockglot of another checkout (e.g. a worktree of main), in the same rotation",
    )
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if args.pin and hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if len(cpus) >= 2 else None
    if server_cpu is not None:
        os.sched_setaffinity(0, {cpus[0]})
    kinds = ["bare", "mockglot"]
    checkouts = {}
    if args.compare_to is not None:
        kinds.append(f"mockglot at {args.compare_to}")
        checkouts[kinds[-1]] = args.compare_to.resolve()
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    for kind in times:  # one warm-up each: the page cache, not the code, would decide the first start
        start_once(kind, server_cpu, checkouts)
    for _ in range(args.starts):
        for kind, series in times.items():
            wall, used = start_once(kind, server_cpu, checkouts)
            series.append(wall)
            cpu[kind].append(used)
    bare = statistics.median(times["bare"])
    bare_cpu = statistics.median(cpu["bare"])
    print(heading("startup.py"))
    print(f"{args.starts} starts each, alternated; servers pinned: {server_cpu if server_cpu is not None else 'no'}")
    print()
    print("| server | median to first 200 | min | max | ratio to bare | server CPU by then (median) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for kind, series in times.items():
        median = statistics.median(series)
        used = statistics.median(cpu[kind])
        print(
            f"| {kind} | {median * 1000:.0f} ms | {min(series) * 1000:.0f} ms | {max(series) * 1000:.0f} ms | "
            f"**{median / bare:.2f}** | {used * 1000:.0f} ms | **{used / bare_cpu:.2f}** |"
        )
    ratios = [m / b for b, m in zip(times["bare"], times["mockglot"], strict=True)]
    print(f"\nper-start ratios: {', '.join(f'{r:.2f}' for r in ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
