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
