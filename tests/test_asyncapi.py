"""The AsyncAPI 3.0 document of the stream: generated from the wire types, shipped in the package, served by the
control plane, valid for the official AsyncAPI parser, and a match for every frame the server sends (the conftest
checks each test's frames through tests/frame_schema.py; these tests show that check can fail)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mockglot import asyncapi, wire
from mockglot.testing.client import Client, utterance
from tests import frame_schema

VALIDATOR = Path(__file__).with_name("asyncapi")
SERVER_TYPES = {"session.ready", "transcript.partial", "transcript.final", "audio.output", "pong", "session.ended",
                "session.error"}  # fmt: skip


def official_parser(document: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run @asyncapi/parser (installed by .ci/run: npm ci --prefix tests/asyncapi) on the document."""
    if shutil.which("node") is None or not (VALIDATOR / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.skip("the AsyncAPI parser is not installed: run `npm ci --prefix tests/asyncapi` (.ci/run does)")
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return subprocess.run(
        ["node", "validate.mjs", str(path)], cwd=VALIDATOR, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_shipped_document_is_the_generated_one():
    assert asyncapi.SHIPPED.read_text(encoding="utf-8") == asyncapi.encoded(), (
        "mockglot/asyncapi.json is stale: run `python -m mockglot.asyncapi --write`"
    )


def test_it_describes_every_frame_type_of_the_wire_types():
    document = asyncapi.document()
    assert document["asyncapi"] == "3.0.0"
    messages = document["components"]["messages"]
    names = {m["name"] for m in messages.values()}
    client_tags = {t.__struct_config__.tag for t in wire.ClientFrame.__args__}
    server_tags = {t.__struct_config__.tag for t in wire.ServerFrame.__args__}
    assert names == client_tags | server_tags and server_tags == SERVER_TYPES
    operations = document["operations"]
    received = {messages[r["$ref"].rsplit("/", 1)[1]]["name"] for r in operations["receiveClientFrames"]["messages"]}
    sent = {messages[r["$ref"].rsplit("/", 1)[1]]["name"] for r in operations["sendServerFrames"]["messages"]}
    assert (received, sent) == (client_tags, server_tags)
    schemas = document["components"]["schemas"]
    # (r2) facts the document carries because the wire types do
    assert schemas["AudioInput"]["properties"]["sequence"] == {"anyOf": [{"type": "integer"}, {"type": "number"}]}
    assert sorted(schemas["TranscriptFinal"]["properties"]["speaker"]["enum"]) == ["agent", "customer"]
    assert schemas["TranscriptFinal"]["properties"]["source"] == {"enum": ["ai"]}


async def test_the_control_plane_serves_it(client):
    response = await client.get("/_mockglot/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == asyncapi.document()


def test_the_official_asyncapi_parser_accepts_it(tmp_path):
    done = official_parser(asyncapi.document(), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["version"] == "3.0.0"
    assert [d for d in result["diagnostics"] if d["severity"] == 0] == []


def test_the_official_parser_rejects_a_broken_document(tmp_path):
    """The validator is real: the same document with an impossible operation fails."""
    broken = asyncapi.document()
    broken["operations"]["sendServerFrames"]["action"] = "broadcast"
    done = official_parser(broken, tmp_path)
    assert done.returncode == 1
    assert any(d["severity"] == 0 for d in json.loads(done.stdout)["diagnostics"])


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ({"type": "transcript.final", "session_id": "s", "turn": 1, "speaker": "ai_agent", "language": "de",
          "text": "x", "confidence": 1.0, "start_ms": 0, "end_ms": 1}, "speaker: 'ai_agent' is not one of"),
        ({"type": "pong", "session_id": "s", "extra": 1}, "Additional properties are not allowed"),
        ({"type": "pong"}, "'session_id' is a required property"),
        ({"type": "session.ended", "session_id": "s", "reason": "bored"}, "reason: 'bored' is not one of"),
        ({"type": "audio.input", "sequence": 1, "speaker": "customer", "audio": {}}, "no server message"),
    ],
)  # fmt: skip
def test_a_frame_unlike_the_document_is_reported(frame, problem):
    found = frame_schema.problems(json.dumps(frame))
    assert any(problem in p for p in found), found


async def test_every_server_frame_type_of_a_call_is_checked(live):
    """A call that sees every server frame type; the conftest's check ran on each (and would fail this test)."""
    before = frame_schema.checked
    async with Client(live.base_url, "sk_test_asyncapitest1") as api:
        session = await api.create_session(source_language="de", target_language="en")
        stream = await api.open_stream(session)
        await stream.send_json({"type": "ping"})
        await stream.send_json({"type": "nonsense"})
        await stream.send_audio("customer", utterance())
        await stream.until("audio.output")
        await stream.end()
        refused = await api.open_stream(session)  # ended: a connect failure's session.error, then 4009
        await refused.until("session.error")
    seen = {f["type"] for f in stream.received}
    assert seen == SERVER_TYPES
    assert frame_schema.checked - before >= len(stream.received) + 1
