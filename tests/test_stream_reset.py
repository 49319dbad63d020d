"""A reset reaches live streams: the streams of what it forgets close with 4004, everyone else's go on. One call
does it, `ServerState.reset()`, whether the control plane or an in-process test makes it."""

from __future__ import annotations

import httpx

from mockglot.testing.client import Client, Stream
from tests.conftest import new_key


async def open_ready(client: Client) -> tuple[dict, Stream]:
    session = await client.create_session()
    stream = await client.open_stream(session)
    assert (await stream.recv())["type"] == "session.ready"
    return session, stream


def live_streams(live) -> int:
    return httpx.get(f"{live.base_url}/_mockglot/health").json()["live_streams"]


async def test_one_organizations_reset_closes_its_streams_and_no_one_elses(live):
    mine, theirs = new_key(), new_key()
    async with Client(live.base_url, mine) as client, Client(live.base_url, theirs) as other:
        _, gone = await open_ready(client)
        kept_session, kept = await open_ready(other)
        assert live_streams(live) == 2
        reply = httpx.post(f"{live.base_url}/_mockglot/reset", json={"api_key": mine})
        assert reply.status_code == 200
        frames = await gone.drain()
        assert [f["type"] for f in frames] == ["session.error"] and gone.close_code == 4004
        assert "reset" in frames[0]["error"]["message"]
        ended = await kept.end()  # the other organization's stream goes on to its own end
        assert ended[-1]["type"] == "session.ended" and kept.close_code == 1000
        assert (await other.get_session(kept_session["id"]))["status"] == "ended"
        assert live_streams(live) == 0


async def test_the_states_own_reset_closes_every_stream(live):
    async with Client(live.base_url, new_key()) as client, Client(live.base_url, new_key()) as other:
        streams = [(await open_ready(client))[1], (await open_ready(other))[1]]
        live.call(live.state.reset)  # in process: no control plane, no hub to remember
        for stream in streams:
            assert [f["type"] for f in await stream.drain()] == ["session.error"] and stream.close_code == 4004
        assert live_streams(live) == 0
        # a session created after the reset streams as usual
        _, fresh = await open_ready(client)
        assert (await fresh.end())[-1]["type"] == "session.ended"
