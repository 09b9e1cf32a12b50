#!/usr/bin/env bash
# Create .venv and install agent-runtime with everything its tests, examples and benchmarks need.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need: PostgreSQL server binaries for the A2A PostgreSQL store tests
# (they start their own throwaway cluster, tests/a2a_support/postgres.py) and tmux, the real
# terminal the chat tests drive. The tests fail (never skip) without them.
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "setup: missing Debian packages: ${missing[*]} (apt-get install them as root)" >&2
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# torch 2.13.0 first: a CPU build on this kind of machine. The project's range accepts it, so
# nothing later pulls another torch.
"${PIP[@]}" install torch==2.13.0
"${PIP[@]}" install -e ".[mcp,a2a,model,train,test,bench,chat,telemetry]"

# Node packages for the MCP and A2A interop tests, kept with the tests (tests/package.json):
# the reference "everything" server, the conformance suite, the A2A JS SDK, and a Node 22 binary
# (the suite needs >= 22; the system node may be older).
if command -v npm >/dev/null 2>&1; then
    if [ -f tests/package-lock.json ]; then
        (cd tests && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd tests && npm install --no-audit --no-fund --loglevel=error)
    fi
else
    echo "setup: npm not found; MCP tests against Node servers will fail" >&2
fi
