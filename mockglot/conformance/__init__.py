"""`mockglot conform`: check that a server speaks the Kallglot API contract (kallglot-api.md, revision 2), on the
wire, with a plain HTTP and WebSocket client. Run it against mockglot to prove mockglot, or against the real
API (only `seed` and `documented` checks) to catch drift.

`run(url, api_key)` returns a `Report`; `main(args)` is the command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from mockglot.conformance.sources import SOURCES, Source

if TYPE_CHECKING:
    from mockglot.conformance.runner import CHECKS, Check, Report

__all__ = ["CHECKS", "Check", "Report", "add_parser", "main", "run"]

EXIT_FAILED, EXIT_USAGE = 1, 2


def __getattr__(name: str) -> Any:
    """The checks (and httpx) load when used: `mockglot serve` builds this command's parser and nothing more."""
    if name in ("CHECKS", "Check", "Report"):
        from mockglot.conformance import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(url: str, api_key: str, **options: object) -> Report:
    """Run the checks against `url` (blocking); see `run_checks` for the options."""
    from mockglot.conformance.runner import run_checks

    return asyncio.run(run_checks(url, api_key, **options))  # type: ignore[arg-type]


class _Parser(argparse.ArgumentParser):
    """`conform`'s parser: with `--json` among its arguments, a usage error (a missing `--api-key`, a flag
    misspelt) is a JSON document on stdout too, as every other refusal is: a script reading it always gets one."""

    json_wanted = False

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self.json_wanted = "--json" in (sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if self.json_wanted:
            _json_refusal(message, EXIT_USAGE, None)
        super().error(message)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "conform",
        help="check a server against the Kallglot API contract",
        description="Check a server (mockglot, or the real API) against the Kallglot API contract, on the wire.",
    )
    p.__class__ = _Parser  # (argparse makes every subcommand's parser of one class; this one's errors differ)
    p.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", required=True, help="the key the checks use (sk_test_...)")
    p.add_argument(
        "--only", action="append", choices=SOURCES, metavar="SOURCE",
        help="run only checks of this source (seed, documented, emulator; repeatable). Default: all when "
        "/_mockglot answers, else seed and documented",
    )  # fmt: skip
    p.add_argument("--check", action="append", metavar="PREFIX", help="run only checks whose id starts with PREFIX")
    p.add_argument("--control-token", help="mockglot's control token, when its control plane is protected")
    p.add_argument(
        "--receiver-host", default="127.0.0.1",
        help="the address the server can reach this machine's webhook receiver on (default 127.0.0.1)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON document instead of lines")


def main(args: argparse.Namespace) -> int:
    """The command. What would make every check fail for one reason (no such server, a URL without a scheme) or
    run none (a `--check` that names nothing, a typo that would pass CI) is one line on stderr instead."""
    import httpx

    from mockglot.conformance import checks as _checks  # noqa: F401  (registers the checks)
    from mockglot.conformance.runner import CHECKS
    from mockglot.stream_cli import server_url

    url = server_url(args.url)  # `.../v1`, as a client's configuration holds it, is the same server

    def refuse(message: str, status: int) -> int:
        return _refuse(message, status, args.json, url)

    if not url.startswith(("http://", "https://")):
        return refuse(f"the URL must start with http:// or https://, not {args.url!r}", EXIT_USAGE)
    sources: list[Source] | None = None
    if args.only:
        sources = ["seed", *args.only] if "documented" in args.only else list(args.only)
        sources = list(dict.fromkeys(sources))
    prefixes = tuple(args.check or ())
    if unknown := [p for p in prefixes if not any(c.id.startswith(p) for c in CHECKS)]:
        groups = ", ".join(dict.fromkeys(c.id.split(".")[0] + "." for c in CHECKS))
        return refuse(f"no check id starts with {', '.join(map(repr, unknown))}; the checks are {groups}", EXIT_USAGE)
    try:
        httpx.get(url, timeout=10)
    except httpx.TransportError as exc:
        return refuse(f"cannot reach {url}: {exc or type(exc).__name__} (is the server running?)", EXIT_FAILED)

    def select(item: Check) -> bool:
        return not prefixes or item.id.startswith(prefixes)

    report = run(
        url,
        args.api_key,
        sources=sources,
        control_token=args.control_token,
        select=select,
        receiver_host=args.receiver_host,
    )
    if args.json:
        sys.stdout.write(report.json().decode() + "\n")
    else:
        print(report.text())
    return 0 if report.ok else EXIT_FAILED


def _refuse(message: str, status: int, json: bool = False, url: str | None = None) -> int:
    """One line on stderr; with `--json` also a JSON document on stdout saying so."""
    print(f"mockglot conform: {message}", file=sys.stderr)
    if json:
        _json_refusal(message, status, url)
    return status


def _json_refusal(message: str, status: int, url: str | None) -> None:
    """For the script that reads the report: keys as in the report's, no checks run (`url` null when the
    arguments did not give one)."""
    import msgspec

    document: dict[str, object] = {"url": url, "ok": False, "error": message, "exit_code": status, "checks": []}
    sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    sys.stdout.flush()
