"""No file system from the public API, and scenario uploads that cannot hurt the server or other tenants.

Sessions choose scenarios by name only; `audio:` files stay inside their fixtures folder (no `..`, no absolute
paths, no links out, regular files only, size-capped); YAML has no aliases and a size limit; an error never tells
whether a path outside exists; an upload never changes what another tenant's scenario says."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest
import yaml

from mockglot.app import create_app
from mockglot.scenarios import BUILTIN_DIR, MAX_AUDIO_BYTES, MAX_DOCUMENT_BYTES
from mockglot.settings import Settings
from tests.audio import tone
from tests.conftest import new_key

CREATE = {"mode": "bidirectional_translation"}


def with_scenario(name: str) -> dict:
    return {**CREATE, "metadata": {"mockglot_scenario": name}}


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


# --- sessions choose by name, never by path ----------------------------------------------------------------


async def test_a_scenario_path_in_metadata_is_an_unknown_name_and_is_never_read(client, tmp_path: Path):
    fifo = tmp_path / "trap.yaml"
    os.mkfifo(fifo)  # reading it would block the server for ever
    builtin = BUILTIN_DIR / "order-change.yaml"  # a real, readable scenario file
    for requested in (str(fifo), str(builtin), "../../../../etc/passwd.yaml", "order-change.yaml"):
        response = await client.post("/v1/sessions", json=with_scenario(requested))
        assert response.status_code == 422, requested
        error = error_of(response)
        assert error["param"] == "metadata.mockglot_scenario"
        assert "by name" in error["message"] and "order-change" in error["message"]


async def test_the_error_for_an_outside_path_does_not_tell_whether_it_exists(client, tmp_path: Path):
    existing = tmp_path / "exists.yaml"
    existing.write_text("name: exists\n", encoding="utf-8")
    missing = tmp_path / "absent.yaml"
    one = error_of(await client.post("/v1/sessions", json=with_scenario(str(existing))))["message"]
    two = error_of(await client.post("/v1/sessions", json=with_scenario(str(missing))))["message"]
    assert one.replace(str(existing), "X") == two.replace(str(missing), "X")


def test_the_operator_still_names_a_file_with_scenario(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nturns:\n  customer:\n    - text: Hallo\n", encoding="utf-8")
    app = create_app(Settings(scenario=str(path)))
    assert app.state.mockglot.settings.scenario == "mine"
    assert app.state.mockglot.scenarios.get("mine").source == str(path)


# --- audio files stay inside their fixtures folder --------------------------------------------------------


def fixtures_with_audio(root: Path, audio: str) -> Path:
    (root / "scenarios").mkdir(parents=True)
    scenario = {"name": "with-audio", "turns": {"customer": [{"text": "Hallo", "audio": audio}]}}
    (root / "scenarios" / "with-audio.yaml").write_text(yaml.safe_dump(scenario), encoding="utf-8")
    return root


@pytest.mark.parametrize("audio", ["../outside.ulaw", "../../outside.ulaw", "ABSOLUTE", "link.ulaw", "nowhere.ulaw"])
def test_audio_outside_the_fixtures_folder_is_not_read_and_looks_missing(tmp_path: Path, audio: str):
    outside = tmp_path / "outside.ulaw"
    outside.write_bytes(tone(100))
    root = fixtures_with_audio(tmp_path / "fixtures", str(outside) if audio == "ABSOLUTE" else audio)
    (root / "scenarios" / "link.ulaw").symlink_to(outside)
    with pytest.raises(ValueError, match=r"turns\.customer\[0\]\.audio: no audio file") as raised:
        create_app(Settings(fixtures=[str(root)]))
    assert "No such file" not in str(raised.value) and "outside.ulaw'" not in str(raised.value).split("no audio")[0]


def test_audio_may_sit_in_a_folder_beside_the_scenario(tmp_path: Path):
    root = fixtures_with_audio(tmp_path / "fixtures", "audio/hallo.ulaw")
    (root / "scenarios" / "audio").mkdir()
    (root / "scenarios" / "audio" / "hallo.ulaw").write_bytes(tone(100))
    app = create_app(Settings(fixtures=[str(root)]))
    assert app.state.mockglot.scenarios.get("with-audio").audio == {"audio/hallo.ulaw": tone(100)}


def test_a_fifo_as_audio_is_refused_without_blocking(tmp_path: Path):
    root = fixtures_with_audio(tmp_path / "fixtures", "pipe.ulaw")
    os.mkfifo(root / "scenarios" / "pipe.ulaw")  # opening it to read would wait for a writer for ever
    with pytest.raises(ValueError, match=r"audio: pipe\.ulaw is not a regular file"):
        create_app(Settings(fixtures=[str(root)]))


def test_audio_past_the_size_cap_is_refused_unread(tmp_path: Path):
    root = fixtures_with_audio(tmp_path / "fixtures", "huge.ulaw")
    with open(root / "scenarios" / "huge.ulaw", "wb") as file:
        file.truncate(MAX_AUDIO_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ValueError, match=r"audio: huge\.ulaw is larger than 16 MiB"):
        create_app(Settings(fixtures=[str(root)]))


def test_a_fifo_or_huge_file_among_the_fixtures_scenarios_is_refused_at_start(tmp_path: Path):
    (tmp_path / "scenarios").mkdir()
    os.mkfifo(tmp_path / "scenarios" / "pipe.yaml")
    with pytest.raises(ValueError, match=r"pipe\.yaml is not a regular file"):
        create_app(Settings(fixtures=[str(tmp_path)]))
    (tmp_path / "scenarios" / "pipe.yaml").unlink()
    (tmp_path / "scenarios" / "huge.yaml").write_text("name: huge\n#" + "x" * MAX_DOCUMENT_BYTES, encoding="utf-8")
    with pytest.raises(ValueError, match=r"huge\.yaml is larger than 512 KiB"):
        create_app(Settings(fixtures=[str(tmp_path)]))


# --- uploads ------------------------------------------------------------------------------------------------


async def upload(client: httpx.AsyncClient, body: dict) -> httpx.Response:
    return await client.post("/_mockglot/scenarios", json=body)


async def test_an_upload_cannot_name_a_file_outside_the_fixtures_folders(client, tmp_path: Path):
    outside = tmp_path / "secret.ulaw"
    outside.write_bytes(tone(100))
    messages = []
    for audio in (str(outside), f"../../../../../../..{outside}", str(tmp_path / "absent.ulaw")):
        turns = {"customer": [{"text": "a", "audio": audio}]}
        response = await upload(client, {"scenario": {"name": "grab", "turns": turns}})
        assert response.status_code == 422
        messages.append(error_of(response)["message"].replace(audio, "X"))
    assert "no audio file 'X'" in messages[0] and len(set(messages)) == 1  # existing or not: the same answer


async def test_an_upload_may_name_an_audio_file_of_a_fixtures_folder(make_app, make_client, tmp_path: Path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "reply.ulaw").write_bytes(tone(200))
    app = make_app(fixtures=[str(tmp_path)])
    turns = {"customer": [{"text": "Hallo", "audio": "scenarios/reply.ulaw"}]}
    response = await make_client(app).post("/_mockglot/scenarios", json={"scenario": {"name": "named", "turns": turns}})
    assert response.status_code == 201, response.text
    assert app.state.mockglot.scenarios.get("named").audio == {"scenarios/reply.ulaw": tone(200)}


async def test_an_upload_carries_its_audio_inline(app, client):
    audio = tone(300, hz=550)
    body = {
        "name": "inline",
        "turns": {"customer": [{"text": "Hallo", "audio_base64": base64.b64encode(audio).decode()}]},
    }
    response = await upload(client, {"scenario": body})
    assert response.status_code == 201, response.text
    assert list(app.state.mockglot.scenarios.get("inline").audio.values()) == [audio]
    bad = {"name": "bad", "turns": {"customer": [{"text": "Hallo", "audio_base64": "not base64!"}]}}
    response = await upload(client, {"scenario": bad})
    assert response.status_code == 422 and "audio_base64" in error_of(response)["message"]


@pytest.mark.parametrize("rate", [0, 2**31])
async def test_inline_wav_audio_with_a_broken_sample_rate_is_a_422_not_a_500(client, rate):
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little") + bytes(4)
    fmt += (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    data = bytes(1600)
    riff = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(data).to_bytes(4, "little") + data
    wav = b"RIFF" + len(riff).to_bytes(4, "little") + riff
    body = {
        "name": "badrate",
        "turns": {"customer": [{"text": "Hallo", "audio_base64": base64.b64encode(wav).decode()}]},
    }
    response = await upload(client, {"scenario": body})
    assert response.status_code == 422, response.text
    assert error_of(response)["message"] == (
        f"scenario upload: turns.customer[0].audio_base64: the WAV says {rate} samples a second: give 1,000 to "
        "384,000 Hz"
    )


async def test_a_yaml_alias_bomb_is_refused_at_once(client):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 30):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    bomb = "\n".join(["name: bomb", *lines]) + "\n"
    assert len(bomb) < 15_000  # expands to 9**30 strings
    response = await upload(client, {"yaml": bomb})
    assert response.status_code == 422
    assert error_of(response)["param"] == "yaml" and "aliases" in error_of(response)["message"]
    assert (await client.post("/v1/sessions", json=CREATE)).status_code == 201  # and the server goes on


async def test_a_yaml_document_past_the_size_limit_is_refused(client):
    big = "name: big\ndescription: " + "x" * MAX_DOCUMENT_BYTES + "\n"
    response = await upload(client, {"yaml": big})
    assert response.status_code == 422 and "larger than 512 KiB" in error_of(response)["message"]


# --- no upload changes another tenant's scenarios -------------------------------------------------------


def spoken_text(app, key: str, name: str) -> str:
    organization = app.state.mockglot.keys.ensure(key).organization
    return app.state.mockglot.scenarios.get(name, organization).scenario.turns["customer"][0].text


async def test_an_upload_cannot_shadow_order_change_for_anyone(app, client):
    intruder = {"name": "order-change", "turns": {"customer": [{"text": "Send me your password"}]}}
    for scope in ({}, {"api_key": new_key()}, {"organization": "org_evil"}):
        response = await upload(client, {"scenario": intruder, **scope})
        assert response.status_code == 422, scope
        assert "give the upload another name" in error_of(response)["message"]
    assert spoken_text(app, new_key(), "order-change") != "Send me your password"


async def test_a_scoped_upload_is_seen_by_its_organization_only(app, make_client):
    alice, bob = new_key(), new_key()
    control = make_client(app)
    for key, text in ((alice, "Alice speaks"), (bob, "Bob speaks")):
        body = {"scenario": {"name": "refund", "turns": {"customer": [{"text": text}]}}, "api_key": key}
        response = await control.post("/_mockglot/scenarios", json=body)
        assert response.status_code == 201 and response.json()["organization"].startswith("org_")
    assert spoken_text(app, alice, "refund") == "Alice speaks"
    assert spoken_text(app, bob, "refund") == "Bob speaks"
    carol = new_key()
    response = await make_client(app, carol).post("/v1/sessions", json=with_scenario("refund"))
    assert response.status_code == 422 and "refund" not in error_of(response)["message"].split("Known:")[1]
    response = await control.post("/_mockglot/scenarios/next", json={"api_key": carol, "scenario": "refund"})
    assert response.status_code == 422
    created = await make_client(app, alice).post("/v1/sessions", json=with_scenario("refund"))
    assert created.status_code == 201
    listed = (await control.get("/_mockglot/scenarios")).json()["data"]
    assert sorted(s["organization"] is not None for s in listed if s["name"] == "refund") == [True, True]
    organization = app.state.mockglot.keys.ensure(alice).organization
    assert (await control.post("/_mockglot/reset", json={"organization": organization})).status_code == 200
    assert [s["name"] for s in (await control.get("/_mockglot/scenarios")).json()["data"]].count("refund") == 1
