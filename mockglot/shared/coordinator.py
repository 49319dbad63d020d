"""The state shared through Redis: one lock, a versioned set of documents, and messages between workers.

Every worker keeps the whole state in memory, as a single worker does. Redis holds the authoritative copy as
documents (`mockglot:docs`, a hash: `<store>/<id>` -> msgpack) and a change log (`mockglot:log`, a sorted set:
each document's name scored by the version that last wrote it). A request runs while its worker holds the lock
(`mockglot:lock`, with a lease): taking it also returns every document written since the version this worker has
seen, in one Lua script. On the way out, the documents the request changed are written and the version is
raised, in a second script. The lock is sticky: its holder keeps it (each commit renews the lease) until another
worker asks for it (on `mockglot:l:<worker>`, published by that worker's acquire script). So while no other
worker needs the state, a request pays no round trip to take it and one to save what it changed (none when it
changed nothing). A lease is trusted until 2 s before it would run out by this worker's clock, counted from
when it was asked for, so a read answered without Redis is as fresh as Redis (a worker stalled longer than that
inside one request could answer one stale read; its next save is refused). A Redis restart (the held path's
connection closes) or a lost subscription (another worker may take the lock as a dead worker's) ends the trust
at once. A holder asked lets go at the end of the request it runs, or at once when idle. Between
requests a worker catches up when told (`mockglot:changed`), so streams it holds see faults armed elsewhere.

Commits are grouped: a request's changes are staged when it ends and the worker's next request runs while they
are saved; the requests that end meanwhile are saved together by the next commit. A commit leaves one turn of
the event loop after the hold that staged it, so requests that arrived together share it. Each response waits for the
commit that holds its changes (or that holds what it may have read); a commit that fails fails every request
staged after it too, and the worker reloads the state before serving again.

A session's stream stays on the worker holding its socket; that worker alone changes the session while it is
connected, and writes it back as it changes (`changed()`). A request that needs such a session's stream (ending
it, injecting into it) raises `Elsewhere` on another worker, which forwards the whole request to the worker
holding the stream and answers with its response (`mockglot:w:<worker>` and `mockglot:r:<worker>`, pub/sub).

An empty Redis (new, or restarted without persistence) gets the copy of the first worker that reaches it; a
worker that finds Redis holds another generation of the state (`mockglot:epoch`) reloads it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import operator
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from itertools import chain
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec

from mockglot.errors import ApiError
from mockglot.shared import resp
from mockglot.state.feed import FeedEvent, RelayedEvent
from mockglot.state.replica import DocTracker, Replica

if TYPE_CHECKING:
    import redis.asyncio

    from mockglot.state.server import ServerState

T = TypeVar("T")
log = logging.getLogger("mockglot.shared")

PREFIX = "mockglot"
LOCK_LEASE_MS = 10_000  # a worker that dies holding the lock holds it this long at most
LOCK_WAIT_SECONDS = 5.0  # then the request answers 503
LEASE_MARGIN_SECONDS = 2.0  # a lease is trusted until this long before it ends, counted from when it was asked
ASK_EVERY_SECONDS = 0.05  # a worker waiting for the lock asks its holder to let go this often
WANT_MS = 200  # how long a waiting worker's claim to the lock's next turn lasts unless it asks again
FLUSH_DELAY_SECONDS = 0.2  # a stream's changes are written back at most this late (coalesced)
HEARTBEAT_SECONDS = 1.0
WORKER_TIMEOUT_SECONDS = 5.0  # a worker not heard from for this long no longer holds its streams
FORWARD_TIMEOUT_SECONDS = 5.0
STOP_STEP_SECONDS = 1.0
FEED_RELAY_SECONDS = 0.02
MAX_RELAYED = 10_000  # feed events held for the others between two relays at most (beyond, not relayed)
FORGET_WORKERS_SECONDS = 24 * 3600  # a dead worker stays known as dead this long (its sessions and deliveries)
LOG_KEEP_VERSIONS = 2_000  # deleted documents' entries kept in the log; a worker further behind reloads whole
RESET_ALL = "!reset/*"
RESET_PREFIX = "!reset/"
FORWARDED_SCOPE_KEY = "mockglot.forwarded"  # a request another worker sent here to run

_holding: contextvars.ContextVar[bool] = contextvars.ContextVar("mockglot_holding", default=False)

# The documents written after version `since` up to `ver`, each as (name, version, data or false); LOG and DOCS
# stand for the KEYS that hold the log and the documents.
_CHANGES_SINCE = """
local out = {ver}
if since >= ver then return out end
local changed = redis.call('ZRANGEBYSCORE', LOG, '(' .. since, '+inf', 'WITHSCORES')
for i = 1, #changed, 2 do
  out[#out + 1] = changed[i]
  out[#out + 1] = changed[i + 1]
  out[#out + 1] = redis.call('HGET', DOCS, changed[i]) or false
end
return out
"""

# KEYS: lock, ver, log, docs, epoch, floor, want. ARGV: token, lease, seen version, seen epoch, new epoch, ask
# ('1': tell the holder to let go), the let-go channels' prefix. The lock's value (a token) names its holder:
# `<worker>|<hex>`. A worker that finds it held asks the holder and claims the next turn (`want`); a holder that
# nobody listens for any more (killed) has no lease left. Returns {-1} (busy), {-2, epoch} (empty store: restore
# it), {-3, epoch, ver, doc, data, ...} (reload whole), or {ver, doc, version, data-or-false, ...} (the documents
# written since the seen version).
_ACQUIRE = (
    """
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] then
  if held then
    if ARGV[6] ~= '1' then return {-1} end
    local holder = string.match(held, '^(.*)|')
    if holder and redis.call('PUBLISH', ARGV[7] .. holder, held) > 0 then
      redis.call('SET', KEYS[7], ARGV[1], 'PX', WANT_MS)
      return {-1}
    end
  else
    local want = redis.call('GET', KEYS[7])
    if want and want ~= ARGV[1] then return {-1} end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[7]) == ARGV[1] then redis.call('DEL', KEYS[7]) end
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  redis.call('SET', KEYS[5], ARGV[5])
  return {-2, ARGV[5]}
end
local ver = tonumber(redis.call('GET', KEYS[2]) or '0')
local floor = tonumber(redis.call('GET', KEYS[6]) or '0')
local since = tonumber(ARGV[3])
if epoch ~= ARGV[4] or since < floor then
  local out = {-3, epoch, ver}
  local all = redis.call('HGETALL', KEYS[4])
  for i = 1, #all do out[#out + 1] = all[i] end
  return out
end
""".replace("WANT_MS", str(WANT_MS))
    + _CHANGES_SINCE.replace("LOG", "KEYS[3]").replace("DOCS", "KEYS[4]")
)

# The same read without the lock (a catch-up between requests). KEYS: ver, log, docs, epoch, floor.
_READ = """
local epoch = redis.call('GET', KEYS[4])
local ver = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(redis.call('GET', KEYS[5]) or '0')
local since = tonumber(ARGV[1])
if epoch ~= ARGV[2] or since < floor then return {-3} end
""" + _CHANGES_SINCE.replace("LOG", "KEYS[2]").replace("DOCS", "KEYS[3]")

# KEYS: lock, ver, log, docs, floor, the `changed` channel. ARGV: token, worker, keep ('1': renew the lease,
# else let the lock go), lease, how many of `changed`'s subscribers are this worker ('1' or '0'), markers..., '',
# (doc, data or '' for a document that is gone)... Other workers are told of a change (`changed`, naming this
# worker) by the same script, when there are any. Returns the new version (or the current one when nothing
# changed), or -1 when the lease was lost.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local ver
if #ARGV == 6 then
  ver = tonumber(redis.call('GET', KEYS[2]) or '0')
else
  ver = redis.call('INCR', KEYS[2])
  local i = 6
  while ARGV[i] ~= '' do
    if ARGV[i] == '!reset/*' then redis.call('DEL', KEYS[3], KEYS[4]) end
    redis.call('ZADD', KEYS[3], ver, ARGV[i])
    i = i + 1
  end
  i = i + 1
  while i < #ARGV do
    if ARGV[i + 1] == '' then
      redis.call('HDEL', KEYS[4], ARGV[i])
    else
      redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
    end
    redis.call('ZADD', KEYS[3], ver, ARGV[i])
    i = i + 2
  end
  if ver % 1000 == 0 then
    local floor = ver - KEEP
    if floor > 0 then
      local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', floor)
      for j = 1, #old do
        if redis.call('HEXISTS', KEYS[4], old[j]) == 0 then redis.call('ZREM', KEYS[3], old[j]) end
      end
      redis.call('SET', KEYS[5], floor)
    end
  end
  if redis.call('PUBSUB', 'NUMSUB', KEYS[6])[2] > tonumber(ARGV[5]) then
    redis.call('PUBLISH', KEYS[6], ARGV[2])
  end
end
if ARGV[3] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
return ver
""".replace("KEEP", str(LOG_KEEP_VERSIONS))


_ACQUIRE_SCRIPT, _READ_SCRIPT, _COMMIT_SCRIPT = resp.Script(_ACQUIRE), resp.Script(_READ), resp.Script(_COMMIT)


class Unavailable(ApiError):
    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(
            "service_unavailable",
            f"mockglot's state store (Redis) {why}. Retry shortly; the request changed nothing.",
            retry_after=1,
        )


class _Forward(msgspec.Struct, array_like=True):
    """A request run on the worker holding a stream, and the worker waiting for its answer."""

    id: str
    reply_to: str
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Answer(msgspec.Struct, array_like=True):
    id: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Batch:
    """The changes of the holds that ended while the previous commit was on its way, saved by one commit; each
    of those holds waits for its answer."""

    __slots__ = ("error", "keep", "settled", "token", "waiters")

    def __init__(self, token: str) -> None:
        self.keep = True  # renew the lease; False: let the lock go
        self.token = token  # the lock's value it was staged under
        self.settled = False  # answered: saved, or failed with `error`
        self.error: Unavailable | None = None
        self.waiters: list[asyncio.Future[None]] = []  # one each: a waiter cancelled leaves the others waiting

    async def wait(self) -> None:
        """Until the commit is answered; Unavailable when it failed."""
        if not self.settled:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await waiter
        if self.error is not None:
            raise Unavailable(self.error.why)  # each waiter its own: one raised in many tasks gathers their contexts

    def settle(self, error: Unavailable | None = None) -> None:
        if self.settled:
            return
        self.settled, self.error = True, error
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)


class RedisCoordinator:
    """The `Coordinator` of several workers sharing a Redis (see `mockglot.state.replica`)."""

    def __init__(self, url: str, state: ServerState, worker: str | None = None) -> None:
        self.url = url
        self.state = state
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.replicas: dict[str, Replica] = {replica.name: replica for replica in state.replicas()}
        self._order = {name.encode(): index for index, name in enumerate(self.replicas)}
        self.app: Callable[..., Awaitable[None]] | None = None  # the ASGI app a forwarded request runs through
        self.version = 0
        self.epoch = ""
        self._redis: redis.asyncio.Redis | None = None
        self._local = asyncio.Lock()  # one hold at a time in this worker
        self._token = ""  # the lock's value while this worker may hold it, else ""
        self._trusted_until = 0.0  # (monotonic) until then the lock is surely this worker's
        self._asked = False  # another worker asked for the lock: let it go at the end of the current hold
        self._letting_go: asyncio.Task[None] | None = None
        # Group commit: a hold's changes are staged when it ends, and the next hold may run while they are saved.
        self._staged: dict[str, bytes] = {}  # document -> encoding (b"": gone), not sent yet
        self._staged_markers: list[str] = []
        self._batch: _Batch | None = None  # what the staged changes' holds wait for, not sent yet
        self._sending: _Batch | None = None  # the commit on its way
        self._next: asyncio.Task[None] | None = None  # sends the staged batch once the one on its way is answered
        self._failures = 0  # commits that failed: a hold that began before one built on changes Redis lost
        self._entered_after = 0  # `_failures` when the running hold began
        self._listening = False  # subscribed, so asked for the lock: only then is it kept between holds
        self._flush_due = asyncio.Event()
        self._catch_up_due = asyncio.Event()
        self._dead: set[str] = set()  # workers not heard from lately, or that no longer listen
        self._waiting: dict[str, asyncio.Future[_Answer]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        self._serving: set[asyncio.Task[None]] = set()  # requests forwarded here, running
        self.forwarded = 0  # requests this worker sent to another (for health)
        self._stopping = False
        self._workers: list[str] = []  # the other workers, as of the last heartbeat
        self._relayed: list[FeedEvent] = []  # this worker's feed events, not yet told to the others
        self._watchers: dict[str, float] = {}  # other workers whose inspector is open -> when they last said so
        self._resend = False  # a worker began watching: tell it this worker's backlog
        self._announcing: asyncio.Task[None] | None = None

    # --- keys -----------------------------------------------------------------------------------------

    @staticmethod
    def _key(name: str) -> str:
        return f"{PREFIX}:{name}"

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError, TimeoutError

        self._redis = redis.asyncio.Redis.from_url(
            self.url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=1,  # a pooled connection idle a second is checked: Redis may have restarted
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 3),
            retry_on_error=[ConnectionError, TimeoutError],
        )
        self._held = resp.Connection(self._redis, timeout=2.0)
        keys = self._key
        self._acquire_call = resp.Call(
            _ACQUIRE_SCRIPT, [keys(k) for k in ("lock", "ver", "log", "docs", "epoch", "floor", "want")]
        )
        self._read_call = resp.Call(_READ_SCRIPT, [keys(k) for k in ("ver", "log", "docs", "epoch", "floor")])
        self._commit_call = resp.Call(
            _COMMIT_SCRIPT, [keys(k) for k in ("lock", "ver", "log", "docs", "floor", "changed")]
        )
        self._pubsub = self._redis.pubsub()
        channels = (f"w:{self.worker}", f"r:{self.worker}", f"l:{self.worker}", "changed", "feed", "watch")
        await self._pubsub.subscribe(*(self._key(channel) for channel in channels))  # before the lock is held
        async with self.hold():  # loads what is there (or fills an empty Redis with this worker's copy)
            pass
        self._listening = True
        await self._heartbeat()
        self.state.feed.watching = self._watching
        self._tasks = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._flush_forever()),
            asyncio.create_task(self._heartbeat_forever()),
            asyncio.create_task(self._catch_up_forever()),
            asyncio.create_task(self._relay_forever()),
        ]

    async def stop(self) -> None:
        """Write back what the streams changed last and leave; each step bounded, so a shutdown never hangs on
        Redis (or on a redis-py read that swallows its cancellation)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_STEP_SECONDS)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LOCK_WAIT_SECONDS + STOP_STEP_SECONDS), self.hold():
                pass
        if self._redis is not None:
            self._held.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_STEP_SECONDS):
                    await self._redis.zrem(self._key("workers"), self.worker)
            if self._pubsub is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STOP_STEP_SECONDS):
                        await self._pubsub.aclose()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_STEP_SECONDS):
                    await self._redis.aclose()

    # --- holding the state ----------------------------------------------------------------------------

    def hold(self) -> contextlib.AbstractAsyncContextManager[object]:
        return _Hold(self, wait=True, background=False)

    async def enter(self) -> contextvars.Token[bool] | None:
        """`hold()`'s entry as a request makes it, without the context manager (every request takes this path):
        what to give `leave`, None when this task already holds the state."""
        if _holding.get():
            return None
        await self._enter()
        return _holding.set(True)

    async def leave(self, held: contextvars.Token[bool] | None, sticky: bool = True, lazy: bool = True) -> None:
        if held is not None:
            holding = _holding.get()  # False: `outside` could not take the state back, so there is none to leave
            _holding.reset(held)
            if holding:
                await self._leave(sticky, lazy)

    def hold_unless_busy(self) -> contextlib.AbstractAsyncContextManager[bool]:
        return _Hold(self, wait=False, background=True)

    async def _enter(self, wait: bool = True) -> bool | None:
        """Hold the local lock and Redis's: whether Redis's had to be taken (it was not this worker's), or None,
        holding neither, when another worker holds it and `wait` is false."""
        await self._local.acquire()
        try:
            self._entered_after = self._failures
            if self._token and time.monotonic() < self._trusted_until and self._held.connected:
                return False  # still this worker's: nobody else can have written since (nor Redis restarted)
            await self._drain()  # what is loaded must not be older than what this worker saved
            self._entered_after = self._failures
            if await self._acquire(wait):
                return True
        except BaseException:
            self._local.release()
            raise
        self._local.release()
        return None

    async def _leave(self, sticky: bool = True, lazy: bool = True) -> None:
        """Stage what the hold changed and let the next hold run; return once it is saved (Unavailable when it
        could not be: nothing it did is kept)."""
        try:
            keep = sticky and self._listening and not self._stopping and not self._asked
            if self.state.markers:
                await self._drain()  # a reset is applied before the writes it is sent with: not after others'
            batch = self._stage(keep, lazy)
        finally:
            self._local.release()
        if batch is None:
            return
        if self._sending is None and self._batch is batch:
            # Sent after one turn of the event loop, not now: the requests that arrived with this one run their
            # holds first and share its commit (as the coalesced responses share a write).
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:  # the holds that staged into it still wait for it: sent all the same
                if self._sending is None and self._batch is batch:
                    self._next = asyncio.create_task(self._send_next())
                raise
            if self._sending is None and self._batch is batch:
                await self._send_next()
        await batch.wait()

    async def outside(self, waiting: Awaitable[T]) -> T:
        if not _holding.get():
            return await waiting
        _holding.set(False)  # (first: when the save or the taking back fails, nothing is held for `leave` to end)
        try:
            await self._leave()
        except BaseException:
            if inspect.iscoroutine(waiting):
                waiting.close()  # never awaited now
            raise
        try:
            return await waiting
        finally:
            await self._enter()
            _holding.set(True)

    def changed(self) -> None:
        self._flush_due.set()

    def alive(self, worker: str) -> bool:
        """Unknown workers count as alive until a heartbeat or an unanswered message says otherwise."""
        return worker not in self._dead

    async def _acquire(self, wait: bool = True) -> bool:
        """Take the lock and load what changed; False when another worker holds it and `wait` is false."""
        assert self._redis is not None
        if not self._token:
            self._token = f"{self.worker}|{secrets.token_hex(8)}"
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        pause = 0.0005
        ask_at = 0.0
        while True:
            asked_at = time.monotonic()
            ask = wait and asked_at >= ask_at
            if ask:
                ask_at = asked_at + ASK_EVERY_SECONDS
            try:
                reply = await self._held.evalsha(
                    self._acquire_call,
                    [
                        self._token,
                        LOCK_LEASE_MS,
                        self.version,
                        self.epoch,
                        secrets.token_hex(8),
                        "1" if ask else "0",
                        self._key("l:"),
                    ],
                )
            except Exception as exc:  # redis.ConnectionError, TimeoutError, ...
                log.warning("state store unreachable: %s: %s", type(exc).__name__, exc)
                raise Unavailable(f"at {_redacted(self.url)} cannot be reached ({type(exc).__name__})") from None
            if reply[0] != -1:
                break
            if not wait:
                return False
            if time.monotonic() >= deadline:
                raise Unavailable("stayed locked by another worker for 5 s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)
        self._trusted_until = asked_at + LOCK_LEASE_MS / 1000 - LEASE_MARGIN_SECONDS
        if reply[0] == -2:  # an empty store: this worker's copy becomes the state
            self.epoch = reply[1].decode()
            self.version = 0
            self._restore()
        elif reply[0] == -3:
            self.epoch = reply[1].decode()
            self._reload(int(reply[2]), reply[3:])
        else:
            self._apply(int(reply[0]), reply[1:])
        return True

    def _apply(self, version: int, entries: list[Any]) -> None:
        """Load what other workers wrote since this worker's version, in the order they wrote it."""
        if version <= self.version:
            return
        rank = self._rank
        changes = sorted(
            (
                (int(float(entries[i + 1])), rank(entries[i]), entries[i], entries[i + 2])
                for i in range(0, len(entries), 3)
            ),
            key=lambda change: (change[0], change[1]),
        )
        for written, _, name, data in changes:
            if written <= self.version:
                continue
            self._load(name.decode(), data if data else None)
        self.version = version
        self.state.markers.clear()  # resets loaded from others are not this worker's to announce

    def _rank(self, name: bytes) -> int:
        """Resets first, then the stores in the order the state lists them (a recording after its session)."""
        if name.startswith(b"!"):
            return -1
        return self._order.get(name.partition(b"/")[0], len(self._order))

    def _load(self, name: str, data: bytes | None) -> None:
        if name.startswith(RESET_PREFIX):
            organization = name[len(RESET_PREFIX) :]
            self.state.reset(None if organization == "*" else organization)
            return
        store, _, doc = name.partition("/")
        replica = self.replicas.get(store)
        if replica is not None:
            replica.load(doc, data)

    def _reload(self, version: int, flat: list[Any]) -> None:
        """Another generation of the state (or this worker fell too far behind): load it whole."""
        docs = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        for store in self._stores:
            for doc in store.tracker.known():
                if store.prefix + doc not in docs:
                    store.replica.load(doc, None)
        for name, data in sorted(docs.items(), key=lambda item: self._rank(item[0].encode())):
            self._load(name, data)
        self.version = version
        self.state.markers.clear()

    def _restore(self) -> None:
        """Touch every document this worker knows, so the commit writes all of them."""
        for store in self._stores:
            for doc in store.tracker.known():
                store.tracker.touch(doc)
            store.tracker.forget_hashes()

    def _stage(self, keep: bool, lazy: bool) -> _Batch | None:
        """Take what the hold changed into the next commit: the batch to wait for, or None when nothing it did
        or saw waits for Redis. `lazy`: changes of deferrable stores alone wait (for the next commit, or the
        flush) while the lock is kept."""
        pending = self.state.markers
        markers = [RESET_PREFIX + (organization or "*") for organization in pending] if pending else []
        pending.clear()
        if self._failures != self._entered_after:  # it built on changes a failed commit lost
            for replica in self.replicas.values():
                replica.changes()
            raise Unavailable("lost what an earlier request changed, before this one finished")
        trusted = keep and time.monotonic() < self._trusted_until
        lazy = lazy and trusted and not markers
        staged = self._staged
        before = len(staged)
        later = False
        for store in filter(_TOUCHED, self._stores):  # (in C: most stores, most requests, touch nothing)
            if lazy and store.deferrable:
                later = True
            else:
                store.tracker.stage(staged, store.prefix)
        for prefix, replica in self._untracked:
            for doc, data in replica.changes().items():
                staged[prefix + doc] = data if data is not None else b""
        if later and staged:  # a commit goes anyway: they ride along
            for store in filter(_TOUCHED, self._stores):
                store.tracker.stage(staged, store.prefix)
            later = False
        if markers:
            self._staged_markers += markers
        if trusted and not markers and len(staged) == before:
            if later:
                self._flush_due.set()
            return self._batch or self._sending  # nothing of its own: it waits only for what it may have read
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(self._token)
        if not keep:  # being let go: a hold from now on takes the lock again, and asks for this one are old
            batch.keep = False
            self._let_go()
        return batch

    @functools.cached_property
    def _stores(self) -> list[_Store]:
        """Each store that tracks its documents, looked up once (made when the state was shared, after this
        coordinator)."""
        stores = ((name, replica, getattr(replica, "tracker", None)) for name, replica in self.replicas.items())
        return [_Store(name, replica, tracker) for name, replica, tracker in stores if tracker is not None]

    @functools.cached_property
    def _untracked(self) -> list[tuple[str, Replica]]:
        """The stores that report their changes without a tracker, by their documents' prefix: asked at every
        hold's end."""
        return [(name + "/", r) for name, r in self.replicas.items() if getattr(r, "tracker", None) is None]

    async def _send_next(self) -> None:
        """Commit the staged batch; then hand the one staged meanwhile on to a task of its own."""
        batch = self._batch
        if batch is None or self._sending is not None:
            return  # sent meanwhile by a hold that ended (or failed with the one before)
        self._batch, self._sending = None, batch
        staged, self._staged = self._staged, {}
        markers, self._staged_markers = self._staged_markers, []
        keep, listening = "1" if batch.keep else "0", "1" if self._listening else "0"
        args: list[bytes | str | int] = [
            batch.token,
            self.worker,
            keep,
            LOCK_LEASE_MS,
            listening,
            *markers,
            "",
            *cast("Iterable[str | bytes]", chain.from_iterable(staged.items())),  # doc, data, doc, data...
        ]
        sent = time.monotonic()
        try:
            version = await self._held.evalsha(self._commit_call, args)
        except BaseException as exc:  # (a cancelled sender too: whether Redis ran it is unknown)
            self._fail(batch, Unavailable(f"at {_redacted(self.url)} failed while saving ({type(exc).__name__})"))
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._sending = None
        if version == -1:
            if self._token == batch.token:
                self._let_go()
            self._fail(batch, Unavailable("lease ran out before the request finished"))
            return
        if int(version) > self.version + 1 and (markers or staged):
            self.version = -1  # someone wrote in between (a lost lease): reload
        else:
            self.version = int(version)
        if batch.keep and self._trusted_until:
            self._trusted_until = sent + LOCK_LEASE_MS / 1000 - LEASE_MARGIN_SECONDS
        batch.settle()
        if self._batch is not None:
            self._next = asyncio.create_task(self._send_next())

    def _fail(self, failed: _Batch, error: Unavailable) -> None:
        """A commit failed: its holds, and every hold since (built on what it lost), answer `error`; this
        worker's copy may now differ from Redis, so the next hold reloads it whole."""
        self.version = -1
        self._trusted_until = 0.0
        self._failures += 1
        for batch in (failed, self._batch):
            if batch is not None:
                batch.settle(error)
        self._batch = None
        self._staged, self._staged_markers = {}, []

    async def _drain(self) -> None:
        """Wait until every staged change is answered (saved or failed)."""
        while (batch := self._batch or self._sending) is not None:
            with contextlib.suppress(ApiError):
                await batch.wait()

    def _let_go(self) -> None:
        """The lock is not this worker's any more: the next hold takes it again, with a new token."""
        self._token = ""
        self._trusted_until = 0.0
        self._asked = False

    def _asked_to_let_go(self, token: bytes) -> None:
        """Another worker waits for the lock: let it go after the current hold, or now when there is none."""
        if not self._token or token.decode() != self._token:
            return  # an old request, for a lock this worker has let go since
        self._asked = True
        if self._letting_go is None:
            self._letting_go = asyncio.create_task(self._let_go_when_idle())

    async def _let_go_when_idle(self) -> None:
        try:
            await self._local.acquire()  # after the hold running now (which lets go itself, seeing `_asked`)
            if not (self._asked and self._token):
                self._local.release()
                return
            self._entered_after = self._failures
            await self._leave(sticky=False, lazy=False)
        except ApiError as exc:
            log.warning("could not let the lock go: %s", exc.message)
        finally:
            self._letting_go = None

    # --- background -----------------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        """Write back what streams changed, coalesced; every heartbeat, the live sessions' progress too."""
        last_progress = time.monotonic()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._flush_due.wait(), HEARTBEAT_SECONDS)
            await asyncio.sleep(FLUSH_DELAY_SECONDS)
            due = self._flush_due.is_set() and self._unsaved()  # (a request may have saved it already)
            self._flush_due.clear()
            if time.monotonic() - last_progress >= HEARTBEAT_SECONDS:
                last_progress = time.monotonic()
                sessions = self.state.sessions
                if sessions.tracker is not None:
                    for record in sessions.streaming_sessions():
                        sessions.tracker.touch(record.id)
            try:  # a change is written now; the progress of the streams waits while another worker is busy
                async with _Hold(self, wait=due, background=True):
                    pass
            except ApiError as exc:
                log.warning("could not write back stream changes: %s", exc.message)
            except Exception:
                log.exception("could not write back stream changes")

    def _unsaved(self) -> bool:
        """Whether this worker changed anything since it last saved."""
        if self.state.markers:
            return True
        return any(store.tracker.unsaved() for store in self._stores)

    def _relay_to_others(self, relaying: bool) -> None:
        """Whether another live worker's inspector is open: only then is each of this worker's events told."""
        self.state.feed.relay = self._relay if relaying else None

    def _watching(self) -> None:
        """This worker's inspector was opened: the others tell it their backlogs, then their events."""
        if self._announcing is None or self._announcing.done():
            self._announcing = asyncio.create_task(self._announce(first=True))

    async def _announce(self, first: bool) -> None:
        assert self._redis is not None
        with contextlib.suppress(Exception):
            await self._redis.publish(self._key("watch"), f"{self.worker}|{'1' if first else '0'}")

    def _relay(self, event: FeedEvent) -> None:
        if len(self._relayed) < MAX_RELAYED:
            self._relayed.append(event)

    async def _relay_forever(self) -> None:
        """Tell the other workers this worker's feed events (the inspector shows every worker's), batched."""
        assert self._redis is not None
        while True:
            await asyncio.sleep(FEED_RELAY_SECONDS)
            if self._resend:  # (what waits to be relayed is in the backlog too)
                self._resend, self._relayed = False, []
                events = self.state.feed.own()
            elif self._relayed:
                events, self._relayed = self._relayed, []
            else:
                continue
            message = msgspec.msgpack.encode((self.worker, [RelayedEvent.of(event) for event in events]))
            with contextlib.suppress(Exception):
                await self._redis.publish(self._key("feed"), message)

    async def _heartbeat(self) -> None:
        assert self._redis is not None
        now = time.time()
        key = self._key("workers")
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(key, {self.worker: now})
        pipe.zremrangebyscore(key, "-inf", now - FORGET_WORKERS_SECONDS)
        pipe.zrangebyscore(key, "-inf", now - WORKER_TIMEOUT_SECONDS)
        pipe.zrange(key, 0, -1)
        results = await pipe.execute()
        dead = {worker.decode() for worker in results[2]}
        others = [worker.decode() for worker in results[3] if worker.decode() != self.worker]
        self._workers = others
        if others:  # a killed worker's subscriptions end with its connection: it is gone at once
            listening = await self._redis.pubsub_numsub(*(self._key(f"w:{worker}") for worker in others))
            dead |= {worker for worker, (_, count) in zip(others, listening, strict=True) if not count}
        self._dead = dead - {self.worker}
        if self.state.feed.subscribers:
            await self._announce(first=False)
        stale = time.monotonic() - WORKER_TIMEOUT_SECONDS
        self._watchers = {w: at for w, at in self._watchers.items() if at > stale and w not in self._dead}
        self._relay_to_others(bool(self._watchers))

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            with contextlib.suppress(Exception):
                await self._heartbeat()

    async def _catch_up_forever(self) -> None:
        """Load other workers' changes between requests, so streams held here see them (a fault armed)."""
        while True:
            await self._catch_up_due.wait()
            self._catch_up_due.clear()
            if _holding.get() or self.version < 0:
                continue
            async with self._local:
                with contextlib.suppress(Exception):
                    await self._drain()
                    reply = await self._held.evalsha(self._read_call, [self.version, self.epoch])
                    if reply[0] != -3:
                        self._apply(int(reply[0]), reply[1:])

    async def _listen(self) -> None:
        assert self._pubsub is not None
        requests, replies = self._key(f"w:{self.worker}").encode(), self._key(f"r:{self.worker}").encode()
        feed, let_go = self._key("feed").encode(), self._key(f"l:{self.worker}").encode()
        watch = self._key("watch").encode()
        while not self._stopping:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis gone, or this connection: no other worker can ask for the lock meanwhile, and one may
                # take it as a dead worker's. So it is not kept, nor trusted, until listening again.
                self._listening = False
                self._trusted_until = 0.0
                await asyncio.sleep(0.5)  # redis-py reconnects and resubscribes
                continue
            self._listening = True
            if message is None or message["type"] != "message":
                continue
            try:
                channel, data = message["channel"], message["data"]
                if channel == requests:
                    task = asyncio.create_task(self._serve_forwarded(msgspec.msgpack.decode(data, type=_Forward)))
                    self._serving.add(task)
                    task.add_done_callback(self._serving.discard)
                elif channel == feed:
                    sender, events = msgspec.msgpack.decode(data, type=tuple[str, list[RelayedEvent]])
                    if sender != self.worker:
                        for event in events:
                            self.state.feed.receive(event, sender)
                elif channel == watch:
                    watcher, _, first = data.decode().partition("|")
                    if watcher != self.worker:  # new to it (opened, or this worker just started): its backlog
                        self._resend = self._resend or first == "1" or watcher not in self._watchers
                        self._watchers[watcher] = time.monotonic()
                        self._relay_to_others(True)
                elif channel == let_go:
                    self._asked_to_let_go(data)
                elif channel == replies:
                    answer = msgspec.msgpack.decode(data, type=_Answer)
                    waiter = self._waiting.pop(answer.id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(answer)
                elif data != self.worker.encode():  # `changed`: another worker saved
                    self._catch_up_due.set()
            except Exception:  # a message this worker cannot read must not stop it listening
                log.exception("a message from another worker could not be handled")

    # --- requests run on another worker ---------------------------------------------------------------

    async def from_others(self, scope: Mapping[str, Any]) -> list[bytes]:
        if scope.get(FORWARDED_SCOPE_KEY):
            return []  # asked by another worker: only this one's own
        others = [worker for worker in self._workers if worker != self.worker and self.alive(worker)]
        answers = await asyncio.gather(
            *(self.forward(worker, dict(scope), b"") for worker in others), return_exceptions=True
        )
        return [a.body for a in answers if isinstance(a, _Answer) and a.status == 200]

    async def forward(self, worker: str, scope: dict[str, Any], body: bytes) -> _Answer | None:
        """Run the request on `worker`; None when no worker of that name listens any more."""
        assert self._redis is not None
        request = _Forward(
            id=secrets.token_hex(8),
            reply_to=self._key(f"r:{self.worker}"),
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=[(name, value) for name, value in scope["headers"]],
            body=body,
        )
        waiter: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = waiter
        try:
            receivers = await self._redis.publish(self._key(f"w:{worker}"), msgspec.msgpack.encode(request))
            if not receivers:
                self._dead.add(worker)
                return None
            self.forwarded += 1
            deadline = time.monotonic() + FORWARD_TIMEOUT_SECONDS
            while True:
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(waiter), 0.25)
                (_, listening), *_ = await self._redis.pubsub_numsub(self._key(f"w:{worker}"))
                if not listening:  # it died after taking the message (or before Redis noticed): not held there
                    self._dead.add(worker)
                    return None
                if time.monotonic() >= deadline:
                    raise Unavailable(f"forwarded this request to worker {worker}, which did not answer in 5 s")
        finally:
            self._waiting.pop(request.id, None)

    async def _serve_forwarded(self, request: _Forward) -> None:
        assert self._redis is not None and self.app is not None
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.path,
            "raw_path": request.path.encode(),
            "query_string": request.query,
            "root_path": "",
            "headers": request.headers,
            FORWARDED_SCOPE_KEY: True,  # in the scope, where no client can put it
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
            "state": {},
        }
        sent = False
        status, headers, chunks = 500, [], []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # never another message: the "client" does not leave
            sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("a request forwarded from another worker failed")
        answer = _Answer(request.id, status, [(bytes(n), bytes(v)) for n, v in headers], b"".join(chunks))
        with contextlib.suppress(Exception):
            await self._redis.publish(request.reply_to, msgspec.msgpack.encode(answer))


class _Hold:
    """A hold of the shared state. `wait`: for the lock, asking its holder for it; else hold nothing (False)
    while another worker holds it. `background`: outside any request, so a lock taken for it is let go after, not
    kept from the workers that serve requests. (A class, not a generator: every request goes through it.)"""

    __slots__ = ("background", "coordinator", "reset", "sticky", "wait")

    def __init__(self, coordinator: RedisCoordinator, wait: bool, background: bool) -> None:
        self.coordinator = coordinator
        self.wait = wait
        self.background = background
        self.sticky = True
        self.reset: contextvars.Token[bool] | None = None  # set while this hold holds (not nested in another)

    async def __aenter__(self) -> bool:
        if _holding.get():  # already held by this request
            return True
        took = await self.coordinator._enter(self.wait)
        if took is None:
            return False
        self.sticky = not (self.background and took)
        self.reset = _holding.set(True)
        return True

    async def __aexit__(self, *exc_info: object) -> None:
        await self.coordinator.leave(self.reset, self.sticky, lazy=not self.background)


class _Store:
    """A shared store as the coordinator stages it: its documents' names are `<prefix><id>`."""

    __slots__ = ("deferrable", "prefix", "replica", "tracker")

    def __init__(self, name: str, replica: Replica, tracker: DocTracker) -> None:
        self.prefix = name + "/"
        self.replica = replica
        self.tracker = tracker
        self.deferrable = replica.deferrable


_TOUCHED = operator.attrgetter("tracker.touched")  # a store with documents to stage (filtered in C)


def _redacted(url: str) -> str:
    """The URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
