"""The layering ARCHITECTURE.md promises, checked on the tree as it is."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "mockglot"
# What modules under mockglot/state may import from mockglot (besides each other): the layers at or below them.
STATE_MAY_IMPORT = (
    "mockglot.errors", "mockglot.wire", "mockglot.settings", "mockglot.speech", "mockglot.faults",
    "mockglot.scenarios", "mockglot.validation", "mockglot.webhooks.state", "mockglot.webhooks.signing",
)  # fmt: skip
KNOWN_EXCEPTIONS = {
    ("mockglot/state/server.py", "mockglot.transport"),  # for a type annotation only (TYPE_CHECKING)
}


def test_the_state_imports_neither_httpx_nor_the_api():
    code = (
        "import sys, mockglot.state.server; "
        "print(sorted(m for m in sys.modules if m == 'httpx' or m.startswith('mockglot.api')))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert found == "[]"


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(
                f"{node.module}.{alias.name}" if node.module == "mockglot" else node.module for alias in node.names
            )
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("mockglot")}


def test_nothing_under_state_imports_a_layer_above_it():
    upward = set()
    for path in sorted((PACKAGE / "state").glob("*.py")):
        where = path.relative_to(PACKAGE.parent).as_posix()
        for name in imported(path):
            allowed = name.startswith("mockglot.state") or name.startswith(STATE_MAY_IMPORT) or name == "mockglot"
            if not allowed and (where, name) not in KNOWN_EXCEPTIONS:
                upward.add((where, name))
    assert upward == set()


def test_the_public_api_never_imports_the_control_plane():
    for path in sorted((PACKAGE / "api").glob("*.py")):
        assert not {name for name in imported(path) if name.startswith("mockglot.control")}, path
