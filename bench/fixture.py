"""The pytest fixture's cost per test: mockglot's `mockglot` fixture against pytest-httpserver and no fixture.

    python bench/fixture.py                  # 200 tests per run, 3 repeats, pinned to one CPU
    python bench/fixture.py --tests 500 --repeats 5

Requires pytest-httpserver (`pip install pytest-httpserver`; only this bench uses it).

Each variant is a generated test file of N tests run by `python -m pytest` in a subprocess (xdist, randomly and
the cache off). A conftest times every test's whole protocol (setup, call, teardown) and writes the sum over the
tests after the first, so the once-per-run start (imports, the in-process server, the httpserver thread) is
reported apart as "first test". Variants, alternated within each repeat so drift hits all alike:

- `none`: `def test(): pass`, the baseline every other figure is given over;
- `mockglot`: `def test(mockglot)` making one request (`mockglot.client.get_session` of an unknown ID: a 404);
- `httpserver`: pytest-httpserver's shared `httpserver` fixture (one server, cleared after each test), one
  `expect_request` and one request through a module-level httpx client;
- `httpserver-function`: a function-scoped `HTTPServer` started and stopped per test, one request.

The figure is (sum of per-test times - the baseline's) / (N - 1): what the fixture and its one request cost a
test. The CPU column is the same from `time.process_time()` of the pytest process, which holds both in-process
servers (mockglot's thread, pytest-httpserver's thread): on a loaded machine it moves far less than wall time.
Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import heading  # noqa: E402

CONFTEST = """
import json, os, time
import pytest

_times = []

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start, cpu = time.perf_counter(), time.process_time()
    yield
    _times.append((time.perf_counter() - start, time.process_time() - cpu))

def pytest_sessionfinish(session):
    with open(os.environ["FIXTURE_BENCH_OUT"], "w") as out:
        json.dump(_times, out)
"""

HEADER = {
    "none": "",
    "mockglot": "import pytest\nfrom mockglot.testing.client import KallglotError\n",
    "httpserver": "import httpx\nCLIENT = httpx.Client()\n",
    "httpserver-function": textwrap.dedent(
        """
        import httpx, pytest
        from pytest_httpserver import HTTPServer
        CLIENT = httpx.Client()

        @pytest.fixture
        def server():
            server = HTTPServer()
            server.start()
            yield server
            server.clear()
            server.stop()
        """
    ),
}

BODY = {
    "none": "def test_{n}():\n    pass\n",
    "mockglot": (
        "def test_{n}(mockglot):\n"
        "    with pytest.raises(KallglotError):\n"
        "        mockglot.client.get_session('ses_missing')\n"
    ),
    "httpserver": (
        "def test_{n}(httpserver):\n"
        "    httpserver.expect_request('/v1/sessions/x').respond_with_json({{}})\n"
        "    assert CLIENT.get(httpserver.url_for('/v1/sessions/x')).status_code == 200\n"
    ),
    "httpserver-function": (
        "def test_{n}(server):\n"
        "    server.expect_request('/v1/sessions/x').respond_with_json({{}})\n"
        "    assert CLIENT.get(server.url_for('/v1/sessions/x')).status_code == 200\n"
    ),
}


def write_project(root: Path, variant: str, tests: int) -> Path:
    directory = root / variant
    directory.mkdir()
    (directory / "conftest.py").write_text(CONFTEST)
    source = HEADER[variant] + "\n" + "\n".join(BODY[variant].format(n=n) for n in range(tests))
    (directory / "test_generated.py").write_text(source)
    return directory


def run_variant(directory: Path, cpu: int | None) -> tuple[float, list[list[float]]]:
    """(wall seconds of the pytest process, per-test [wall, CPU] seconds)."""
    out = directory / "times.json"
    env = {**os.environ, "FIXTURE_BENCH_OUT": str(out), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist", "-p", "no:cacheprovider"]
    command += ["-o", "asyncio_default_fixture_loop_scope=function", str(directory)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{directory.name}: pytest failed\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="none,mockglot,httpserver,httpserver-function")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="leave CPU placement to the scheduler")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if "none" not in variants:
        variants.insert(0, "none")
    cpus = sorted(os.sched_getaffinity(0)) if args.pin and hasattr(os, "sched_getaffinity") else []
    cpu = cpus[-1] if cpus else None
    per_test: dict[str, list[float]] = {v: [] for v in variants}
    per_test_cpu: dict[str, list[float]] = {v: [] for v in variants}
    first: dict[str, list[float]] = {v: [] for v in variants}
    wall: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        projects = {v: write_project(Path(tmp), v, args.tests) for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                seconds, times = run_variant(projects[variant], cpu)
                wall[variant].append(seconds)
                first[variant].append(times[0][0])
                per_test[variant].append(sum(t[0] for t in times[1:]) / (len(times) - 1))
                per_test_cpu[variant].append(sum(t[1] for t in times[1:]) / (len(times) - 1))
    base = statistics.median(per_test["none"])
    base_cpu = statistics.median(per_test_cpu["none"])
    print(heading("fixture.py"))
    print(f"{args.tests} tests per run, {args.repeats} repeats, pinned: {f'CPU {cpu}' if cpu is not None else 'no'}")
    print()
    print(
        "| variant | per test (median) | over no fixture | each repeat over its own baseline | CPU over no fixture "
        "| first test | wall |"
    )
    print("|---|---|---|---|---|---|---|")
    for variant in variants:
        median = statistics.median(per_test[variant])
        repeats = ", ".join(
            f"{(mine - none) * 1000:.2f}" for mine, none in zip(per_test[variant], per_test["none"], strict=True)
        )
        cpu_over = (statistics.median(per_test_cpu[variant]) - base_cpu) * 1000
        print(
            f"| {variant} | {median * 1000:.2f} ms | **{(median - base) * 1000:.2f} ms** | {repeats} | "
            f"{cpu_over:.2f} ms | {statistics.median(first[variant]) * 1000:.0f} ms | "
            f"{statistics.median(wall[variant]):.2f} s |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
