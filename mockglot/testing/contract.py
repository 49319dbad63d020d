"""The contract report in a pytest run: after each test that used the `mockglot` fixture, what its client did that
the Kallglot contract does not allow (or only mockglot tolerates), and what of the contract it met; a short
summary at the end of the run. `--mockglot-strict-contract` fails each test with a violation, naming it.

Findings travel on the test's report (`user_properties`), so under xdist the controller sums every worker's.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from mockglot.testing.client import KallglotError

PROPERTY = "mockglot_contract"
SETTLE_SECONDS = 0.5  # how long the server waits for a test's streams to finish closing before it reports
MAX_TESTS_NAMED = 3


@dataclass
class Found:
    count: int = 0
    why: str = ""
    examples: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)


@dataclass
class Summary:
    violations: dict[str, Found] = field(default_factory=dict)
    coverage: dict[str, set[str]] = field(default_factory=dict)
    tests: int = 0

    def add(self, nodeid: str, report: dict[str, Any]) -> None:
        self.tests += 1
        for violation in report["violations"]:
            found = self.violations.setdefault(violation["kind"], Found(why=violation["why"]))
            found.count += violation["count"]
            found.examples += [e for e in violation["examples"] if e not in found.examples][: 3 - len(found.examples)]
            found.tests.append(nodeid)
        for table, counts in report["coverage"].items():
            self.coverage.setdefault(table, set()).update(counts)

    def lines(self) -> list[str]:
        lines = []
        if self.violations:
            kinds = len(self.violations)
            lines.append(f"{kinds} kind(s) of violation (what the Kallglot API refuses, or only mockglot tolerates):")
            for kind, found in sorted(self.violations.items()):
                tests = ", ".join(found.tests[:MAX_TESTS_NAMED])
                more = f" and {len(found.tests) - MAX_TESTS_NAMED} more" if len(found.tests) > MAX_TESTS_NAMED else ""
                lines.append(f"  {kind} x{found.count}: {'; '.join(found.examples)}")
                lines.append(f"      {found.why}")
                lines.append(f"      in {tests}{more}")
        else:
            lines.append(f"no violations in {self.tests} test(s) that used the mockglot fixture")
        lines.append(f"coverage over {self.tests} test(s):")
        lines.append(f"  operations ({self._operations_met()}): {_listed(self.coverage.get('operations'))}")
        lines.append(f"  frames sent: {_listed(self.coverage.get('frames_in'))}")
        lines.append(f"  frames received: {_listed(self.coverage.get('frames_out'))}")
        lines.append(f"  error codes met: {_listed(self.coverage.get('error_codes'))}")
        lines.append(f"  close codes met: {_listed(self.coverage.get('close_codes'))}")
        return lines

    def _operations_met(self) -> str:
        from mockglot.app import PUBLIC_ENDPOINTS

        known = {f"{e.method} {e.path}" for e in PUBLIC_ENDPOINTS}
        met = self.coverage.get("operations", set()) & known
        return f"{len(met)} of {len(known)}"


def _listed(values: set[str] | None) -> str:
    return ", ".join(sorted(values)) if values else "none"


def _failure(report: dict[str, Any]) -> str:
    lines = ["mockglot contract (--mockglot-strict-contract): this test's client did what the contract does not allow:"]
    for violation in sorted(report["violations"], key=lambda v: str(v["kind"])):
        lines.append(f"  {violation['kind']} x{violation['count']}: {'; '.join(violation['examples'])}")
        lines.append(f"      {violation['why']}")
    return "\n".join(lines)


class ContractReporting:
    """Registered by the mockglot plugin unless `--mockglot-no-contract-report`."""

    def __init__(self, config: pytest.Config) -> None:
        self.strict = bool(config.getoption("mockglot_strict_contract"))
        self.summary = Summary()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        helper = getattr(item, "funcargs", {}).get("mockglot")
        if report.when != "call" or helper is None:
            return
        try:
            found = helper.contract(settle=SETTLE_SECONDS)
        except KallglotError:
            return  # a server too old to report: nothing to say
        except httpx.HTTPError:
            return  # the server went away: the fixture's teardown says so; an error here would abort the whole run
        report.user_properties.append((PROPERTY, found))
        if self.strict and found["violations"] and report.passed:
            report.outcome = "failed"
            report.longrepr = _failure(found)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == PROPERTY and isinstance(value, dict):
                self.summary.add(report.nodeid, value)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.summary.tests:
            return
        terminalreporter.section("mockglot contract report")
        for line in self.summary.lines():
            terminalreporter.write_line(line)
