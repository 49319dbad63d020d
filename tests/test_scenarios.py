"""Scenarios: files validated on load, chosen per session or per server, and driving the scripted engine."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
import yaml

from mockglot.app import create_app
from mockglot.scenarios import load_file, parse
from mockglot.settings import Settings
from mockglot.testing.client import Client
from mockglot.testing.server import ServerThread
from tests.audio import tone, utterance

KEY = "sk_test_scenarios001"
REFUND = {
    "name": "refund",
    "description": "An English customer asks a Spanish agent for a refund.",
    "source_language": "en",
    "target_language": "es",
    "when_exhausted": "stop",
    "turns": {
        "customer": [
            {"text": "I would like a refund", "translation": "Quisiera un reembolso", "audio": "reply.ulaw"},
            {"text": "Thank you"},
        ],
        "agent": [{"text": "Claro, un momento"}],
    },
}


@pytest.fixture
def fixtures_dir(tmp_path: Path) -> Path:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "phrasebook").mkdir()
    (tmp_path / "scenarios" / "refund.yaml").write_text(yaml.safe_dump(REFUND), encoding="utf-8")
    (tmp_path / "scenarios" / "reply.ulaw").write_bytes(tone(250, hz=660))
    (tmp_path / "phrasebook" / "en-es.json").write_text(json.dumps({"Thank you": "Gracias"}), encoding="utf-8")
    return tmp_path


@pytest.fixture
def server(fixtures_dir: Path):
    with ServerThread(Settings(port=0, output_pace="instant", fixtures=[str(fixtures_dir)])) as running:
        yield running


def test_errors_name_the_file_and_the_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nturns:\n  customer:\n    - text: hi\n      confidance: 0.9\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml.*turns\.customer\[0\]\.confidance"):
        load_file(bad)
    bad.write_text("name: bad\nturns:\n  customer:\n    - text: hi\n      confidence: high\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml.*confidence"):
        load_file(bad)
    bad.write_text("- name: bad\n  turns: {}\n", encoding="utf-8")  # a list: it said "The request body is invalid"
    with pytest.raises(ValueError, match=r"^scenario .*bad\.yaml: the document must be a mapping with `name:` and "):
        load_file(bad)
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml does not parse"):
        load_file(bad)
    with pytest.raises(ValueError, match=r"turns\.customer\[0\]\.audio"):
        parse({"name": "x", "turns": {"customer": [{"text": "a", "audio": "missing.wav"}]}}, "x.yaml", tmp_path)
    with pytest.raises(ValueError, match=r"faults\[0\]: give after_frames or after_finals, not both"):
        parse({"name": "x", "faults": [{"action": "close", "after_frames": 1, "after_finals": 1}]}, "x.yaml")


def test_unknown_default_scenario_fails_at_start(tmp_path: Path):
    with pytest.raises(ValueError, match=r"unknown scenario 'nope'.*order-change"):
        create_app(Settings(scenario="nope"))
    # a path gets what is wrong with that file: "give a scenario file's path" was the answer to one given
    with pytest.raises(ValueError, match=r"^cannot read scenario .*missing\.yaml: No such file or directory$"):
        create_app(Settings(scenario=str(tmp_path / "missing.yaml")))
    (tmp_path / "notes.txt").write_text("name: x\n")
    with pytest.raises(ValueError, match=r"^scenario .*notes\.txt: a scenario file's name ends in .yaml, .yml, .json$"):
        create_app(Settings(scenario=str(tmp_path / "notes.txt")))


def test_a_fixtures_folder_that_is_a_file_says_so(tmp_path: Path):
    """It said the file "does not exist"."""
    (tmp_path / "fixtures.yaml").write_text("")
    with pytest.raises(ValueError, match=r"^fixtures folder .*fixtures\.yaml is not a folder$"):
        create_app(Settings(fixtures=[str(tmp_path / "fixtures.yaml")]))
    with pytest.raises(ValueError, match=r"^fixtures folder .*nowhere does not exist$"):
        create_app(Settings(fixtures=[str(tmp_path / "nowhere")]))


def test_a_broken_scenario_in_a_fixtures_folder_fails_at_start(tmp_path: Path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "broken.json").write_text('{"name": "broken", "turns": 3}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json.*turns"):
        create_app(Settings(fixtures=[str(tmp_path)]))


async def test_metadata_chooses_a_fixtures_scenario_and_its_phrasebook(server):
    async with Client(server.base_url, KEY) as client:
        session = await client.create_session(metadata={"mockglot_scenario": "refund"})
        stream = await client.open_stream(session)
        ready = await stream.until("session.ready")
        assert (ready["source_language"], ready["target_language"]) == ("en", "es")
        await stream.send_audio("customer", utterance() + utterance())
        await stream.send_audio("customer", utterance())  # past the script: "stop" says nothing
        frames = await stream.end()
        finals = [f for f in stream.received if f["type"] == "transcript.final"]
        assert [(f["text"], f["translation"]["text"]) for f in finals] == [
            ("I would like a refund", "Quisiera un reembolso"),
            ("Thank you", "Gracias"),
        ]
        assert frames[-1]["type"] == "session.ended"


async def test_a_turn_with_audio_plays_that_audio(server, fixtures_dir: Path):
    async with Client(server.base_url, KEY) as client:
        stream = await client.open_stream(await client.create_session(metadata={"mockglot_scenario": "refund"}))
        await stream.send_audio("customer", utterance())
        await stream.end()
        first_turn = [f for f in stream.received if f["type"] == "audio.output" and f["turn"] == 1]
        played = b"".join(base64.b64decode(f["audio"]["payload"]) for f in first_turn)
        assert played == (fixtures_dir / "scenarios" / "reply.ulaw").read_bytes()
        assert [len(base64.b64decode(f["audio"]["payload"])) for f in first_turn] == [800, 800, 400]


def test_unknown_scenario_or_engine_in_metadata_is_422(server):
    for metadata, param in (
        ({"mockglot_scenario": "nope"}, "metadata.mockglot_scenario"),
        ({"mockglot_engine": "whisper"}, "metadata.mockglot_engine"),
    ):
        response = httpx.post(
            f"{server.base_url}/v1/sessions",
            json={"mode": "bidirectional_translation", "metadata": metadata},
            headers={"X-API-Key": KEY},
        )
        assert response.status_code == 422
        assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("invalid_field_value", param)


ASKS_FOR_VOSK = {"mode": "bidirectional_translation", "source_language": "de", "metadata": {"mockglot_engine": "vosk"}}


@pytest.fixture
def no_vosk_model_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with no Vosk model in a search directory or an installed package (this venv has the Korean one)."""
    from mockglot.engines import vosk

    monkeypatch.setattr(vosk, "_installed_packages", dict)
    monkeypatch.setattr(vosk, "default_search_dirs", list)


def test_asking_for_vosk_on_a_server_without_a_model_is_422_saying_how_to_start_one(no_vosk_model_installed):
    with ServerThread(Settings(port=0)) as running:
        response = httpx.post(f"{running.base_url}/v1/sessions", json=ASKS_FOR_VOSK, headers={"X-API-Key": KEY})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "validation_error",
            "invalid_field_value",
            "metadata.mockglot_engine",
        )
        assert "no Vosk model" in error["message"]
        assert "mockglot serve --vosk-model de=PATH" in error["message"]
        assert httpx.get(f"{running.base_url}/_mockglot/sessions").json()["data"] == []  # nothing made, nothing charged


def test_a_server_with_a_vosk_model_still_takes_vosk_sessions(no_vosk_model_installed, tmp_path: Path):
    model = fake_model(tmp_path / "de-model")  # the session is made; the model loads at its first audio
    with ServerThread(Settings(port=0, vosk_models=[f"de={model}"])) as running:
        response = httpx.post(f"{running.base_url}/v1/sessions", json=ASKS_FOR_VOSK, headers={"X-API-Key": KEY})
        assert response.status_code == 201, response.text
        (session,) = httpx.get(f"{running.base_url}/_mockglot/sessions").json()["data"]
        assert session["engine"] == "vosk"


def fake_model(folder: Path) -> Path:
    """A folder shaped like a Vosk model (found and accepted; it would fail only when loaded)."""
    for name in ("am/final.mdl", "conf/mfcc.conf", "graph/HCLG.fst"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("model\n")
    return folder


def test_asking_for_vosk_where_the_vosk_package_is_missing_is_422_saying_what_to_install(
    no_vosk_model_installed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mockglot.engines import vosk

    real_find_spec = vosk.importlib.util.find_spec
    monkeypatch.setattr(
        vosk.importlib.util, "find_spec", lambda name, *a: None if name == "vosk" else real_find_spec(name, *a)
    )
    with ServerThread(Settings(port=0, vosk_models=[f"de={fake_model(tmp_path / 'de-model')}"])) as running:
        response = httpx.post(f"{running.base_url}/v1/sessions", json=ASKS_FOR_VOSK, headers={"X-API-Key": KEY})
        assert response.status_code == 422, response.text
        assert "not the vosk package" in response.json()["error"]["message"]
        assert "pip install 'mockglot[vosk]'" in response.json()["error"]["message"]


def test_a_server_told_to_recognize_with_vosk_and_given_no_model_does_not_start(no_vosk_model_installed):
    with pytest.raises(ValueError, match=r"--engine vosk .*no Vosk model.*--vosk-model LANG=PATH"):
        create_app(Settings(port=0, engine="vosk"))


async def test_server_default_scenario_by_path_and_loop(tmp_path: Path):
    looping = {
        **REFUND,
        "name": "looping",
        "when_exhausted": "loop",
        "turns": {"customer": [{"text": "one"}, {"text": "two"}]},
    }
    path = tmp_path / "looping.json"
    path.write_text(json.dumps(looping), encoding="utf-8")
    with ServerThread(Settings(port=0, output_pace="instant", scenario=str(path))) as running:
        async with Client(running.base_url, KEY) as client:
            stream = await client.open_stream(await client.create_session())
            for _ in range(3):
                await stream.send_audio("customer", utterance(600, 600))
            await stream.end()
            assert [f["text"] for f in stream.received if f["type"] == "transcript.final"] == ["one", "two", "one"]


async def test_scenario_fault_closes_after_the_second_final(tmp_path: Path):
    faulty = {"name": "faulty", "faults": [{"after_finals": 2, "action": "close", "close_code": 1011}]}
    (tmp_path / "faulty.yaml").write_text(yaml.safe_dump(faulty), encoding="utf-8")
    with ServerThread(Settings(port=0, output_pace="instant", fixtures=[str(tmp_path)])) as running:
        async with Client(running.base_url, KEY) as client:
            stream = await client.open_stream(await client.create_session(metadata={"mockglot_scenario": "faulty"}))
            await stream.send_audio("customer", utterance() * 4)
            frames = await stream.drain()
            finals = [f for f in stream.received if f["type"] == "transcript.final"]
            assert len(finals) == 2
            assert frames[-1]["type"] == "session.error" and frames[-1]["error"]["code"] == "internal_error"
            assert stream.close_code == 1011
