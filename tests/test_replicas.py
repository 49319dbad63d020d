"""Stores shared between workers (state/replica.py): what one worker changes, another loads, and together they
behave as one server would. No Redis here: documents go straight from one ServerState to another."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockglot import scenarios
from mockglot.errors import ApiError
from mockglot.settings import Settings
from mockglot.state.clock import Clock
from mockglot.state.idempotency import LIFETIME_SECONDS, StoredResponse
from mockglot.state.ratelimit import WINDOW_SECONDS, RateLimited
from mockglot.state.replica import LocalCoordinator
from mockglot.state.server import ServerState
from mockglot.wire import AgentCreate, RestFault

T = 1_780_000_000.0  # a fixed wall clock, so every server agrees on the time
SEED = 1234
KEY = "sk_test_replicas0001"
OTHER_KEY = "sk_test_replicas0002"
OWNER = ("org_a", "test")


def share_all(state: ServerState, worker: str = "w") -> None:
    """Every store shares its documents, as `ServerState.share` makes them (without a coordinator)."""
    state.share(LocalCoordinator(), worker, lambda other: True)


def _mine(state: ServerState) -> list[Any]:
    return [
        state.clock,
        state.randomness,
        state.rate_limiter,
        state.idempotency,
        state.faults,
        state.webhooks,
        state.scenarios,
        state.agents,
    ]


def server(seed: int | None = SEED, share: bool = True, worker: str = "w") -> ServerState:
    state = ServerState(Settings(seed=seed), clock=Clock(lambda: T))
    if share:
        share_all(state, worker)
    return state


def replicate(source: ServerState, *targets: ServerState) -> dict[str, dict[str, bytes | None]]:
    """What `source` changed, loaded by every target; returns it per store."""
    sent = {}
    for store in _mine(source):
        changes = store.changes()
        sent[store.name] = changes
        for target in targets:
            replica = next(s for s in _mine(target) if s.name == store.name)
            for doc, data in changes.items():
                replica.load(doc, data)
    return sent


def docs(state: ServerState) -> dict[tuple[str, str], bytes | None]:
    """Every document any worker shared, as this one encodes it now."""
    return {(store.name, doc): store._encode(doc) for store in _mine(state) for doc in store.tracker.known()}


def assert_same(a: ServerState, b: ServerState) -> None:
    assert [f.id for f in a.faults.all()] == [f.id for f in b.faults.all()]  # the first that matches fires
    assert list(a.webhooks.endpoints) == list(b.webhooks.endpoints)
    known = {*docs(a), *docs(b)}
    stores = {store.name: store for store in _mine(a)}, {store.name: store for store in _mine(b)}
    for name, doc in known:
        assert stores[0][name]._encode(doc) == stores[1][name]._encode(doc), (name, doc)


def nothing_left(*states: ServerState) -> None:
    for state in states:
        assert {name: c for name, c in replicate(state).items() if c} == {}


# --- alone -----------------------------------------------------------------------------------------------


def test_unshared_stores_track_nothing() -> None:
    state = server(share=False)
    state.randomness.new_id("sess", "session", T, KEY)
    state.rate_limiter.hit(KEY, None, T)
    state.idempotency.begin(OWNER, "k", "fp", T)
    state.clock.advance(5)
    state.faults.add("rest", RestFault(path="/v1/*", status=500), T)
    state.scenarios.use_next(KEY, "order-change", 2)
    state.webhooks.register("http://127.0.0.1:9/hooks")
    for store in _mine(state):
        assert store.tracker is None
        assert store.changes() == {}


# --- randomness ------------------------------------------------------------------------------------------


def test_seeded_ids_continue_on_the_other_worker() -> None:
    """A draws one, B the next, as one server draws two (scoped, per purpose, and from a purpose's stream)."""
    a, b, alone = server(worker="a"), server(worker="b"), server(share=False)
    first = a.randomness.new_id("sess", "session", T, KEY)
    fault = a.faults.add("rest", RestFault(path="/v1/*", status=500), T)
    token = a.randomness.hex("token", 16, KEY)
    draw = a.randomness.random("faults")
    replicate(a, b)
    second = b.randomness.new_id("sess", "session", T, KEY)
    second_fault = b.faults.add("rest", RestFault(path="/v1/*", status=500), T)
    second_token = b.randomness.hex("token", 16, KEY)
    second_draw = b.randomness.random("faults")
    assert second != first and second_fault.id != fault.id and second_token != token and second_draw != draw
    assert [first, second] == [alone.randomness.new_id("sess", "session", T, KEY) for _ in range(2)]
    assert [fault.id, second_fault.id] == [alone.faults.add("rest", RestFault(status=500), T).id for _ in range(2)]
    assert [token, second_token] == [alone.randomness.hex("token", 16, KEY) for _ in range(2)]
    assert [draw, second_draw] == [alone.randomness.random("faults") for _ in range(2)]
    replicate(b, a)
    assert_same(a, b)
    nothing_left(a, b)


def test_reseed_and_forget_reach_the_other_worker() -> None:
    a, b = server(worker="a"), server(worker="b")
    a.randomness.new_id("sess", "session", T, KEY)
    a.randomness.new_id("sess", "session", T, OTHER_KEY)
    a.randomness.new_id("agt", "agent", T)
    replicate(a, b)
    a.randomness.forget({KEY})
    sent = replicate(a, b)["randomness"]
    assert sent == {"scope:" + KEY: None}
    assert b.randomness.new_id("sess", "session", T, KEY) == server(share=False).randomness.new_id(
        "sess", "session", T, KEY
    )
    replicate(b, a)
    a.randomness.reseed(7)
    sent = replicate(a, b)["randomness"]
    assert sent["seed"] is not None and {doc for doc, data in sent.items() if data is None} == {
        "scope:" + KEY,
        "scope:" + OTHER_KEY,
        "purpose:agent",
    }
    assert b.randomness.seed == 7
    assert b.randomness.new_id("agt", "agent", T) == server(7, share=False).randomness.new_id("agt", "agent", T)
    replicate(b, a)
    assert_same(a, b)
    nothing_left(a, b)


def test_request_ids_are_each_workers_own() -> None:
    """Drawn on every request: no document each time; seeded, each worker's sequence is salted with its name."""
    a, b = server(worker="a"), server(worker="b")
    drawn = {a.randomness.new_id("req", "request", T) for _ in range(3)}
    assert a.randomness.changes() == {}
    assert drawn.isdisjoint(b.randomness.new_id("req", "request", T) for _ in range(3))
    again = server(worker="a")  # seeded, a worker's own sequence still repeats run after run
    assert drawn == {again.randomness.new_id("req", "request", T) for _ in range(3)}


def test_unseeded_draws_are_not_shared() -> None:
    a, b = server(None, worker="a"), server(None, worker="b")
    a.randomness.new_id("sess", "session", T, KEY)
    a.randomness.new_id("req", "request", T)
    a.randomness.random("faults")
    assert a.randomness.changes() == {}
    a.randomness.reseed(5)  # the seed itself is shared
    replicate(a, b)
    assert b.randomness.seed == 5


def test_a_seed_set_on_one_worker_makes_the_other_s_ids_follow_it_too() -> None:
    """b drew IDs unseeded (its own stream, some drawn ahead); once a's seed reaches it, b's next IDs are the
    seed's, as a fresh server with that seed makes them."""
    a, b = server(None, worker="a"), server(None, worker="b")
    b.randomness.new_id("sess", "session", T)
    a.randomness.reseed(5)
    replicate(a, b)
    fresh = server(5, worker="c")
    assert [b.randomness.new_id("sess", "session", T) for _ in range(3)] == [
        fresh.randomness.new_id("sess", "session", T) for _ in range(3)
    ]


# --- rate limits ------------------------------------------------------------------------------------------


def test_a_rate_limit_counts_requests_on_both_workers() -> None:
    a, b = server(worker="a"), server(worker="b")
    now = a.clock.now()
    b.rate_limiter.hit(OTHER_KEY, None, now - WINDOW_SECONDS)  # b's own last window was the one before
    replicate(b, a)
    a.rate_limiter.hit(KEY, 3, now)
    a.rate_limiter.hit(KEY, 3, now)
    sent = replicate(a, b)["ratelimit"]
    assert sent[OTHER_KEY] is None and sent[KEY] is not None  # a stale window is forgotten everywhere
    assert b.rate_limiter.hit(KEY, 3, now).remaining == 0  # b moving to this window keeps a's count
    replicate(b, a)
    with pytest.raises(RateLimited):
        a.rate_limiter.hit(KEY, 3, now)
    replicate(a, b)
    with pytest.raises(RateLimited):
        b.rate_limiter.hit(KEY, 3, now)
    replicate(b, a)
    assert b.rate_limiter.hit(KEY, 3, now + WINDOW_SECONDS).remaining == 2  # a new window starts over
    replicate(b, a)
    assert a.rate_limiter.hit(KEY, 3, now + WINDOW_SECONDS).remaining == 1
    a.rate_limiter.reset({KEY})
    assert replicate(a, b)["ratelimit"] == {KEY: None}
    assert b.rate_limiter.hit(KEY, 3, now + WINDOW_SECONDS).remaining == 2
    replicate(b, a)
    assert_same(a, b)
    nothing_left(a, b)


# --- idempotency ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["k-1", 'a"b\\c\0:,]["x', "é/ü 🙂", "org_a"])
def test_an_idempotency_key_claimed_on_one_worker_replays_on_the_other(key: str) -> None:
    a, b = server(worker="a"), server(worker="b")
    claim = a.idempotency.begin(OWNER, key, "fp", T)
    assert claim.response is None
    replicate(a, b)
    with pytest.raises(ApiError) as conflict:
        b.idempotency.begin(OWNER, key, "fp", T)
    assert conflict.value.code == "idempotency_conflict"
    response = StoredResponse(201, b'{"id":"sess_1"}')
    a.idempotency.complete(claim, response)
    replicate(a, b)
    assert b.idempotency.begin(OWNER, key, "fp", T).response == response
    with pytest.raises(ApiError) as mismatch:
        b.idempotency.begin(OWNER, key, "other", T)
    assert mismatch.value.code == "idempotency_mismatch"
    other = b.idempotency.begin(("org_a", "live"), key, "fp", T)
    assert other.response is None  # another owner's key is another key
    replicate(b, a)
    assert_same(a, b)
    nothing_left(a, b)
    b.idempotency.abandon(other)
    replicate(b, a)
    a.idempotency.reset("org_a")
    assert list(replicate(a, b)["idempotency"].values()) == [None]
    assert b.idempotency.begin(OWNER, key, "other", T).response is None  # gone: claimable again, with any request


def test_abandoned_and_expired_keys_go_on_every_worker() -> None:
    a, b = server(worker="a"), server(worker="b")
    abandoned = a.idempotency.begin(OWNER, "abandoned", "fp", T)
    a.idempotency.complete(a.idempotency.begin(OWNER, "kept", "fp", T), StoredResponse(200, b"{}"))
    replicate(a, b)
    a.idempotency.abandon(abandoned)
    replicate(a, b)
    again = b.idempotency.begin(OWNER, "abandoned", "other", T)
    assert again.response is None
    b.idempotency.abandon(again)
    replicate(b, a)
    a.clock.advance(LIFETIME_SECONDS)  # the sweep purges, and the clock's move reaches b
    sent = replicate(a, b)
    assert set(sent["idempotency"].values()) == {None}
    assert b.idempotency.begin(OWNER, "kept", "other", T + LIFETIME_SECONDS).response is None
    assert_same(a, b)


# --- clock ------------------------------------------------------------------------------------------------


def test_a_clock_moved_on_one_worker_moves_on_the_other() -> None:
    a, b = server(worker="a"), server(worker="b")
    heard: list[float] = []
    b.clock.on_change(lambda: heard.append(b.clock.now()))
    a.clock.advance(90)
    assert replicate(a, b)["clock"].keys() == {"offset"}
    assert b.clock.now() == a.clock.now() == T + 90 and heard == [T + 90]
    a.clock.set(T - 3600)
    replicate(a, b)
    assert b.clock.offset == -3600 and heard[-1] == T - 3600
    b.clock.reset()
    replicate(b, a)
    assert a.clock.now() == T
    nothing_left(a, b)


# --- faults -----------------------------------------------------------------------------------------------


def test_a_fault_fires_its_times_across_both_workers() -> None:
    a, b = server(worker="a"), server(worker="b")
    fault = a.faults.add("rest", RestFault(path="/v1/*", status=500, times=3), T)
    replicate(a, b)
    held = b.faults.all()[0]  # as a live stream holds it
    assert b.faults.match_rest("GET", "/v1/sessions", KEY) is not None
    replicate(b, a)
    assert a.faults.fires(fault) is True
    replicate(a, b)
    assert held.fired == 2  # loaded in place
    assert b.faults.fires(held) is True
    replicate(b, a)
    assert a.faults.fires(fault) is False and a.faults.match_rest("GET", "/v1/sessions", KEY) is None
    assert a.faults.changes() == {}
    assert [f.fired for f in a.faults.all()] == [f.fired for f in b.faults.all()] == [3]
    assert_same(a, b)


def test_removed_and_reset_faults_disappear_on_the_other_worker() -> None:
    a, b = server(worker="a"), server(worker="b")
    first = a.faults.add("rest", RestFault(path="/v1/*", status=500), T)
    a.faults.add("rest", RestFault(path="/v1/*", status=503, api_key=KEY), T)
    a.faults.add("rest", RestFault(path="/v1/*", status=502), T)
    replicate(a, b)
    assert [f.id for f in b.faults.all()] == [f.id for f in a.faults.all()]
    a.faults.remove(first.id)
    assert replicate(a, b)["faults"] == {first.id: None}
    b.faults.reset({KEY})
    replicate(b, a)
    assert [f.rule.status for f in a.faults.all()] == [502]
    a.faults.reset()
    replicate(a, b)
    assert b.faults.all() == []
    nothing_left(a, b)


# --- webhooks ---------------------------------------------------------------------------------------------


def test_webhook_endpoints_and_deliveries_are_shared_and_each_delivery_has_one_sender() -> None:
    a, b = server(worker="a"), server(worker="b")
    endpoint = a.webhooks.register("http://127.0.0.1:9/hooks", events=["session.ended"], organization="org_a")
    everyone = a.webhooks.register("http://127.0.0.1:9/all")
    replicate(a, b)
    copy = b.webhooks.endpoints[endpoint.id]
    assert (copy.url, copy.events, copy.secret, copy.organization, copy.created_at) == (
        endpoint.url,
        endpoint.events,
        endpoint.secret,
        endpoint.organization,
        endpoint.created_at,
    )
    assert [e.id for e in b.webhooks.matching("session.ended", "org_a")] == [endpoint.id, everyone.id]
    delivery = b.webhooks.add(copy, "evt_1", "session.ended", "sess_1", "org_a", b"{}")
    assert list(replicate(b, a)["webhooks"]) == [delivery.id]
    (seen,) = a.webhooks.deliveries()
    assert (seen.id, seen.endpoint, seen.owner, seen.body) == (delivery.id, endpoint, "b", b"{}")
    assert b.webhooks.mine(delivery) and not a.webhooks.mine(seen) and a.webhooks.orphaned() == []
    dropped: list[str] = []
    b.webhooks.on_drop(lambda deliveries: dropped.extend(d.id for d in deliveries))
    a.webhooks.remove(endpoint.id)
    assert replicate(a, b)["webhooks"] == {endpoint.id: None, delivery.id: None}
    assert endpoint.id not in b.webhooks.endpoints and dropped == [delivery.id] and delivery.cancelled
    a.webhooks.reset()
    replicate(a, b)
    assert b.webhooks.endpoints == {}
    nothing_left(a, b)


def test_settings_webhooks_stay_with_each_worker() -> None:
    settings_ = Settings(seed=SEED, webhooks=["http://127.0.0.1:9/hooks#secret"])
    a = ServerState(settings_, clock=Clock(lambda: T))
    b = ServerState(Settings(seed=SEED, webhooks=settings_.webhooks), clock=Clock(lambda: T))
    share_all(a, "a")
    share_all(b, "b")
    a.webhooks.reset()
    assert replicate(a, b)["webhooks"] == {}
    assert len(a.webhooks.endpoints) == len(b.webhooks.endpoints) == 1


# --- scenarios --------------------------------------------------------------------------------------------


def test_a_next_scenario_choice_counts_sessions_on_both_workers() -> None:
    a, b = server(worker="a"), server(worker="b")
    a.scenarios.upload(scenarios.parse({"name": "quiet", "turns": {"customer": [{"text": "hi"}]}}, "upload"))
    a.scenarios.use_next(KEY, "quiet", 2)
    replicate(a, b)
    assert b.scenarios.choose(KEY, {}, "order-change") == "quiet"
    replicate(b, a)
    assert a.scenarios.choose(KEY, {}, "order-change") == "quiet"
    assert replicate(a, b)["scenarios"] == {"next:" + KEY: None}
    assert b.scenarios.choose(KEY, {}, "order-change") == "order-change"
    nothing_left(a, b)


def test_uploads_with_audio_reach_the_other_worker_and_go_on_reset() -> None:
    a, b = server(worker="a"), server(worker="b")
    audio = bytes(range(256)) * 4
    document = {
        "name": "with-audio",
        "when_exhausted": "stop",
        "turns": {"customer": [{"text": "hello", "audio_base64": base64.b64encode(audio).decode()}]},
        "faults": [{"after_frames": 3, "action": "close", "close_code": 1011}],
    }
    a.scenarios.upload(scenarios.parse(document, "upload"), "org_a")
    a.scenarios.upload(scenarios.parse({**document, "name": "everyone"}, "upload"))
    replicate(a, b)
    loaded = b.scenarios.get("with-audio", "org_a")
    assert loaded == a.scenarios.get("with-audio", "org_a") and list(loaded.audio.values()) == [audio]
    with pytest.raises(KeyError):
        b.scenarios.get("with-audio", "org_b")
    assert b.scenarios.names("org_a") == a.scenarios.names("org_a")
    b.scenarios.reset(set(), "org_a")
    replicate(b, a)
    assert a.scenarios.names("org_a") == ["everyone", "order-change"]
    a.scenarios.reset()
    replicate(a, b)
    assert b.scenarios.names() == ["order-change"]
    nothing_left(a, b)


# --- several workers behave as one server -----------------------------------------------------------------

OPERATIONS = st.one_of(
    st.tuples(st.just("session_id"), st.sampled_from([KEY, OTHER_KEY])),
    st.tuples(st.just("request_id"), st.sampled_from(["agent", "webhook_event"])),
    st.tuples(st.just("random"), st.sampled_from(["faults", "jitter"])),
    st.tuples(st.just("hit"), st.sampled_from([KEY, OTHER_KEY])),
    st.tuples(st.just("begin"), st.sampled_from(["k1", "k:2"])),
    st.tuples(st.just("complete"), st.sampled_from(["k1", "k:2"])),
    st.tuples(st.just("abandon"), st.sampled_from(["k1", "k:2"])),
    st.tuples(st.just("advance"), st.sampled_from([1, 59, 3600, LIFETIME_SECONDS])),
    st.tuples(st.just("add_fault"), st.integers(1, 3)),
    st.tuples(st.just("fire"), st.integers(0, 5)),
    st.tuples(st.just("remove_fault"), st.integers(0, 5)),
    st.tuples(st.just("register"), st.sampled_from(["org_a", None])),
    st.tuples(st.just("unregister"), st.integers(0, 5)),
    st.tuples(st.just("use_next"), st.sampled_from([KEY, OTHER_KEY])),
    st.tuples(st.just("choose"), st.sampled_from([KEY, OTHER_KEY])),
    st.tuples(st.just("forget"), st.sampled_from([KEY, OTHER_KEY])),
    st.tuples(st.just("reset"), st.sampled_from(["org_a", None])),
    st.tuples(st.just("create_agent"), st.sampled_from([OWNER, ("org_b", "live")])),
    st.tuples(st.just("agents"), st.sampled_from([OWNER, ("org_b", "live")])),
)


def run(state: ServerState, operation: tuple[str, Any]) -> object:
    """One operation and what it answered (an error's code included)."""
    name, arg = operation
    now = state.clock.now()
    try:
        if name == "session_id":
            return state.randomness.new_id("sess", "session", now, arg)
        if name == "request_id":
            return state.randomness.new_id("req", arg, now)
        if name == "random":
            return state.randomness.random(arg)
        if name == "hit":
            return state.rate_limiter.hit(arg, 3, now)
        if name == "begin":
            return state.idempotency.begin(OWNER, arg, "fp", now).response
        claim = state.idempotency._records.get((OWNER, arg))  # the key's claim as this worker holds it
        if name == "complete":
            return claim and state.idempotency.complete(claim, StoredResponse(201, arg.encode()))
        if name == "abandon":
            return claim and state.idempotency.abandon(claim)
        if name == "advance":
            return state.clock.advance(arg)
        if name == "add_fault":
            return state.faults.add("rest", RestFault(path="/v1/*", status=500, times=arg, probability=0.5), now).id
        faults = sorted(state.faults.all(), key=lambda fault: fault.id)
        if name == "fire":
            return bool(faults) and state.faults.fires(faults[arg % len(faults)])
        if name == "remove_fault":
            return bool(faults) and state.faults.remove(faults[arg % len(faults)].id)
        if name == "register":
            return state.webhooks.register("http://127.0.0.1:9/h", organization=arg).secret
        endpoints = sorted(state.webhooks.endpoints)
        if name == "unregister":
            return bool(endpoints) and state.webhooks.remove(endpoints[arg % len(endpoints)]) is not None
        if name == "use_next":
            return state.scenarios.use_next(arg, "order-change", 2)
        if name == "choose":
            return state.scenarios.choose(arg, {}, "order-change")
        if name == "forget":
            return state.randomness.forget({arg})
        if name == "reset":
            return state.reset(arg)
        if name == "create_agent":
            return state.agents.create(arg, AgentCreate(name="a", system_prompt="p")).id
        if name == "agents":
            return [record.id for record in state.agents.page(arg, 100).items]
    except ApiError as exc:
        return exc.code
    raise AssertionError(name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), OPERATIONS), max_size=40))
def test_two_workers_answer_as_one_server(steps: list[tuple[bool, tuple[str, Any]]]) -> None:
    """Each operation runs on either worker, which then shares what it changed (as under the lead's lock):
    every answer is the one server's, and both workers end up holding the same documents."""
    a, b, alone = server(worker="a"), server(worker="b"), server(worker="alone")
    for on_a, operation in steps:
        worker, other = (a, b) if on_a else (b, a)
        assert run(worker, operation) == run(alone, operation), operation
        if operation[0] == "reset":  # the coordinator replays a reset on every worker before its documents
            other.reset(operation[1])
        replicate(worker, other)
        assert {name: c for name, c in replicate(other).items() if c} == {}, operation  # nothing of its own
        replicate(alone)
    assert_same(a, b)
    assert_same(a, alone)
    nothing_left(a, b)


def test_a_seed_set_on_one_worker_survives_a_reset_replayed_on_another() -> None:
    a, b = server(worker="a"), server(worker="b")
    a.settings.seed = 7  # what POST /_mockglot/seed does
    a.randomness.reseed(7)
    replicate(a, b)
    a.reset()
    b.reset()  # replayed by the coordinator
    replicate(a, b)
    assert {name: c for name, c in replicate(b).items() if c} == {}
    assert b.randomness.seed == 7
