"""A seeded server repeats itself: the same requests and audio give the same IDs, tokens and events."""

from __future__ import annotations

import asyncio

from mockglot.settings import Settings
from mockglot.testing.client import Client
from mockglot.testing.server import ServerThread
from tests.audio import utterance

KEY = "sk_test_determinism1"


async def _run(seed: int | None) -> dict:
    with ServerThread(Settings(port=0, seed=seed, output_pace="instant")) as server:
        server.call(server.state.clock.set, 1_780_000_000)
        async with Client(server.base_url, KEY) as client:
            sessions = [await client.create_session(source_language="de", target_language="en") for _ in range(2)]
            created = await client.http.post("/v1/sessions", json={"mode": "ai_agent", "ai_agent": {}})
            stream = await client.open_stream(sessions[0])
            await stream.send_audio("customer", utterance() + utterance())
            await stream.send_audio("agent", utterance())
            await stream.end()
            transcript = await client.transcript(sessions[0]["id"])
        return {
            "ids": [s["id"] for s in sessions],
            "tokens": [s["stream"]["token"] for s in sessions],
            "request_id": created.headers["x-request-id"],
            "frames": [{k: v for k, v in f.items() if k != "session_id"} for f in stream.received],
            "transcript": transcript,
        }


def test_same_seed_same_ids_tokens_and_events():
    first, second = asyncio.run(_run(7)), asyncio.run(_run(7))
    assert first["ids"] == second["ids"]
    assert first["tokens"] == second["tokens"]
    assert first["request_id"] == second["request_id"]
    assert first["frames"] == second["frames"]
    assert first["transcript"] == second["transcript"]
    assert any(f["type"] == "audio.output" for f in first["frames"])


def test_different_seeds_and_no_seed_differ():
    seeded, other, unseeded = asyncio.run(_run(7)), asyncio.run(_run(8)), asyncio.run(_run(None))
    assert seeded["ids"] != other["ids"]
    assert unseeded["ids"] != seeded["ids"]
    assert all(i.startswith("sess_") and len(i) == 31 for i in seeded["ids"] + unseeded["ids"])


# --- seeded but isolated (#10) -----------------------------------------------------------------------------


def _ids_and_tokens(state, key: str, count: int = 3) -> list[str]:
    owner = state.keys.ensure(key).owner
    from mockglot.wire import SessionCreate

    request = SessionCreate(mode="bidirectional_translation", source_language="de", target_language="en")
    made = [state.sessions.create(owner, key, request, None) for _ in range(count)]
    return [value for record in made for value in (record.id, record.token.token)]


def test_each_key_repeats_its_own_ids_and_tokens_whatever_other_keys_do():
    from mockglot.state.server import ServerState

    alone = _ids_and_tokens(ServerState(Settings(seed=7)), KEY)
    busy = ServerState(Settings(seed=7))
    _ids_and_tokens(busy, "sk_test_someoneelse1", 5)  # another tenant first, and in between
    interleaved = _ids_and_tokens(busy, KEY, 1) + _ids_and_tokens(busy, "sk_test_someoneelse1", 2)
    interleaved += _ids_and_tokens(busy, KEY, 2)
    assert interleaved[:2] + interleaved[6:] == alone


def test_knowing_the_seed_does_not_give_another_keys_ids_or_tokens():
    """The seed is public (GET /_mockglot/seed): a tenant that replays another's requests under its own key on
    a server with the same seed gets unrelated IDs and tokens."""
    from mockglot.state.server import ServerState

    victim = _ids_and_tokens(ServerState(Settings(seed=7)), KEY, 20)
    attacker = _ids_and_tokens(ServerState(Settings(seed=7)), "sk_test_attacker0001", 20)
    random_parts = lambda values: {v[-16:] for v in values}  # noqa: E731 - the random tail of each ID and token
    assert random_parts(victim).isdisjoint(random_parts(attacker))
    assert _ids_and_tokens(ServerState(Settings(seed=8)), KEY, 20) != victim
