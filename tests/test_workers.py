"""`mockglot serve --workers N --state redis://...`: the settings and their errors, and N real worker processes
on one port under uvicorn's supervisor (a killed one replaced, SIGTERM stopping all of them with exit 0)."""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import msgspec
import pytest
import yaml
from uvicorn.config import STARTUP_FAILURE
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from mockglot.cli import main
from mockglot.settings import Settings, from_env, redact
from mockglot.testing.client import audio_frame, utterance
from mockglot.transport import HttpProtocol, WebSocketProtocol, WorkerConfig, worker_config
from tests.ports import free_port
from tests.shared_workers import on

ROOT = Path(__file__).resolve().parent.parent
WAIT_SECONDS = 60.0  # how long a wait for a process may take on a loaded machine before the test gives up
ATTEMPTS = 400  # requests on new connections before concluding a second worker never answers


def test_an_unreachable_state_store_exits_2_naming_the_url_without_its_password(capsys):
    port = free_port()
    assert main(["serve", "--port", "0", "--state", f"redis://:s3cret@127.0.0.1:{port}/0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mockglot: cannot reach the state store at redis://:***@127.0.0.1:{port}/0: ")
    assert "Start Redis (or Valkey) there, or drop --state to keep state in memory" in err
    assert "s3cret" not in err


def test_several_workers_without_a_shared_state_exit_2_saying_how_to_fix_it(capsys):
    assert main(["serve", "--port", "0", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mockglot: --workers 2: several workers need a shared state")
    assert "--state redis://localhost:6379/0" in err


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MOCKGLOT_WORKERS": "0"}, "invalid setting MOCKGLOT_WORKERS='0': expected a whole number from 1 to 64"),
        ({"MOCKGLOT_WORKERS": "65"}, "invalid setting MOCKGLOT_WORKERS='65': expected a whole number from 1 to 64"),
        ({"MOCKGLOT_STATE": "redis"}, "invalid setting MOCKGLOT_STATE='redis': expected memory or a Redis URL"),
        ({"MOCKGLOT_STATE": "http://h:6379"}, "invalid setting MOCKGLOT_STATE='http://h:6379': expected memory or"),
        ({"MOCKGLOT_STATE": "redis://h:port/0"}, "invalid setting MOCKGLOT_STATE='redis://h:port/0': expected"),
        ({"MOCKGLOT_STATE": "redis://:pw@h/x"}, "invalid setting MOCKGLOT_STATE='redis://:***@h/x': expected"),
        ({"MOCKGLOT_WORKERS": "3"}, "MOCKGLOT_WORKERS='3': several workers need a shared state"),
    ],
)
def test_bad_state_and_workers_settings_name_the_variable_and_what_is_valid(environ, message):
    with pytest.raises(ValueError) as raised:
        from_env(environ)
    assert str(raised.value).startswith(message)
    assert "pw@" not in str(raised.value)


def test_the_state_urls_redis_py_takes_are_accepted():
    for url in ("redis://localhost", "redis://r:6379/0", "rediss://u:p@r:6380/15", "unix:///run/redis.sock?db=2"):
        assert from_env({"MOCKGLOT_STATE": url, "MOCKGLOT_WORKERS": "4"}).state == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:secret@host/1", "redis://user:***@host/1"),
        ("redis://user:se/cr@t@host/1", "redis://user:***@host/1"),
        ("redis://secret@host", "redis://***@host"),
        ("unix:///run/redis.sock?db=1&password=secret", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_a_state_url_is_shown_without_its_password(url, shown):
    assert redact(url) == shown


def test_one_worker_answers_health_with_its_own_pid(server):
    health = httpx.get(f"{server.base_url}/_mockglot/health").json()
    assert health["pid"] == os.getpid() and health["workers"] == 1  # the server thread is in this process
    assert health["hostname"] == socket.gethostname()


def test_a_worker_gets_the_settings_and_builds_a_full_mockglot_config_of_its_own():
    settings = Settings(port=8123, workers=3, state="redis://127.0.0.1:6379/0", max_connections=77)
    config = pickle.loads(pickle.dumps(WorkerConfig(settings)))  # what the supervisor's spawn does
    assert issubclass(config.http, HttpProtocol) and config.ws is WebSocketProtocol
    state = config.app.state.mockglot
    assert state.settings == settings and state.connections.limit == 77


def test_a_worker_that_cannot_build_the_app_exits_with_uvicorns_startup_failure_code(tmp_path, capsys):
    """So the supervisor stops (and serve exits 1) instead of restarting it forever."""
    missing = tmp_path / "keys.yaml"
    with pytest.raises(SystemExit) as exited:
        worker_config(msgspec.json.encode(Settings(keys=str(missing), workers=2)), {})
    assert exited.value.code == STARTUP_FAILURE
    assert f"mockglot: worker {os.getpid()} cannot start: " in capsys.readouterr().err


# ---- real processes ------------------------------------------------------------------------------------------


class Workers:
    """A `mockglot serve --workers N` process; its output goes to a file (a pipe could fill and block it)."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, output: Path) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self.output = output

    @property
    def log(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def health(self) -> dict:
        with httpx.Client() as client:  # a new connection each time: the kernel picks the worker that accepts
            response = client.get(f"{self.base_url}/_mockglot/health", timeout=10)
        assert response.status_code == 200
        return response.json()

    def pids_answering(self, wanted: int) -> set[int]:
        """The worker pids seen over new connections until `wanted` distinct ones answered."""
        seen: set[int] = set()
        for _ in range(ATTEMPTS):
            seen.add(self.health()["pid"])
            if len(seen) >= wanted:
                return seen
        raise AssertionError(f"only {sorted(seen)} answered in {ATTEMPTS} requests:\n{self.log[-3000:]}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(WAIT_SECONDS)


@contextmanager
def workers(tmp_path: Path, *flags: str) -> Iterator[Workers]:
    port = free_port()
    output = tmp_path / "serve.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "mockglot", "serve", "--port", str(port), *flags],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    running = Workers(process, port, output)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            assert process.poll() is None, f"mockglot serve exited {process.returncode}:\n{running.log}"
            try:
                running.health()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"mockglot serve did not answer:\n{running.log}"
                time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            for pid in descendants(process.pid):
                _kill(pid)
            process.kill()
            process.wait(WAIT_SECONDS)


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (workers, multiprocessing's resource tracker), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[0] != "Z":
            parents[int(entry.name)] = stat[1]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return state, int(ppid)


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has exited; its new parent reaps it


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_gone(pids: set[int]) -> set[int]:
    """The pids still alive once all are gone or the wait runs out."""
    deadline = time.monotonic() + WAIT_SECONDS
    while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_two_workers_answer_from_two_pids_and_sigterm_stops_all_with_exit_0(tmp_path, redis_url):
    with workers(tmp_path, "--workers", "2", "--state", redis_url) as running:
        pids = running.pids_answering(2)
        health = running.health()
        assert health["workers"] == 2 and health["status"] == "ok"
        below = descendants(running.process.pid)
        assert pids <= below
        code = running.stop()
    assert code == 0, running.log
    assert wait_gone(below) == set(), f"left behind after the parent exited:\n{running.log[-3000:]}"
    log = running.log
    assert "  workers:       2 processes on one port, state in " + redis_url in log
    assert "Traceback" not in log


def test_a_killed_worker_is_replaced_and_health_keeps_answering(tmp_path, redis_url):
    with workers(tmp_path, "--workers", "2", "--state", redis_url) as running:
        first = running.pids_answering(2)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        assert wait_gone({victim}) == set()
        seen: set[int] = set()
        deadline = time.monotonic() + WAIT_SECONDS
        while not seen - first:  # until the replacement answers
            assert time.monotonic() < deadline, f"no new worker answered; seen {sorted(seen)}:\n{running.log}"
            seen.add(running.health()["pid"])  # every request in between is answered by the survivor
        assert victim not in seen
        assert len(first - {victim} | (seen - first)) == 2
        assert running.stop() == 0
    assert f"Child process [{victim}] died" in running.log


def test_the_scale_compose_file_puts_every_replica_on_redis_and_behind_the_balancer():
    """The file parses and its parts agree (running it builds three images; it was run by hand, see
    docs/deploy.md): each replica shares the one Redis and runs several workers, the balancer waits for and
    lists exactly the replicas, and the README shows the command."""
    spec = yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text(encoding="utf-8"))
    services = spec["services"]
    replicas = sorted(name for name in services if name.startswith("mockglot-"))
    assert len(replicas) >= 2 and "redis" in services
    for name in replicas:
        environment = services[name]["environment"]
        assert environment["MOCKGLOT_STATE"] == "redis://redis:6379/0"
        assert from_env(environment).workers > 1  # and the settings take them
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert sorted(services["balancer"]["depends_on"]) == replicas
    nginx = (ROOT / "deploy/nginx.conf").read_text(encoding="utf-8")
    assert sorted(re.findall(r"^\s*server (\S+):8080;", nginx, re.M)) == replicas
    for name in ("redis", "balancer"):
        assert (ROOT / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]).exists()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docker compose -f docker-compose.scale.yml up --build" in readme
    assert "docs/deploy.md" in readme and (ROOT / "docs/deploy.md").exists()


def test_sigterm_closes_a_workers_streams_with_1012_and_leaves_their_sessions_live(tmp_path, redis_url):
    """What SIGTERM does to one worker's streams, it does to every worker's (the supervisor passes it on); with
    the state in Redis the sessions outlive the processes, so a client is told to reconnect, not that it ended."""
    with workers(tmp_path, "--workers", "2", "--state", redis_url, "--output-pace", "instant") as running:
        with _stream_on_some_worker(running) as (ws, session_id):
            running.process.send_signal(signal.SIGTERM)
            told = msgspec.json.decode(ws.recv(WAIT_SECONDS))
            with pytest.raises(ConnectionClosed):
                ws.recv(WAIT_SECONDS)
            close_code = ws.close_code
        code = running.process.wait(WAIT_SECONDS)
    assert told["type"] == "session.error" and told["session_id"] == session_id
    assert told["error"]["code"] == "service_unavailable" and "reconnect" in told["error"]["message"]
    assert close_code == 1012 and code == 0
    assert "Traceback" not in running.log


def test_a_rolling_restart_moves_a_live_stream_to_another_worker(tmp_path, redis_url):
    """SIGTERM to one of two servers sharing a Redis: its client reconnects on the other and the call goes on,
    with what it said before the restart kept."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    auth = {"Authorization": "Bearer sk_test_rollingrestart1"}
    flags = ("--state", redis_url, "--output-pace", "instant", "--seed", "5")
    with workers(tmp_path / "a", *flags) as a, workers(tmp_path / "b", *flags) as b:
        session = httpx.post(f"{a.base_url}/v1/sessions", json={"mode": "bidirectional_translation"}, headers=auth)
        assert session.status_code == 201, session.text
        session = session.json()
        with connect(f"{session['stream']['url']}?token={session['stream']['token']}") as ws:
            assert msgspec.json.decode(ws.recv(WAIT_SECONDS))["type"] == "session.ready"
            ws.send(audio_frame("customer", 1, utterance(1500)))
            while msgspec.json.decode(ws.recv(WAIT_SECONDS))["type"] != "transcript.final":
                pass
            a.process.send_signal(signal.SIGTERM)
            while (told := msgspec.json.decode(ws.recv(WAIT_SECONDS)))["type"] != "session.error":
                assert told["type"] == "audio.output", told  # the turn's speech, sent at once
            with pytest.raises(ConnectionClosed):
                ws.recv(WAIT_SECONDS)
            assert (told["error"]["code"], ws.close_code) == ("service_unavailable", 1012)
        assert a.process.wait(WAIT_SECONDS) == 0
        live = httpx.get(f"{b.base_url}/v1/sessions/{session['id']}", headers=auth).json()
        assert live["status"] != "ended" and live["ended_at"] is None
        stream = on(b.base_url, live)["stream"]
        with connect(f"{stream['url']}?token={stream['token']}") as ws:
            assert msgspec.json.decode(ws.recv(WAIT_SECONDS))["type"] == "session.ready"
            ws.send(audio_frame("customer", 2, utterance(1500)))
            ws.send('{"type": "session.end"}')
            frames = []
            while (frame := msgspec.json.decode(ws.recv(WAIT_SECONDS)))["type"] != "session.ended":
                frames.append(frame)
        assert frame["reason"] == "explicit_end"
        assert [f["turn"] for f in frames if f["type"] == "transcript.final"] == [2]  # turn 1 was on worker a
        transcript = httpx.get(f"{b.base_url}/v1/sessions/{session['id']}/transcript", headers=auth).json()
        assert [turn["sequence"] for turn in transcript["turns"]] == [1, 2]
    assert "Traceback" not in a.log + b.log


@contextmanager
def _stream_on_some_worker(running: Workers) -> Iterator[tuple[ClientConnection, str]]:
    """A live stream (session.ready received). The session is created on one connection and streamed on another;
    until the workers share sessions a stream may reach a worker that does not know it, so this tries again."""
    for _ in range(40):
        with httpx.Client() as client:
            response = client.post(
                f"{running.base_url}/v1/sessions",
                json={"mode": "bidirectional_translation"},
                headers={"Authorization": "Bearer sk_test_workersstream1"},
            )
        assert response.status_code == 201, response.text
        session = response.json()
        with connect(f"{session['stream']['url']}?token={session['stream']['token']}") as ws:
            try:
                ready = msgspec.json.decode(ws.recv(WAIT_SECONDS))["type"] == "session.ready"
            except ConnectionClosed:
                ready = False
            if ready:
                yield ws, session["id"]
                return
    raise AssertionError(f"no stream became ready:\n{running.log[-3000:]}")
