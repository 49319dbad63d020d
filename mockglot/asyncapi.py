"""The stream protocol (kallglot-api.md §7) as an AsyncAPI 3.0 document, generated from the wire types.

Every message's payload is msgspec's JSON Schema of a frame type in `mockglot.wire` (its docstring the
description), so the document cannot drift from what the server decodes and sends. The package ships it as
`mockglot/asyncapi.json` (regenerate it with `python -m mockglot.asyncapi --write`; a test fails when it is
stale), and a server serves it at `/_mockglot/asyncapi.json`. It describes the server: it receives the client's
frames and sends its own.
"""

from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path
from typing import Any

import msgspec

from mockglot import __version__, wire

SHIPPED = Path(__file__).with_name("asyncapi.json")
CHANNEL = "sessionStream"
CLIENT_FRAMES: tuple[type[msgspec.Struct], ...] = typing.get_args(wire.ClientFrame)
SERVER_FRAMES: tuple[type[msgspec.Struct], ...] = typing.get_args(wire.ServerFrame)
DESCRIPTION = (
    "The Kallglot real-time stream as mockglot serves it (contract revision 2). Connect to a session's "
    "`stream.url` with `?token=<stream.token>`; every frame is a JSON text frame with a `type`. Bad frames get "
    "a `session.error` and the stream goes on. Per turn: zero or more `transcript.partial`, then one "
    "`transcript.final`, then its `audio.output` frames. Generated from mockglot's wire types."
)


def tag(frame: type[msgspec.Struct]) -> str:
    return str(frame.__struct_config__.tag)


def message_id(frame: type[msgspec.Struct]) -> str:
    """`audio.input` -> `audioInput`: AsyncAPI component keys may not hold dots."""
    head, *rest = tag(frame).replace("_", ".").split(".")
    return head + "".join(part.capitalize() for part in rest)


def document() -> dict[str, Any]:
    frames = (*CLIENT_FRAMES, *SERVER_FRAMES)
    payloads, schemas = msgspec.json.schema_components(frames, ref_template="#/components/schemas/{name}")
    messages = {
        message_id(frame): {
            "name": tag(frame),
            "title": tag(frame),
            "contentType": "application/json",
            "payload": payload,
        }
        for frame, payload in zip(frames, payloads, strict=True)
    }

    def refs(group: tuple[type[msgspec.Struct], ...]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{CHANNEL}/messages/{message_id(frame)}"} for frame in group]

    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Kallglot stream (mockglot)", "version": __version__, "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {
            "mockglot": {
                "host": "localhost:8080",
                "protocol": "ws",
                "description": "mockglot serve's default address; the real service is wss://api.kallglot.com.",
            }
        },
        "channels": {
            CHANNEL: {
                "address": "/v1/sessions/{session_id}/connect",
                "title": "A session's stream",
                "parameters": {"session_id": {"description": "The session's id (`sess_...`)."}},
                "messages": {
                    message_id(frame): {"$ref": f"#/components/messages/{message_id(frame)}"} for frame in frames
                },
                "bindings": {
                    "ws": {
                        "query": {
                            "type": "object",
                            "properties": {"token": {"type": "string", "description": "The session's stream.token."}},
                        }
                    }
                },
            }
        },
        "operations": {
            "receiveClientFrames": {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "summary": "Frames a client sends.",
                "messages": refs(CLIENT_FRAMES),
            },
            "sendServerFrames": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "summary": "Frames the server sends.",
                "messages": refs(SERVER_FRAMES),
            },
        },
        "components": {"messages": messages, "schemas": schemas},
    }


def encoded() -> str:
    """The document as the package ships it: stable key order, one trailing newline."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mockglot.asyncapi", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {SHIPPED.name} into the package")
    args = parser.parse_args(argv)
    if args.write:
        SHIPPED.write_text(encoded(), encoding="utf-8")
    else:
        print(encoded(), end="")


if __name__ == "__main__":
    main()
